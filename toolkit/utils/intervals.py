"""Intervals as values: "every 500 steps", "every epoch" or "never", parsed once.

Logging, evaluation and saving all decide "is it time?" through the same small object,
so the rules live in one place and the per-step check is a couple of comparisons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from toolkit.types import IntervalStrategy

__all__ = ["Interval", "resolve_steps"]


@dataclass(frozen=True)
class Interval:
    """When a recurring action is due: every ``every`` optimizer steps, every epoch, or never.

    Args:
        strategy: an `IntervalStrategy` or its string value (``"no"``, ``"steps"``,
            ``"epoch"``); stored as the enum.
        every: the step period for the ``"steps"`` strategy (already resolved to an int,
            see `resolve_steps`); ignored by the other strategies. ``None`` or a value
            ``<= 0`` means the step rule never fires.

    Raises:
        ValueError: when ``strategy`` is not an accepted value.

    Example:
        >>> every_3 = Interval("steps", 3)
        >>> [s for s in range(1, 10) if every_3.due_at_step(s)]
        [3, 6, 9]
        >>> Interval("epoch", None).due_at_epoch_end()
        True
    """

    strategy: IntervalStrategy
    every: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategy", IntervalStrategy(self.strategy))

    def due_at_step(self, global_step: int) -> bool:
        """True when the ``"steps"`` rule fires after optimizer step ``global_step``."""
        return (
            self.strategy is IntervalStrategy.STEPS
            and bool(self.every)
            and self.every > 0
            and global_step % self.every == 0
        )

    def due_at_epoch_end(self) -> bool:
        """True when the action happens at the end of every epoch."""
        return self.strategy is IntervalStrategy.EPOCH


def resolve_steps(value: float, max_steps: int) -> int:
    """Turn a ``*_steps`` argument into a number of optimizer steps.

    A value below 1 is a fraction of ``max_steps`` (rounded up, as the HF Trainer does);
    a value of 1 or more is a step count (truncated to an int).

    Args:
        value: the argument, e.g. ``logging_steps=500`` or ``eval_steps=0.1``.
        max_steps: total optimizer steps of the run.

    Returns:
        The period in optimizer steps.

    Raises:
        ValueError: when ``value`` is negative.

    Example:
        >>> resolve_steps(0.25, 10), resolve_steps(500, 10)
        (3, 500)
    """
    if value < 0:
        raise ValueError(f"a steps interval must be >= 0 (a count, or a ratio below 1), got {value}")
    if value < 1:
        return math.ceil(value * max_steps)
    return int(value)
