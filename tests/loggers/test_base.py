"""LoggerCollection: rank-zero filtering, value cleaning, step checks, finalize."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from toolkit.loggers import (
    CSVLogger,
    JSONLinesLogger,
    Logger,
    LoggerCollection,
    clean_metrics,
    flatten_params,
    to_float,
)


class Recorder(Logger):
    def __init__(self, name: str = "rec") -> None:
        self._name = name
        self.metrics: list[tuple[int, dict]] = []
        self.params: list[dict] = []
        self.finalized: list[str] = []

    @property
    def name(self) -> str:
        return self._name

    def log_metrics(self, metrics, step):
        self.metrics.append((step, metrics))

    def log_hyperparams(self, params):
        self.params.append(params)

    def finalize(self, status="success"):
        self.finalized.append(status)


def test_to_float_accepts_numbers_tensors_and_numpy_scalars() -> None:
    assert to_float(2) == 2.0 and type(to_float(2)) is float
    assert to_float(np.float16(0.5)) == 0.5
    assert to_float(np.int64(7)) == 7.0
    assert to_float(np.bool_(True)) == 1.0
    assert to_float(np.array([3.5])) == 3.5
    assert to_float(torch.tensor(1.25)) == 1.25
    assert to_float(torch.tensor([[4.0]], dtype=torch.bfloat16)) == 4.0
    assert to_float(float("nan")) != to_float(float("nan"))  # NaN is kept as NaN
    for bad in ("1.0", None, [1.0], {"a": 1}, torch.ones(3), np.zeros(2), 1 + 2j, b"1"):
        assert to_float(bad) is None, bad


def test_clean_metrics_drops_non_numeric_and_warns_once_per_key(caplog) -> None:
    warned: set[str] = set()
    with caplog.at_level(logging.WARNING, logger="toolkit.loggers.base"):
        first = clean_metrics({"loss": torch.tensor(0.5), "text": "hi", "lr": 1e-3}, warned)
        second = clean_metrics({"text": "again", "loss": 1}, warned)
    assert first == {"loss": 0.5, "lr": 1e-3}
    assert second == {"loss": 1.0}
    assert [r.getMessage() for r in caplog.records if "'text'" in r.getMessage()] == [
        "Dropped the logged value for 'text': loggers take numbers, got str."
    ]


def test_collection_hands_cleaned_floats_and_the_explicit_step_to_every_sink() -> None:
    a, b = Recorder("a"), Recorder("b")
    coll = LoggerCollection([a, b])
    out = coll.log_metrics({"loss": torch.tensor(2.0), "acc": np.float32(0.5), "name": "x"}, step=7)
    assert out == {"loss": 2.0, "acc": 0.5}
    assert a.metrics == b.metrics == [(7, {"loss": 2.0, "acc": 0.5})]
    assert all(type(v) is float for v in a.metrics[0][1].values())
    # each sink gets its own dict: one sink mutating it cannot affect the next
    assert a.metrics[0][1] is not b.metrics[0][1]


def test_nothing_numeric_means_no_call() -> None:
    rec = Recorder()
    assert LoggerCollection([rec]).log_metrics({"note": "text"}, step=1) == {}
    assert rec.metrics == []


def test_step_must_be_an_int() -> None:
    coll = LoggerCollection([Recorder()])
    for bad in (1.5, "3", True, None):
        with pytest.raises(TypeError, match="step must be an int"):
            coll.log_metrics({"loss": 1.0}, step=bad)
    coll.log_metrics({"loss": 1.0}, step=np.int64(3))  # numpy ints are fine


def test_non_zero_rank_writes_nothing(tmp_path) -> None:
    rec = Recorder()
    coll = LoggerCollection(
        [rec, CSVLogger(tmp_path / "csv"), JSONLinesLogger(tmp_path / "jsonl")], is_global_zero=False
    )
    assert not coll.active
    assert coll.log_metrics({"loss": 1.0}, step=1) == {}
    coll.log_hyperparams({"lr": 0.1})
    coll.finalize()
    assert rec.metrics == [] and rec.params == [] and rec.finalized == []
    assert list(tmp_path.iterdir()) == []
    # the flag can be flipped later (the Trainer bridge copies state.is_world_process_zero)
    coll.is_global_zero = True
    coll.log_metrics({"loss": 1.0}, step=2)
    assert rec.metrics == [(2, {"loss": 1.0})]
    assert (tmp_path / "csv" / "metrics.csv").exists() and (tmp_path / "jsonl" / "metrics.jsonl").exists()


def test_non_zero_rank_does_not_even_convert_values() -> None:
    class Exploding:
        def item(self):  # pragma: no cover - must not be called
            raise AssertionError("converted on a non-zero rank")

    LoggerCollection([Recorder()], is_global_zero=False).log_metrics({"x": Exploding()}, step=1)


def test_empty_collection_is_inactive() -> None:
    coll = LoggerCollection()
    assert not coll.active and len(coll) == 0
    assert coll.log_metrics({"loss": 1.0}, step=1) == {}


def test_add_rejects_non_loggers() -> None:
    with pytest.raises(TypeError, match="toolkit.loggers.Logger"):
        LoggerCollection([object()])


def test_finalize_reaches_every_sink_even_if_one_fails() -> None:
    class Broken(Recorder):
        def finalize(self, status="success"):
            raise OSError("disk gone")

    rec = Recorder()
    with pytest.raises(OSError, match="disk gone"):
        LoggerCollection([Broken(), rec]).finalize("failed")
    assert rec.finalized == ["failed"]


def test_hyperparams_reach_sinks_as_a_copy() -> None:
    rec = Recorder()
    params = {"lr": 0.1, "model": {"hidden": 8}}
    LoggerCollection([rec]).log_hyperparams(params)
    assert rec.params == [params] and rec.params[0] is not params


def test_flatten_params_nested() -> None:
    assert flatten_params({"a": {"b": {"c": 1}, "d": 2}, "e": {}}) == {"a/b/c": 1, "a/d": 2, "e": {}}
