"""NVIDIA apex AMP (``half_precision_backend="apex"``): fp16 at optimisation level O0-O3.

apex is an optional, CUDA-only dependency, imported when an `ApexPrecision` is built.
``amp.initialize`` patches the model and the optimizer once (`setup`); every backward
runs inside ``amp.scale_loss``; apex keeps its own dynamic loss scale, which is the
state that goes into ``scaler.pt``.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

import torch
from torch import nn

from toolkit.precision.base import Precision

__all__ = ["ApexPrecision", "APEX_OPT_LEVELS"]

APEX_OPT_LEVELS = ("O0", "O1", "O2", "O3")


def _import_amp() -> Any:
    try:
        return importlib.import_module("apex.amp")
    except ImportError as err:
        raise ImportError(
            "half_precision_backend='apex' needs NVIDIA apex (the `apex` package with `apex.amp`), which "
            "is not installed. Build it from https://github.com/NVIDIA/apex, or use "
            "half_precision_backend='auto' (torch autocast)."
        ) from err


class ApexPrecision(Precision):
    """fp16 through apex AMP.

    Owns the apex-patched optimizer's loss scaling: `backward` runs inside
    ``amp.scale_loss``, `step` reports False when apex skipped the step because the
    gradients overflowed (its loss scale went down), and `state_dict` is ``amp.state_dict()``.

    Args:
        opt_level: apex optimisation level, ``"O0"`` (fp32) to ``"O3"`` (pure fp16);
            ``"O1"`` patches torch functions to run in fp16 where safe, ``"O2"`` casts
            the model to fp16 and keeps fp32 master weights in the optimizer.

    Raises:
        ValueError: for an unknown ``opt_level``.
        ImportError: when apex is not installed.
    """

    dtype = torch.float16

    def __init__(self, opt_level: str = "O1") -> None:
        if opt_level not in APEX_OPT_LEVELS:
            raise ValueError(
                f"fp16_opt_level={opt_level!r} is not valid; accepted: {', '.join(map(repr, APEX_OPT_LEVELS))}"
            )
        self.amp = _import_amp()
        self.opt_level = opt_level
        self.name = f"apex-{opt_level}"
        self.optimizer: torch.optim.Optimizer | None = None
        self._model_params: list[torch.Tensor] = []
        self._overflowed = False

    def setup(
        self, model: nn.Module, optimizer: torch.optim.Optimizer | None
    ) -> tuple[nn.Module, torch.optim.Optimizer | None]:
        """``amp.initialize`` the model and optimizer (once per optimizer)."""
        if optimizer is None:
            raise ValueError("ApexPrecision.setup: apex needs the optimizer; build it before calling setup.")
        if optimizer is self.optimizer:
            return model, optimizer
        # O2 swaps the optimizer's fp16 model parameters for fp32 master copies, in place:
        # remember which model parameter each slot trains (see `model_parameters_of`)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        model, optimizer = self.amp.initialize(model, optimizer, opt_level=self.opt_level)
        self.optimizer = optimizer
        self._model_params = params
        return model, optimizer

    def model_parameters_of(self, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
        """The model parameters ``optimizer`` trains: for the optimizer apex patched, those
        it held before ``amp.initialize`` (under O2 its param groups hold fp32 master
        copies instead); for any other optimizer, its parameters."""
        if optimizer is self.optimizer and self._model_params:
            return list(self._model_params)
        return [p for group in optimizer.param_groups for p in group["params"]]

    def _scalers(self) -> list[tuple[float, int]]:
        """``(loss_scale, unskipped)`` of each apex loss scaler ([] when apex keeps no such state)."""
        try:
            state = self.amp.state_dict()
            return [(float(s["loss_scale"]), int(s["unskipped"])) for s in state.values()]
        except (AttributeError, KeyError, TypeError, ValueError):
            return []

    def backward(self, loss: torch.Tensor) -> None:
        if self.optimizer is None:
            raise RuntimeError("ApexPrecision: call setup(model, optimizer) before backward.")
        before = self._scalers()
        with self.amp.scale_loss(loss, self.optimizer) as scaled_loss:
            scaled_loss.backward()
        after = self._scalers()
        # apex resets its "unskipped" counter on an overflow (and halves the scale, down to
        # its minimum); a reset together with a growing scale is the periodic growth instead.
        self._overflowed = self._overflowed or any(
            u_after == 0 and s_after <= s_before for (s_before, _), (s_after, u_after) in zip(before, after)
        )

    def autocast(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # apex patches the functions (O1) or casts the model (O2/O3)

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        optimizer.step()  # apex's patched step skips itself after an overflow
        skipped, self._overflowed = self._overflowed, False
        return not skipped

    def state_dict(self) -> dict[str, Any]:
        return dict(self.amp.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.amp.load_state_dict(state)
