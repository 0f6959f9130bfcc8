"""Turns `TrainingArguments` into parts: the one place where argument names meet classes.

Priority rules: an explicit instance beats a name; an explicit name beats automatic
detection. Every check happens here, once, before anything heavy starts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from toolkit.precision.base import MixedPrecision, Precision
from toolkit.strategies.base import SingleDeviceStrategy, Strategy, select_device
from toolkit.utils.env import detect_distributed_env

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
    """`MixedPrecision` for ``fp16``/``bf16``, else fp32.

    Raises:
        ValueError: when ``half_precision_backend`` does not fit the device.
    """
    backend = str(getattr(args, "half_precision_backend", "auto"))
    if not (args.fp16 or args.bf16):
        return Precision()
    if backend == "cuda_amp" and device.type != "cuda":
        raise ValueError(f"half_precision_backend='cuda_amp' needs a CUDA device, but training runs on {device}")
    if backend == "cpu_amp" and device.type != "cpu":
        raise ValueError(f"half_precision_backend='cpu_amp' needs the CPU, but training runs on {device}")
    return MixedPrecision("fp16" if args.fp16 else "bf16", device_type=device.type)


def strategy_from_args(args: Any) -> Strategy:
    """The strategy for the launcher environment and the arguments.

    Raises:
        NotImplementedError: for a multi-process launch (several processes need a
            distributed strategy, which this version does not provide yet).
    """
    env = detect_distributed_env()
    if env.world_size > 1:
        raise NotImplementedError(
            f"A distributed launch was detected (WORLD_SIZE={env.world_size}); distributed strategies "
            "(DDP, FSDP, DeepSpeed) are not supported by toolkit yet. Run a single process."
        )
    device = _device_from_args(args)
    return SingleDeviceStrategy(device, precision=precision_from_args(args, device))


def build_parts(args: Any) -> Parts:
    """Build the strategy and precision for ``args``."""
    strategy = strategy_from_args(args)
    if args.tf32 is not None and strategy.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
        torch.backends.cudnn.allow_tf32 = bool(args.tf32)
    return Parts(strategy=strategy, precision=strategy.precision)
