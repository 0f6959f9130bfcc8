"""TensorBoardLogger, read back with TensorBoard's own event reader."""

from __future__ import annotations

import json

import pytest

from toolkit.loggers import LoggerCollection, TensorBoardLogger

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def load(path):
    ea = event_accumulator.EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    return ea


def test_scalars_at_their_steps(tmp_path) -> None:
    lg = TensorBoardLogger(tmp_path / "tb")
    assert not (tmp_path / "tb").exists()  # nothing is created before the first call
    coll = LoggerCollection([lg])
    coll.log_metrics({"loss": 1.0, "learning_rate": 0.1}, step=1)
    coll.log_metrics({"loss": 0.5, "note": "not a number"}, step=2)
    coll.log_metrics({"eval/acc": 0.75}, step=2)
    coll.finalize()
    ea = load(tmp_path / "tb")
    assert sorted(ea.Tags()["scalars"]) == ["eval/acc", "learning_rate", "loss"]
    assert [(e.step, e.value) for e in ea.Scalars("loss")] == [(1, 1.0), (2, 0.5)]
    assert [(e.step, e.value) for e in ea.Scalars("eval/acc")] == [(2, 0.75)]


def test_hparams_as_text_and_hparams_plugin(tmp_path) -> None:
    from tensorboard.plugins.hparams import plugin_data_pb2

    lg = TensorBoardLogger(tmp_path)
    params = {"learning_rate": 0.1, "optim": "adamw", "warmup": None, "model_config": {"hidden": 8}}
    lg.log_hyperparams(params)
    lg.finalize()
    ea = load(tmp_path)
    (text,) = ea.Tensors("hparams/text_summary")
    assert json.loads(text.tensor_proto.string_val[0]) == params
    content = ea.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hp = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hp["learning_rate"].number_value == 0.1
    assert hp["optim"].string_value == "adamw"
    assert hp["warmup"].string_value == "None"
    assert hp["model_config/hidden"].number_value == 8


def test_usable_again_after_finalize(tmp_path) -> None:
    lg = TensorBoardLogger(tmp_path)
    lg.log_metrics({"loss": 1.0}, step=1)
    lg.finalize()
    lg.finalize()  # idempotent
    lg.log_metrics({"loss": 0.5}, step=2)
    lg.finalize()
    assert [(e.step, e.value) for e in load(tmp_path).Scalars("loss")] == [(1, 1.0), (2, 0.5)]
