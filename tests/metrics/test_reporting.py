"""Speed metrics and metric formatting."""

from __future__ import annotations

import json
import time

from toolkit.metrics import format_metrics_table, metrics_format, speed_metrics, write_metrics_json


def test_speed_metrics_rates() -> None:
    start = time.time() - 2.0
    m = speed_metrics("eval", start, num_samples=100, num_steps=10, num_tokens=1000)
    assert 1.9 < m["eval_runtime"] < 3.0
    assert abs(m["eval_samples_per_second"] - 100 / m["eval_runtime"]) < 1.0
    assert abs(m["eval_steps_per_second"] - 10 / m["eval_runtime"]) < 0.1
    assert "eval_tokens_per_second" in m


def test_metrics_format() -> None:
    out = metrics_format({"train_runtime": 65.25, "train_mem_cpu_alloc_delta": 3 << 20, "total_flos": 5 << 30, "x": 0.123456, "n": 3})
    assert out == {"train_runtime": "0:01:05.25", "train_mem_cpu_alloc_delta": "3MB", "total_flos": "5GF", "x": 0.1235, "n": 3}


def test_table_and_json(tmp_path) -> None:
    table = format_metrics_table("eval", {"eval_loss": 0.5, "epoch": 1.0})
    assert table.splitlines()[0] == "***** eval metrics *****"
    assert "eval_loss" in table
    write_metrics_json(str(tmp_path), "train", {"train_loss": 1.0})
    write_metrics_json(str(tmp_path), "eval", {"eval_loss": 0.5})
    assert json.loads((tmp_path / "eval_results.json").read_text()) == {"eval_loss": 0.5}
    assert json.loads((tmp_path / "all_results.json").read_text()) == {"train_loss": 1.0, "eval_loss": 0.5}
