"""What a hyperparameter search optimizes: the objective computed from evaluation metrics,
and the checked optimization direction(s).

Example:
    >>> default_compute_objective({"eval_loss": 0.5, "eval_runtime": 1.2, "epoch": 3.0})
    0.5
    >>> default_compute_objective({"eval_loss": 0.5, "eval_accuracy": 0.75, "eval_f1": 0.5})
    1.25
    >>> normalize_directions(["minimize", "maximize"])
    ['minimize', 'maximize']
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["default_compute_objective", "normalize_directions", "objective_value", "DIRECTIONS"]

#: Accepted values of ``direction``.
DIRECTIONS = ("minimize", "maximize")

_SPEED_SUFFIXES = ("_runtime", "_per_second", "_compilation_time")
_BOOKKEEPING = ("epoch", "step")


def _is_bookkeeping(name: str) -> bool:
    return name in _BOOKKEEPING or name.endswith(_SPEED_SUFFIXES) or "_mem_" in name


def default_compute_objective(metrics: Mapping[str, float]) -> float:
    """The default objective: the evaluation loss when it is the only metric, else the
    sum of the other metrics.

    Speed metrics (``*_runtime``, ``*_per_second``, ``*_compilation_time``), memory
    metrics (``*_mem_*``), ``epoch`` and ``step`` are left out first.

    Args:
        metrics: The metrics returned by ``Trainer.evaluate``.

    Returns:
        The objective value.

    Raises:
        ValueError: ``metrics`` holds neither ``eval_loss`` nor another metric.
    """
    rest = {k: v for k, v in metrics.items() if not _is_bookkeeping(k)}
    loss = rest.pop("eval_loss", None)
    if rest:
        return float(sum(float(v) for v in rest.values()))
    if loss is None:
        raise ValueError(
            f"default_compute_objective: the evaluation metrics {sorted(metrics)} hold no 'eval_loss' and no "
            "other metric; pass compute_objective= to hyperparameter_search."
        )
    return float(loss)


def normalize_directions(direction: str | Sequence[str]) -> list[str]:
    """``direction`` as a checked list (one entry per objective).

    Args:
        direction: ``"minimize"``, ``"maximize"``, or a list of them (multi-objective).

    Raises:
        ValueError: An unknown direction, or an empty list.
    """
    values = [direction] if isinstance(direction, str) else list(direction)
    if not values:
        raise ValueError("direction: an empty list; give 'minimize', 'maximize' or a list of them.")
    for value in values:
        if value not in DIRECTIONS:
            raise ValueError(f"direction={value!r} is not valid; accepted: 'minimize', 'maximize' (or a list of them)")
    return values


def objective_value(value: Any, n_objectives: int) -> float | list[float]:
    """Check what ``compute_objective`` returned: a number for one objective, a sequence
    of ``n_objectives`` numbers for several.

    Raises:
        ValueError: The shape does not match the number of directions, or a value is NaN.
    """
    if n_objectives == 1:
        if isinstance(value, Sequence) and not isinstance(value, str):
            if len(value) != 1:
                raise ValueError(
                    f"compute_objective returned {len(value)} values but direction names one objective"
                )
            value = value[0]
        out: float | list[float] = float(value)
        values = [out]
    else:
        if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != n_objectives:
            raise ValueError(
                f"direction names {n_objectives} objectives, so compute_objective must return {n_objectives} "
                f"numbers; it returned {value!r}"
            )
        out = values = [float(v) for v in value]
    if any(math.isnan(v) for v in values):
        raise ValueError(f"compute_objective returned NaN ({value!r})")
    return out
