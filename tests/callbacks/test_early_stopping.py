"""EarlyStoppingCallback: patience, threshold, direction, resume, configuration errors."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from toolkit.callbacks import CallbackHandler, EarlyStoppingCallback
from toolkit.state import TrainerControl, TrainerState


def make_args(**overrides):
    base = dict(
        load_best_model_at_end=True,
        metric_for_best_model="loss",
        greater_is_better=False,
        evaluation_strategy="steps",
    )
    base.update(overrides)
    return SimpleNamespace(**base)


def evaluate_sequence(cb, args, values, metric="eval_loss", update_best=True):
    """Feed evaluations like the trainer does; return the 1-based index where a stop was requested.

    The trainer updates ``state.best_metric`` after ``on_evaluate`` (when it saves), so the
    callback always compares against the best value seen *before* this evaluation.
    """
    greater = args.greater_is_better
    state = TrainerState()
    handler = CallbackHandler([cb])
    control = handler.on_train_begin(args, state, TrainerControl())
    for i, value in enumerate(values, start=1):
        control = handler.on_evaluate(args, state, control, metrics={metric: value})
        if control.should_training_stop:
            return i
        if update_best and (
            state.best_metric is None or (value > state.best_metric if greater else value < state.best_metric)
        ):
            state.best_metric = value
    return None


@pytest.mark.parametrize("patience", [1, 2, 3])
def test_stops_after_exactly_patience_non_improving_evaluations(patience):
    values = [1.0, 0.9] + [0.95] * 10  # improvements, then a plateau
    stop_at = evaluate_sequence(EarlyStoppingCallback(patience), make_args(), values)
    assert stop_at == 2 + patience


def test_improvement_resets_the_counter():
    cb = EarlyStoppingCallback(early_stopping_patience=2)
    # 1.0 best, 1.1 bad (1), 0.8 better (reset), 0.9 bad (1), 0.85 bad (2) -> stop at 5
    assert evaluate_sequence(cb, make_args(), [1.0, 1.1, 0.8, 0.9, 0.85, 0.7]) == 5


def test_counter_values():
    cb = EarlyStoppingCallback(early_stopping_patience=10)
    args = make_args()
    state = TrainerState(best_metric=1.0)
    counts = []
    for value in (1.2, 1.0, 0.5):
        cb.on_evaluate(args, state, TrainerControl(), metrics={"eval_loss": value})
        counts.append(cb.early_stopping_patience_counter)
    assert counts == [1, 2, 0]  # equal to the best is not an improvement


def test_threshold():
    args = make_args()
    cb = EarlyStoppingCallback(early_stopping_patience=1, early_stopping_threshold=0.1)
    # 0.95 is better than 1.0 but by less than the threshold -> no improvement
    assert evaluate_sequence(cb, args, [1.0, 0.95]) == 2
    cb = EarlyStoppingCallback(early_stopping_patience=1, early_stopping_threshold=0.1)
    assert evaluate_sequence(cb, args, [1.0, 0.85, 0.7, 0.65]) == 4
    cb = EarlyStoppingCallback(early_stopping_patience=1, early_stopping_threshold=0.1)
    assert evaluate_sequence(cb, args, [1.0, 0.9]) == 2  # exactly the threshold is not enough


def test_greater_is_better():
    args = make_args(metric_for_best_model="accuracy", greater_is_better=True)
    cb = EarlyStoppingCallback(early_stopping_patience=2)
    values = [0.5, 0.6, 0.7, 0.65, 0.69, 0.9]
    assert evaluate_sequence(cb, args, values, metric="eval_accuracy") == 5


def test_greater_is_better_unset_follows_metric_name():
    cb = EarlyStoppingCallback()
    state = TrainerState(best_metric=0.5)
    acc_args = make_args(metric_for_best_model="accuracy", greater_is_better=None)
    cb.on_evaluate(acc_args, state, TrainerControl(), metrics={"eval_accuracy": 0.6})
    assert cb.early_stopping_patience_counter == 0
    loss_args = make_args(metric_for_best_model="eval_loss", greater_is_better=None)
    cb.on_evaluate(loss_args, state, TrainerControl(), metrics={"eval_loss": 0.6})
    assert cb.early_stopping_patience_counter == 1


def test_eval_prefix_is_added_only_when_missing():
    for name in ("loss", "eval_loss"):
        cb = EarlyStoppingCallback()
        control = cb.on_evaluate(
            make_args(metric_for_best_model=name),
            TrainerState(best_metric=0.1),
            TrainerControl(),
            metrics={"eval_loss": 0.5},
        )
        assert control.should_training_stop


def test_missing_metric_warns_and_does_nothing(caplog):
    cb = EarlyStoppingCallback()
    state = TrainerState(best_metric=0.1)
    with caplog.at_level(logging.WARNING, logger="toolkit.callbacks.early_stopping"):
        control = cb.on_evaluate(make_args(), state, TrainerControl(), metrics={"eval_accuracy": 0.3})
    assert not control.should_training_stop
    assert cb.early_stopping_patience_counter == 0
    assert "eval_loss" in caplog.text


def test_state_dict_round_trip_keeps_patience_on_resume():
    args = make_args()
    state = TrainerState(best_metric=0.5)
    first = EarlyStoppingCallback(early_stopping_patience=3, early_stopping_threshold=0.01)
    for _ in range(2):
        first.on_evaluate(args, state, TrainerControl(), metrics={"eval_loss": 0.6})
    saved = first.state_dict()
    assert saved == {
        "args": {"early_stopping_patience": 3, "early_stopping_threshold": 0.01},
        "attributes": {"early_stopping_patience_counter": 2},
    }
    resumed = EarlyStoppingCallback()
    resumed.load_state_dict(saved)
    assert resumed.state_dict() == saved
    # one more non-improving evaluation uses up the remaining patience
    control = resumed.on_evaluate(args, state, TrainerControl(), metrics={"eval_loss": 0.6})
    assert control.should_training_stop
    # the state fits in trainer_state.json
    ts = TrainerState(stateful_callbacks={"EarlyStoppingCallback": saved})
    assert (
        TrainerState.from_json_string(ts.to_json_string()).stateful_callbacks["EarlyStoppingCallback"]
        == saved
    )


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"load_best_model_at_end": False}, "load_best_model_at_end"),
        ({"metric_for_best_model": None}, "metric_for_best_model"),
        ({"evaluation_strategy": "no"}, "evaluation_strategy"),
    ],
)
def test_bad_configuration_raises_on_train_begin(overrides, names):
    handler = CallbackHandler([EarlyStoppingCallback()])
    with pytest.raises(ValueError, match=names):
        handler.on_train_begin(make_args(**overrides), TrainerState(), TrainerControl())


def test_good_configuration_accepts_epoch_strategy():
    cb = EarlyStoppingCallback()
    cb.on_train_begin(make_args(evaluation_strategy="epoch"), TrainerState(), TrainerControl())


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="early_stopping_patience"):
        EarlyStoppingCallback(early_stopping_patience=0)
    with pytest.raises(ValueError, match="early_stopping_threshold"):
        EarlyStoppingCallback(early_stopping_threshold=-0.1)
