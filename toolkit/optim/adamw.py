"""`AdamW` with the semantics of the historical ``transformers.AdamW`` (``optim="adamw_hf"``).

The update for a parameter ``p`` with gradient ``g`` at step ``t`` (starting at 1) is::

    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    step_size = lr * sqrt(1 - beta2**t) / (1 - beta1**t)   # lr when correct_bias=False
    p = p - step_size * m / (sqrt(v) + eps)
    p = p - lr * weight_decay * p                          # decoupled decay, after the step

Two details differ from `torch.optim.AdamW`:

* ``eps`` is added to ``sqrt(v)`` *before* the bias correction is folded into the step
  size, so the effective epsilon is ``eps * sqrt(1 - beta2**t)`` in torch's terms. The two
  optimizers agree exactly only as ``eps`` goes to 0.
* the decoupled weight decay multiplies the parameter *after* the Adam step (torch
  decays first). The difference is of order ``lr**2 * weight_decay``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

__all__ = ["AdamW"]


class AdamW(Optimizer):
    """Adam with decoupled weight decay and optional bias correction (HF ``adamw_hf``).

    Owns per-parameter state ``step`` (int), ``exp_avg`` and ``exp_avg_sq`` (tensors shaped
    like the parameter). See the module docstring for the exact update.

    Args:
        params: Parameters or parameter-group dicts to optimize.
        lr: Learning rate (>= 0).
        betas: Decay rates ``(beta1, beta2)`` of the first and second moment, each in [0, 1).
        eps: Added to the square root of the second moment (>= 0).
        weight_decay: Decoupled weight decay coefficient (>= 0).
        correct_bias: Whether to correct the moments' bias towards zero (as in the
            original Adam). BERT-style training sets it to False.

    Raises:
        ValueError: If a hyperparameter is outside its accepted range.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> opt = AdamW([w], lr=0.1)
        >>> w.sum().backward()
        >>> opt.step()
        >>> bool((w < 1).all())
        True
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        correct_bias: bool = True,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid lr={lr!r}: the learning rate must be >= 0.0.")
        if len(betas) != 2:
            raise ValueError(f"Invalid betas={betas!r}: expected a pair (beta1, beta2).")
        for index, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid betas[{index}]={beta!r}: each beta must be in [0.0, 1.0).")
        if eps < 0.0:
            raise ValueError(f"Invalid eps={eps!r}: epsilon must be >= 0.0.")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay={weight_decay!r}: it must be >= 0.0.")
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "correct_bias": correct_bias,
        }
        super().__init__(params, defaults)

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
            beta1, beta2 = group["betas"]
            lr = group["lr"]
            eps = group["eps"]
            weight_decay = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("AdamW does not support sparse gradients; use torch.optim.SparseAdam.")

                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                step = state["step"]

                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                denom = exp_avg_sq.sqrt().add_(eps)

                step_size = lr
                if group["correct_bias"]:
                    step_size = lr * math.sqrt(1.0 - beta2**step) / (1.0 - beta1**step)
                p.addcdiv_(exp_avg, denom, value=-step_size)

                if weight_decay > 0.0:
                    p.add_(p, alpha=-lr * weight_decay)
        return loss
