"""The benchmark harness of the "Performance" issue: toolkit against a raw loop and others.

Run from the repository root::

    python -m benchmarks.run [--quick] [--workloads mlp,checkpoint] [--impls raw,toolkit]
                             [--repeats K] [--out results.jsonl] [--markdown table.md]
                             [--hf-python /path/to/python]

Implementations: ``raw`` (a hand-written loop, the baseline), ``toolkit`` (the
`Trainer` facade), ``toolkit-parts`` (a loop composed from the parts), ``hf`` (the
transformers Trainer; under ``--hf-python`` / ``TOOLKIT_BENCH_HF_PYTHON`` when given)
and ``lightning`` (the Lightning Trainer), the last two only when they can run.

Every (implementation, workload, repeat) runs in a fresh subprocess, the repeats
interleaved (each repeat runs every implementation once per workload, in an order
rotated per repeat); ``--quick`` runs one process per implementation instead, with tiny
sizes, as a smoke run. Figures are medians and minimums; ratios, to raw, are medians of the
ratios within each repeat (processes that ran side by side).
Timing targets are reported PASS/FAIL and never change the exit status; a failed
correctness check of raw, toolkit or toolkit-parts (or one of them crashing) exits 1.
See ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.common import environment, markdown_table, write_jsonl
from benchmarks.workloads import INTERLEAVE_BLOCKS, METRICS, WORKLOADS, Metric, config_for

__all__ = [
    "IMPLS",
    "CORE_IMPLS",
    "Job",
    "schedule",
    "summarize_samples",
    "ratio",
    "paired_turn_ratio",
    "verdict",
    "collect",
    "check_results",
    "format_value",
    "format_table",
    "main",
    "cli",
]

BENCHMARK = "run"
IMPLS = ("raw", "toolkit", "toolkit-parts", "hf", "lightning")
#: Their correctness failures (or crashes) fail the run; hf's and lightning's are reported.
CORE_IMPLS = ("raw", "toolkit", "toolkit-parts")
#: Final losses of toolkit and toolkit-parts must match raw's this closely (relative);
#: hf and lightning shuffle differently, so theirs is a looser, informative comparison.
LOSS_RTOL = 1e-4
LOSS_RTOL_OTHERS = 0.1
TRAINING = ("mlp", "mlp_default", "transformer")
PREDICT = ("predict_fixed", "predict_varlen")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Workloads run this many times ``--repeats``: a figure that differs by a few percent
#: from one process to another for reasons of the process (where its memory landed,
#: how often it faults pages in), not of the implementation, needs more processes: the
#: tiny-MLP step, the transformer step (the same operators, counted by the profiler,
#: in every implementation), a resume's 10 ms first step and the checkpoint timings.
REPEAT_FACTORS = {"mlp": 3, "mlp_default": 3, "transformer": 3, "checkpoint": 3, "resume": 3}

#: Workloads whose workers are never pinned: toolkit's checkpoint IO uses helper threads.
UNPINNED = {"checkpoint"}


@dataclass
class Job:
    """One worker process: an implementation, a repeat and the workloads it runs."""

    impl: str
    repeat: int
    workloads: list[str]
    phase: str = "measure"


def schedule(
    workloads: Sequence[str],
    impls: Sequence[str],
    repeats: int,
    grouped: bool = False,
    factors: Mapping[str, int] | None = None,
) -> list[Job]:
    """The order of the worker processes.

    Repeats are interleaved: repeat ``r`` runs every implementation once (per workload),
    in the implementation order rotated by ``r``, before repeat ``r + 1`` starts, so a
    drift of the machine spreads over all implementations. ``grouped``: one process per
    (repeat, implementation) running every workload; otherwise one per workload too,
    and a workload in ``factors`` gets that many times ``repeats``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    factors = {} if grouped else dict(factors or {})
    total = {w: repeats * factors.get(w, 1) for w in workloads}
    jobs: list[Job] = []
    for r in range(max(total.values(), default=0)):
        shift = r % len(impls) if impls else 0
        order = list(impls[shift:]) + list(impls[:shift])
        if grouped:
            jobs += [Job(impl, r, list(workloads)) for impl in order]
        else:
            jobs += [Job(impl, r, [w]) for w in workloads if r < total[w] for impl in order]
    return jobs


