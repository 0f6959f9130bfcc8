"""Helpers shared by every benchmark: timing, summaries, JSON lines and markdown tables.

A benchmark module exposes ``run(...) -> list[dict]`` (one flat, JSON-able dict per
measured figure, each with at least ``"benchmark"``, ``"kind"`` and ``"name"``) and a
``main(argv) -> list[dict]`` command line. The records can be written as JSON lines
with `write_jsonl` and turned into a table with `markdown_table`, so a harness can run
several benchmarks and concatenate their output.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

__all__ = ["MB", "timed", "summarize", "environment", "write_jsonl", "markdown_table", "fmt"]

#: Throughputs are in MB/s with MB = 10**6 bytes.
MB = 1_000_000

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Run ``fn()`` once and return ``(wall seconds, its result)``.

    The cyclic garbage collector is paused meanwhile (as ``timeit`` does), so that a
    full collection of unrelated objects does not land in one sample at random; call
    ``gc.collect()`` between samples instead.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        result = fn()
        return time.perf_counter() - start, result
    finally:
        if was_enabled:
            gc.enable()


def summarize(samples: Sequence[float]) -> dict[str, Any]:
    """Median, minimum and the raw samples (seconds) of one measured operation."""
    if not samples:
        raise ValueError("summarize() needs at least one sample")
    return {
        "repeats": len(samples),
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "samples_s": [round(s, 6) for s in samples],
    }


def environment() -> dict[str, Any]:
    """What the figures depend on: interpreter, library versions and CPU count."""
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if hasattr(os, "getloadavg"):  # other work on the machine skews every figure
        env["loadavg_1min"] = round(os.getloadavg()[0], 2)
    try:
        import safetensors

        env["safetensors"] = safetensors.__version__
    except ImportError:  # pragma: no cover - a dependency of toolkit
        pass
    return env


def write_jsonl(records: Iterable[dict[str, Any]], path: str) -> None:
    """Write one JSON object per line to ``path`` (``"-"``: standard output)."""
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    if path == "-":
        sys.stdout.write(lines)
        return
    with open(path, "w", encoding="utf-8") as f:
        f.write(lines)


def fmt(value: Any, digits: int = 2) -> str:
    """Format a table cell: floats with ``digits`` decimals, None as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Render a GitHub markdown table; cells go through `fmt`, numbers are right-aligned."""
    rows = [[fmt(c) if not isinstance(c, str) else c for c in row] for row in rows]
    align = ["---:" if rows and all(_numeric(r[i]) for r in rows) else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _numeric(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return cell == "—"
    return True
