"""LoggerCallback: Trainer events -> LoggerCollection, through the CallbackHandler."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch

from toolkit.callbacks import CallbackHandler
from toolkit.loggers import JSONLinesLogger, Logger, LoggerCallback, LoggerCollection, hyperparams_from
from toolkit.state import TrainerControl, TrainerState


class Recorder(Logger):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    @property
    def name(self) -> str:
        return "rec"

    def log_metrics(self, metrics, step):
        self.events.append(("metrics", step, metrics))

    def log_hyperparams(self, params):
        self.events.append(("hparams", params))

    def finalize(self, status="success"):
        self.events.append(("finalize", status))


class Args:
    def to_sanitized_dict(self):
        return {"learning_rate": 0.1, "output_dir": "out"}

    def to_dict(self):  # pragma: no cover - to_sanitized_dict wins
        raise AssertionError("to_sanitized_dict must be preferred")


def model_with_config():
    model = torch.nn.Linear(2, 2)
    model.config = SimpleNamespace(to_dict=lambda: {"hidden_size": 2})
    return model


def run_events(cb, state, model=None):
    handler = CallbackHandler([cb], model=model)
    args, control = Args(), TrainerControl()
    control = handler.on_train_begin(args, state, control)
    state.global_step = 10
    control = handler.on_log(args, state, control, logs={"loss": 0.5, "learning_rate": 0.1, "epoch": 0.5})
    state.global_step = 20
    control = handler.on_log(args, state, control, logs={"eval_loss": torch.tensor(0.25), "note": "x"})
    handler.on_train_end(args, state, control)


def test_events_reach_the_sinks_at_global_step() -> None:
    rec = Recorder()
    run_events(LoggerCallback([rec]), TrainerState(), model=model_with_config())
    assert rec.events == [
        ("hparams", {"learning_rate": 0.1, "output_dir": "out", "model_config": {"hidden_size": 2}}),
        ("metrics", 10, {"loss": 0.5, "learning_rate": 0.1, "epoch": 0.5}),
        ("metrics", 20, {"eval_loss": 0.25}),
        ("finalize", "success"),
    ]


def test_hparams_once_per_training() -> None:
    rec = Recorder()
    cb = LoggerCallback(LoggerCollection([rec]))
    state, control = TrainerState(), TrainerControl()
    cb.on_train_begin(Args(), state, control)
    cb.on_train_begin(Args(), state, control)  # e.g. a second begin without an end
    assert [e[0] for e in rec.events] == ["hparams"]
    cb.on_train_end(Args(), state, control)
    cb.on_train_begin(Args(), state, control)  # a new training: new runs get them again
    assert [e[0] for e in rec.events] == ["hparams", "finalize", "hparams"]


def test_not_world_process_zero_logs_nothing(tmp_path) -> None:
    rec = Recorder()
    jsonl = JSONLinesLogger(tmp_path / "logs")
    state = TrainerState(is_world_process_zero=False, is_local_process_zero=True)
    run_events(LoggerCallback([rec, jsonl]), state, model=model_with_config())
    assert rec.events == []
    assert not (tmp_path / "logs").exists()


def test_state_decides_rank_even_if_the_collection_said_otherwise(tmp_path) -> None:
    coll = LoggerCollection([JSONLinesLogger(tmp_path)], is_global_zero=False)
    cb = LoggerCallback(coll)
    cb.on_log(None, TrainerState(global_step=3), TrainerControl(), logs={"loss": 1.0})
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 3, "loss": 1.0}


def test_empty_logs_and_no_args() -> None:
    rec = Recorder()
    cb = LoggerCallback([rec])
    cb.on_train_begin(None, TrainerState(), TrainerControl())  # nothing to record
    cb.on_log(None, TrainerState(), TrainerControl(), logs={})
    cb.on_log(None, TrainerState(), TrainerControl())
    assert rec.events == []


def test_hyperparams_from_wrapped_model_and_plain_args() -> None:
    wrapper = SimpleNamespace(module=model_with_config())
    args = SimpleNamespace(to_dict=lambda: {"seed": 1})
    assert hyperparams_from(args, wrapper) == {"seed": 1, "model_config": {"hidden_size": 2}}
    assert hyperparams_from(None, torch.nn.Linear(1, 1)) == {}