def summarize_samples(samples: Sequence[float]) -> dict[str, Any]:
    """Median, minimum and count of a figure's samples."""
    if not samples:
        raise ValueError("summarize_samples() needs at least one sample")
    return {"median": statistics.median(samples), "min": min(samples), "repeats": len(samples)}


def paired_ratio(values: dict[int, float], bases: dict[int, float]) -> float | None:
    """The median over repeats of ``value / base`` of the same repeat (None without a pair).

    The processes of one repeat ran side by side (in turns, for the interleaved
    workloads), so each pair saw the same phase of the machine; the median of the pairs
    leaves out the drift that a ratio of two medians would keep.
    """
    pairs = [values[k] / bases[k] for k in values.keys() & bases.keys() if bases[k]]
    return statistics.median(pairs) if pairs else None


def paired_turn_ratio(turns: dict[int, list[float]], bases: dict[int, list[float]]) -> float | None:
    """The median over repeats of each repeat's median of turn-by-turn ratios.

    In an interleaved repeat, turn ``i`` of every implementation ran within one round of
    turns (tens of milliseconds apart), so the ratio of two such turns is little touched
    by the machine's changes of speed, which a whole-window mean carries in. Repeats
    whose turn counts differ are left out; None when no repeat pairs.
    """
    per_repeat = []
    for k in turns.keys() & bases.keys():
        a, b = turns[k], bases[k]
        if a and len(a) == len(b) and all(b):
            per_repeat.append(statistics.median(x / y for x, y in zip(a, b)))
    return statistics.median(per_repeat) if per_repeat else None


def ratio(value: float | None, base: float | None) -> float | None:
    """``value / base``, or None when either is missing or the base is not positive."""
    if value is None or base is None or base <= 0:
        return None
    return value / base


def verdict(value: float | None, target: float | None) -> str:
    """``PASS`` (value <= target), ``FAIL``, or an em dash when there is nothing to judge."""
    if value is None or target is None:
        return "—"
    return "PASS" if value <= target else "FAIL"


# --------------------------------------------------------------------------- running


def _hf_python(args: argparse.Namespace) -> str | None:
    return args.hf_python or os.environ.get("TOOLKIT_BENCH_HF_PYTHON") or None


