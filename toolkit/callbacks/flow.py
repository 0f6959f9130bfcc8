"""`DefaultFlowCallback`: turns the logging / evaluation / saving intervals into control flags.

The loop never decides on its own when to log, evaluate or save: after each optimizer
step and at the end of each epoch this callback sets the matching `TrainerControl`
flags, and the loop acts on them (in the order log, evaluate, save).
"""

from __future__ import annotations

from typing import Any

from toolkit.callbacks.base import TrainerCallback, without_event_objects
from toolkit.state import TrainerControl, TrainerState
from toolkit.types import IntervalStrategy
from toolkit.utils.intervals import Interval

__all__ = ["DefaultFlowCallback"]


def _strategy(args: Any, name: str) -> IntervalStrategy:
    """Read an interval field of ``args`` as the enum (``eval_strategy`` is accepted as an alias)."""
    value = getattr(args, name, None)
    if value is None and name == "evaluation_strategy":
        value = getattr(args, "eval_strategy", IntervalStrategy.NO)
    if value is None:
        value = IntervalStrategy.NO
    return IntervalStrategy(value)


def _step_period(interval: Interval) -> float:
    """The period of a ``"steps"`` interval, 0 when it never fires at a step."""
    if interval.strategy is IntervalStrategy.STEPS and interval.every and interval.every > 0:
        return interval.every
    return 0


class DefaultFlowCallback(TrainerCallback):
    """Sets ``should_log`` / ``should_evaluate`` / ``should_save`` / ``should_training_stop``.

    Owns the mapping from the interval arguments (``logging_strategy``,
    ``evaluation_strategy``, ``save_strategy``, ``logging_first_step``, ``eval_delay``)
    and the resolved periods in the state (``state.logging_steps``, ``state.eval_steps``,
    ``state.save_steps``) to control flags. The intervals are built once per run, on
    ``on_train_begin`` (or on first use), so ``on_step_end`` only does a few comparisons.

    When ``state.global_step`` reaches ``state.max_steps`` training stops, and unless
    ``save_strategy`` is ``"no"`` a final save is requested so a finished run always has
    its last checkpoint (later HF behaviour, adopted on purpose; HF 4.34 did not save there).

    Example:
        >>> from types import SimpleNamespace
        >>> args = SimpleNamespace(logging_strategy="steps", evaluation_strategy="no",
        ...                        save_strategy="steps", logging_first_step=False, eval_delay=0)
        >>> state = TrainerState(global_step=10, max_steps=100, logging_steps=5, save_steps=10)
        >>> control = DefaultFlowCallback().on_step_end(args, state, TrainerControl())
        >>> control.should_log, control.should_evaluate, control.should_save
        (True, False, True)
    """

    def __init__(self) -> None:
        self._args: Any = None
        self._periods: tuple[int, int, int] | None = None
        self._log: Interval = Interval(IntervalStrategy.NO)
        self._eval: Interval = Interval(IntervalStrategy.NO)
        self._save: Interval = Interval(IntervalStrategy.NO)
        # what on_step_end reads, resolved with the intervals: step periods (0 = never)
        self._log_every: float = 0
        self._eval_every: float = 0
        self._save_every: float = 0
        self._log_first_step = False
        self._eval_delay: float = 0
        self._save_at_end = False

    def _intervals(self, args: Any, state: TrainerState) -> None:
        """(Re)build the intervals when the args object or the resolved periods changed."""
        periods = (state.logging_steps, state.eval_steps, state.save_steps)
        if args is self._args and periods == self._periods:
            return
        self._log = Interval(_strategy(args, "logging_strategy"), state.logging_steps)
        self._eval = Interval(_strategy(args, "evaluation_strategy"), state.eval_steps)
        self._save = Interval(_strategy(args, "save_strategy"), state.save_steps)
        self._log_every, self._eval_every, self._save_every = (
            _step_period(i) for i in (self._log, self._eval, self._save)
        )
        self._log_first_step = bool(getattr(args, "logging_first_step", False))
        self._eval_delay = getattr(args, "eval_delay", 0) or 0
        self._save_at_end = self._save.strategy is not IntervalStrategy.NO
        self._args, self._periods = args, periods

    @without_event_objects
    def on_train_begin(
        self, args: Any, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        """Build this run's intervals from ``args`` and the resolved periods in ``state``."""
        self._periods = None
        self._intervals(args, state)
        return control

    @without_event_objects
    def on_step_end(
        self, args: Any, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        """Set the flags due after optimizer step ``state.global_step``."""
        if args is not self._args or self._periods != (
            state.logging_steps,
            state.eval_steps,
            state.save_steps,
        ):
            self._intervals(args, state)
        step = state.global_step
        if (self._log_every and step % self._log_every == 0) or (step == 1 and self._log_first_step):
            control.should_log = True
        if self._eval_every and step % self._eval_every == 0 and self._eval_delay <= step:
            control.should_evaluate = True
        if self._save_every and step % self._save_every == 0:
            control.should_save = True
        if step >= state.max_steps:
            control.should_training_stop = True
            if self._save_at_end:
                control.should_save = True
        return control

    @without_event_objects
    def on_epoch_end(
        self, args: Any, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        """Set the flags of the ``"epoch"`` strategies (evaluation honours ``eval_delay``)."""
        self._intervals(args, state)
        if self._log.due_at_epoch_end():
            control.should_log = True
        epoch = state.epoch if state.epoch is not None else 0
        if self._eval.due_at_epoch_end() and getattr(args, "eval_delay", 0) <= epoch:
            control.should_evaluate = True
        if self._save.due_at_epoch_end():
            control.should_save = True
        return control
