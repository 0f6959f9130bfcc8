"""report_to through the Trainer: loggers receive the logged values; "all" picks only
installed and configured integrations; unknown names fail before training."""

from __future__ import annotations

import csv
import json

import pytest

from toolkit import Trainer
from toolkit.loggers import LoggerCallback, resolve_report_to


def test_csv_and_jsonl_receive_the_log_history(h, tmp_path):
    logdir = tmp_path / "logs"
    args = h.make_args(tmp_path, max_steps=4, logging_steps=2, report_to=["csv", "jsonl"], logging_dir=str(logdir),
                       evaluation_strategy="steps", eval_steps=2)
    trainer = Trainer(h.seeded(h.Regressor), args, train_dataset=h.regression_data(16),
                      eval_dataset=h.regression_data(8))
    trainer.train()
    history = [e for e in trainer.state.log_history if "loss" in e]
    rows = [r for r in csv.DictReader((logdir / "metrics.csv").open()) if r.get("loss")]
    assert [int(r["step"]) for r in rows] == [e["step"] for e in history]
    assert [float(r["loss"]) for r in rows] == pytest.approx([e["loss"] for e in history])
    lines = [json.loads(x) for x in (logdir / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in lines if "eval_loss" in x]
    assert [x["step"] for x in evals] == [2, 4]
    hparams = json.loads((logdir / "hparams.json").read_text())
    assert hparams["learning_rate"] == args.learning_rate


def test_unknown_integration_fails_at_construction(h, tmp_path):
    with pytest.raises(ValueError, match="comet"):
        Trainer(h.seeded(h.Regressor), h.make_args(tmp_path, report_to=["comet"]), train_dataset=h.regression_data(4))


def test_all_skips_unconfigured_integrations(monkeypatch):
    for var in ("MLFLOW_TRACKING_URI", "WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    names = resolve_report_to("all")
    assert "mlflow" not in names and "wandb" not in names
    monkeypatch.setenv("WANDB_MODE", "offline")
    pytest.importorskip("wandb")
    assert "wandb" in resolve_report_to("all")


def test_none_adds_no_logger_callback(h, tmp_path):
    trainer = Trainer(h.seeded(h.Regressor), h.make_args(tmp_path), train_dataset=h.regression_data(4))
    assert not any(isinstance(cb, LoggerCallback) for cb in trainer.callback_handler.callbacks)
