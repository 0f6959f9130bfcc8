"""`DeepSpeedStrategy`: ZeRO stages 0-3 (with optional CPU offload) through `deepspeed.initialize`.

The strategy owns the DeepSpeed configuration (a JSON path or a dict, HF-style ``"auto"``
values resolved by the pure function `fill_auto_values` before DeepSpeed sees it), the
`DeepSpeedEngine` it builds in `setup`, and the process group (started by DeepSpeed from
the launcher's environment: ``torchrun``, the ``deepspeed`` launcher, ``accelerate launch``).

The engine owns gradient scaling, clipping (``gradient_clipping``) and the learning-rate
scheduler it was given, so the strategy says so with the flags ``handles_clipping`` and
``handles_scheduler``; the loop then neither clips nor steps the scheduler itself. The
loop keeps its own accumulation windows and loss normalisation: `no_backward_sync` marks
the non-final micro-batches (``set_gradient_accumulation_boundary(False)``) and the loss
is back-propagated unscaled by DeepSpeed (``scale_wrt_gas=False``).

``deepspeed`` is imported lazily; install it with ``pip install toolkit[deepspeed]``
(on a machine without CUDA: ``DS_BUILD_OPS=0`` and ``DS_ACCELERATOR=cpu``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from toolkit.precision.base import Precision
from toolkit.strategies.ddp import DDPStrategy
from toolkit.utils.env import DistributedEnv, destroy_process_group_at_exit

__all__ = ["DeepSpeedStrategy", "load_deepspeed_config", "fill_auto_values", "find_auto_values"]

logger = logging.getLogger(__name__)

# Bucket sizes HF derives from the model's hidden size; without it DeepSpeed's defaults apply.
_HIDDEN_SIZE_KEYS = {
    "reduce_bucket_size": lambda h: h * h,
    "stage3_prefetch_bucket_size": lambda h: int(0.9 * h * h),
    "stage3_param_persistence_threshold": lambda h: 10 * h,
}
# fp16 loss-scale keys: "auto" leaves DeepSpeed's dynamic loss scaling at its defaults
# (loss_scale 0 = dynamic, initial_scale_power 16, loss_scale_window 1000, hysteresis 2, min_loss_scale 1).
_LOSS_SCALE_KEYS = ("loss_scale", "initial_scale_power", "loss_scale_window", "hysteresis", "min_loss_scale")


def _import_deepspeed() -> Any:
    try:
        import deepspeed
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "DeepSpeedStrategy needs the 'deepspeed' package: pip install 'toolkit[deepspeed]' "
            "(without CUDA: DS_BUILD_OPS=0 DS_ACCELERATOR=cpu pip install deepspeed)"
        ) from err
    return deepspeed


def load_deepspeed_config(config: str | os.PathLike | dict[str, Any]) -> dict[str, Any]:
    """Read a DeepSpeed configuration: a dict (deep-copied) or the path of a JSON file.

    Raises:
        ValueError: when the path does not exist, the file is not valid JSON, or the
            value is neither a dict nor a path; the message names ``deepspeed``.
    """
    if isinstance(config, dict):
        return copy.deepcopy(config)
    if not isinstance(config, (str, os.PathLike)):
        raise ValueError(f"deepspeed={config!r} must be a path to a JSON file or a dict")
    path = os.fspath(config)
    if not os.path.isfile(path):
        raise ValueError(f"deepspeed={path!r}: no such file (expected a DeepSpeed JSON configuration)")
    try:
        with open(path, encoding="utf-8") as f:
            loaded = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"deepspeed={path!r} is not valid JSON: {err}") from err
    if not isinstance(loaded, dict):
        raise ValueError(f"deepspeed={path!r} must hold a JSON object, not {type(loaded).__name__}")
    return loaded


def find_auto_values(config: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose value is still ``"auto"``.

    Example:
        >>> find_auto_values({"a": {"b": "auto"}, "c": 1})
        ['a.b']
    """
    found: list[str] = []
    if isinstance(config, dict):
        for key, value in config.items():
            found += find_auto_values(value, f"{prefix}{key}.")
    elif config == "auto":
        found.append(prefix[:-1])
    return found


