"""Numeric formats: full precision, autocast mixed precision (with a grad scaler for fp16)
and whole-model half precision.

A Precision owns the autocast context, the backward call, the optimizer step (and so
the grad scaler) and reports whether a step really happened, so the loop can avoid
advancing the learning-rate schedule after a step skipped for inf/NaN gradients.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from toolkit.utils.nested import nested_map

__all__ = ["Precision", "MixedPrecision", "HalfPrecision", "PRECISION_NAMES", "precision_from_name"]

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class Precision:
    """Full fp32 precision; also the base class every precision plugin extends.

    Example:
        >>> p = Precision()
        >>> m = nn.Linear(2, 1); opt = torch.optim.SGD(m.parameters(), lr=0.1)
        >>> with p.autocast():
        ...     loss = m(torch.ones(1, 2)).sum()
        >>> p.backward(loss)
        >>> p.step(opt)
        True
    """

    name = "fp32"

    def setup(
        self, model: nn.Module, optimizer: torch.optim.Optimizer | None
    ) -> tuple[nn.Module, torch.optim.Optimizer | None]:
        """Prepare a model and its optimizer once, before training (identity here; apex
        patches both). Returns the pair to use from now on."""
        return model, optimizer

    def convert_module(self, module: nn.Module) -> nn.Module:
        """Return the module in this precision's parameter dtype (unchanged for fp32)."""
        return module

    def convert_input(self, data: Any) -> Any:
        """Cast a batch to this precision's input dtype (unchanged unless whole-model half)."""
        return data

    def autocast(self) -> contextlib.AbstractContextManager:
        """Context for forward passes."""
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagate ``loss``."""
        loss.backward()

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring gradients to their true scale before clipping (no-op without a scaler)."""

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """Run ``optimizer.step()``; return False when the step was skipped."""
        optimizer.step()
        return True

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint (the grad scaler's, when there is one)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class MixedPrecision(Precision):
    """Autocast mixed precision: fp32 master weights, fp16/bf16 activations.

    fp16 uses a `torch.amp.GradScaler`; a step whose gradients hold inf/NaN is skipped
    (and `step` returns False) while the scale is reduced.

    Args:
        dtype: ``"fp16"`` or ``"bf16"``.
        device_type: ``"cpu"``, ``"cuda"``, ``"mps"`` ... (the autocast device type).
        scaler: a GradScaler to use instead of a new one (fp16 only).

    Example:
        >>> p = MixedPrecision("bf16", device_type="cpu")
        >>> m = nn.Linear(4, 4)
        >>> with p.autocast():
        ...     y = m(torch.ones(2, 4))
        >>> y.dtype, m.weight.dtype
        (torch.bfloat16, torch.float32)
    """

    def __init__(self, dtype: str = "bf16", device_type: str = "cpu", scaler: Any | None = None) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype={dtype!r} is not supported; accepted: 'fp16', 'bf16'")
        self.name = f"{dtype}-mixed"
        self.dtype = _DTYPES[dtype]
        self.device_type = device_type
        if dtype == "fp16":
            self.scaler = scaler if scaler is not None else torch.amp.GradScaler(device_type)
        else:
            self.scaler = None

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        if self.scaler is None:
            optimizer.step()
            return True
        scale_before = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        # A skipped step lowers the scale; a growing or unchanged scale means it ran.
        return self.scaler.get_scale() >= scale_before

    def state_dict(self) -> dict[str, Any]:
        return {} if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


class HalfPrecision(Precision):
    """The whole model in fp16 or bf16 (``fp16_full_eval`` / ``bf16_full_eval``, ``bf16-true``).

    Args:
        dtype: ``"fp16"`` or ``"bf16"``.
    """

    def __init__(self, dtype: str = "bf16") -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype={dtype!r} is not supported; accepted: 'fp16', 'bf16'")
        self.name = f"{dtype}-true"
        self.dtype = _DTYPES[dtype]

    def convert_module(self, module: nn.Module) -> nn.Module:
        return module.to(dtype=self.dtype)

    def convert_input(self, data: Any) -> Any:
        return _cast_floats(data, self.dtype)


def _cast_floats(data: Any, dtype: torch.dtype) -> Any:
    return nested_map(lambda t: t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t, data)


PRECISION_NAMES = ("fp32", "fp16-mixed", "bf16-mixed", "fp16-true", "bf16-true")


def precision_from_name(name: str, device_type: str = "cpu") -> Precision:
    """Build a precision from its self-describing name.

    Args:
        name: one of ``PRECISION_NAMES``.
        device_type: the autocast device type for mixed precision.

    Raises:
        ValueError: for an unknown name.
    """
    if name == "fp32":
        return Precision()
    if name.endswith("-mixed") and name[:-6] in _DTYPES:
        return MixedPrecision(name[:-6], device_type=device_type)
    if name.endswith("-true") and name[:-5] in _DTYPES:
        return HalfPrecision(name[:-5])
    raise ValueError(f"precision={name!r} is not supported; accepted: {', '.join(PRECISION_NAMES)}")
