"""Checkpoint IO benchmark: toolkit's checkpoints against the disk and a plain save.

Run from the repository root::

    python -m benchmarks.checkpoint_io [--quick] [--size-mb N] [--repeats K] [--out results.jsonl]

It builds the state of a real run (a model of ``--size-mb`` MB of fp32 weights, AdamW
state made by one optimizer step, a scheduler, the RNG states) and times, in one run
with the repeats interleaved (each repeat runs every case once, in a rotated order):

* ``disk_write`` / ``disk_read``: the raw disk, ``open().write()`` + ``os.fsync`` of the
  bytes of the plain checkpoint, and reading them back (from the page cache);
* ``raw_save`` / ``raw_load``: ``safetensors.torch.save_file`` of the weights and
  ``torch.save`` of the rest (each file fsynced); ``load_file`` + ``torch.load``;
* ``toolkit_save`` / ``toolkit_load``: ``CheckpointManager.save`` over
  `FsspecCheckpointIO` (manifest, checksums, atomic commit) and ``CheckpointManager.load``
  (checksums verified);
* ``async_save_stall`` / ``async_save_total``: the same save through `AsyncCheckpointIO`,
  until ``save()`` returns (what training waits) and until ``wait()`` returns.

Every loaded state is compared with the saved one (tensors with ``torch.equal``); the
command exits with status 1 when any comparison fails. See ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import safetensors.torch
import torch
from torch import nn

from benchmarks.common import MB, environment, markdown_table, summarize, timed, write_jsonl
from toolkit.checkpoint import AsyncCheckpointIO, CheckpointManager, FsspecCheckpointIO
from toolkit.utils.seed import get_rng_state

__all__ = [
    "BENCHMARK",
    "CASES",
    "build_state",
    "state_diff",
    "raw_save",
    "raw_load",
    "run",
    "format_table",
    "main",
    "cli",
]

BENCHMARK = "checkpoint_io"
DEFAULT_SIZE_MB = 250.0
QUICK_SIZE_MB = 8.0
DEFAULT_REPEATS = 5
QUICK_REPEATS = 3

#: Case name -> table label, in table order.
CASES: dict[str, str] = {
    "disk_write": "disk write (open+write+fsync)",
    "raw_save": "raw save (safetensors + torch.save, fsync)",
    "toolkit_save": "toolkit save (CheckpointManager, sync)",
    "async_save_stall": "toolkit async save: stall of save()",
    "async_save_total": "toolkit async save: until wait()",
    "disk_read": "disk read (page cache)",
    "raw_load": "raw load (load_file + torch.load)",
    "toolkit_load": "toolkit load (checksums verified)",
}
_WRITES = ("raw_save", "toolkit_save", "async_save_total")
_READS = ("raw_load", "toolkit_load")
_OTHER_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pth")  # besides model.safetensors


# --------------------------------------------------------------------------- the state


def _model(size_mb: float) -> nn.Sequential:
    """Linear + LayerNorm blocks holding about ``size_mb`` MB of fp32 parameters."""
    n_params = size_mb * MB / 4
    width = 16
    while width < 1024 and (2 * width) ** 2 * 4 <= n_params:  # at least ~4 blocks
        width *= 2
    per_block = width * width + 3 * width  # weight, bias, LayerNorm weight and bias
    blocks = max(1, round(n_params / per_block))
    layers: list[nn.Module] = []
    for _ in range(blocks):
        layers += [nn.Linear(width, width), nn.LayerNorm(width)]
    return nn.Sequential(*layers)


def build_state(size_mb: float, seed: int = 0) -> dict[str, Any]:
    """The checkpoint of a run after one training step, as file name -> content.

    Args:
        size_mb: Size of the model's fp32 parameters in MB (10**6 bytes).
        seed: Seed for the weights and the batch.

    Returns:
        ``model.safetensors`` (weights), ``optimizer.pt`` (AdamW, two moments per
        parameter), ``scheduler.pt`` and ``rng_state.pth`` (python, numpy, torch).
    """
    with _one_thread():
        return _build_state(size_mb, seed)


def _build_state(size_mb: float, seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = _model(size_mb)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 100))
    width = model[0].in_features
    loss = model(torch.randn(8, width)).pow(2).mean()
    loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return {
        "model.safetensors": model.state_dict(),
        "optimizer.pt": optimizer.state_dict(),
        "scheduler.pt": scheduler.state_dict(),
        "rng_state.pth": get_rng_state(),
    }


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Untimed tensor work (set-up, checks) on one intra-op thread.

    Many small tensor ops on a machine whose cores are busy elsewhere are up to 100x
    slower with several OpenMP threads spinning; none of this work is measured.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def state_diff(expected: Any, actual: Any, where: str = "state") -> list[str]:
    """Describe every difference between two nested states (empty list: equal).

    Tensors must match in dtype, shape and values (``torch.equal``); containers in type,
    keys and length; other leaves with ``==`` and the same type.
    """
    if isinstance(expected, torch.Tensor):
        if not isinstance(actual, torch.Tensor):
            return [f"{where}: expected a tensor, got {type(actual).__name__}"]
        if expected.dtype != actual.dtype or expected.shape != actual.shape:
            return [f"{where}: {expected.dtype}{list(expected.shape)} != {actual.dtype}{list(actual.shape)}"]
        return [] if torch.equal(expected, actual) else [f"{where}: tensor values differ"]
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            return [f"{where}: expected a mapping, got {type(actual).__name__}"]
        if set(expected) != set(actual):
            return [f"{where}: keys differ: {sorted(map(str, set(expected) ^ set(actual)))}"]
        return [d for key in expected for d in state_diff(expected[key], actual[key], f"{where}/{key}")]
    if isinstance(expected, (list, tuple)):
        if type(expected) is not type(actual) or len(expected) != len(actual):
            return [f"{where}: {type(expected).__name__} of {len(expected)} != {actual!r:.60}"]
        return [
            d for i, (e, a) in enumerate(zip(expected, actual)) for d in state_diff(e, a, f"{where}[{i}]")
        ]
    if (
        isinstance(expected, float)
        and isinstance(actual, float)
        and math.isnan(expected)
        and math.isnan(actual)
    ):
        return []
    if type(expected) is not type(actual) or expected != actual:
        return [f"{where}: {expected!r:.60} != {actual!r:.60}"]
    return []


# --------------------------------------------------------------------------- the cases


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def raw_save(state: Mapping[str, Any], folder: str) -> None:
    """The plain save: ``save_file`` for the weights, ``torch.save`` for the rest, all fsynced."""
    os.makedirs(folder)
    weights = os.path.join(folder, "model.safetensors")
    safetensors.torch.save_file(state["model.safetensors"], weights)
    _fsync_file(weights)
    for name in _OTHER_FILES:
        with open(os.path.join(folder, name), "wb") as f:
            torch.save(state[name], f)
            f.flush()
            os.fsync(f.fileno())


def raw_load(folder: str) -> dict[str, Any]:
    """The plain load: ``safetensors.torch.load_file`` + ``torch.load(weights_only=True)``."""
    out: dict[str, Any] = {
        "model.safetensors": safetensors.torch.load_file(os.path.join(folder, "model.safetensors"))
    }
    for name in _OTHER_FILES:
        out[name] = torch.load(os.path.join(folder, name), weights_only=True)
    return out


def disk_write(payload: Mapping[str, bytes], folder: str) -> None:
    """Write each payload file with ``open().write()`` and ``os.fsync``."""
    os.makedirs(folder)
    for name, data in payload.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def disk_read(names: Sequence[str], folder: str) -> dict[str, bytes]:
    """Read each file back whole with ``open().read()``."""
    out = {}
    for name in names:
        with open(os.path.join(folder, name), "rb") as f:
            out[name] = f.read()
    return out


def _bytes_diff(expected: Mapping[str, bytes], actual: Mapping[str, bytes]) -> list[str]:
    return [f"{name}: bytes read back differ" for name in expected if actual.get(name) != expected[name]]


def _folder_bytes(folder: str) -> int:
    return sum(e.stat().st_size for e in os.scandir(folder) if e.is_file())


class _Bench:
    """Runs the four case pairs on one state, collecting samples and check results."""

    def __init__(self, state: dict[str, Any], workdir: str) -> None:
        self.state = state
        self.workdir = workdir
        self.samples: dict[str, list[float]] = {name: [] for name in CASES}
        self.bytes: dict[str, int] = {}
        self.checks = 0
        self.failures: list[str] = []
        self._count = 0
        self.manager = CheckpointManager(os.path.join(workdir, "toolkit"), io=FsspecCheckpointIO())
        self.async_io = AsyncCheckpointIO(FsspecCheckpointIO())
        self.async_manager = CheckpointManager(os.path.join(workdir, "async"), io=self.async_io)
        # The disk cases write the very bytes of the plain checkpoint.
        folder = self._folder("sizing")
        raw_save(state, folder)
        self.payload = disk_read(sorted(os.listdir(folder)), folder)
        shutil.rmtree(folder)

    def _folder(self, tag: str) -> str:
        self._count += 1
        return os.path.join(self.workdir, f"{tag}-{self._count}")

    def _time(self, name: str, fn: Callable[[], Any], record: bool) -> Any:
        seconds, result = timed(fn)
        if record:
            self.samples[name].append(seconds)
        return result

    def _check(self, what: str, compare: Callable[..., list[str]], *args: Any) -> None:
        self.checks += 1
        with _one_thread():
            diffs = compare(*args)
        if diffs:
            self.failures.append(f"{what}: {'; '.join(diffs[:5])}" + (" ..." if len(diffs) > 5 else ""))

    def disk(self, record: bool) -> None:
        folder = self._folder("disk")
        self._time("disk_write", lambda: disk_write(self.payload, folder), record)
        self.bytes["disk_write"] = self.bytes["disk_read"] = _folder_bytes(folder)
        back = self._time("disk_read", lambda: disk_read(list(self.payload), folder), record)
        self._check("disk read", _bytes_diff, self.payload, back)
        del back
        shutil.rmtree(folder)

    def raw(self, record: bool) -> None:
        folder = self._folder("raw")
        self._time("raw_save", lambda: raw_save(self.state, folder), record)
        self.bytes["raw_save"] = self.bytes["raw_load"] = _folder_bytes(folder)
        loaded = self._time("raw_load", lambda: raw_load(folder), record)
        self._check("raw load", state_diff, self.state, loaded)
        del loaded
        shutil.rmtree(folder)

    def toolkit(self, record: bool) -> None:
        self._count += 1
        path = self._time("toolkit_save", lambda: self.manager.save(self._count, self.state), record)
        self.bytes["toolkit_save"] = self.bytes["toolkit_load"] = _folder_bytes(path)
        latest = self.manager.latest()
        self._check("toolkit save committed", lambda: [] if latest == path else [f"latest() is {latest}"])
        loaded = self._time("toolkit_load", lambda: self.manager.load(path), record)
        self._check("toolkit load", state_diff, self.state, loaded)
        del loaded
        self.manager.io.remove(path)

    def async_(self, record: bool) -> None:
        self._count += 1
        seconds, path = timed(lambda: self.async_manager.save(self._count, self.state))
        waited, _ = timed(self.async_io.wait)
        if record:
            self.samples["async_save_stall"].append(seconds)
            self.samples["async_save_total"].append(seconds + waited)
        self.bytes["async_save_stall"] = self.bytes["async_save_total"] = _folder_bytes(path)
        loaded = self.async_manager.load(path)
        self._check("async save then load", state_diff, self.state, loaded)
        del loaded
        self.async_manager.io.remove(path)

    def close(self) -> None:
        self.async_io.close()


def _records(bench: _Bench, config: dict[str, Any], env: dict[str, Any]) -> list[dict[str, Any]]:
    timings: dict[str, dict[str, Any]] = {}
    for name, label in CASES.items():
        record = {"benchmark": BENCHMARK, "kind": "timing", "name": name, "label": label}
        record.update(summarize(bench.samples[name]))
        size = bench.bytes[name]
        record.update(bytes=size, mb=size / MB, mb_per_s=size / MB / record["median_s"])
        record["mb_per_s_best"] = size / MB / record["min_s"]
        timings[name] = record

    def ratio(name: str, key: str, other: str, stat: str) -> None:
        best = {"mb_per_s": "mb_per_s_best", "median_s": "min_s"}[stat]
        timings[name][key] = timings[name][stat] / timings[other][stat]
        timings[name][key + "_best"] = timings[name][best] / timings[other][best]

    for name in _WRITES:
        ratio(name, "speed_vs_disk", "disk_write", "mb_per_s")
    for name in _READS:
        ratio(name, "speed_vs_disk", "disk_read", "mb_per_s")
    ratio("toolkit_save", "time_vs_raw", "raw_save", "median_s")
    ratio("toolkit_load", "time_vs_raw", "raw_load", "median_s")
    ratio("async_save_stall", "time_vs_sync", "toolkit_save", "median_s")
    ratio("async_save_total", "time_vs_sync", "toolkit_save", "median_s")
    checks = {
        "benchmark": BENCHMARK,
        "kind": "checks",
        "name": "correctness",
        "checks": bench.checks,
        "failures": bench.failures,
        "passed": bench.checks > 0 and not bench.failures,
    }
    records = [*timings.values(), checks]
    for record in records:
        record.update(config=config, env=env)
    return records


def run(
    size_mb: float = DEFAULT_SIZE_MB,
    repeats: int = DEFAULT_REPEATS,
    directory: str | None = None,
    warmup: int = 1,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Time every case ``repeats`` times (after ``warmup`` unrecorded rounds) and check them.

    Args:
        size_mb: fp32 parameter size of the model in MB; the checkpoint is about 3x that.
        repeats: Recorded rounds; each runs every case once, the order rotated per round.
        directory: Where the temporary folder goes (default: the current directory).
        warmup: Rounds run (and checked) before recording.
        threads: ``torch.set_num_threads`` for the run (default: leave torch's own).
        log: Progress sink (default: standard error).

    Returns:
        One ``kind="timing"`` record per case in `CASES`, then one ``kind="checks"``
        record whose ``passed`` says whether every loaded state equalled the saved one.
    """
    if not size_mb > 0:
        raise ValueError(f"size_mb must be > 0, got {size_mb!r}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats!r} and {warmup!r}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads!r}")
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(size_mb, repeats, directory, warmup, log)
    finally:
        torch.set_num_threads(previous_threads)