def _fill(section: dict[str, Any], key: str, value: Any, explicit: dict[str, Any], name: str) -> None:
    """Replace ``"auto"`` by ``value``; remember an explicit value for the consistency check."""
    if section.get(key) == "auto":
        section[key] = value
    elif key in section and value is not None:
        explicit[name] = section[key]


def fill_auto_values(
    config: dict[str, Any],
    *,
    micro_batch_size: int,
    gradient_accumulation_steps: int = 1,
    world_size: int = 1,
    max_grad_norm: float | None = None,
    learning_rate: float | None = None,
    adam_beta1: float = 0.9,
    adam_beta2: float = 0.999,
    adam_epsilon: float = 1e-8,
    weight_decay: float = 0.0,
    warmup_steps: int | None = None,
    total_steps: int | None = None,
    fp16: bool = False,
    bf16: bool = False,
    hidden_size: int | None = None,
) -> dict[str, Any]:
    """Resolve HF-style ``"auto"`` values of a DeepSpeed configuration from the
    training arguments; return a new dict (the input is not changed).

    Filled: ``train_micro_batch_size_per_gpu``, ``gradient_accumulation_steps``,
    ``train_batch_size`` (micro * accumulation * world size), ``gradient_clipping``
    (``max_grad_norm``), ``optimizer.params`` (``lr``, ``betas``, ``eps``,
    ``weight_decay``), ``scheduler.params`` (``warmup_min_lr`` 0, ``warmup_max_lr``,
    ``warmup_num_steps``, ``total_num_steps``), ``fp16.enabled``, ``bf16.enabled``, and
    the ZeRO bucket sizes derived from ``hidden_size`` (dropped, so DeepSpeed's defaults
    apply, when it is unknown). The fp16 loss-scale keys (``loss_scale``,
    ``initial_scale_power``, ``loss_scale_window``, ``hysteresis``, ``min_loss_scale``)
    have no training argument: ``"auto"`` there is dropped, so DeepSpeed's dynamic loss
    scaling runs with its defaults. A missing batch-size key is added.

    Raises:
        ValueError: when explicit values disagree with the arguments (batch sizes,
            accumulation, fp16/bf16 both on), or an ``"auto"`` value is left that cannot
            be resolved (e.g. ``total_num_steps`` without ``total_steps``); the message
            names the key.

    Example:
        >>> cfg = fill_auto_values({"train_batch_size": "auto", "gradient_clipping": "auto"},
        ...                        micro_batch_size=4, gradient_accumulation_steps=2, world_size=2,
        ...                        max_grad_norm=1.0)
        >>> cfg["train_batch_size"], cfg["train_micro_batch_size_per_gpu"], cfg["gradient_clipping"]
        (16, 4, 1.0)
    """
    cfg = copy.deepcopy(config)
    explicit: dict[str, Any] = {}
    for key, value in (("train_micro_batch_size_per_gpu", micro_batch_size),
                       ("gradient_accumulation_steps", gradient_accumulation_steps)):
        if cfg.get(key, "auto") == "auto":
            cfg[key] = value
        elif cfg[key] != value:
            raise ValueError(
                f"deepspeed config: {key}={cfg[key]!r} disagrees with the training arguments ({value}); "
                f'set it to "auto" or to {value}'
            )
    expected = micro_batch_size * gradient_accumulation_steps * world_size
    if cfg.get("train_batch_size", "auto") == "auto":
        cfg["train_batch_size"] = expected
    elif cfg["train_batch_size"] != expected:
        raise ValueError(
            f"deepspeed config: train_batch_size={cfg['train_batch_size']!r} but "
            f"train_micro_batch_size_per_gpu ({micro_batch_size}) * gradient_accumulation_steps "
            f"({gradient_accumulation_steps}) * world size ({world_size}) = {expected}; "
            f'set it to "auto" or to {expected}'
        )
    if cfg.get("gradient_clipping") == "auto":
        cfg["gradient_clipping"] = float(max_grad_norm) if max_grad_norm else 0.0

    optimizer = cfg.get("optimizer")
    if isinstance(optimizer, dict) and isinstance(optimizer.get("params"), dict):
        params = optimizer["params"]
        for key, value in (("lr", learning_rate), ("betas", [adam_beta1, adam_beta2]), ("eps", adam_epsilon),
                           ("weight_decay", weight_decay)):
            _fill(params, key, value, explicit, f"optimizer.params.{key}")
    scheduler = cfg.get("scheduler")
    if isinstance(scheduler, dict) and isinstance(scheduler.get("params"), dict):
        params = scheduler["params"]
        for key, value in (("warmup_min_lr", 0), ("warmup_max_lr", learning_rate),
                           ("warmup_num_steps", warmup_steps), ("total_num_steps", total_steps)):
            if params.get(key) == "auto" and value is not None:
                params[key] = value
    for name, flag in (("fp16", fp16), ("bf16", bf16)):
        section = cfg.get(name)
        if isinstance(section, dict) and section.get("enabled") == "auto":
            section["enabled"] = bool(flag)
    if isinstance(cfg.get("fp16"), dict):
        for key in _LOSS_SCALE_KEYS:
            if cfg["fp16"].get(key) == "auto":
                del cfg["fp16"][key]
    zero = cfg.get("zero_optimization")
    if isinstance(zero, dict):
        for key, rule in _HIDDEN_SIZE_KEYS.items():
            if zero.get(key) == "auto":
                if hidden_size:
                    zero[key] = rule(int(hidden_size))
                else:
                    del zero[key]
                    logger.info("deepspeed config: zero_optimization.%s='auto' without a known hidden size: "
                                "DeepSpeed's default is used", key)

    fp16_on = isinstance(cfg.get("fp16"), dict) and cfg["fp16"].get("enabled") is True
    bf16_on = isinstance(cfg.get("bf16"), dict) and cfg["bf16"].get("enabled") is True
    if fp16_on and bf16_on:
        raise ValueError("deepspeed config: fp16.enabled and bf16.enabled are both true; enable at most one")
    if (fp16 and bf16_on) or (bf16 and fp16_on):
        raise ValueError(
            f"deepspeed config: {'bf16' if bf16_on else 'fp16'}.enabled=true disagrees with the training "
            f"arguments (fp16={fp16}, bf16={bf16}); set it to \"auto\""
        )
    left = find_auto_values(cfg)
    if left:
        raise ValueError(
            f"deepspeed config: \"auto\" could not be resolved for {', '.join(left)}; give explicit values "
            "(scheduler total_num_steps / warmup_num_steps need the number of training steps)"
        )
    return cfg


