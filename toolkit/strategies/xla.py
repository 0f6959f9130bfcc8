"""`XLAStrategy`: training on XLA devices (TPU, or any PJRT device) through ``torch_xla``.

``torch_xla`` is optional and imported when the strategy is built. XLA runs lazily:
operations are recorded into a graph that is compiled and run at a step boundary
(``xm.mark_step()``), which this strategy marks before each batch and after each
optimizer step. Gradients are summed across replicas by ``torch_xla`` itself
(``xm.reduce_gradients`` / ``xm.optimizer_step``); every collective goes through
``torch_xla`` (``all_reduce``, ``all_gather``, ``mesh_reduce``, ``rendezvous``).

The processes are started by the torch_xla launcher (``torch_xla.launch`` /
``xmp.spawn``); rank and world size come from ``torch_xla.runtime``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from toolkit.precision.base import MixedPrecision, Precision
from toolkit.strategies.base import Strategy, move_to_device

__all__ = ["XLAStrategy", "XLADeviceLoader", "xla_requested", "xla_grad_scaler"]

logger = logging.getLogger(__name__)

_MISSING = (
    "XLA training needs `torch_xla`, which is not installed. Install the torch_xla build matching your "
    "torch (see https://github.com/pytorch/xla), or train on another device."
)


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ImportError(_MISSING) from err


def xla_requested(args: Any) -> bool:
    """Whether the arguments and the environment ask for XLA.

    Explicit beats automatic: ``use_cpu`` / ``no_cuda`` never use XLA; ``tpu_num_cores``
    (set by TPU launchers) always does; otherwise XLA is used when ``torch_xla`` is
    installed and ``PJRT_DEVICE`` names its device (a torch_xla install alone does not
    take a CUDA machine away from CUDA).
    """
    if getattr(args, "use_cpu", False) or getattr(args, "no_cuda", False):
        return False
    if getattr(args, "tpu_num_cores", None):
        return True
    return bool(os.environ.get("PJRT_DEVICE")) and _installed()


def _installed() -> bool:
    if sys.modules.get("torch_xla") is not None:
        return True
    try:
        return importlib.util.find_spec("torch_xla") is not None
    except (ImportError, ValueError):
        return False


def xla_grad_scaler() -> Any:
    """The fp16 grad scaler for XLA devices (``torch_xla.amp.GradScaler``)."""
    return _import("torch_xla.amp").GradScaler()


class XLAStrategy(Strategy):
    """One process per XLA device; gradients reduced by ``torch_xla``.

    Args:
        device: an explicit XLA device, or None for this process's (``xm.xla_device()``).
        precision: the numeric format (bf16 autocast is the usual choice on TPU).
        num_cores: the expected number of devices (``tpu_num_cores``), checked
            against the runtime's world size.

    Raises:
        ImportError: when ``torch_xla`` is not installed.
    """

    def __init__(
        self, device: str | torch.device | None = None, precision: Precision | None = None,
        num_cores: int | None = None,
    ) -> None:
        self.xm = _import("torch_xla.core.xla_model")
        self._runtime = _optional("torch_xla.runtime")
        self.device = torch.device(device if device is not None else self.xm.xla_device())
        self.precision = precision if precision is not None else Precision()
        self._grads_reduced = False
        if num_cores is not None and num_cores != self.world_size:
            logger.warning(
                "tpu_num_cores=%s but the XLA runtime reports %s processes; training uses %s.",
                num_cores, self.world_size, self.world_size,
            )

    # topology -------------------------------------------------------------
    def _ask(self, runtime_name: str, xm_name: str, default: int) -> int:
        fn = getattr(self._runtime, runtime_name, None) or getattr(self.xm, xm_name, None)
        return int(fn()) if fn is not None else default

    @property
    def world_size(self) -> int:
        return self._ask("world_size", "xrt_world_size", 1)

    @property
    def global_rank(self) -> int:
        return self._ask("global_ordinal", "get_ordinal", 0)

    @property
    def local_rank(self) -> int:
        return self._ask("local_ordinal", "get_local_ordinal", 0)

    @property
    def is_distributed(self) -> bool:  # type: ignore[override]
        return self.world_size > 1

    # set-up ---------------------------------------------------------------
    def setup_dataloader(self, dataloader: Iterable) -> Iterable:
        """Wrap in ``MpDeviceLoader``: batches are moved to the device in the background
        and a step is marked at each batch. The result still shows the wrapped loader's
        attributes (``sampler``, ``batch_size``, ``dataset``, ``len``), so the training
        loop can position a resumable sampler; wrapping twice returns the same object."""
        if isinstance(dataloader, XLADeviceLoader):
            return dataloader
        loader_module = _import("torch_xla.distributed.parallel_loader")
        return XLADeviceLoader(dataloader, loader_module.MpDeviceLoader(dataloader, self.device))

    def grad_accumulators(self, model: nn.Module) -> list[Any]:
        """None held: XLA traces the parameters' graph lazily."""
        return []

    def batch_to_device(self, batch: Any) -> Any:
        """Mark the step boundary (as ``MpDeviceLoader`` does), then move the batch."""
        self.xm.mark_step()
        return super().batch_to_device(batch)

    # step ------------------------------------------------------------------
    def _reduce_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        if not self._grads_reduced:
            self.xm.reduce_gradients(optimizer)
            self._grads_reduced = True

    def clip_grad_norm(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, max_norm: float
    ) -> torch.Tensor:
        """Sum the gradients across replicas first, so every replica clips the same norm."""
        self._reduce_gradients(optimizer)
        return super().clip_grad_norm(model, optimizer, max_norm)

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> bool:
        """Reduce gradients and step (``xm.optimizer_step``, or the precision's scaler step)."""
        plain_step = type(self.precision).step is Precision.step or (
            isinstance(self.precision, MixedPrecision) and self.precision.scaler is None
        )
        if self._grads_reduced or not plain_step:
            self._reduce_gradients(optimizer)
            stepped = self.precision.step(optimizer)
        else:
            self.xm.optimizer_step(optimizer)
            stepped = True
        self._grads_reduced = False
        self.xm.mark_step()
        return stepped

    # collectives ----------------------------------------------------------
    def reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
        if op not in ("sum", "mean"):
            raise ValueError(f"op={op!r} is not supported; accepted: 'sum', 'mean'")
        scale = 1.0 / self.world_size if op == "mean" else 1.0
        return self.xm.all_reduce(self.xm.REDUCE_SUM, tensor, scale=scale)

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.xm.all_gather(tensor.unsqueeze(0), dim=0)

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        mine = (self.global_rank, obj)
        return self.xm.mesh_reduce("toolkit_broadcast", mine, lambda items: next(o for r, o in items if r == src))

    def barrier(self, name: str | None = None) -> None:
        self.xm.rendezvous(name or "toolkit_barrier")

    # state ------------------------------------------------------------------
    def model_state_dict(self, model: nn.Module, full: bool = True) -> dict[str, torch.Tensor]:
        """The weights on the CPU (after running any pending graph)."""
        self.xm.mark_step()
        return move_to_device(self.unwrap(model).state_dict(), torch.device("cpu"))

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        self.xm.mark_step()
        return move_to_device(optimizer.state_dict(), torch.device("cpu"))


class XLADeviceLoader:
    """Iterates ``device_loader`` (an ``MpDeviceLoader``); every other attribute is the
    wrapped ``loader``'s.

    Args:
        loader: the host-side loader (a `torch.utils.data.DataLoader`, usually).
        device_loader: ``MpDeviceLoader(loader, device)``.
    """

    def __init__(self, loader: Iterable, device_loader: Iterable) -> None:
        self.loader = loader
        self.device_loader = device_loader

    def __iter__(self) -> Any:
        return iter(self.device_loader)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        if name in ("loader", "device_loader"):  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.loader, name)


def _optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