def available_impls(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The implementations that can run here, and a note for each one skipped."""
    wanted = args.impls
    notes: list[str] = []
    out: list[str] = []
    for impl in wanted:
        if impl == "hf":
            python = _hf_python(args) or sys.executable
            probe = subprocess.run(
                [
                    python,
                    "-c",
                    "import transformers; from transformers import Trainer; print(transformers.__version__)",
                ],
                capture_output=True,
                text=True,
                timeout=300,
                env=_env(),
                cwd=REPO,
            )
            if probe.returncode != 0:
                tail = (probe.stderr.strip().splitlines() or ["?"])[-1]
                notes.append(f"hf skipped: transformers does not import under {python} ({tail})")
                continue
            notes.append(f"hf: transformers {probe.stdout.strip()} under {python}")
        elif impl == "lightning" and importlib.util.find_spec("lightning") is None:
            notes.append("lightning skipped: the `lightning` package is not installed")
            continue
        out.append(impl)
    return out, notes


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


@dataclass
class _Worker:
    """A started worker process, its spec and where its results and output go."""

    proc: subprocess.Popen | None
    jobs: list[dict[str, Any]]
    out: str
    log: str
    logf: Any
    code: int | str | None = None


def _start_worker(
    python: str,
    impl: str,
    jobs: list[dict[str, Any]],
    workdir: str,
    threads: int,
    tag: str,
    baton: tuple[int, int, int] | None = None,
    cpus: Sequence[int] | None = None,
) -> _Worker:
    """Start ``python -m benchmarks.worker`` on ``jobs``; ``baton`` = (the worker's read fd,
    its write fd, steps per turn) joins it to an interleaved group; ``cpus``: the CPUs it
    may run on (all when None)."""
    out = os.path.join(workdir, f"{tag}.json")
    log = os.path.join(workdir, f"{tag}.log")
    spec: dict[str, Any] = {"impl": impl, "threads": threads, "out": out, "jobs": jobs}
    if baton is not None:
        spec["baton"] = list(baton)
    if cpus:
        spec["cpus"] = list(cpus)
    logf = open(log, "w", encoding="utf-8")  # noqa: SIM115 - closed by _finish_worker
    proc = subprocess.Popen(
        [python, "-m", "benchmarks.worker", json.dumps(spec)],
        cwd=REPO,
        env=_env(),
        stdout=logf,
        stderr=subprocess.STDOUT,
        pass_fds=baton[:2] if baton is not None else (),
    )
    return _Worker(proc, jobs, out, log, logf)


def _finish_worker(worker: _Worker, timeout: float) -> list[dict[str, Any]]:
    """Wait for the worker (killing it after ``timeout`` seconds); its results, with one
    failed record for each job that left none."""
    _stop(worker, timeout, f"timed out after {timeout:.0f} s")
    worker.logf.close()
    if os.path.exists(worker.out):
        with open(worker.out, encoding="utf-8") as f:
            results = json.load(f)
    else:
        results = []
    done = {(r["workload"], r["phase"]) for r in results}
    with open(worker.log, encoding="utf-8", errors="replace") as f:
        tail = " | ".join(f.read().strip().splitlines()[-3:])
    for j in worker.jobs:
        if (j["workload"], j.get("phase", "measure")) not in done:
            results.append(
                {
                    "workload": j["workload"],
                    "phase": j.get("phase", "measure"),
                    "ok": False,
                    "error": f"worker exited ({worker.code}) without a result: {tail[-400:]}",
                }
            )
    for r in results:
        if not r["ok"] and "log" not in r:
            r["log"] = worker.log
    return results


def _run_worker(
    python: str,
    impl: str,
    jobs: list[dict[str, Any]],
    workdir: str,
    threads: int,
    timeout: float,
    tag: str,
    cpus: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    return _finish_worker(_start_worker(python, impl, jobs, workdir, threads, tag, cpus=cpus), timeout)


def _await_byte(fd: int, timeout: float) -> bytes | None:
    """One byte from ``fd``; ``b""`` at the end of the pipe, None after ``timeout`` seconds."""
    ready, _, _ = select.select([fd], [], [], timeout)
    return os.read(fd, 1) if ready else None


def _run_group(
    members: Sequence[tuple[str, str, list[dict[str, Any]], str]],
    workdir: str,
    threads: int,
    timeout: float,
    block: int,
    cpus: Sequence[int] | None = None,
) -> list[list[dict[str, Any]]]:
    """Run one worker per ``(python, impl, jobs, tag)`` at once, taking turns.

    They start (imports, warm-up) together; then one runs at a time, in the given order,
    until it hands the turn on (every ``block`` steps of its measured window, see
    `benchmarks.workloads.Baton`) or finishes. A worker silent for ``timeout`` seconds on
    its turn is killed. Returns each member's results, in order.
    """
    workers, pipes = [], []
    for python, impl, jobs, tag in members:
        from_harness, to_worker = os.pipe()  # the worker reads the turns the harness writes
        from_worker, to_harness = os.pipe()  # the harness reads the worker's "waiting"
        try:
            workers.append(
                _start_worker(
                    python, impl, jobs, workdir, threads, tag, (from_harness, to_harness, block), cpus
                )
            )
        finally:
            os.close(from_harness)
            os.close(to_harness)
        pipes.append((to_worker, from_worker))
    live = []
    for i, (_, from_worker) in enumerate(pipes):  # everyone waits for a first turn, or has failed
        if _await_byte(from_worker, timeout) == b".":
            live.append(i)
        else:
            _stop(workers[i], timeout)
    try:
        while live:
            for i in list(live):
                to_worker, from_worker = pipes[i]
                try:
                    os.write(to_worker, b"g")
                except BrokenPipeError:
                    reply = b""
                else:
                    reply = _await_byte(from_worker, timeout)
                if reply != b".":  # finished (end of pipe), crashed, or silent too long
                    if reply is None and workers[i].proc is not None:
                        workers[i].proc.kill()
                    _stop(workers[i], timeout)
                    live.remove(i)
    finally:
        for to_worker, from_worker in pipes:
            os.close(to_worker)
            os.close(from_worker)
    return [_finish_worker(w, timeout) for w in workers]


def _stop(worker: _Worker, timeout: float, why: str = "") -> None:
    """Wait up to ``timeout`` seconds for the worker to exit, then kill it; its exit code
    (or ``why`` when killed) goes to ``worker.code``."""
    if worker.proc is None or worker.code is not None:
        return
    try:
        worker.code = worker.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        worker.proc.kill()
        worker.proc.wait()
        worker.code = why or f"killed: no answer for {timeout:.0f} s on its turn"


def compile_sources() -> bool:
    """Byte-compile the checkout's ``toolkit`` package into its ``__pycache__`` folders.

    A pip-installed package (torch, transformers, lightning) is compiled at install time;
    an editable checkout is compiled on first import, unless ``PYTHONDONTWRITEBYTECODE``
    is set, in which case every import compiles every module again (about 0.15 s for
    toolkit). The import workload measures the installed case for every implementation.
    Returns True when every file compiled.
    """
    import compileall

    return bool(compileall.compile_dir(os.path.join(REPO, "toolkit"), quiet=1))


def _job_spec(
    workload: str,
    cfg: dict[str, Any],
    workdir: str,
    phase: str = "measure",
    prepared: dict[str, Any] | None = None,
) -> dict[str, Any]:
    os.makedirs(workdir, exist_ok=True)
    return {"workload": workload, "cfg": cfg, "workdir": workdir, "phase": phase, "prepared": prepared}


def execute(
    args: argparse.Namespace, impls: list[str], workdir: str, log: Any = print
) -> tuple[dict[tuple[str, str], list[dict[str, Any]]], dict[str, dict[str, Any]]]:
    """Run every worker; return results by (impl, workload) and each impl's resume set-up."""
    cfgs = {w: config_for(w, args.quick) for w in args.workloads}
    pythons = {
        impl: (_hf_python(args) or sys.executable) if impl == "hf" else sys.executable for impl in impls
    }
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    prepared: dict[str, dict[str, Any]] = {}
    grouped = args.quick
    if "import" in args.workloads and compile_sources():
        log("  byte-compiled toolkit/ (as a pip install does) so that imports are not timed compiling")
    timeout = args.timeout
    if "resume" in args.workloads and not grouped:
        for impl in impls:
            spec = _job_spec("resume", cfgs["resume"], os.path.join(workdir, impl, "prepare"), "prepare")
            log(f"  prepare resume: {impl}")
            prepared[impl] = _run_worker(
                pythons[impl], impl, [spec], workdir, args.threads, timeout, f"{impl}-prepare"
            )[0]
    jobs = schedule(args.workloads, impls, args.repeats, grouped=grouped, factors=REPEAT_FACTORS)
    interleave = not grouped and args.interleave and len(impls) > 1

    def specs_for(job: Job) -> list[dict[str, Any]]:
        specs = []
        for w in job.workloads:
            folder = os.path.join(workdir, job.impl, f"{w}-{job.repeat}")
            if w == "resume" and grouped:
                specs.append(_job_spec(w, cfgs[w], os.path.join(folder, "prepare"), "prepare"))
            prep = prepared.get(job.impl) if w == "resume" and not grouped else None
            if w == "resume" and not grouped and not (prep and prep.get("ok")):
                results.setdefault((job.impl, w), []).append(
                    {
                        "workload": w,
                        "ok": False,
                        "error": "the resume set-up failed: " + str((prep or {}).get("error")),
                    }
                )
                continue
            specs.append(_job_spec(w, cfgs[w], folder, prepared=prep))
        return specs

    def keep(job: Job, records: list[dict[str, Any]]) -> None:
        impl = job.impl
        for r in records:
            r["repeat"] = job.repeat
            if r["phase"] == "prepare":
                prepared[impl] = r
            else:
                results.setdefault((impl, r["workload"]), []).append(r)

    def tag_of(job: Job) -> str:
        return f"{job.impl}-{'-'.join(job.workloads) if len(job.workloads) < 3 else 'all'}-{job.repeat}"

    pinned = pinned_cpus(args)

    def cpus_for(job: Job) -> list[int] | None:
        return pinned if pinned and not set(job.workloads) & UNPINNED else None

    n = 0
    for batch in _batches(jobs, interleave):
        start = time.perf_counter()
        members = [(job, specs_for(job)) for job in batch]
        members = [(job, specs) for job, specs in members if specs]
        if len(members) > 1:
            block = INTERLEAVE_BLOCKS[batch[0].workloads[0]]
            outcomes = _run_group(
                [(pythons[job.impl], job.impl, specs, tag_of(job)) for job, specs in members],
                workdir,
                args.threads,
                timeout,
                block,
                cpus_for(batch[0]),
            )
            for (job, _), records in zip(members, outcomes):
                keep(job, records)
            what = f"{', '.join(job.impl for job, _ in members)} interleaved, {block} steps per turn"
        elif members:
            job, specs = members[0]
            keep(
                job,
                _run_worker(
                    pythons[job.impl],
                    job.impl,
                    specs,
                    workdir,
                    args.threads,
                    timeout,
                    tag_of(job),
                    cpus_for(job),
                ),
            )
            what = job.impl
        n += len(batch)
        if members:
            job = batch[0]
            log(
                f"  [{n}/{len(jobs)}] {what}: {','.join(job.workloads)} repeat {job.repeat + 1}: "
                f"{time.perf_counter() - start:.1f} s"
            )
        # drop the checkpoints written by these processes: disk use stays bounded
        for job in batch:
            for w in job.workloads:
                shutil.rmtree(os.path.join(workdir, job.impl, f"{w}-{job.repeat}"), ignore_errors=True)
    return results, prepared


def pinned_cpus(args: argparse.Namespace) -> list[int] | None:
    """The CPUs every worker is pinned to: the first ``--threads`` of those this process may
    use, so that every implementation runs on the same core(s); None with ``--no-pin``, on
    a platform without CPU affinity, or when there are not that many CPUs."""
    if not args.pin or not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[: args.threads] if len(allowed) >= args.threads else None


def _batches(jobs: Sequence[Job], interleave: bool) -> list[list[Job]]:
    """The jobs in runs: with ``interleave``, the consecutive jobs of one repeat of a
    workload in `INTERLEAVE_BLOCKS` form one group (run at once, taking turns); every
    other job runs alone."""
    batches: list[list[Job]] = []
    for job in jobs:
        groupable = interleave and len(job.workloads) == 1 and job.workloads[0] in INTERLEAVE_BLOCKS
        last = batches[-1][-1] if batches else None
        if groupable and last is not None and (last.repeat, last.workloads) == (job.repeat, job.workloads):
            batches[-1].append(job)
        else:
            batches.append([job])
    return batches


# --------------------------------------------------------------------------- analysis


def collect(
    results: dict[tuple[str, str], list[dict[str, Any]]],
    impls: Sequence[str],
    metrics: Sequence[Metric] = METRICS,
) -> list[dict[str, Any]]:
    """One timing record per (metric, impl) that has samples: medians, minimums, ratios
    and, for toolkit and toolkit-parts, the verdict against the target."""
    records = []
    summaries: dict[tuple[str, str], dict[str, Any]] = {}
    for m in metrics:
        for impl in impls:
            kept = [
                r for r in results.get((impl, m.workload), []) if r.get("ok") and r.get(m.key) is not None
            ]
            if kept:
                samples = [r[m.key] for r in kept]
                by_repeat = {r["repeat"]: r[m.key] for r in kept if "repeat" in r}
                turns = f"{m.key}_turns"
                summaries[(m.name, impl)] = {
                    **summarize_samples(samples),
                    "samples": samples,
                    "by_repeat": by_repeat,
                    "turns_by_repeat": {
                        r["repeat"]: r[turns] for r in kept if "repeat" in r and r.get(turns)
                    },
                }
    for m in metrics:
        for impl in impls:
            s = summaries.get((m.name, impl))
            if s is None:
                continue
            if m.absolute:
                value, value_min = s["median"], s["min"]
            else:
                base = summaries.get((f"{m.workload}/{m.ratio_to}", impl) if m.ratio_to else (m.name, "raw"))
                value = None
                if base and m.by_turn:
                    value = paired_turn_ratio(s["turns_by_repeat"], base["turns_by_repeat"])
                if base and value is None:
                    value = paired_ratio(s["by_repeat"], base["by_repeat"])
                if value is None:
                    value = ratio(s["median"], base and base["median"])
                value_min = ratio(s["min"], base and base["min"])
            rec = {
                "benchmark": BENCHMARK,
                "kind": "timing",
                "name": m.name,
                "label": m.label,
                "impl": impl,
                "unit": m.unit,
                "median": s["median"],
                "min": s["min"],
                "repeats": s["repeats"],
                "samples": [round(x, 6) for x in s["samples"]],
                "target": m.target,
                "absolute": m.absolute,
                "ratio_to": m.ratio_to or ("raw" if not m.absolute else None),
                "ratio": None if m.absolute else value,
                "ratio_min": None if m.absolute else value_min,
            }
            if impl in ("toolkit", "toolkit-parts") and (m.absolute or m.ratio_to or impl != "raw"):
                rec["verdict"] = verdict(value, m.target)
            records.append(rec)
    return records


def _check(impl: str, workload: str, what: str, passed: bool, detail: str = "") -> dict[str, Any]:
    return {
        "benchmark": BENCHMARK,
        "kind": "check",
        "impl": impl,
        "workload": workload,
        "check": what,
        "passed": bool(passed),
        "fatal": impl in CORE_IMPLS,
        "detail": detail,
    }


def check_results(
    results: dict[tuple[str, str], list[dict[str, Any]]],
    impls: Sequence[str],
    cfgs: dict[str, dict[str, Any]],
    prepared: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The correctness checks: every run finished; sizes, final losses and predictions
    agree with raw's; checkpoints load back equal; a resume sees the batch an
    uninterrupted run saw. Each check is a record; ``fatal`` for the core impls."""
    checks = []
    prepared = prepared or {}
    for (impl, workload), runs in sorted(results.items()):
        for r in runs:
            if not r.get("ok"):
                checks.append(_check(impl, workload, "ran", False, r.get("error", "")))
        ok_runs = [r for r in runs if r.get("ok")]
        if not ok_runs or workload == "import":
            continue
        raw = next((x for x in results.get(("raw", workload), []) if x.get("ok")), None)
        cfg = cfgs.get(workload, {})
        for r in ok_runs:
            if workload in TRAINING:
                checks.append(
                    _check(
                        impl,
                        workload,
                        "steps and batch",
                        r["steps"] == cfg["steps"]
                        and r["batch"] == cfg["batch_size"]
                        and r["calls"] == cfg["steps"],
                        f"steps {r['steps']}, batch {r['batch']}, forward calls {r['calls']}",
                    )
                )
                if raw is not None and impl != "raw":
                    tol = LOSS_RTOL if impl in CORE_IMPLS else LOSS_RTOL_OTHERS
                    diff = abs(r["final_loss"] - raw["final_loss"]) / max(abs(raw["final_loss"]), 1e-12)
                    checks.append(
                        _check(
                            impl,
                            workload,
                            "final loss equals raw's",
                            diff <= tol,
                            f"{r['final_loss']:.6f} vs raw {raw['final_loss']:.6f} (rel diff "
                            f"{diff:.1e}, tolerance {tol:g})",
                        )
                    )
            elif workload in PREDICT:
                if raw is not None and impl != "raw":
                    same = r["shape"] == raw["shape"] and r["digest"] == raw["digest"]
                    checks.append(
                        _check(
                            impl,
                            workload,
                            "predictions equal raw's",
                            same,
                            f"shape {r['shape']} vs {raw['shape']}, digest {r['digest']} vs {raw['digest']}",
                        )
                    )
            elif workload == "checkpoint":
                checks.append(
                    _check(
                        impl,
                        workload,
                        "loaded state equals saved",
                        r["loaded_digest"] == r["saved_digest"]
                        and r["steps"] == 2
                        and len(r.get("save_samples_s") or ()) == cfgs[workload]["saves"],
                        f"digests {r['saved_digest']} / {r['loaded_digest']}, steps {r['steps']}, "
                        f"{len(r.get('save_samples_s') or ())} saves timed of {cfgs[workload]['saves']}",
                    )
                )
            elif workload == "resume":
                prep = r.get("prepared") or prepared.get(impl) or {}
                expected = prep.get("expected_batch")
                checks.append(
                    _check(
                        impl,
                        workload,
                        "first resumed batch is the uninterrupted run's",
                        expected is not None
                        and r["first_batch"] == expected
                        and r["steps"] == cfg["resume_at"] + 1,
                        f"batch {r['first_batch']} vs {expected}, steps {r['steps']}",
                    )
                )
    return checks


# --------------------------------------------------------------------------- reporting


def format_value(value: float | None, unit: str) -> str:
    """A median for the table: ``0.41 ms``, ``1.23 s``, ``80.1 MB``; em dash when missing."""
    if value is None:
        return "—"
    if unit == "ms":
        return f"{value * 1000:.3g} ms" if value < 0.1 else f"{value * 1000:.0f} ms"
    if unit == "MB":
        return f"{value:.1f} MB"
    return f"{value:.3g} s" if value < 100 else f"{value:.0f} s"


def format_table(records: Sequence[dict[str, Any]], impls: Sequence[str]) -> str:
    """The markdown table: a row per figure; raw's median, each implementation's ratio
    (its median for absolute targets), the target and the verdicts of toolkit and parts."""
    others = [i for i in impls if i != "raw"]
    header = ["figure", "raw", *others, "target", "toolkit verdict", "parts verdict"]
    timing = {(r["name"], r["impl"]): r for r in records if r.get("kind") == "timing"}
    rows = []
    for m in METRICS:
        present = [timing.get((m.name, i)) for i in impls]
        if not any(present):
            continue
        raw = timing.get((m.name, "raw"))
        row = [m.label, format_value(raw["median"], m.unit) if raw else "—"]
        for impl in others:
            r = timing.get((m.name, impl))
            if r is None:
                row.append("—")
            elif m.absolute:
                row.append(format_value(r["median"], m.unit))
            else:
                row.append("—" if r["ratio"] is None else f"{r['ratio']:.2f}x")
        target = "—" if m.target is None else (f"≤ {m.target:g} s" if m.absolute else f"≤ {m.target:g}")
        row.append(target)
        row += [(timing.get((m.name, i)) or {}).get("verdict", "—") for i in ("toolkit", "toolkit-parts")]
        rows.append(row)
    return markdown_table(header, rows)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one process per implementation")
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated, from: {','.join(WORKLOADS)} (default: all)",
    )
    parser.add_argument(
        "--impls",
        default=",".join(IMPLS),
        help=f"comma-separated, from: {','.join(IMPLS)} (default: all that can run)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="repeats (default 3; 1 with --quick)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads per worker (default 1)"
    )
    parser.add_argument("--out", default=None, help="write the records as JSON lines here ('-': stdout)")
    parser.add_argument("--markdown", default=None, help="also write the markdown table to this file")
    parser.add_argument(
        "--hf-python",
        default=None,
        help="interpreter for the hf implementation (default: $TOOLKIT_BENCH_HF_PYTHON, else this one)",
    )
    parser.add_argument(
        "--dir",
        default=None,
        help="parent of the temporary working folder (default: the system's temporary folder)",
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds per worker process (default 900)"
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="let the OS move workers between CPUs (default: every worker on the same first CPU(s))",
    )
    parser.add_argument(
        "--no-interleave",
        dest="interleave",
        action="store_false",
        help="run the step-time workloads one process at a time instead of in turns (see docs)",
    )
    args = parser.parse_args(argv)
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    args.impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    bad = [w for w in args.workloads if w not in WORKLOADS]
    if bad or not args.workloads:
        parser.error(f"--workloads: unknown {bad or 'empty list'}; accepted: {', '.join(WORKLOADS)}")
    bad = [i for i in args.impls if i not in IMPLS]
    if bad or not args.impls:
        parser.error(f"--impls: unknown {bad or 'empty list'}; accepted: {', '.join(IMPLS)}")
    if "raw" not in args.impls:
        parser.error("--impls must include raw: every ratio is to raw")
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.hf_python and not os.path.exists(args.hf_python):
        parser.error(f"--hf-python: no such interpreter: {args.hf_python}")
    return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run the harness from command-line arguments; print the table; return the records."""
    args = _parse(argv)
    report = sys.stderr if args.out == "-" else sys.stdout
    say = lambda *a: print(*a, file=report, flush=True)  # noqa: E731
    impls, notes = available_impls(args)
    for note in notes:
        say(note)
    workdir = tempfile.mkdtemp(prefix="toolkit-bench-run-", dir=args.dir)
    env = environment()
    started = time.perf_counter()
    say(
        f"benchmarks.run: {', '.join(args.workloads)} x {', '.join(impls)}, {args.repeats} repeat(s)"
        f"{' (quick)' if args.quick else ''}, in {workdir}"
    )
    try:
        results, prepared = execute(args, impls, workdir, log=say)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if hasattr(os, "getloadavg"):
        env["loadavg_1min_end"] = round(os.getloadavg()[0], 2)
    cfgs = {w: config_for(w, args.quick) for w in args.workloads}
    config = {
        "benchmark": BENCHMARK,
        "kind": "config",
        "name": "config",
        "quick": args.quick,
        "workloads": args.workloads,
        "impls": impls,
        "repeats": args.repeats,
        "threads": args.threads,
        "repeat_factors": {} if args.quick else REPEAT_FACTORS,
        "pinned_cpus": pinned_cpus(args),
        "interleaved": args.interleave and not args.quick,
        "sizes": cfgs,
        "notes": notes,
        "env": env,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    timings = collect(results, impls)
    checks = check_results(results, impls, cfgs, prepared)
    fatal = [c for c in checks if c["fatal"] and not c["passed"]]
    summary = {
        "benchmark": BENCHMARK,
        "kind": "checks",
        "name": "checks",
        "checks": len(checks),
        "passed": not fatal,
        "failures": [
            f"{c['impl']}/{c['workload']}: {c['check']}: {c['detail']}" for c in checks if not c["passed"]
        ],
    }
    records = [config, *timings, *checks, summary]
    if args.out:
        write_jsonl(records, args.out)
    table = format_table(records, impls)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(table + "\n")
    say("\n" + table + "\n")
    failed_timing = [f"{r['impl']} {r['label']}" for r in timings if r.get("verdict") == "FAIL"]
    if failed_timing:
        say(
            f"timing targets missed ({len(failed_timing)}; reported, not an error): "
            + "; ".join(failed_timing)
        )
    n_bad = len(summary["failures"])
    if summary["passed"]:
        say(
            f"correctness: {len(checks)} checks, all of raw/toolkit/toolkit-parts passed"
            + (f" ({n_bad} informative failures of other implementations)" if n_bad else "")
        )
    else:
        say(f"correctness: {len(fatal)} of {len(checks)} checks FAILED")
    for failure in summary["failures"]:
        say(f"  - {failure}")
    return records


def cli(argv: Sequence[str] | None = None) -> int:
    """`main`, then exit status 1 when a correctness check of raw/toolkit/toolkit-parts failed."""
    records = main(argv)
    return 0 if records[-1]["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(cli())
