"""The Strategy interface: where the model runs and how work is shared across processes.

A strategy owns the device, the process group (when there is one), model wrapping and
the collective operations. It holds a `Precision` and routes backward and optimizer
steps through it. `SingleDeviceStrategy` is the one-process implementation; the
distributed strategies extend the same interface.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from toolkit.optim.optimizers import fit_param_groups
from toolkit.precision.base import Precision
from toolkit.utils.nested import nested_to

__all__ = ["Strategy", "SingleDeviceStrategy", "select_device", "move_to_device"]


def select_device(device: str | torch.device | None = None, *, use_cpu: bool = False) -> torch.device:
    """Pick the device: explicit one first, then CUDA, then MPS, then CPU.

    Args:
        device: an explicit device (``"cpu"``, ``"cuda:1"``, ``"mps"``) or None for automatic.
        use_cpu: force the CPU even when an accelerator is available.

    Raises:
        ValueError: when the requested device type is not available here.
    """
    if use_cpu:
        return torch.device("cpu")
    if device is not None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={str(dev)!r} was requested but CUDA is not available")
        if dev.type == "mps" and not _mps_available():
            raise ValueError(f"device={str(dev)!r} was requested but MPS is not available")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def move_to_device(data: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move every tensor of a (nested) batch to ``device``; other values are kept."""
    return nested_to(data, device, non_blocking=non_blocking)


def _check_optimizer_owns_model(
    model: nn.Module, optimizer: torch.optim.Optimizer, precision: Precision | None = None
) -> None:
    model_params = {id(p) for p in model.parameters()}
    # a precision that swaps the optimizer's parameters for master copies (apex O2) says
    # which model parameters they stand for
    params_of = getattr(precision, "model_parameters_of", None)
    if callable(params_of):
        opt_params = list(params_of(optimizer))
    else:
        opt_params = [p for group in optimizer.param_groups for p in group["params"]]
    foreign = [p for p in opt_params if id(p) not in model_params]
    if opt_params and len(foreign) == len(opt_params):
        raise ValueError(
            "optimizer: none of its parameters belong to the model being set up; it was probably "
            "built for another copy of the model. Create the optimizer from this model's parameters."
        )
    if foreign:
        raise ValueError(
            f"optimizer: {len(foreign)} of its {len(opt_params)} parameters do not belong to the model "
            "being set up. Create the optimizer from this model's parameters."
        )


