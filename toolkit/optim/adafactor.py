"""Adafactor (Shazeer & Stern, 2018): Adam-like updates with factored second moments.

For a parameter of two or more dimensions the running average of squared gradients is
kept as a row vector (mean over the last dimension) and a column vector (mean over the
second-to-last dimension), so the memory cost is ``O(n + m)`` instead of ``O(n * m)``.
At step ``t`` (starting at 1), for gradient ``g`` and parameter ``p``::

    beta2_t = 1 - t ** decay_rate
    r = beta2_t * r + (1 - beta2_t) * mean_last(g*g + eps1)         # factored case
    c = beta2_t * c + (1 - beta2_t) * mean_second_last(g*g + eps1)
    u = g / sqrt(outer(r / mean(r), c))                             # v = g*g + eps1 if 1-D
    u = u / max(1, rms(u) / clip_threshold)                         # update clipping
    alpha = step_size * (max(eps2, rms(p)) if scale_parameter else 1)
    step_size = min(1e-6 * t if warmup_init else 1e-2, 1 / sqrt(t)) if relative_step else lr
    u = alpha * u;  m = beta1 * m + (1 - beta1) * u; u = m           # only when beta1 set
    p = p - alpha * weight_decay * p - u

``rms(p)`` is measured before the update. Half-precision parameters are updated in
float32 and written back. Nothing is read back to the host during a step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

__all__ = ["Adafactor"]


def _rms(tensor: torch.Tensor) -> torch.Tensor:
    """Root mean square of all entries."""
    return tensor.norm(2) / math.sqrt(tensor.numel())


def _factored_inverse_sqrt(row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """``1 / sqrt(v_hat)`` where ``v_hat`` is rebuilt from its row and column factors."""
    row_factor = (row / row.mean(dim=-1, keepdim=True)).rsqrt().unsqueeze(-1)
    col_factor = col.unsqueeze(-2).rsqrt()
    return row_factor * col_factor


class Adafactor(Optimizer):
    """Memory-light adaptive optimizer with the constructor of ``transformers.Adafactor``.

    Owns per-parameter state: ``step`` (int), ``RMS`` (0-d tensor, the parameter's RMS at
    the last step), ``exp_avg_sq_row`` / ``exp_avg_sq_col`` for parameters of two or more
    dimensions (shapes ``shape[:-1]`` and ``shape[:-2] + shape[-1:]``), ``exp_avg_sq`` for
    the others, and ``exp_avg`` when ``beta1`` is set. The update is written out in the
    module docstring.

    The HF Trainer builds it with ``lr=learning_rate, scale_parameter=False,
    relative_step=False``; the defaults here reproduce the paper's schedule-free setting
    (``lr=None``, relative steps, parameter scaling).

    Args:
        params: Parameters or parameter-group dicts to optimize.
        lr: External learning rate; must be None when ``relative_step`` is True and given
            when it is False.
        eps: ``(eps1, eps2)``: regulariser added to squared gradients, and the floor of
            the parameter scale.
        clip_threshold: Threshold on the RMS of the final update (> 0).
        decay_rate: Exponent of the second-moment decay ``beta2_t = 1 - t**decay_rate`` (< 0).
        beta1: First-moment coefficient in [0, 1), or None to keep no first moment.
        weight_decay: Decoupled weight decay, scaled by the step size (>= 0).
        scale_parameter: Multiply the step size by the parameter's RMS.
        relative_step: Compute a time-dependent step size instead of using ``lr``.
        warmup_init: Warm the relative step up linearly (requires ``relative_step``).

    Raises:
        ValueError: For invalid values or combinations (``lr`` with ``relative_step=True``,
            no ``lr`` with ``relative_step=False``, ``warmup_init`` without ``relative_step``).

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.ones(4, 3))
        >>> opt = Adafactor([w], lr=1e-2, relative_step=False, scale_parameter=False)
        >>> w.sum().backward()
        >>> opt.step()
        >>> tuple(opt.state[w]["exp_avg_sq_row"].shape), tuple(opt.state[w]["exp_avg_sq_col"].shape)
        ((4,), (3,))
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float | None = None,
        eps: tuple[float, float] = (1e-30, 1e-3),
        clip_threshold: float = 1.0,
        decay_rate: float = -0.8,
        beta1: float | None = None,
        weight_decay: float = 0.0,
        scale_parameter: bool = True,
        relative_step: bool = True,
        warmup_init: bool = False,
    ) -> None:
        if lr is not None and relative_step:
            raise ValueError(
                f"Cannot combine a manual lr={lr!r} with relative_step=True; pass lr=None to use "
                "relative step sizes, or relative_step=False to use lr."
            )
        if lr is None and not relative_step:
            raise ValueError("lr is required when relative_step=False (got lr=None).")
        if warmup_init and not relative_step:
            raise ValueError("warmup_init=True requires relative_step=True.")
        if lr is not None and lr < 0.0:
            raise ValueError(f"Invalid lr={lr!r}: the learning rate must be >= 0.0.")
        if len(eps) != 2:
            raise ValueError(f"Invalid eps={eps!r}: expected a pair (eps1, eps2).")
        if clip_threshold <= 0.0:
            raise ValueError(f"Invalid clip_threshold={clip_threshold!r}: it must be > 0.0.")
        if decay_rate >= 0.0:
            raise ValueError(f"Invalid decay_rate={decay_rate!r}: it must be < 0.0 (e.g. -0.8).")
        if beta1 is not None and not 0.0 <= beta1 < 1.0:
            raise ValueError(f"Invalid beta1={beta1!r}: it must be None or in [0.0, 1.0).")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay={weight_decay!r}: it must be >= 0.0.")
        defaults = {
            "lr": lr,
            "eps": tuple(eps),
            "clip_threshold": clip_threshold,
            "decay_rate": decay_rate,
            "beta1": beta1,
            "weight_decay": weight_decay,
            "scale_parameter": scale_parameter,
            "relative_step": relative_step,
            "warmup_init": warmup_init,
        }
        super().__init__(params, defaults)

    @staticmethod
    def step_size(group: dict[str, Any], state: dict[str, Any]) -> float | torch.Tensor:
        """The step size ``alpha`` for one parameter at its current step.

        Args:
            group: The parameter group (its hyperparameters).
            state: The parameter's state, with ``step`` already advanced and ``RMS`` set.

        Returns:
            The relative or external step size; a 0-d tensor (times the parameter scale)
            when ``scale_parameter`` is set, so no value is read back to the host.
        """
        size = group["lr"]
        if group["relative_step"]:
            ceiling = 1e-6 * state["step"] if group["warmup_init"] else 1e-2
            size = min(ceiling, 1.0 / math.sqrt(state["step"]))
        if group["scale_parameter"]:
            return state["RMS"].clamp(min=group["eps"][1]) * size
        return size

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform one optimization step.

        Args:
            closure: Optional callable that re-evaluates the model and returns the loss.

        Returns:
            The loss returned by ``closure``, or None.

        Raises:
            RuntimeError: If a gradient is sparse.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            eps1 = group["eps"][0]
            beta1 = group["beta1"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("Adafactor does not support sparse gradients.")
                if grad.dtype in (torch.float16, torch.bfloat16):
                    grad = grad.float()
                factored = grad.dim() >= 2

                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["RMS"] = grad.new_zeros(())
                    if beta1 is not None:
                        state["exp_avg"] = torch.zeros_like(grad)
                    if factored:
                        state["exp_avg_sq_row"] = grad.new_zeros(grad.shape[:-1])
                        state["exp_avg_sq_col"] = grad.new_zeros(grad.shape[:-2] + grad.shape[-1:])
                    else:
                        state["exp_avg_sq"] = torch.zeros_like(grad)
                else:
                    # After load_state_dict the state follows the parameter's dtype; keep fp32.
                    for key in ("RMS", "exp_avg", "exp_avg_sq", "exp_avg_sq_row", "exp_avg_sq_col"):
                        if key in state:
                            state[key] = state[key].to(grad)

                p_fp32 = p.float() if p.dtype in (torch.float16, torch.bfloat16) else p

                state["step"] += 1
                state["RMS"] = _rms(p_fp32)
                alpha = self.step_size(group, state)
                beta2t = 1.0 - math.pow(state["step"], group["decay_rate"])

                update = grad * grad + eps1
                if factored:
                    row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
                    row.mul_(beta2t).add_(update.mean(dim=-1), alpha=1.0 - beta2t)
                    col.mul_(beta2t).add_(update.mean(dim=-2), alpha=1.0 - beta2t)
                    update = _factored_inverse_sqrt(row, col).mul_(grad)
                else:
                    exp_avg_sq = state["exp_avg_sq"]
                    exp_avg_sq.mul_(beta2t).add_(update, alpha=1.0 - beta2t)
                    update = exp_avg_sq.rsqrt().mul_(grad)

                update.div_((_rms(update) / group["clip_threshold"]).clamp_(min=1.0))
                update.mul_(alpha)

                if beta1 is not None:
                    exp_avg = state["exp_avg"]
                    exp_avg.mul_(beta1).add_(update, alpha=1.0 - beta1)
                    update = exp_avg

                if group["weight_decay"] != 0.0:
                    p_fp32.mul_(1.0 - group["weight_decay"] * alpha)
                p_fp32.add_(-update)

                if p_fp32 is not p:
                    p.copy_(p_fp32)
        return loss