class DeepSpeedStrategy(DDPStrategy):
    """Data parallel training with DeepSpeed's ZeRO (stage 0-3, optional CPU offload).

    Owns: the resolved DeepSpeed configuration, the `DeepSpeedEngine` built by
    `setup` (model, ZeRO optimizer, scheduler), the process group (DeepSpeed's
    ``init_distributed``) and the collectives (inherited from `DDPStrategy`).

    Args:
        config: the DeepSpeed configuration, a JSON path or a dict (``"auto"`` allowed).
        device: the device; None: ``cuda:<local rank>`` when CUDA is available, else CPU.
        precision: kept for the interface; fp16/bf16 come from the configuration
            (the engine converts the model), so the forward pass runs without autocast.
        auto_values: keyword arguments of `fill_auto_values` (batch sizes, lr, ...);
            ``world_size`` defaults to this job's.
        env: the position of this process; read from the launcher's variables by default.

    Raises:
        ValueError: for a bad configuration (see `load_deepspeed_config`).
    """

    is_distributed = True
    handles_clipping = True
    handles_scheduler = True
    saves_own_checkpoint = True
    wraps_optimizer = True

    def __init__(
        self,
        config: str | os.PathLike | dict[str, Any],
        device: str | torch.device | None = None,
        precision: Precision | None = None,
        *,
        auto_values: dict[str, Any] | None = None,
        env: DistributedEnv | None = None,
        backend: str | None = None,
    ) -> None:
        super().__init__(device, precision, env=env, backend=backend)
        self.raw_config = load_deepspeed_config(config)
        self.auto_values = dict(auto_values or {})
        self.config: dict[str, Any] | None = None
        self.engine: Any = None
        self.lr_scheduler: Any = None

    # set-up ---------------------------------------------------------------
    def setup_environment(self) -> None:
        """Start the process group through ``deepspeed.init_distributed`` (gloo on CPU)."""
        deepspeed = _import_deepspeed()
        if dist.is_initialized():
            return
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        backend = self.backend or ("nccl" if self.device.type == "cuda" else "gloo")
        if self.env.world_size == 1 and not os.environ.get("MASTER_ADDR"):
            # one process without a launcher: DeepSpeed reads the launcher's variables, so provide them
            import socket

            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"),
                                ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(port))):
                os.environ.setdefault(name, value)
            logger.info("DeepSpeedStrategy: one process without a launcher; set RANK/LOCAL_RANK/WORLD_SIZE/"
                        "MASTER_ADDR/MASTER_PORT for DeepSpeed (port %s)", os.environ["MASTER_PORT"])
        deepspeed.init_distributed(dist_backend=backend)
        destroy_process_group_at_exit()
        self._owns_group = True

    def resolve_config(self, total_steps: int | None = None) -> dict[str, Any]:
        """The configuration with every ``"auto"`` resolved (see `fill_auto_values`)."""
        values = {"micro_batch_size": 1, "world_size": self.world_size, **self.auto_values}
        warmup_ratio = values.pop("warmup_ratio", 0) or 0
        if total_steps is not None:
            values["total_steps"] = total_steps
            if values.get("warmup_steps") is None:
                values["warmup_steps"] = math.ceil(warmup_ratio * total_steps)
        self.config = fill_auto_values(self.raw_config, **values)
        return self.config

    @property
    def builds_optimizer(self) -> bool:
        """True when the configuration names DeepSpeed's own ``optimizer``."""
        return "optimizer" in self.raw_config

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the engine trains the model in."""
        cfg = self.config or {}
        if cfg.get("bf16", {}).get("enabled"):
            return torch.bfloat16
        if cfg.get("fp16", {}).get("enabled"):
            return torch.float16
        return torch.float32

    def grad_accumulators(self, model: nn.Module) -> list[Any]:
        """None held: the DeepSpeed engine partitions the parameters and hooks their gradients itself."""
        return []

    def setup_module(self, model: nn.Module) -> nn.Module:
        """The engine once `setup` built it (DeepSpeed wraps model and optimizer together)."""
        if self.engine is not None and (model is self.engine or model is self.engine.module):
            return self.engine
        return model

    def setup(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        lr_scheduler: Any = None,
        total_steps: int | None = None,
    ) -> tuple[nn.Module, Any]:
        """Build the `DeepSpeedEngine`: ``deepspeed.initialize(model=, optimizer=, lr_scheduler=, config=)``.

        When the configuration names an ``optimizer`` (or ``scheduler``), DeepSpeed's is
        used and the given one is ignored (with a warning); else the torch optimizer and
        scheduler are handed to the engine, which steps them. ``lr_scheduler`` may be a
        callable ``optimizer -> scheduler`` (needed with the config's optimizer).

        Returns:
            ``(engine, engine_optimizer)``; the engine's scheduler is ``self.lr_scheduler``.
        """
        deepspeed = _import_deepspeed()
        if self.engine is not None and (model is self.engine or model is self.engine.module):
            return self.engine, self.engine.optimizer
        if not dist.is_initialized():
            self.setup_environment()
        config = self.resolve_config(total_steps)
        if "optimizer" in config and optimizer is not None:
            logger.warning("DeepSpeedStrategy: the configuration names an optimizer; the one passed is not used")
            optimizer = None
        if "optimizer" in config and lr_scheduler is not None and not callable(lr_scheduler) \
                and "scheduler" not in config:
            raise ValueError(
                "DeepSpeedStrategy.setup: the config names an optimizer, so a scheduler built on another optimizer "
                "cannot drive it; pass lr_scheduler as a callable (optimizer -> scheduler) or name a 'scheduler'"
            )
        if "scheduler" in config and lr_scheduler is not None:
            logger.warning("DeepSpeedStrategy: the configuration names a scheduler; the one passed is not used")
            lr_scheduler = None
        if optimizer is None and "optimizer" not in config:
            raise ValueError("DeepSpeedStrategy.setup: pass an optimizer or name one in the config ('optimizer')")
        if optimizer is not None:  # a torch optimizer under ZeRO: allowed, as the HF integration does
            config.setdefault("zero_allow_untested_optimizer", True)
        engine, ds_optimizer, _, ds_scheduler = deepspeed.initialize(
            model=model.to(self.device), optimizer=optimizer, lr_scheduler=lr_scheduler,
            model_parameters=[p for p in model.parameters() if p.requires_grad] if optimizer is None else None,
            config=config,
        )
        self.engine, self.lr_scheduler = engine, ds_scheduler
        logger.info("DeepSpeed engine ready: ZeRO stage %d, dtype %s, world size %d",
                    engine.zero_optimization_stage(), self.dtype, self.world_size)
        return engine, ds_optimizer

    def setup_dataloader(self, dataloader: Iterable) -> Iterable:
        """Shard the loader across ranks like `DDPStrategy`."""
        return super().setup_dataloader(dataloader)

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The user's module inside the engine."""
        return getattr(model, "module", model)

    def batch_to_device(self, batch: Any) -> Any:
        """Move a batch to the device; floating tensors take the engine's dtype."""
        batch = super().batch_to_device(batch)
        dtype = self.dtype
        if dtype == torch.float32:
            return batch

        def cast(t: Any) -> Any:
            return t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t

        return _map_tensors(batch, cast)

    # step ------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        """No autocast: the engine holds the model in its dtype."""
        return contextlib.nullcontext()

    def _engine(self) -> Any:
        if self.engine is None:
            raise RuntimeError("DeepSpeedStrategy: call setup(model, optimizer) first")
        return self.engine

    def backward(self, loss: torch.Tensor) -> None:
        """``engine.backward`` (loss scaling for fp16); the loop already divided the loss
        for accumulation, so DeepSpeed does not divide again."""
        self._engine().backward(loss, scale_wrt_gas=False)

    def no_backward_sync(self, model: nn.Module) -> contextlib.AbstractContextManager:
        """Marks a non-final micro-batch of an accumulation window."""
        engine = self._engine()

        @contextlib.contextmanager
        def boundary() -> Any:
            engine.set_gradient_accumulation_boundary(False)
            try:
                yield
            finally:
                engine.set_gradient_accumulation_boundary(True)

        return boundary()

    def clip_grad_norm(self, model: nn.Module, optimizer: Any, max_norm: float) -> torch.Tensor:
        """Clipping is the engine's (``gradient_clipping``); returns its last global norm."""
        norm = self._engine().get_global_grad_norm()
        return torch.tensor(float(norm) if norm is not None else float("nan"))

    def optimizer_step(self, optimizer: Any) -> bool:
        """``engine.step()``: clip, step the optimizer and scheduler, zero the gradients.

        Returns False when fp16 dynamic loss scaling found an inf/NaN gradient
        (``engine.was_step_applied()``): the engine then left the weights alone, did not
        step its scheduler, lowered the loss scale and counted ``engine.skipped_steps``.
        """
        engine = self._engine()
        engine.set_gradient_accumulation_boundary(True)
        engine.step()
        return bool(engine.was_step_applied())

    @property
    def loss_scale(self) -> float | None:
        """The engine's current fp16 loss scale (None without fp16 or before `setup`)."""
        if self.engine is None or self.dtype != torch.float16:
            return None
        scale = getattr(self.engine.optimizer, "loss_scale", None)
        return float(scale) if scale is not None else None

    # state -----------------------------------------------------------------
    def model_state_dict(self, model: nn.Module, full: bool = True) -> dict[str, torch.Tensor]:
        """The full weights on every rank (ZeRO-3 parameters are gathered), as fp32 copies
        (with fp16/bf16 training: the engine's half weights, cast up)."""
        module = self.unwrap(model)
        engine = self.engine
        if engine is not None and engine.zero_optimization_stage() == 3:
            deepspeed = _import_deepspeed()
            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                return {k: v.detach().clone().float() if v.is_floating_point() else v.detach().clone()
                        for k, v in module.state_dict().items()}
        return {k: v.detach().clone().float() if v.is_floating_point() else v.detach().clone()
                for k, v in module.state_dict().items()}

    def load_model_state_dict(self, model: nn.Module, state: dict[str, torch.Tensor], strict: bool = True):
        """Load full weights, before `setup` or into the engine at any ZeRO stage (e.g. for
        ``load_best_model_at_end``). Every process calls it with the same weights.

        With ZeRO-3 the partitioned parameters are gathered, loaded on rank 0 and
        re-partitioned from it (``deepspeed.zero.GatheredParameters(modifier_rank=0)``).
        With an engine, the optimizer's fp32 master copies are then refreshed from the
        loaded weights (``refresh_fp32_params``), so a later step starts from them; the
        optimizer's moments are kept (use `load_checkpoint` to restore those too).
        """
        module = self.unwrap(model)
        engine = self.engine
        if engine is None:
            return module.load_state_dict(state, strict=strict)
        if engine.zero_optimization_stage() == 3:
            deepspeed = _import_deepspeed()
            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=0):
                result = module.load_state_dict(state, strict=strict)
        else:
            result = module.load_state_dict(state, strict=strict)
        refresh = getattr(engine.optimizer, "refresh_fp32_params", None)
        if callable(refresh):
            refresh()
        return result

    def optimizer_state_dict(self, optimizer: Any) -> dict[str, Any]:
        """Not available: DeepSpeed keeps partitioned optimizer state; use `save_checkpoint`."""
        raise NotImplementedError("DeepSpeedStrategy: optimizer state is saved by save_checkpoint(folder)")

    def load_optimizer_state_dict(self, optimizer: Any, state: dict[str, Any]) -> None:
        """Not available: use `load_checkpoint`."""
        raise NotImplementedError("DeepSpeedStrategy: optimizer state is restored by load_checkpoint(folder)")

    def save_checkpoint(self, folder: str, tag: str = "deepspeed", client_state: dict | None = None) -> None:
        """``engine.save_checkpoint(folder, tag)`` on every rank: DeepSpeed's own format
        (model, partitioned optimizer and scheduler states, a ``zero_to_fp32.py`` script)."""
        self._engine().save_checkpoint(folder, tag=tag, client_state=client_state or {})

    def load_checkpoint(self, folder: str, tag: str = "deepspeed") -> dict[str, Any]:
        """``engine.load_checkpoint``: weights, optimizer and scheduler; returns the client state.

        Raises:
            FileNotFoundError: when ``folder`` holds no DeepSpeed checkpoint ``tag``.
        """
        if not os.path.isdir(os.path.join(folder, tag)):
            raise FileNotFoundError(f"DeepSpeedStrategy.load_checkpoint: no DeepSpeed checkpoint {tag!r} in {folder}")
        path, client = self._engine().load_checkpoint(folder, tag=tag)
        if path is None:
            raise FileNotFoundError(f"DeepSpeedStrategy.load_checkpoint: could not load {folder}/{tag}")
        return client or {}

    def export_weights(self, model: nn.Module, path: str) -> None:
        """Write the full weights (fp32) to a safetensors file from rank 0."""
        state = self.model_state_dict(model)
        if self.is_global_zero:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state.items()}, path)
        self.barrier()

    def teardown(self) -> None:
        """Forget the engine; destroy the process group if this strategy started it."""
        self.engine = None
        super().teardown()

    def __repr__(self) -> str:
        stage = (self.config or self.raw_config).get("zero_optimization", {}).get("stage", 0)
        return f"DeepSpeedStrategy(zero_stage={stage}, device={str(self.device)!r}, world_size={self.world_size})"


def _map_tensors(data: Any, fn: Any) -> Any:
    if isinstance(data, torch.Tensor):
        return fn(data)
    if isinstance(data, dict):
        return type(data)((k, _map_tensors(v, fn)) for k, v in data.items())
    if isinstance(data, (list, tuple)):
        return type(data)(_map_tensors(v, fn) for v in data)
    return data
