"""DefaultFlowCallback and the Interval values it is built on."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from toolkit.callbacks import CallbackHandler, DefaultFlowCallback
from toolkit.state import TrainerControl, TrainerState
from toolkit.types import IntervalStrategy
from toolkit.utils.intervals import Interval, resolve_steps


def make_args(**overrides):
    base = dict(
        logging_strategy="steps",
        evaluation_strategy="no",
        save_strategy="no",
        logging_first_step=False,
        eval_delay=0,
    )
    base.update(overrides)
    return SimpleNamespace(**base)


def run_steps(args, state, n_steps):
    """Drive the handler like the loop does; return {step: (log, eval, save, stop)}."""
    handler = CallbackHandler([DefaultFlowCallback()])
    control = TrainerControl()
    control = handler.on_train_begin(args, state, control)
    flags = {}
    for step in range(1, n_steps + 1):
        control = handler.on_step_begin(args, state, control)
        state.global_step = step
        control = handler.on_step_end(args, state, control)
        flags[step] = (
            control.should_log,
            control.should_evaluate,
            control.should_save,
            control.should_training_stop,
        )
        if control.should_training_stop:
            break
    return flags


def steps_where(flags, index):
    return [s for s, f in flags.items() if f[index]]


# Interval / resolve_steps -------------------------------------------------


def test_interval_accepts_strings_and_enums():
    assert Interval("steps", 2).strategy is IntervalStrategy.STEPS
    assert Interval(IntervalStrategy.EPOCH, None).strategy is IntervalStrategy.EPOCH
    with pytest.raises(ValueError, match="accepted values"):
        Interval("sometimes", 1)


def test_interval_due_at_step():
    every_4 = Interval("steps", 4)
    assert [s for s in range(1, 13) if every_4.due_at_step(s)] == [4, 8, 12]
    assert not Interval("epoch", 4).due_at_step(4)
    assert not Interval("no", 4).due_at_step(4)
    assert not Interval("steps", None).due_at_step(4)
    assert not Interval("steps", 0).due_at_step(4)


def test_interval_due_at_epoch_end_and_frozen():
    assert Interval("epoch").due_at_epoch_end()
    assert not Interval("steps", 3).due_at_epoch_end()
    with pytest.raises(AttributeError):
        Interval("steps", 3).every = 5


def test_resolve_steps():
    assert resolve_steps(0.1, 95) == 10  # ceil(9.5)
    assert resolve_steps(0.5, 10) == 5
    assert resolve_steps(1, 10) == 1
    assert resolve_steps(500, 10) == 500
    assert resolve_steps(7.9, 10) == 7
    with pytest.raises(ValueError, match=">= 0"):
        resolve_steps(-1, 10)


# on_step_end ---------------------------------------------------------------


def test_logging_steps():
    state = TrainerState(max_steps=20, logging_steps=5)
    flags = run_steps(make_args(), state, 20)
    assert steps_where(flags, 0) == [5, 10, 15, 20]
    assert steps_where(flags, 1) == []
    assert steps_where(flags, 2) == []  # save_strategy "no": not even a final save


def test_logging_first_step():
    state = TrainerState(max_steps=10, logging_steps=5)
    flags = run_steps(make_args(logging_first_step=True), state, 10)
    assert steps_where(flags, 0) == [1, 5, 10]


def test_logging_strategy_no_ignores_steps_but_not_first_step():
    state = TrainerState(max_steps=10, logging_steps=5)
    flags = run_steps(make_args(logging_strategy="no", logging_first_step=True), state, 10)
    assert steps_where(flags, 0) == [1]


def test_eval_steps_and_eval_delay():
    state = TrainerState(max_steps=12, eval_steps=3)
    flags = run_steps(make_args(evaluation_strategy="steps"), state, 12)
    assert steps_where(flags, 1) == [3, 6, 9, 12]

    state = TrainerState(max_steps=12, eval_steps=3)
    flags = run_steps(make_args(evaluation_strategy=IntervalStrategy.STEPS, eval_delay=7), state, 12)
    assert steps_where(flags, 1) == [9, 12]

    state = TrainerState(max_steps=12, eval_steps=3)
    flags = run_steps(make_args(evaluation_strategy="steps", eval_delay=6), state, 12)
    assert steps_where(flags, 1) == [6, 9, 12]  # delay is inclusive


def test_eval_strategy_alias():
    args = SimpleNamespace(logging_strategy="no", eval_strategy="steps", save_strategy="no")
    flags = run_steps(args, TrainerState(max_steps=4, eval_steps=2), 4)
    assert steps_where(flags, 1) == [2, 4]


def test_save_steps_and_final_save():
    state = TrainerState(max_steps=10, save_steps=4)
    flags = run_steps(make_args(save_strategy="steps"), state, 10)
    assert steps_where(flags, 2) == [4, 8, 10]  # 10 is the final save
    assert steps_where(flags, 3) == [10]


def test_save_steps_zero_only_final_save():
    state = TrainerState(max_steps=6, save_steps=0)
    flags = run_steps(make_args(save_strategy="steps"), state, 6)
    assert steps_where(flags, 2) == [6]


def test_final_save_with_epoch_save_strategy():
    state = TrainerState(max_steps=5, save_steps=2)
    flags = run_steps(make_args(save_strategy="epoch"), state, 5)
    assert steps_where(flags, 2) == [5]  # "epoch" saves never fire on steps, the final one does


def test_stop_at_max_steps():
    state = TrainerState(max_steps=7, logging_steps=100)
    flags = run_steps(make_args(), state, 50)
    assert max(flags) == 7
    assert steps_where(flags, 3) == [7]


def test_flags_reset_by_step_begin_between_steps():
    """The callback only sets flags; the handler's on_step_begin clears them."""
    state = TrainerState(max_steps=10, logging_steps=2)
    flags = run_steps(make_args(), state, 4)
    assert flags[1][0] is False and flags[2][0] is True and flags[3][0] is False


