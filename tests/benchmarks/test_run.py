"""Tests of the benchmark harness (benchmarks/run.py).

The smoke run checks that ``python -m benchmarks.run --quick`` runs every workload for
raw, toolkit and toolkit-parts and that every correctness check holds; it never looks
at how fast anything was. The other tests cover the harness's pure functions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import run as bench  # noqa: E402
from benchmarks import workloads as W  # noqa: E402
from benchmarks.workloads import METRICS, WORKLOADS, Clock, EpochPermutation, Metric  # noqa: E402

CORE = ["raw", "toolkit", "toolkit-parts"]


@pytest.mark.slow
def test_quick_run_has_every_row_and_passes_every_check(tmp_path):
    out = tmp_path / "results.jsonl"
    md = tmp_path / "table.md"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--impls",
            ",".join(CORE),
            "--out",
            str(out),
            "--markdown",
            str(md),
            "--dir",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    summary = records[-1]
    assert summary["kind"] == "checks" and summary["passed"] and summary["failures"] == [], summary
    checks = [r for r in records if r["kind"] == "check"]
    assert checks and all(c["passed"] for c in checks)
    # every kind of check ran for the facade and the parts
    for impl in ("toolkit", "toolkit-parts"):
        kinds = {(c["workload"], c["check"]) for c in checks if c["impl"] == impl}
        for workload in ("mlp", "mlp_default", "transformer"):
            assert (workload, "final loss equals raw's") in kinds
        for workload in ("predict_fixed", "predict_varlen"):
            assert (workload, "predictions equal raw's") in kinds
        assert ("checkpoint", "loaded state equals saved") in kinds
        assert ("resume", "first resumed batch is the uninterrupted run's") in kinds
    # a row (timing record) per workload figure and implementation
    timings = {(r["name"], r["impl"]) for r in records if r["kind"] == "timing"}
    for metric in METRICS:
        impls = ["toolkit", "toolkit-parts"] if metric.key == "async_stall_s" else CORE
        for impl in impls:
            assert (metric.name, impl) in timings, (metric.name, impl)
    table = md.read_text()
    for metric in METRICS:
        assert metric.label in table
    assert "correctness:" in proc.stdout and "FAILED" not in proc.stdout
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("toolkit-bench-run-")] == []


def test_schedule_interleaves_repeats_and_rotates_the_order():
    jobs = bench.schedule(["a", "b"], ["raw", "toolkit", "hf"], repeats=2)
    order = [(j.repeat, j.workloads[0], j.impl) for j in jobs]
    assert order == [
        (0, "a", "raw"),
        (0, "a", "toolkit"),
        (0, "a", "hf"),
        (0, "b", "raw"),
        (0, "b", "toolkit"),
        (0, "b", "hf"),
        (1, "a", "toolkit"),
        (1, "a", "hf"),
        (1, "a", "raw"),
        (1, "b", "toolkit"),
        (1, "b", "hf"),
        (1, "b", "raw"),
    ]
    grouped = bench.schedule(["a", "b"], ["raw", "toolkit"], repeats=2, grouped=True)
    assert [(j.repeat, j.impl, j.workloads) for j in grouped] == [
        (0, "raw", ["a", "b"]),
        (0, "toolkit", ["a", "b"]),
        (1, "toolkit", ["a", "b"]),
        (1, "raw", ["a", "b"]),
    ]
    with pytest.raises(ValueError, match="repeats"):
        bench.schedule(["a"], ["raw"], repeats=0)
    more = bench.schedule(["a", "b"], ["raw", "toolkit"], repeats=1, factors={"b": 3})
    assert [(j.repeat, j.workloads[0], j.impl) for j in more] == [
        (0, "a", "raw"),
        (0, "a", "toolkit"),
        (0, "b", "raw"),
        (0, "b", "toolkit"),
        (1, "b", "toolkit"),
        (1, "b", "raw"),
        (2, "b", "raw"),
        (2, "b", "toolkit"),
    ]
    assert len(bench.schedule(["a", "b"], ["raw"], repeats=2, grouped=True, factors={"b": 3})) == 2


def test_summaries_ratios_and_verdicts():
    assert bench.summarize_samples([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "repeats": 4}
    with pytest.raises(ValueError):
        bench.summarize_samples([])
    assert bench.ratio(3.0, 2.0) == 1.5
    assert bench.ratio(1.0, 0.0) is None and bench.ratio(None, 1.0) is None and bench.ratio(1.0, None) is None
    assert bench.verdict(1.05, 1.05) == "PASS" and bench.verdict(1.06, 1.05) == "FAIL"
    assert bench.verdict(None, 1.0) == "—" and bench.verdict(1.0, None) == "—"


def test_collect_computes_ratios_of_medians_and_judges_the_targets():
    metrics = [
        Metric("w", "t", "time", 1.2),
        Metric("w", "stall", "stall over own time", 0.25, ratio_to="t"),
        Metric("imp", "s", "import", 0.3, absolute=True),
    ]
    results = {
        ("raw", "w"): [{"ok": True, "t": 1.0}, {"ok": True, "t": 3.0}, {"ok": True, "t": 2.0}],
        ("toolkit", "w"): [
            {"ok": True, "t": 2.0, "stall": 0.2},
            {"ok": True, "t": 3.0, "stall": 0.1},
            {"ok": False, "error": "crashed"},
        ],
        ("raw", "imp"): [{"ok": True, "s": 0.0}],
        ("toolkit", "imp"): [{"ok": True, "s": 0.2}],
    }
    recs = {(r["name"], r["impl"]): r for r in bench.collect(results, ["raw", "toolkit"], metrics)}
    raw, tk = recs[("w/t", "raw")], recs[("w/t", "toolkit")]
    assert raw["median"] == 2.0 and raw["min"] == 1.0 and "verdict" not in raw
    assert tk["repeats"] == 2 and tk["median"] == 2.5 and tk["ratio"] == 1.25 and tk["ratio_min"] == 2.0
    assert tk["verdict"] == "FAIL"  # 1.25 > 1.2
    stall = recs[("w/stall", "toolkit")]
    assert stall["ratio"] == pytest.approx(0.15 / 2.5) and stall["verdict"] == "PASS"
    assert ("w/stall", "raw") not in recs
    imp = recs[("imp/s", "toolkit")]
    assert imp["ratio"] is None and imp["median"] == 0.2 and imp["verdict"] == "PASS"
    table = bench.format_table(list(recs.values()), ["raw", "toolkit"])
    assert table.splitlines()[0] == "| figure | raw | toolkit | target | toolkit verdict | parts verdict |"


def test_ratios_pair_the_processes_of_each_repeat():
    metrics = [Metric("w", "t", "time", 1.05)]
    # the machine slowed down over the repeats, and toolkit's first process was unlucky:
    # paired, that is one ratio of three; as a ratio of medians it would move the result
    raw = [1.0, 2.0, 4.0]
    tk = [2.5, 2.04, 4.08]
    results = {
        ("raw", "w"): [{"ok": True, "t": t, "repeat": i} for i, t in enumerate(raw)],
        ("toolkit", "w"): [{"ok": True, "t": t, "repeat": i} for i, t in reversed(list(enumerate(tk)))],
    }
    rec = {r["impl"]: r for r in bench.collect(results, ["raw", "toolkit"], metrics)}["toolkit"]
    assert rec["ratio"] == pytest.approx(1.02) and rec["verdict"] == "PASS"  # medians: 2.5 / 2.0
    results[("toolkit", "w")][2]["repeat"] = 7  # repeat 0 without its raw process: left out
    rec = {r["impl"]: r for r in bench.collect(results, ["raw", "toolkit"], metrics)}["toolkit"]
    assert rec["ratio"] == pytest.approx(1.02)
    assert bench.paired_ratio({0: 3.0}, {1: 1.0}) is None


def test_by_turn_ratios_pair_the_turns_of_each_repeat():
    metrics = [Metric("w", "t", "step", 1.05, by_turn=True), Metric("w", "u", "other", 1.05)]
    # the machine ran at half speed during raw's second turn and toolkit's second turn of
    # repeat 0 alike, and during toolkit's third turn only: a whole-window mean carries the
    # slow turn in, the median of turn-by-turn ratios does not
    raw_turns = [[1.0, 2.0, 1.0], [1.0, 1.0, 1.0]]
    tk_turns = [[1.02, 2.04, 2.04], [1.03, 1.03, 1.03]]
    results = {
        impl: [
            {"ok": True, "t": sum(t) / 3, "t_turns": t, "u": sum(t) / 3, "repeat": i}
            for i, t in enumerate(turns)
        ]
        for impl, turns in (("raw", raw_turns), ("toolkit", tk_turns))
    }
    results = {(impl, "w"): runs for impl, runs in results.items()}
    recs = {
        r["name"]: r for r in bench.collect(results, ["raw", "toolkit"], metrics) if r["impl"] == "toolkit"
    }
    assert recs["w/t"]["ratio"] == pytest.approx((1.02 + 1.03) / 2) and recs["w/t"]["verdict"] == "PASS"
    assert recs["w/u"]["ratio"] == pytest.approx((5.1 / 4 + 1.03) / 2)  # by window: the slow turn counts
    assert bench.paired_turn_ratio({0: [1.0, 2.0]}, {0: [1.0]}) is None  # turn counts differ: no pair
    assert bench.paired_turn_ratio({0: [2.0]}, {1: [1.0]}) is None
    # without turns (a run that was not interleaved) the by-window pairing is used
    for runs in results.values():
        for r in runs:
            del r["t_turns"]
    rec = next(
        r
        for r in bench.collect(results, ["raw", "toolkit"], metrics)
        if r["name"] == "w/t" and r["impl"] == "toolkit"
    )
    assert rec["ratio"] == pytest.approx(recs["w/u"]["ratio"])


def _training_run(loss: float, steps: int = 4) -> dict:
    return {"ok": True, "steps": steps, "batch": 2, "calls": steps, "final_loss": loss}


def _checkpoint_run(saved: str, loaded: str, saves: int) -> dict:
    return {
        "ok": True,
        "saved_digest": saved,
        "loaded_digest": loaded,
        "steps": 2,
        "save_samples_s": [0.1] * saves,
    }


def test_checks_catch_wrong_losses_predictions_checkpoints_and_resumes():
    cfgs = {"mlp": {"steps": 4, "batch_size": 2}, "checkpoint": {"saves": 2}, "resume": {"resume_at": 9}}
    results = {
        ("raw", "mlp"): [_training_run(1.0)],
        ("toolkit", "mlp"): [_training_run(1.0 + 1e-6), _training_run(1.1)],
        ("toolkit-parts", "mlp"): [_training_run(1.0, steps=3)],
        ("hf", "mlp"): [_training_run(1.05)],
        ("raw", "predict_fixed"): [{"ok": True, "shape": [4, 2], "digest": "aa"}],
        ("toolkit", "predict_fixed"): [{"ok": True, "shape": [4, 2], "digest": "ab"}],
        ("raw", "checkpoint"): [_checkpoint_run("x", "x", saves=2)],
        ("toolkit", "checkpoint"): [_checkpoint_run("x", "y", saves=2)],
        ("lightning", "checkpoint"): [_checkpoint_run("x", "x", saves=1)],  # a save not timed
        ("toolkit", "resume"): [{"ok": True, "first_batch": "b1", "steps": 10}],
        ("lightning", "resume"): [{"ok": True, "first_batch": "b2", "steps": 10}],
        ("toolkit-parts", "import"): [{"ok": False, "error": "ImportError: boom"}],
    }
    prepared = {"toolkit": {"expected_batch": "b1"}, "lightning": {"expected_batch": "b1"}}
    checks = bench.check_results(
        results, ["raw", "toolkit", "toolkit-parts", "hf", "lightning"], cfgs, prepared
    )
    failed = {(c["impl"], c["workload"], c["check"]) for c in checks if not c["passed"]}
    assert failed == {
        ("toolkit", "mlp", "final loss equals raw's"),  # the 1.1 run
        ("toolkit-parts", "mlp", "steps and batch"),
        ("toolkit", "predict_fixed", "predictions equal raw's"),
        ("toolkit", "checkpoint", "loaded state equals saved"),
        ("lightning", "checkpoint", "loaded state equals saved"),
        ("lightning", "resume", "first resumed batch is the uninterrupted run's"),
        ("toolkit-parts", "import", "ran"),
    }
    fatal = {c["impl"] for c in checks if not c["passed"] and c["fatal"]}
    assert fatal == {"toolkit", "toolkit-parts"}  # lightning's inexact resume is reported, not fatal
    passed = {(c["impl"], c["check"]) for c in checks if c["passed"]}
    assert ("hf", "final loss equals raw's") in passed  # looser tolerance: another shuffling
    assert ("toolkit", "first resumed batch is the uninterrupted run's") in passed


def test_clock_and_the_raw_sampler():
    clock = Clock([2, 4])
    clock.start()
    for step in range(1, 5):
        clock.step(step)
    assert clock.last_step == 4 and set(clock.at) == {2, 4}
    assert clock.per_step(2, 4) >= 0 and clock.to_first_step() >= 0
    full = list(EpochPermutation(10, seed=3))
    assert sorted(full) == list(range(10))
    assert list(EpochPermutation(10, seed=3, start=6)) == full[6:]
    sampler = EpochPermutation(10, seed=3)
    sampler.set_epoch(1)
    assert list(sampler) != full and sorted(sampler) == list(range(10))


def test_workers_are_pinned_to_the_first_cpus_unless_told_not_to():
    args = bench._parse(["--threads", "1"])
    if not hasattr(os, "sched_getaffinity"):
        assert bench.pinned_cpus(args) is None
        return
    assert bench.pinned_cpus(args) == [min(os.sched_getaffinity(0))]
    assert bench.pinned_cpus(bench._parse(["--no-pin"])) is None
    assert bench.pinned_cpus(bench._parse(["--threads", str(len(os.sched_getaffinity(0)) + 1)])) is None
    assert "checkpoint" in bench.UNPINNED  # its IO helper threads need the other cores


def test_batches_group_one_repeat_of_a_step_workload_only_when_interleaving():
    jobs = bench.schedule(["mlp", "predict_fixed", "checkpoint"], ["raw", "toolkit"], repeats=2)
    batches = bench._batches(jobs, interleave=True)
    shape = [[(j.repeat, j.workloads[0], j.impl) for j in b] for b in batches]
    assert shape == [
        [(0, "mlp", "raw"), (0, "mlp", "toolkit")],
        [(0, "predict_fixed", "raw"), (0, "predict_fixed", "toolkit")],
        [(0, "checkpoint", "raw")],
        [(0, "checkpoint", "toolkit")],
        [(1, "mlp", "toolkit"), (1, "mlp", "raw")],
        [(1, "predict_fixed", "toolkit"), (1, "predict_fixed", "raw")],
        [(1, "checkpoint", "toolkit")],
        [(1, "checkpoint", "raw")],
    ]
    assert all(len(b) == 1 for b in bench._batches(jobs, interleave=False))
    assert set(W.INTERLEAVE_BLOCKS) <= set(bench.TRAINING) | set(bench.PREDICT)
    assert "checkpoint" not in W.INTERLEAVE_BLOCKS and "resume" not in W.INTERLEAVE_BLOCKS


def test_clock_hands_the_turn_on_and_leaves_the_wait_out():
    import os
    import threading
    import time

    to_clock_r, to_clock_w = os.pipe()
    from_clock_r, from_clock_w = os.pipe()
    turns: list[int] = []

    def harness() -> None:  # gives each turn back after 50 ms
        while os.read(from_clock_r, 1) == b".":
            turns.append(1)
            time.sleep(0.05)
            os.write(to_clock_w, b"g")

    thread = threading.Thread(target=harness)
    thread.start()
    baton = W.Baton(to_clock_r, from_clock_w, block=3)
    W.use_baton(baton)
    try:
        clock = Clock([2, 11])
    finally:
        W.use_baton(None)
    assert Clock([2, 11])._baton is None  # only clocks made while a baton is in use
    clock.start()
    for step in range(1, 12):
        clock.step(step)
    baton.close()
    thread.join(timeout=10)
    os.close(to_clock_w)
    os.close(from_clock_r)
    # turns handed on at steps 2, 5 and 8 (every 3 steps from the first mark, before the last)
    assert len(turns) == 3 and len(clock.handoffs) == 3
    assert clock.paused >= 0.15 - 1e-3
    assert clock.per_step(2, 11) < 0.01  # the three 50 ms waits are not in the step time
    # three turns of 3 steps (2-5, 5-8, 8-11), waits left out: together the window's mean
    assert clock.handoff_steps == [2, 5, 8]
    per_turn = clock.turns(11)
    assert len(per_turn) == 3 and all(0 <= t < 0.01 for t in per_turn)
    assert sum(per_turn) / 3 == pytest.approx(clock.per_step(2, 11))
    assert clock.to_first_step() < 0.05
    with pytest.raises(ValueError, match="block"):
        W.Baton(0, 1, block=0)


def test_predict_rounds_times_each_call_and_hands_the_turn_on_between_rounds():
    import threading
    import time

    import numpy as np

    calls: list[float] = []

    def predict() -> np.ndarray:
        calls.append(time.perf_counter())
        time.sleep(0.02 if len(calls) == 1 else 0.005)  # a slow first call
        return np.arange(6, dtype=np.float32).reshape(2, 3)

    alone = W.predict_rounds(predict, rounds=3)
    assert len(calls) == 3 and "predict_s_turns" not in alone
    assert alone["first_predict_s"] >= 0.02 and len(alone["predict_s_rounds"]) == 3
    assert alone["predict_s"] == sorted(alone["predict_s_rounds"])[1] < 0.02  # the median
    assert alone["shape"] == [2, 3] and alone["rss_mb"] >= 0
    with pytest.raises(ValueError, match="rounds"):
        W.predict_rounds(predict, rounds=0)

    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()
    waits: list[int] = []

    def harness() -> None:  # each turn given back after 50 ms
        while os.read(from_r, 1) == b".":
            waits.append(len(calls))
            time.sleep(0.05)
            os.write(to_w, b"g")

    thread = threading.Thread(target=harness)
    thread.start()
    W.use_baton(W.Baton(to_r, from_w, block=2))
    try:
        calls.clear()
        grouped = W.predict_rounds(predict, rounds=5)
    finally:
        W.use_baton(None)
        os.close(from_w)
        thread.join(timeout=10)
        for fd in (to_r, to_w, from_r):
            os.close(fd)
    assert waits == [2, 4]  # the turn handed on after rounds 2 and 4
    rounds = grouped["predict_s_rounds"]
    assert len(rounds) == 5 and max(rounds) < 0.05  # the waits are in no round
    assert grouped["predict_s_turns"] == pytest.approx(
        [(rounds[0] + rounds[1]) / 2, (rounds[2] + rounds[3]) / 2, rounds[4]]
    )
    assert grouped["digest"] == alone["digest"]


@pytest.mark.slow
def test_an_interleaved_group_runs_one_worker_at_a_time(tmp_path):
    cfg = W.config_for("mlp", quick=True)  # 60 steps, measured from step 10
    members = []
    for impl in ("raw", "toolkit-parts"):
        folder = tmp_path / impl
        folder.mkdir()
        spec = {"workload": "mlp", "cfg": cfg, "workdir": str(folder), "phase": "measure", "prepared": None}
        members.append((sys.executable, impl, [spec], f"{impl}-group"))
    cpu = min(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    raw, parts = bench._run_group(
        members, str(tmp_path), threads=1, timeout=300, block=10, cpus=[cpu] if cpu is not None else None
    )
    for (result,) in (raw, parts):
        assert result["ok"], result
        assert cpu is None or result["cpus"] == [cpu]  # both pinned to the same CPU
        assert result["steps"] == cfg["steps"] and len(result["handoffs"]) == 5  # at 10, 20, ..., 50
        assert 0 < result["step_s"] and result["paused_s"] > 0
    assert raw[0]["final_loss"] == pytest.approx(parts[0]["final_loss"], rel=1e-4)

    def running(handoffs):  # the spans between getting a turn back and handing it on again
        return [(back, out) for (_, back), (out, _) in zip(handoffs, handoffs[1:])]

    for a_start, a_end in running(raw[0]["handoffs"]):
        for b_start, b_end in running(parts[0]["handoffs"]):
            assert a_end <= b_start or b_end <= a_start, "two workers ran their turns at once"


@pytest.mark.parametrize(
    "argv",
    [
        ["--repeats", "0"],
        ["--workloads", "nope"],
        ["--impls", "toolkit"],
        ["--impls", "raw,x"],
        ["--threads", "0"],
    ],
)
def test_bad_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as excinfo:
        bench.main(argv)
    assert excinfo.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_every_workload_has_a_figure():
    assert {m.workload for m in METRICS} == set(WORKLOADS)