class Strategy:
    """Base strategy: one process, one device. Subclasses override what differs.

    Args:
        device: the device, or None to choose automatically (see `select_device`).
        precision: the numeric format (defaults to fp32).
    """

    is_distributed = False

    def __init__(self, device: str | torch.device | None = None, precision: Precision | None = None) -> None:
        self.device = select_device(device)
        self.precision = precision if precision is not None else Precision()

    # topology -------------------------------------------------------------
    @property
    def world_size(self) -> int:
        """Number of processes taking part."""
        return 1

    @property
    def global_rank(self) -> int:
        """This process's rank among all processes."""
        return 0

    @property
    def local_rank(self) -> int:
        """This process's rank on its node."""
        return 0

    @property
    def node_rank(self) -> int:
        """Index of this process's node."""
        return 0

    @property
    def is_global_zero(self) -> bool:
        """True on the process that writes shared files."""
        return self.global_rank == 0

    @property
    def is_local_zero(self) -> bool:
        """True on the first process of each node."""
        return self.local_rank == 0

    # set-up ---------------------------------------------------------------
    def setup_environment(self) -> None:
        """Start whatever the strategy needs (process group...). No-op for one device."""

    def setup_module(self, model: nn.Module) -> nn.Module:
        """Move the model to the device and wrap it; return what the forward pass uses."""
        return self.precision.convert_module(model.to(self.device))

    def setup(
        self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
    ) -> tuple[nn.Module, torch.optim.Optimizer | None]:
        """Prepare a model (and optionally its optimizer) for training.

        Raises:
            ValueError: when ``optimizer`` does not hold this model's parameters.
        """
        wrapped = self.setup_module(model)
        if optimizer is not None:
            _check_optimizer_owns_model(self.unwrap(wrapped), optimizer, self.precision)
        return wrapped, optimizer

    def setup_dataloader(self, dataloader: Iterable) -> Iterable:
        """Adapt a dataloader (e.g. a distributed sampler); returned unchanged here."""
        return dataloader

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The user's module under any wrapper this strategy added."""
        return model

    def grad_accumulators(self, model: nn.Module) -> list[Any]:
        """The autograd nodes that accumulate the gradients of ``model``'s parameters.

        Autograd keeps a parameter's accumulator only while something holds it; a loop
        that holds these between steps (as a hand-written loop's previous ``loss`` and
        its graph do) spares autograd building them again in every forward. Only plain
        ``nn.Parameter`` objects count; strategies whose engines replace or shard the
        parameters (FSDP, DeepSpeed, XLA) return none, and their wrappers hold what
        they need.
        """
        with torch.enable_grad():
            return [
                p.view_as(p).grad_fn.next_functions[0][0]
                for p in model.parameters()
                if p.requires_grad and type(p) is nn.Parameter
            ]

    def batch_to_device(self, batch: Any) -> Any:
        """Move a batch to this strategy's device (and input dtype)."""
        return self.precision.convert_input(nested_to(batch, self.device, non_blocking=True))

    # step ------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        """Context for the forward pass (the precision's autocast)."""
        return self.precision.autocast()

    @property
    def autocasts(self) -> bool:
        """False when `autocast` is known to do nothing (neither this strategy nor its
        precision changes the no-op of the base classes), so a step may skip entering it."""
        return type(self).autocast is not Strategy.autocast or type(self.precision).autocast is not Precision.autocast

    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagate through the precision plugin."""
        self.precision.backward(loss)

    def clip_grad_norm(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, max_norm: float
    ) -> torch.Tensor:
        """Unscale gradients, clip their global norm to ``max_norm``; return the norm (a tensor)."""
        self.precision.unscale_(optimizer)
        groups = optimizer.param_groups
        # clip_grad_norm_ leaves out parameters without gradients itself
        params = groups[0]["params"] if len(groups) == 1 else [p for group in groups for p in group["params"]]
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> bool:
        """Step the optimizer; False when the precision skipped it (inf/NaN gradients)."""
        return self.precision.step(optimizer)

    def no_backward_sync(self, model: nn.Module) -> contextlib.AbstractContextManager:
        """Context that skips gradient synchronisation (non-final accumulation steps)."""
        return contextlib.nullcontext()

    # collectives (identity for one process) --------------------------------
    def reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
        """Reduce a tensor across processes (``"sum"`` or ``"mean"``)."""
        if op not in ("sum", "mean"):
            raise ValueError(f"op={op!r} is not supported; accepted: 'sum', 'mean'")
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Gather a tensor from every process, stacked along a new first dimension."""
        return tensor.unsqueeze(0)

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Gather a picklable object from every process: a list in rank order."""
        return [obj]

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Send a picklable object from ``src`` to every process."""
        return obj

    def barrier(self, name: str | None = None) -> None:
        """Wait for every process."""

    # state -----------------------------------------------------------------
    def model_state_dict(self, model: nn.Module, full: bool = True) -> dict[str, torch.Tensor]:
        """The model's weights (full on every strategy that can gather them)."""
        return self.unwrap(model).state_dict()

    def load_model_state_dict(self, model: nn.Module, state: dict[str, torch.Tensor], strict: bool = True):
        """Load weights into the unwrapped model."""
        return self.unwrap(model).load_state_dict(state, strict=strict)

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The optimizer's state."""
        return optimizer.state_dict()

    def load_optimizer_state_dict(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """Restore the optimizer's state (one saved with equal-settings groups joins them;
        see `toolkit.optim.fit_param_groups`)."""
        optimizer.load_state_dict(fit_param_groups(state, optimizer))

    def teardown(self) -> None:
        """Release what `setup_environment` started."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={str(self.device)!r}, precision={self.precision!r})"


class SingleDeviceStrategy(Strategy):
    """Training on one device: CPU, one CUDA GPU or Apple MPS.

    Example:
        >>> s = SingleDeviceStrategy("cpu")
        >>> m, opt = s.setup(nn.Linear(2, 1), None)
        >>> s.device, s.world_size, s.is_global_zero
        (device(type='cpu'), 1, True)
    """
