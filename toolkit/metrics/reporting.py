"""Run figures: speed metrics and the human-readable formatting of metric dictionaries."""

from __future__ import annotations

import datetime
import json
import math
import time
from collections.abc import Mapping
from typing import Any

from toolkit.checkpoint import files as storage

__all__ = ["speed_metrics", "metrics_format", "format_metrics_table", "write_metrics_json"]


def speed_metrics(
    split: str, start_time: float, num_samples: int | None = None, num_steps: int | None = None,
    num_tokens: int | None = None,
) -> dict[str, float]:
    """``{split}_runtime`` (s) and, when counts are given, samples/steps/tokens per second.

    Example:
        >>> m = speed_metrics("train", time.time() - 2.0, num_samples=100)
        >>> sorted(m)
        ['train_runtime', 'train_samples_per_second']
    """
    runtime = time.time() - start_time
    result: dict[str, float] = {f"{split}_runtime": round(runtime, 4)}
    if runtime == 0:
        return result
    if num_samples is not None:
        result[f"{split}_samples_per_second"] = round(num_samples / runtime, 3)
    if num_steps is not None:
        result[f"{split}_steps_per_second"] = round(num_steps / runtime, 3)
    if num_tokens is not None:
        result[f"{split}_tokens_per_second"] = round(num_tokens / runtime, 3)
    return result


def metrics_format(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Make metrics readable: runtimes as ``h:mm:ss.ss``, memory deltas in MB, total
    FLOPs in GF, other floats rounded to 4 digits.

    Example:
        >>> metrics_format({"train_runtime": 3725.5, "eval_loss": 0.123456, "total_flos": 2**31})
        {'train_runtime': '1:02:05.50', 'eval_loss': 0.1235, 'total_flos': '2GF'}
    """
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if key.endswith("_runtime") and isinstance(value, (int, float)):
            out[key] = _format_seconds(value)
        elif "_mem_" in key and isinstance(value, (int, float)):
            out[key] = f"{int(value) >> 20}MB"
        elif key == "total_flos" and isinstance(value, (int, float)):
            out[key] = f"{int(value) >> 30}GF"
        elif isinstance(value, float):
            out[key] = round(value, 4)
        else:
            out[key] = value
    return out


def _format_seconds(seconds: float) -> str:
    whole = int(seconds)
    frac = seconds - whole
    text = str(datetime.timedelta(seconds=whole))
    return f"{text}.{round(frac * 100):02d}" if not math.isclose(frac, 0.0) else f"{text}.00"


def format_metrics_table(split: str, metrics: Mapping[str, Any]) -> str:
    """A block of aligned ``key = value`` lines under a ``***** split metrics *****`` title."""
    formatted = metrics_format(metrics)
    width = max((len(k) for k in formatted), default=0)
    lines = [f"***** {split} metrics *****"]
    lines += [f"  {k:<{width}} = {formatted[k]!s:>9}" for k in sorted(formatted)]
    return "\n".join(lines)


def write_metrics_json(output_dir: str, split: str, metrics: Mapping[str, Any], combined: bool = True) -> str:
    """Write ``{split}_results.json`` (``all_results.json`` for split ``"all"``) and, when
    ``combined``, merge the metrics into ``all_results.json``. Returns the written path.

    ``output_dir`` may be a local folder or any fsspec URL (``memory://``, ``s3://`` ...);
    local files are written aside and renamed into place."""
    storage.makedirs(output_dir)
    name = "all_results.json" if split == "all" else f"{split}_results.json"
    path = storage.join(output_dir, name)
    _write_json(path, dict(metrics))
    if combined and split != "all":
        all_path = storage.join(output_dir, "all_results.json")
        merged: dict[str, Any] = {}
        if storage.exists(all_path):
            merged = json.loads(storage.read_bytes(all_path).decode("utf-8"))
        merged.update(metrics)
        _write_json(all_path, merged)
    return path


def _write_json(path: str, data: dict[str, Any]) -> None:
    storage.write_bytes(path, (json.dumps(data, indent=4, sort_keys=True) + "\n").encode("utf-8"))
