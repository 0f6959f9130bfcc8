"""Tests of the checkpoint IO benchmark (benchmarks/checkpoint_io.py).

They check that the benchmark runs, reports every figure and that its correctness
checks can fail; they never look at how fast anything was.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import checkpoint_io as bench  # noqa: E402

TIMING_KEYS = ("median_s", "min_s", "bytes", "mb", "mb_per_s", "mb_per_s_best", "repeats")
RATIO_KEYS = {
    "raw_save": ("speed_vs_disk",),
    "toolkit_save": ("speed_vs_disk", "time_vs_raw"),
    "async_save_stall": ("time_vs_sync",),
    "async_save_total": ("speed_vs_disk", "time_vs_sync"),
    "raw_load": ("speed_vs_disk",),
    "toolkit_load": ("speed_vs_disk", "time_vs_raw"),
}


def test_quick_run_reports_every_figure_and_passes_its_checks(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results.jsonl"
    records = bench.main(["--quick", "--threads", "1", "--out", str(out)])

    checks = [r for r in records if r["kind"] == "checks"]
    assert len(checks) == 1 and checks[0]["passed"], checks
    assert checks[0]["failures"] == [] and checks[0]["checks"] >= 4 * 5  # 4 rounds x 5 checks

    timings = {r["name"]: r for r in records if r["kind"] == "timing"}
    assert list(timings) == list(bench.CASES)
    for name, record in timings.items():
        assert record["benchmark"] == "checkpoint_io"
        assert record["repeats"] == bench.QUICK_REPEATS == len(record["samples_s"])
        for key in TIMING_KEYS + tuple(k + s for k in RATIO_KEYS.get(name, ()) for s in ("", "_best")):
            assert isinstance(record[key], (int, float)) and record[key] > 0, (name, key, record.get(key))
        assert record["min_s"] <= record["median_s"]
    # the checkpoint holds the weights plus two AdamW moments: about 3x the weights
    weights = records[0]["config"]["param_bytes"]
    assert records[0]["config"]["size_mb"] == bench.QUICK_SIZE_MB
    assert 3 * weights <= timings["raw_save"]["bytes"] < 3.2 * weights
    assert timings["disk_write"]["bytes"] == timings["raw_save"]["bytes"]

    assert [json.loads(line) for line in out.read_text().splitlines()] == records
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.jsonl"]  # temp folder removed
    printed = capsys.readouterr().out
    assert all(label in printed for label in bench.CASES.values())
    assert "correctness: 20 checks passed" in printed


def test_a_wrong_load_fails_the_checks_and_the_exit_status(tmp_path, monkeypatch, capsys):
    real_load = bench.raw_load

    def corrupting_load(folder):
        state = real_load(folder)
        first = next(iter(state["model.safetensors"].values()))
        first.view(-1)[0] += 1
        return state

    monkeypatch.setattr(bench, "raw_load", corrupting_load)
    out = tmp_path / "results.jsonl"
    argv = ["--size-mb", "0.5", "--repeats", "1", "--warmup", "0", "--threads", "1", "--out", str(out)]
    assert bench.cli([*argv, "--dir", str(tmp_path)]) == 1
    checks = json.loads(out.read_text().splitlines()[-1])
    assert checks["kind"] == "checks" and not checks["passed"]
    assert [f.split(":")[0] for f in checks["failures"]] == ["raw load"]
    assert "tensor values differ" in checks["failures"][0]
    assert "checks FAILED" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == [out]


def test_state_diff_finds_each_kind_of_difference():
    state = {"w": torch.arange(4.0), "opt": {"state": {0: {"step": torch.tensor(1.0)}}, "groups": [(1, 2)]}}
    same = {"w": torch.arange(4.0), "opt": {"state": {0: {"step": torch.tensor(1.0)}}, "groups": [(1, 2)]}}
    assert bench.state_diff(state, same) == []
    assert bench.state_diff({"x": float("nan")}, {"x": float("nan")}) == []
    assert bench.state_diff({"w": torch.arange(4.0)}, {"w": torch.arange(4)}) != []  # dtype
    assert bench.state_diff({"w": torch.zeros(4)}, {"w": torch.zeros(2, 2)}) != []  # shape
    assert bench.state_diff({"w": torch.zeros(4)}, {"w": torch.ones(4)}) == ["state/w: tensor values differ"]
    assert bench.state_diff({"a": 1}, {"b": 1}) != []  # keys
    assert bench.state_diff({"g": (1, 2)}, {"g": [1, 2]}) != []  # tuple came back as list
    assert bench.state_diff({"n": 1}, {"n": 1.0}) != []  # int came back as float


@pytest.mark.parametrize(
    "argv", [["--repeats", "0"], ["--size-mb", "0"], ["--threads", "0"], ["--warmup", "-1"]]
)
def test_bad_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as excinfo:
        bench.main(argv)
    assert excinfo.value.code == 2
    assert argv[0] in capsys.readouterr().err
