"""Callback events fired by the facade: their exact order, registration, early stopping."""

from __future__ import annotations

import pytest

from toolkit import Trainer
from toolkit.callbacks import (
    DefaultFlowCallback,
    EarlyStoppingCallback,
    PrinterCallback,
    ProgressCallback,
    TrainerCallback,
)
from toolkit.callbacks.base import EVENTS


class Recorder(TrainerCallback):
    """Records ``(event, global_step)`` for every event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []


def _record(event):
    def handler(self, args, state, control, **kwargs):
        self.events.append((event, state.global_step))

    return handler


for _event in EVENTS:
    setattr(Recorder, _event, _record(_event))


def test_event_order_of_a_short_run(h, tmp_path):
    recorder = Recorder()
    args = h.make_args(
        tmp_path,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        gradient_accumulation_steps=2,
        num_train_epochs=2,
        logging_steps=2,
        evaluation_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
    )
    # 8 samples / batch 2 = 4 micro-batches per epoch = 2 optimizer steps per epoch
    trainer = Trainer(
        h.seeded(h.Regressor),
        args,
        train_dataset=h.regression_data(8),
        eval_dataset=h.regression_data(2, seed=1),
        callbacks=[recorder],
    )
    trainer.train()

    def step(n, due=False):
        events = [("on_step_begin", n - 1), ("on_substep_end", n - 1), ("on_step_end", n)]
        if due:
            events += [
                ("on_log", n),  # training loss
                ("on_prediction_step", n),  # the single evaluation batch
                ("on_log", n),  # evaluation metrics
                ("on_evaluate", n),
                ("on_save", n),
            ]
        return events

    expected = [
        ("on_init_end", 0),
        ("on_train_begin", 0),
        ("on_epoch_begin", 0),
        *step(1),
        *step(2, due=True),
        ("on_epoch_end", 2),
        ("on_epoch_begin", 2),
        *step(3),
        *step(4, due=True),
        ("on_epoch_end", 4),
        ("on_log", 4),  # the final train_* metrics
        ("on_train_end", 4),
    ]
    assert recorder.events == expected
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("checkpoint-")) == [
        "checkpoint-2",
        "checkpoint-4",
    ]


def test_callbacks_receive_the_trainer_objects(h, tmp_path):
    seen = {}

    class Peek(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.update(kwargs)

        def on_log(self, args, state, control, logs=None, **kwargs):
            seen.setdefault("logs", []).append(dict(logs))

    model = h.seeded(h.Regressor)
    trainer = Trainer(
        model,
        h.make_args(tmp_path, max_steps=2, logging_steps=1),
        train_dataset=h.regression_data(8),
        callbacks=[Peek],
    )
    trainer.train()
    assert seen["model"] is model
    assert seen["optimizer"] is trainer.optimizer
    assert seen["lr_scheduler"] is trainer.lr_scheduler
    assert seen["train_dataloader"] is not None
    assert [set(log) >= {"loss", "learning_rate", "epoch"} for log in seen["logs"][:2]] == [True, True]


def test_callbacks_can_stop_training(h, tmp_path):
    class StopAtThree(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                control.should_training_stop = True

    trainer = Trainer(
        h.seeded(h.Regressor),
        h.make_args(tmp_path, max_steps=10),
        train_dataset=h.regression_data(40),
        callbacks=[StopAtThree()],
    )
    assert trainer.train().global_step == 3


def test_add_pop_and_remove_callbacks(h, tmp_path):
    trainer = Trainer(h.seeded(h.Regressor), h.make_args(tmp_path))

    def types():
        return [type(cb) for cb in trainer.callback_handler.callbacks]

    assert types() == [DefaultFlowCallback, PrinterCallback]
    recorder = Recorder()
    trainer.add_callback(recorder)
    trainer.add_callback(EarlyStoppingCallback)
    assert types() == [DefaultFlowCallback, PrinterCallback, Recorder, EarlyStoppingCallback]
    assert trainer.pop_callback(Recorder) is recorder
    assert trainer.pop_callback(Recorder) is None
    trainer.remove_callback(PrinterCallback)
    assert types() == [DefaultFlowCallback, EarlyStoppingCallback]
    trainer.add_callback(ProgressCallback())
    stopper = trainer.callback_handler.callbacks[1]
    trainer.remove_callback(stopper)
    assert types() == [DefaultFlowCallback, ProgressCallback]
    # a removed callback no longer hears events
    trainer.add_callback(recorder)
    trainer.remove_callback(recorder)
    trainer.train_dataset = h.regression_data(8)
    trainer.args.max_steps = 1
    trainer.train()
    assert recorder.events == []


def test_progress_callback_is_the_default_with_tqdm(h, tmp_path):
    trainer = Trainer(h.seeded(h.Regressor), h.make_args(tmp_path, disable_tqdm=False))
    assert [type(cb) for cb in trainer.callback_handler.callbacks] == [DefaultFlowCallback, ProgressCallback]


def test_early_stopping_stops_training(h, tmp_path):
    args = h.make_args(
        tmp_path,
        max_steps=20,
        learning_rate=0.0,
        evaluation_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        load_best_model_at_end=True,
        metric_for_best_model="loss",
    )
    trainer = Trainer(
        h.seeded(h.Regressor),
        args,
        train_dataset=h.regression_data(80),
        eval_dataset=h.regression_data(4, seed=1),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=2)],
    )
    out = trainer.train()
    # lr 0: the loss never improves; step 1 sets the best, steps 2 and 3 use up the patience
    assert out.global_step == 3


def test_early_stopping_needs_its_arguments(h, tmp_path):
    args = h.make_args(tmp_path, max_steps=2, evaluation_strategy="steps", eval_steps=1)
    trainer = Trainer(
        h.seeded(h.Regressor),
        args,
        train_dataset=h.regression_data(8),
        eval_dataset=h.regression_data(4),
        callbacks=[EarlyStoppingCallback()],
    )
    with pytest.raises(ValueError, match="load_best_model_at_end"):
        trainer.train()
