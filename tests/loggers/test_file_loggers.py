"""CSVLogger and JSONLinesLogger, read back with csv.DictReader and json."""

from __future__ import annotations

import csv
import json
import math

from toolkit.loggers import CSVLogger, JSONLinesLogger, LoggerCollection


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_header_grows_and_old_rows_keep_their_values(tmp_path) -> None:
    lg = CSVLogger(tmp_path / "logs")
    lg.log_metrics({"loss": 1.0, "learning_rate": 0.1}, step=1)
    lg.log_metrics({"loss": 0.5, "learning_rate": 0.05}, step=2)
    lg.log_metrics({"eval_loss": 0.7}, step=2)
    lg.log_metrics({"loss": 0.25, "epoch": 1.0}, step=3)
    rows = read_csv(tmp_path / "logs" / "metrics.csv")
    assert list(rows[0]) == ["step", "loss", "learning_rate", "eval_loss", "epoch"]
    assert [r["step"] for r in rows] == ["1", "2", "2", "3"]
    assert [r["loss"] for r in rows] == ["1.0", "0.5", "", "0.25"]
    assert rows[2]["eval_loss"] == "0.7" and rows[0]["eval_loss"] == ""
    assert rows[3]["learning_rate"] == "" and rows[3]["epoch"] == "1.0"
    # no temporary files are left behind by the header rewrites
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["metrics.csv"]


def test_csv_values_round_trip_exactly(tmp_path) -> None:
    lg = CSVLogger(tmp_path, name="m.csv")
    values = {"a": 0.1 + 0.2, "b": 1e-12, "c": 123456789.125, "d": float("nan"), "e": float("inf")}
    lg.log_metrics(values, step=0)
    (row,) = read_csv(tmp_path / "m.csv")
    back = {k: float(row[k]) for k in values}
    assert back["a"] == values["a"] and back["b"] == values["b"] and back["c"] == values["c"]
    assert math.isnan(back["d"]) and back["e"] == math.inf


def test_csv_continues_an_existing_file(tmp_path) -> None:
    CSVLogger(tmp_path).log_metrics({"loss": 1.0}, step=1)
    again = CSVLogger(tmp_path)  # e.g. a resumed run
    again.log_metrics({"loss": 0.5}, step=2)
    again.log_metrics({"eval_acc": 0.9}, step=2)
    again.finalize()
    again.log_metrics({"loss": 0.1}, step=3)  # usable after finalize
    rows = read_csv(tmp_path / "metrics.csv")
    assert [(r["step"], r["loss"], r["eval_acc"]) for r in rows] == [
        ("1", "1.0", ""),
        ("2", "0.5", ""),
        ("2", "", "0.9"),
        ("3", "0.1", ""),
    ]


def test_csv_step_column_is_the_step_passed(tmp_path) -> None:
    lg = CSVLogger(tmp_path)
    lg.log_metrics({"step": 99.0, "loss": 1.0}, step=4)
    assert read_csv(lg.path) == [{"step": "4", "loss": "1.0"}]


def test_csv_hparams_json(tmp_path) -> None:
    lg = CSVLogger(tmp_path)
    lg.log_hyperparams({"lr": 0.1, "model_config": {"hidden": 8}, "path": tmp_path})
    lg.log_hyperparams({"seed": 3})
    assert json.loads((tmp_path / "hparams.json").read_text()) == {
        "lr": 0.1,
        "model_config": {"hidden": 8},
        "path": str(tmp_path),
        "seed": 3,
    }


def test_jsonl_one_object_per_call(tmp_path) -> None:
    lg = JSONLinesLogger(tmp_path / "j")
    coll = LoggerCollection([lg])
    coll.log_metrics({"loss": 1.0, "tag": "dropped"}, step=1)
    coll.log_metrics({"eval_loss": float("nan")}, step=1)
    coll.log_hyperparams({"lr": 0.5})
    coll.finalize()
    lines = (tmp_path / "j" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert records[0] == {"step": 1, "loss": 1.0}
    assert records[1]["step"] == 1 and math.isnan(records[1]["eval_loss"])
    assert json.loads((tmp_path / "j" / "hparams.json").read_text()) == {"lr": 0.5}


def test_jsonl_appends_across_instances(tmp_path) -> None:
    JSONLinesLogger(tmp_path, name="x.jsonl").log_metrics({"a": 1.0}, step=1)
    JSONLinesLogger(tmp_path, name="x.jsonl").log_metrics({"a": 2.0}, step=2)
    records = [json.loads(x) for x in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert records == [{"step": 1, "a": 1.0}, {"step": 2, "a": 2.0}]
