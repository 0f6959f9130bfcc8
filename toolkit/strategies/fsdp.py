"""`FSDPStrategy`: fully sharded data parallel on FSDP2 (`torch.distributed.fsdp.fully_shard`).

Parameters, gradients and optimizer states are sharded across the processes (DTensors on
a 1-D device mesh). The HF ``fsdp`` options and ``fsdp_config`` keys are turned into an
`FSDPPlan` by the pure function `fsdp_plan` (no process group needed), then applied by
the strategy:

- ``full_shard`` -> ``reshard_after_forward=True``; ``shard_grad_op`` ->
  ``reshard_after_forward=False``; ``no_shard`` -> plain replication with
  `DistributedDataParallel` (FSDP2 has no "shard nothing" mode).
- ``offload`` -> ``CPUOffloadPolicy`` (pinned memory only on CUDA).
- ``auto_wrap`` / ``min_num_params`` / ``transformer_layer_cls_to_wrap`` -> the chosen
  submodules are `fully_shard`-ed first, then the root.
- bf16 / fp16 -> ``MixedPrecisionPolicy`` (fp32 gradient reduction); fp16 uses a
  ``ShardedGradScaler``.

Checkpoints come in the two forms of ``fsdp_config["state_dict_type"]`` (accelerate's
spelling; ``accelerate launch --fsdp_state_dict_type`` sets it through the environment):

- ``FULL_STATE_DICT`` (default): the model and the optimizer state are gathered in full
  to rank 0 (CPU) and saved in the single-process format, the optimizer state keyed by
  parameter index like ``torch.optim.Optimizer.state_dict()``.
- ``SHARDED_STATE_DICT``: nothing is gathered; every process writes its own shards with
  `torch.distributed.checkpoint` (DCP) into ``pytorch_model_fsdp_0/`` and
  ``optimizer_0/`` inside the checkpoint folder (`save_sharded_checkpoint`).

Both resume under any number of processes (DCP reshards on load), with or without FSDP
(`load_sharded_checkpoint`). The model saved by ``save_model`` is gathered in full
(``model.safetensors``) whatever the checkpoint form, unless ``final_state_dict_type``
(a toolkit key of ``fsdp_config``) is ``SHARDED_STATE_DICT``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from toolkit.optim.optimizers import fit_param_groups
from toolkit.precision.base import MixedPrecision, Precision
from toolkit.strategies.ddp import DDPStrategy

__all__ = [
    "FSDPStrategy", "FSDPPlan", "fsdp_plan", "load_fsdp_config", "modules_to_wrap", "STATE_DICT_TYPES",
    "SHARDED_MODEL_DIR", "SHARDED_OPTIMIZER_DIR", "save_sharded_checkpoint", "load_sharded_checkpoint",
    "is_sharded_checkpoint",
]

logger = logging.getLogger(__name__)

_SHARDING = {"full_shard": True, "shard_grad_op": False}
_UNSUPPORTED = ("hybrid_shard", "hybrid_shard_zero2")
_BACKWARD_PREFETCH = ("backward_pre", "backward_post", "no_prefetch")
_KNOWN_KEYS = {
    "min_num_params", "transformer_layer_cls_to_wrap", "backward_prefetch", "forward_prefetch",
    "limit_all_gathers", "activation_checkpointing", "cpu_ram_efficient_loading", "sync_module_states",
    "use_orig_params", "xla", "xla_fsdp_settings", "xla_fsdp_grad_ckpt", "xla_fsdp_v2", "state_dict_type",
    "final_state_dict_type",
}
#: ``fsdp_config["state_dict_type"]`` values (accelerate's names).
STATE_DICT_TYPES = ("FULL_STATE_DICT", "SHARDED_STATE_DICT")
#: The folders of a sharded checkpoint (accelerate's names for the first model and optimizer).
SHARDED_MODEL_DIR = "pytorch_model_fsdp_0"
SHARDED_OPTIMIZER_DIR = "optimizer_0"


@dataclass(frozen=True)
class FSDPPlan:
    """What `FSDPStrategy` does, decided from the HF options (see `fsdp_plan`)."""

    reshard_after_forward: bool = True
    replicate: bool = False
    offload: bool = False
    auto_wrap: bool = False
    min_num_params: int = 0
    layer_cls_to_wrap: tuple[str, ...] = ()
    forward_prefetch: bool = False
    backward_prefetch: str | None = None
    activation_checkpointing: bool = False
    sync_module_states: bool = False
    state_dict_type: str = "FULL_STATE_DICT"
    final_state_dict_type: str = "FULL_STATE_DICT"
    notes: tuple[str, ...] = field(default=(), compare=False)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _state_dict_type(config: dict[str, Any], key: str) -> str:
    raw = config.get(key, "FULL_STATE_DICT")
    value = str(getattr(raw, "name", raw)).strip().upper()
    if value in ("FULL", "SHARDED"):
        value += "_STATE_DICT"
    if value not in STATE_DICT_TYPES:
        hint = " (FSDP2 has no local state dict)" if value == "LOCAL_STATE_DICT" else ""
        raise ValueError(f"fsdp_config {key}={raw!r}{hint}; accepted: {', '.join(STATE_DICT_TYPES)}")
    return value


def load_fsdp_config(config: str | os.PathLike | dict | None) -> dict[str, Any]:
    """``fsdp_config`` as a dict with the ``fsdp_`` prefix of its keys removed.

    Args:
        config: None, a dict, or the path of a JSON file.

    Example:
        >>> load_fsdp_config({"fsdp_min_num_params": 10, "forward_prefetch": "true"})
        {'min_num_params': 10, 'forward_prefetch': 'true'}
    """
    if config is None:
        return {}
    if not isinstance(config, dict):
        with open(os.fspath(config), encoding="utf-8") as f:
            config = json.load(f)
    return {(k[len("fsdp_"):] if k.startswith("fsdp_") else k): v for k, v in config.items()}


def fsdp_plan(
    options: Any, config: dict[str, Any] | None = None, *, min_num_params: int = 0,
    transformer_layer_cls_to_wrap: str | list[str] | None = None,
) -> FSDPPlan:
    """Map the HF ``fsdp`` options and ``fsdp_config`` onto FSDP2 settings (pure).

    Args:
        options: the ``fsdp`` options (a list of names or `FSDPOption`, or a space-separated string).
        config: ``fsdp_config`` as returned by `load_fsdp_config`.
        min_num_params: the legacy ``fsdp_min_num_params`` argument (``config`` wins).
        transformer_layer_cls_to_wrap: the legacy argument of that name (``config`` wins).

    Raises:
        ValueError: for hybrid sharding, ``xla``, two sharding modes at once, an unknown
            ``backward_prefetch`` or ``state_dict_type``.

    Example:
        >>> p = fsdp_plan("shard_grad_op auto_wrap", {"transformer_layer_cls_to_wrap": "Block"})
        >>> p.reshard_after_forward, p.auto_wrap, p.layer_cls_to_wrap
        (False, True, ('Block',))
    """
    if isinstance(options, str):
        options = options.split()
    names = [str(getattr(o, "value", o)).lower() for o in (options or [])]
    config = dict(config or {})
    notes: list[str] = []
    bad = [n for n in names if n in _UNSUPPORTED]
    if bad:
        raise ValueError(f"fsdp={bad[0]!r}: hybrid sharding is not supported by FSDPStrategy yet; use 'full_shard'")
    if _truthy(config.get("xla", False)):
        raise ValueError("fsdp_config xla=True: PyTorch/XLA FSDP is not supported by FSDPStrategy")
    modes = [n for n in names if n in (*_SHARDING, "no_shard")]
    if len(modes) > 1:
        raise ValueError(f"fsdp: choose one sharding mode, got {' and '.join(modes)}")
    mode = modes[0] if modes else "full_shard"
    unknown = sorted(set(config) - _KNOWN_KEYS)
    if unknown:
        notes.append(f"fsdp_config keys {unknown} are not used by FSDPStrategy")
    layer_cls = config.get("transformer_layer_cls_to_wrap", transformer_layer_cls_to_wrap)
    if isinstance(layer_cls, str):
        layer_cls = [s.strip() for s in layer_cls.split(",") if s.strip()]
    min_params = int(config.get("min_num_params", min_num_params) or 0)
    if layer_cls and min_params:
        raise ValueError("fsdp_config: set either min_num_params or transformer_layer_cls_to_wrap, not both")
    prefetch = config.get("backward_prefetch")
    if prefetch is not None:
        prefetch = str(getattr(prefetch, "name", prefetch)).lower()
        if prefetch not in _BACKWARD_PREFETCH:
            raise ValueError(f"fsdp_config backward_prefetch={prefetch!r}; accepted: {', '.join(_BACKWARD_PREFETCH)}")
        if prefetch != "backward_pre":
            notes.append(f"backward_prefetch={prefetch!r} has no effect under FSDP2 (it always prefetches the "
                         "previous layer's all-gather in backward, like 'backward_pre')")
    if "limit_all_gathers" in config:
        notes.append("limit_all_gathers has no effect under FSDP2 (its all-gathers are always rate-limited)")
    if "use_orig_params" in config:
        notes.append("use_orig_params has no effect under FSDP2 (parameters always stay the original ones)")
    sync = _truthy(config.get("sync_module_states", False)) or _truthy(config.get("cpu_ram_efficient_loading", False))
    replicate = mode == "no_shard"
    if replicate:
        notes.append("fsdp no_shard: the model is replicated with DistributedDataParallel (FSDP2 has no no-shard mode)")
    state_dict_type = _state_dict_type(config, "state_dict_type")
    final_type = _state_dict_type(config, "final_state_dict_type")
    if replicate and "SHARDED_STATE_DICT" in (state_dict_type, final_type):
        notes.append("fsdp no_shard: nothing is sharded, so checkpoints and the saved model are full state dicts")
        state_dict_type = final_type = "FULL_STATE_DICT"
    return FSDPPlan(
        reshard_after_forward=_SHARDING.get(mode, True), replicate=replicate, offload="offload" in names,
        auto_wrap="auto_wrap" in names or bool(layer_cls) or min_params > 0, min_num_params=min_params,
        layer_cls_to_wrap=tuple(layer_cls or ()), forward_prefetch=_truthy(config.get("forward_prefetch", False)),
        backward_prefetch=prefetch,
        activation_checkpointing=_truthy(config.get("activation_checkpointing", False)),
        sync_module_states=sync, state_dict_type=state_dict_type, final_state_dict_type=final_type,
        notes=tuple(notes),
    )


def modules_to_wrap(model: nn.Module, plan: FSDPPlan) -> list[nn.Module]:
    """The submodules (never the root) to `fully_shard` before the root, in post-order.

    By class name when ``plan.layer_cls_to_wrap`` is set (or ``model._no_split_modules``
    with ``auto_wrap`` and nothing else); by size when ``plan.min_num_params`` is set: a
    module is wrapped when the parameters it holds outside already-wrapped children reach
    that number.

    Raises:
        ValueError: when a named layer class is not found in the model.
    """
    if not plan.auto_wrap:
        return []
    names = set(plan.layer_cls_to_wrap)
    if not names and not plan.min_num_params:
        names = set(getattr(model, "_no_split_modules", None) or ())
        if not names:
            logger.info("fsdp auto_wrap: no layer class or size given and the model names no _no_split_modules; "
                        "only the root is sharded")
            return []
    if names:
        found = [m for m in model.modules() if m is not model and type(m).__name__ in names]
        missing = names - {type(m).__name__ for m in found}
        if missing:
            raise ValueError(f"fsdp transformer_layer_cls_to_wrap: {sorted(missing)} not found in the model")
        return list(reversed([m for m in reversed(list(model.modules())) if m in found]))
    chosen: list[nn.Module] = []

    def visit(module: nn.Module) -> int:
        count = sum(p.numel() for p in module.parameters(recurse=False))
        for child in module.children():
            count += visit(child)
        if module is not model and count >= plan.min_num_params:
            chosen.append(module)
            return 0
        return count

    visit(model)
    return chosen


def _full(t: Any) -> Any:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _join(folder: str, name: str) -> str:
    return f"{os.fspath(folder).rstrip('/')}/{name}"


def is_sharded_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a complete sharded (DCP) model: ``pytorch_model_fsdp_0/.metadata``,
    which DCP writes last, after every process wrote its shards."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(_join(os.fspath(folder), SHARDED_MODEL_DIR))
    return bool(fs.exists(f"{path}/.metadata"))


def save_sharded_checkpoint(
    folder: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> None:
    """Write the model (and the optimizer) state with `torch.distributed.checkpoint`, each
    process its own shards: ``folder/pytorch_model_fsdp_0`` and ``folder/optimizer_0``.

    A collective when a process group is running: every process calls it. ``model`` may
    be sharded (`fully_shard`) or not (then the process group's rank 0 writes each tensor).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    folder = os.fspath(folder)
    dcp.save(get_model_state_dict(model), checkpoint_id=_join(folder, SHARDED_MODEL_DIR))
    if optimizer is not None:
        dcp.save(get_optimizer_state_dict(model, optimizer), checkpoint_id=_join(folder, SHARDED_OPTIMIZER_DIR))


def load_sharded_checkpoint(
    folder: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
    strict: bool = True,
) -> None:
    """Load what `save_sharded_checkpoint` wrote into ``model`` (and ``optimizer``), at any
    number of processes: DCP reshards to the model's current layout (FSDP shards at any
    world size, or plain full tensors in one process without a process group).

    Raises:
        FileNotFoundError: ``folder`` holds no complete sharded model, or (with an
            optimizer) no sharded optimizer state.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    folder = os.fspath(folder)
    if not is_sharded_checkpoint(folder):
        raise FileNotFoundError(f"{folder} holds no complete sharded model ({SHARDED_MODEL_DIR}/.metadata is missing)")
    state = get_model_state_dict(model)
    dcp.load(state, checkpoint_id=_join(folder, SHARDED_MODEL_DIR))
    set_model_state_dict(model, state, options=StateDictOptions(strict=strict))
    if optimizer is None:
        return
    import fsspec

    fs, path = fsspec.core.url_to_fs(_join(folder, SHARDED_OPTIMIZER_DIR))
    if not fs.exists(f"{path}/.metadata"):
        raise FileNotFoundError(f"{folder} holds no sharded optimizer state ({SHARDED_OPTIMIZER_DIR}/.metadata); "
                                "was it saved with save_only_model?")
    optim_state = get_optimizer_state_dict(model, optimizer)  # initialised, so DCP knows every shape
    dcp.load(optim_state, checkpoint_id=_join(folder, SHARDED_OPTIMIZER_DIR))
    set_optimizer_state_dict(model, optimizer, optim_state)


class FSDPStrategy(DDPStrategy):
    """Fully sharded data parallel with FSDP2 ``fully_shard`` (one process per device).

    Args:
        device: the device; None picks ``cuda:<local rank>`` when CUDA is available, else the CPU.
        precision: the numeric format; bf16 / fp16 become a ``MixedPrecisionPolicy``.
        plan: what to shard and how (default: `FSDPPlan()`, full sharding of the root only).
        **kwargs: the `DDPStrategy` arguments (backend, timeout, init_method, env, ...).

    A one-process run without a launcher gets a private file rendezvous.
    """

    def __init__(self, device: str | torch.device | None = None, precision: Precision | None = None, *,
                 plan: FSDPPlan | None = None, **kwargs: Any) -> None:
        super().__init__(device, precision, **kwargs)
        self.plan = plan if plan is not None else FSDPPlan()
        for note in self.plan.notes:
            logger.info(note)
        if isinstance(self.precision, MixedPrecision) and self.precision.scaler is not None and not self.plan.replicate:
            from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

            self.precision.scaler = ShardedGradScaler(self.device.type)
        self._last_model: nn.Module | None = None

    def setup_environment(self) -> None:
        """Start the process group (a private one for a launcher-less single process)."""
        if (self.env.world_size == 1 and self.init_method is None and not dist.is_initialized()
                and not os.environ.get("MASTER_ADDR")):
            self.init_method = "file://" + os.path.join(tempfile.mkdtemp(prefix="toolkit-fsdp-"), "rendezvous")
        super().setup_environment()

    def _mp_policy(self) -> Any:
        from torch.distributed.fsdp import MixedPrecisionPolicy

        dtype = getattr(self.precision, "dtype", None)
        if isinstance(self.precision, MixedPrecision) and dtype in (torch.bfloat16, torch.float16):
            return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
        return MixedPrecisionPolicy()

    def grad_accumulators(self, model: nn.Module) -> list[Any]:
        """None held: `fully_shard` replaces the parameters by sharded ones."""
        return []

    def setup_module(self, model: nn.Module) -> nn.Module:
        """Checkpoint activations, `fully_shard` the chosen layers then the root (in place).

        Raises:
            RuntimeError: when the process group has not been started.
        """
        from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, OffloadPolicy, fully_shard

        if isinstance(model, FSDPModule):
            return model
        if self.plan.replicate:
            return super().setup_module(model)
        if not self._group_ready():
            raise RuntimeError("FSDPStrategy: call setup_environment() before setting up a model")
        from torch.distributed.device_mesh import init_device_mesh

        module = self.precision.convert_module(model.to(self.device))
        if self.plan.sync_module_states and self.world_size > 1:
            with torch.no_grad():
                for tensor in [*module.parameters(), *module.buffers()]:
                    dist.broadcast(tensor.data, src=0)
        layers = modules_to_wrap(module, self.plan)
        if self.plan.activation_checkpointing:
            from torch.distributed._composable import checkpoint

            if not layers:
                logger.warning("fsdp activation_checkpointing: no wrapped layers to checkpoint; ignored")
            for layer in layers:
                checkpoint(layer)
        mesh = init_device_mesh(self.device.type, (self.world_size,))
        offload = (CPUOffloadPolicy(pin_memory=self.device.type == "cuda") if self.plan.offload else OffloadPolicy())
        kwargs = {"mesh": mesh, "mp_policy": self._mp_policy(), "offload_policy": offload}
        for layer in layers:
            fully_shard(layer, reshard_after_forward=self.plan.reshard_after_forward, **kwargs)
        fully_shard(module, reshard_after_forward=self.plan.reshard_after_forward, **kwargs)
        if self.plan.forward_prefetch:
            for current, nxt in zip(layers, layers[1:]):
                current.set_modules_to_forward_prefetch([nxt])
        return module

    def _is_fsdp(self, model: nn.Module) -> bool:
        from torch.distributed.fsdp import FSDPModule

        return isinstance(self.unwrap(model), FSDPModule)

    def no_backward_sync(self, model: nn.Module) -> contextlib.AbstractContextManager:
        """Skip the gradient reduce-scatter (``set_requires_gradient_sync(False)``)."""
        if not self._is_fsdp(model):
            return super().no_backward_sync(model)
        return self._no_sync(self.unwrap(model))

    @staticmethod
    @contextlib.contextmanager
    def _no_sync(model: Any) -> Iterator[None]:
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)

    def clip_grad_norm(self, model: nn.Module, optimizer: torch.optim.Optimizer, max_norm: float) -> torch.Tensor:
        """Clip the global norm of the sharded gradients; return it as a full tensor."""
        return _full(super().clip_grad_norm(model, optimizer, max_norm))

    # state -------------------------------------------------------------------
    @staticmethod
    def _options(**kw: Any) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(**kw)

    def model_state_dict(self, model: nn.Module, full: bool = True) -> dict[str, torch.Tensor]:
        """Full weights gathered to rank 0 on the CPU (empty elsewhere); a collective: every
        process must call it. ``full=False``: this process's shards (DTensors)."""
        if not self._is_fsdp(model):
            return super().model_state_dict(model, full)
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        if not full:
            return get_model_state_dict(self.unwrap(model))
        return get_model_state_dict(self.unwrap(model), options=self._options(full_state_dict=True, cpu_offload=True))

    def load_model_state_dict(self, model: nn.Module, state: dict[str, torch.Tensor], strict: bool = True):
        """Load full weights (present on every process) into the sharded model."""
        if not self._is_fsdp(model):
            return super().load_model_state_dict(model, state, strict)
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        # the same key order on every process: each key is scattered by a collective
        order = {k: i for i, k in enumerate(self.unwrap(model).state_dict())}
        state = dict(sorted(state.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
        return set_model_state_dict(self.unwrap(model), state,
                                    options=self._options(full_state_dict=True, strict=strict))

    @staticmethod
    def _param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
        names = {id(p): n for n, p in model.named_parameters()}
        return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None):
        """Shard the model (`setup_module`) and remember it for checkpoints."""
        wrapped, optimizer = super().setup(model, optimizer)
        self._last_model = self.unwrap(wrapped)
        return wrapped, optimizer

    @property
    def sharded_checkpoint(self) -> bool:
        """True with ``state_dict_type=SHARDED_STATE_DICT``: checkpoints hold per-process
        DCP shards (`save_checkpoint`) instead of gathered weights and optimizer state."""
        return self.plan.state_dict_type == "SHARDED_STATE_DICT" and not self.plan.replicate

    @property
    def saves_sharded_model(self) -> bool:
        """True with ``final_state_dict_type=SHARDED_STATE_DICT``: ``save_model`` writes DCP
        shards too instead of a gathered ``model.safetensors``."""
        return self.plan.final_state_dict_type == "SHARDED_STATE_DICT" and not self.plan.replicate

    def save_checkpoint(self, folder: str, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Every process writes its shards of the model set up last (and of ``optimizer``)
        into ``folder`` (see `save_sharded_checkpoint`); a collective.

        Raises:
            RuntimeError: when no model was set up.
        """
        if self._last_model is None:
            raise RuntimeError("FSDPStrategy.save_checkpoint: set up a model first (setup(model, optimizer))")
        save_sharded_checkpoint(folder, self._last_model, optimizer)

    def load_checkpoint(
        self, folder: str, optimizer: torch.optim.Optimizer | None = None, *, strict: bool = True
    ) -> None:
        """Load a sharded checkpoint (saved at any world size) into the model set up last and
        ``optimizer``; a collective (see `load_sharded_checkpoint`).

        Raises:
            RuntimeError: when no model was set up.
            FileNotFoundError: when ``folder`` holds no sharded checkpoint.
        """
        if self._last_model is None:
            raise RuntimeError("FSDPStrategy.load_checkpoint: set up a model first (setup(model, optimizer))")
        load_sharded_checkpoint(folder, self._last_model, optimizer, strict=strict)

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The full optimizer state on rank 0 (empty elsewhere; a collective), keyed by
        parameter index like ``Optimizer.state_dict()``, so one process can load it."""
        model = getattr(self, "_last_model", None)
        if model is None or not self._is_fsdp(model):
            return super().optimizer_state_dict(optimizer)
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        full = get_optimizer_state_dict(model, optimizer, options=self._options(full_state_dict=True, cpu_offload=True))
        if not full:
            return {}
        index = {name: i for i, name in enumerate(self._param_names(model, optimizer))}
        return {
            "state": {index[name]: value for name, value in full["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in full["param_groups"]],
        }

    def load_optimizer_state_dict(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """Load an index-keyed full optimizer state (every process holds it) into the shards."""
        model = getattr(self, "_last_model", None)
        if model is None or not self._is_fsdp(model):
            return super().load_optimizer_state_dict(optimizer, state)
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        names = self._param_names(model, optimizer)
        state = fit_param_groups(state, optimizer)  # a two-group state of equal settings: joined
        by_name = {
            "state": {names[int(i)]: value for i, value in sorted(state["state"].items(), key=lambda kv: int(kv[0]))},
            "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in state["param_groups"]],
        }
        set_optimizer_state_dict(model, optimizer, by_name, options=self._options(full_state_dict=True))
        return None

    def teardown(self) -> None:
        """Forget the model; destroy the process group if this strategy started it."""
        self._last_model = None
        super().teardown()

    def __repr__(self) -> str:
        return (f"FSDPStrategy(device={str(self.device)!r}, precision={self.precision!r}, rank={self.global_rank}, "
                f"world_size={self.world_size}, plan={self.plan!r})")