def _run(
    size_mb: float, repeats: int, directory: str | None, warmup: int, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    state = build_state(size_mb)
    param_bytes = sum(t.numel() * t.element_size() for t in state["model.safetensors"].values())
    config = {"size_mb": size_mb, "param_bytes": param_bytes, "repeats": repeats, "warmup": warmup}
    workdir = tempfile.mkdtemp(prefix="toolkit-bench-checkpoint-", dir=directory or os.getcwd())
    config["dir"] = os.path.dirname(workdir)
    log(f"checkpoint_io: {param_bytes / MB:.1f} MB of weights, {repeats} repeats, in {workdir}")
    env = environment()
    bench = None
    gc.collect()
    gc.freeze()  # the state and the libraries stay out of the collections between cases
    try:
        bench = _Bench(state, workdir)
        pairs = [bench.disk, bench.raw, bench.toolkit, bench.async_]
        for round_ in range(warmup + repeats):
            record = round_ >= warmup
            shift = round_ % len(pairs)
            for case in pairs[shift:] + pairs[:shift]:
                gc.collect()
                case(record)
            log(f"  {'round' if record else 'warm-up'} {round_ - warmup + 1 if record else round_ + 1} done")
        if hasattr(os, "getloadavg"):
            env["loadavg_1min_end"] = round(os.getloadavg()[0], 2)
        return _records(bench, config, env)
    finally:
        gc.unfreeze()
        if bench is not None:
            bench.close()
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------- reporting


def format_table(records: Sequence[dict[str, Any]]) -> str:
    """The markdown table of the timing records (median-based ratios)."""
    header = ["case", "MB", "median s", "min s", "MB/s", "speed / disk", "time / raw", "time / sync save"]
    rows = []
    for r in records:
        if r.get("benchmark") != BENCHMARK or r.get("kind") != "timing":
            continue
        ratios = [r.get(key) for key in ("speed_vs_disk", "time_vs_raw", "time_vs_sync")]
        rows.append(
            [
                r["label"],
                f"{r['mb']:.1f}",
                f"{r['median_s']:.3f}",
                f"{r['min_s']:.3f}",
                f"{r['mb_per_s']:.0f}",
                *(None if x is None else f"{x:.2f}" for x in ratios),
            ]
        )
    return markdown_table(header, rows)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.checkpoint_io", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SIZE_MB:g} MB, {QUICK_REPEATS} repeats")
    parser.add_argument(
        "--size-mb", type=float, default=None, help=f"fp32 weights in MB (default {DEFAULT_SIZE_MB:g})"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help=f"recorded rounds (default {DEFAULT_REPEATS})"
    )
    parser.add_argument("--warmup", type=int, default=1, help="unrecorded rounds first (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--dir", default=None, help="parent of the temporary folder (default: current dir)")
    parser.add_argument("--out", default=None, help="write the records as JSON lines here ('-': stdout)")
    args = parser.parse_args(argv)
    if args.size_mb is None:
        args.size_mb = QUICK_SIZE_MB if args.quick else DEFAULT_SIZE_MB
    if args.repeats is None:
        args.repeats = QUICK_REPEATS if args.quick else DEFAULT_REPEATS
    if not args.size_mb > 0:
        parser.error(f"--size-mb must be > 0, got {args.size_mb}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark from command-line arguments; print the table, return the records."""
    args = _parse(argv)
    records = run(args.size_mb, args.repeats, directory=args.dir, warmup=args.warmup, threads=args.threads)
    if args.out:
        write_jsonl(records, args.out)
    report = sys.stderr if args.out == "-" else sys.stdout  # keep stdout pure JSON lines then
    print(format_table(records), file=report)
    checks = records[-1]
    if checks["passed"]:
        print(f"\ncorrectness: {checks['checks']} checks passed", file=report)
    else:
        print(f"\ncorrectness: {len(checks['failures'])} of {checks['checks']} checks FAILED:", file=report)
        for failure in checks["failures"]:
            print(f"  - {failure}", file=report)
    return records


def cli(argv: Sequence[str] | None = None) -> int:
    """`main`, then exit status 1 when a correctness check failed."""
    records = main(argv)
    return 0 if all(r.get("passed", True) for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(cli())