def test_intervals_rebuilt_for_a_new_run_and_changed_periods():
    cb = DefaultFlowCallback()
    args = make_args()
    state = TrainerState(max_steps=100, logging_steps=5, global_step=5)
    assert cb.on_step_end(args, state, TrainerControl()).should_log  # built lazily, no train_begin
    state.logging_steps = 3  # e.g. a new run with other resolved periods
    assert not cb.on_step_end(args, state, TrainerControl()).should_log
    other = make_args(logging_strategy="no")
    state.global_step = 6
    cb.on_train_begin(other, state, TrainerControl())
    assert not cb.on_step_end(other, state, TrainerControl()).should_log


# on_epoch_end ----------------------------------------------------------------


def test_epoch_strategies():
    cb = DefaultFlowCallback()
    args = make_args(logging_strategy="epoch", evaluation_strategy="epoch", save_strategy="epoch")
    state = TrainerState(max_steps=100, epoch=1.0, global_step=10)
    cb.on_train_begin(args, state, TrainerControl())
    control = cb.on_epoch_end(args, state, TrainerControl())
    assert (control.should_log, control.should_evaluate, control.should_save) == (True, True, True)
    # epoch strategies never fire on steps
    state.global_step = 50
    control = cb.on_step_end(args, state, TrainerControl())
    assert (control.should_log, control.should_evaluate, control.should_save) == (False, False, False)


def test_epoch_eval_delay():
    cb = DefaultFlowCallback()
    args = make_args(logging_strategy="no", evaluation_strategy="epoch", eval_delay=2)
    state = TrainerState(max_steps=100)
    evaluated = []
    for epoch in (1.0, 2.0, 3.0):
        state.epoch = epoch
        if cb.on_epoch_end(args, state, TrainerControl()).should_evaluate:
            evaluated.append(epoch)
    assert evaluated == [2.0, 3.0]


def test_step_strategies_do_not_fire_at_epoch_end():
    cb = DefaultFlowCallback()
    args = make_args(evaluation_strategy="steps", save_strategy="steps")
    state = TrainerState(
        max_steps=100, epoch=1.0, global_step=10, logging_steps=5, eval_steps=5, save_steps=5
    )
    control = cb.on_epoch_end(args, state, TrainerControl())
    assert (control.should_log, control.should_evaluate, control.should_save) == (False, False, False)
