"""Turns `TrainingArguments` into parts: the one place where argument names meet classes.

Priority rules: an explicit instance beats a name; an explicit name beats automatic
detection. Every check happens here, once, before anything heavy starts.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

from toolkit.precision.apex import ApexPrecision
from toolkit.precision.base import MixedPrecision, Precision
from toolkit.precision.tf32 import set_tf32
from toolkit.strategies.base import Strategy, select_device
from toolkit.strategies.registry import get_strategy_class
from toolkit.strategies.xla import xla_grad_scaler, xla_requested
from toolkit.utils.env import DistributedEnv, detect_distributed_env

__all__ = ["Parts", "build_parts", "precision_from_args", "strategy_from_args"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Parts:
    """The parts a training run is built from."""

    strategy: Strategy
    precision: Precision


def _device_from_args(args: Any) -> torch.device:
    if getattr(args, "use_cpu", False) or getattr(args, "no_cuda", False):
        return torch.device("cpu")
    if getattr(args, "use_mps_device", False):
        return select_device("mps")
    return select_device(None)


def precision_from_args(args: Any, device: torch.device) -> Precision:
    """`MixedPrecision` for ``fp16``/``bf16`` (`ApexPrecision` for fp16 with
    ``half_precision_backend="apex"``, at ``fp16_opt_level``), else fp32.

    Raises:
        ValueError: when ``half_precision_backend`` does not fit the device or the format.
        ImportError: for ``half_precision_backend="apex"`` without apex installed.
    """
    backend = str(getattr(args, "half_precision_backend", "auto"))
    if not (args.fp16 or args.bf16):
        return Precision()
    if backend == "apex":
        if args.bf16:
            raise ValueError("half_precision_backend='apex' supports fp16 only; for bf16=True use 'auto'")
        return ApexPrecision(getattr(args, "fp16_opt_level", "O1"))
    if backend == "cuda_amp" and device.type != "cuda":
        raise ValueError(f"half_precision_backend='cuda_amp' needs a CUDA device, but training runs on {device}")
    if backend == "cpu_amp" and device.type != "cpu":
        raise ValueError(f"half_precision_backend='cpu_amp' needs the CPU, but training runs on {device}")
    if args.bf16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"bf16=True: the GPU {device} does not support bfloat16; use fp16=True instead")
    scaler = xla_grad_scaler() if args.fp16 and device.type == "xla" else None
    return MixedPrecision("fp16" if args.fp16 else "bf16", device_type=device.type, scaler=scaler)


def _ddp_device(args: Any, env: DistributedEnv) -> torch.device:
    """``cuda:<local rank>`` when CUDA is available and allowed, else the CPU."""
    if getattr(args, "use_cpu", False) or getattr(args, "no_cuda", False) or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", env.local_rank % max(1, torch.cuda.device_count()))


def _ddp_from_args(cls: type[Strategy], args: Any, env: DistributedEnv) -> Strategy:
    device = _ddp_device(args, env)
    return cls(
        device, precision=precision_from_args(args, device), env=env,
        backend=getattr(args, "ddp_backend", None), timeout=getattr(args, "ddp_timeout", None),
        find_unused_parameters=getattr(args, "ddp_find_unused_parameters", None),
        bucket_cap_mb=getattr(args, "ddp_bucket_cap_mb", None),
        broadcast_buffers=getattr(args, "ddp_broadcast_buffers", None),
    )


def _single_device_from_args(cls: type[Strategy], args: Any, env: DistributedEnv) -> Strategy:
    device = _device_from_args(args)
    return cls(device, precision=precision_from_args(args, device))


def _fsdp_from_args(cls: type[Strategy], args: Any, env: DistributedEnv) -> Strategy:
    from toolkit.strategies.fsdp import fsdp_plan, load_fsdp_config

    config = load_fsdp_config(getattr(args, "fsdp_config", None))
    if "state_dict_type" not in config and os.environ.get("FSDP_STATE_DICT_TYPE"):
        config["state_dict_type"] = os.environ["FSDP_STATE_DICT_TYPE"]  # accelerate launch --fsdp_state_dict_type
    plan = fsdp_plan(
        getattr(args, "fsdp", None) or ["full_shard"], config,
        min_num_params=getattr(args, "fsdp_min_num_params", 0) or 0,
        transformer_layer_cls_to_wrap=getattr(args, "fsdp_transformer_layer_cls_to_wrap", None),
    )
    device = _ddp_device(args, env)
    return cls(
        device, precision=precision_from_args(args, device), env=env, plan=plan,
        backend=getattr(args, "ddp_backend", None), timeout=getattr(args, "ddp_timeout", None),
        find_unused_parameters=getattr(args, "ddp_find_unused_parameters", None),
        bucket_cap_mb=getattr(args, "ddp_bucket_cap_mb", None),
        broadcast_buffers=getattr(args, "ddp_broadcast_buffers", None),
    )


def _deepspeed_from_args(cls: type[Strategy], args: Any, env: DistributedEnv) -> Strategy:
    """fp16/bf16 belong to the DeepSpeed config ("auto" follows the flags): no autocast precision."""
    if getattr(args, "deepspeed", None) is None:
        raise ValueError("strategy='deepspeed' needs a DeepSpeed configuration: set deepspeed= (a JSON path or a dict)")
    auto = {
        "micro_batch_size": args.per_device_train_batch_size, "gradient_accumulation_steps":
        args.gradient_accumulation_steps, "max_grad_norm": args.max_grad_norm, "learning_rate": args.learning_rate,
        "adam_beta1": args.adam_beta1, "adam_beta2": args.adam_beta2, "adam_epsilon": args.adam_epsilon,
        "weight_decay": args.weight_decay, "warmup_steps": args.warmup_steps or None,
        "warmup_ratio": args.warmup_ratio, "fp16": bool(args.fp16), "bf16": bool(args.bf16),
    }
    return cls(args.deepspeed, _ddp_device(args, env), env=env, auto_values=auto,
               backend=getattr(args, "ddp_backend", None))


def _xla_from_args(cls: type[Strategy], args: Any, env: DistributedEnv) -> Strategy:
    """The device comes from torch_xla; the precision follows it (fp16 gets torch_xla's scaler)."""
    strategy = cls(num_cores=getattr(args, "tpu_num_cores", None))
    strategy.precision = precision_from_args(args, strategy.device)
    return strategy


#: How the arguments become constructor parameters, per registered strategy name.
_STRATEGY_FROM_ARGS = {"ddp": _ddp_from_args, "single_device": _single_device_from_args, "fsdp": _fsdp_from_args,
                       "deepspeed": _deepspeed_from_args, "xla": _xla_from_args}


def strategy_from_args(args: Any, strategy: Strategy | str | None = None) -> Strategy:
    """The strategy for the launcher environment and the arguments.

    Priority: an instance is used as it is; else a registered name
    (`toolkit.strategies.registry`); else automatic: ``"ddp"`` when the launcher started
    several processes (``WORLD_SIZE > 1``), ``"single_device"`` otherwise. The process
    group is not started here: the facade calls `Strategy.setup_environment`.

    Raises:
        ValueError: for an unknown name, or a one-process strategy under a
            multi-process launch.
    """
    if isinstance(strategy, Strategy):
        return strategy
    env = getattr(args, "distributed_env", None)
    if not isinstance(env, DistributedEnv):
        env = detect_distributed_env()
    if getattr(args, "fsdp", None) and getattr(args, "deepspeed", None) is not None:
        raise ValueError("fsdp and deepspeed are both set; choose one of them")
    if strategy is None and getattr(args, "fsdp", None):
        strategy = "fsdp"  # the fsdp options select FSDPStrategy, at any world size
    if strategy is None and getattr(args, "deepspeed", None) is not None:
        strategy = "deepspeed"  # a DeepSpeed config selects DeepSpeedStrategy, at any world size
    name = strategy if strategy is not None else ("ddp" if env.world_size > 1 else "single_device")
    cls = get_strategy_class(name)
    if env.world_size > 1 and not cls.is_distributed:
        raise ValueError(
            f"strategy={name!r} runs one process, but the launcher started {env.world_size} "
            "(WORLD_SIZE); use strategy='ddp' or launch a single process"
        )
    return _STRATEGY_FROM_ARGS.get(name, _single_device_from_args)(cls, args, env)


def build_parts(args: Any, strategy: Strategy | str | None = None) -> Parts:
    """Build the strategy and precision for ``args`` (``strategy``: see `strategy_from_args`).

    XLA (the registered ``"xla"`` strategy) is chosen first when `xla_requested` says so;
    then ``tf32`` is applied (CUDA only).

    Raises:
        ValueError: for apex with a multi-process strategy (apex must patch the model
            before any distributed wrapper; use half_precision_backend='auto').
    """
    if strategy is None and xla_requested(args):
        strategy = "xla"
    strategy = strategy_from_args(args, strategy)
    if isinstance(strategy.precision, ApexPrecision) and strategy.is_distributed:
        raise ValueError(
            "half_precision_backend='apex' is supported in single-process training only; "
            "use half_precision_backend='auto' (torch autocast) with several processes"
        )
    set_tf32(args.tf32, strategy.device)
    return Parts(strategy=strategy, precision=strategy.precision)
