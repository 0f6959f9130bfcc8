"""Training curves as a PNG, from a ``log_history`` or a run's ``trainer_state.json``.

`plot_training_curves` draws one image with a panel per curve: the training loss, the
evaluation losses, every other numeric evaluation metric, and the learning rate, all
against the optimizer step. It needs matplotlib (``pip install toolkit[plot]``);
without it, it logs one line and returns None, so a run never fails for a picture.

Command line, to redraw the curves of a finished or running job::

    python -m toolkit.report OUTPUT_DIR [--output PATH]

It reads ``OUTPUT_DIR/trainer_state.json``, or when there is none, the one of the
newest ``checkpoint-<N>`` folder, and writes ``OUTPUT_DIR/training_curves.png`` (or
``PATH``). Paths may be fsspec URLs (``s3://...``, ``memory://...``).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import re
import sys
from collections.abc import Sequence
from typing import Any

import fsspec

__all__ = ["CURVES_FILE_NAME", "find_trainer_state", "load_log_history", "main", "plot_training_curves"]

logger = logging.getLogger(__name__)

CURVES_FILE_NAME = "training_curves.png"
STATE_FILE_NAME = "trainer_state.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")

# Evaluation keys that describe speed or memory, not the model: not drawn.
_NOT_METRICS = ("_runtime", "_samples_per_second", "_steps_per_second", "_jit_compilation_time")


def _join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _series(log_history: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    steps, values = [], []
    for entry in log_history:
        step, value = _number(entry.get("step")), _number(entry.get(key))
        if step is not None and value is not None:
            steps.append(step)
            values.append(value)
    return steps, values


def _eval_keys(log_history: Sequence[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """``(loss keys, other metric keys)`` of evaluation entries, in first-seen order."""
    seen: dict[str, None] = {}
    for entry in log_history:
        for key, value in entry.items():
            if key.startswith("eval_") and _number(value) is not None:
                seen.setdefault(key)
    keys = [k for k in seen if not k.endswith(_NOT_METRICS) and "_mem_" not in k]
    return [k for k in keys if k.endswith("loss")], [k for k in keys if not k.endswith("loss")]


def _panels(log_history: Sequence[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """``(title, keys)`` of every panel that has at least one point."""
    loss_keys, metric_keys = _eval_keys(log_history)
    candidates = [("training loss", ["loss"]), ("evaluation loss", loss_keys)]
    candidates += [(key, [key]) for key in metric_keys]
    candidates.append(("learning rate", ["learning_rate"]))
    return [
        (title, keys) for title, keys in candidates if keys and any(_series(log_history, k)[0] for k in keys)
    ]


def _target(path: str) -> str:
    """``path`` itself when it ends in ``.png``, else ``path/training_curves.png``."""
    return path if path.lower().endswith(".png") else _join(path, CURVES_FILE_NAME)


def plot_training_curves(log_history: Sequence[dict[str, Any]], path: str) -> str | None:
    """Draw the curves of a run into a PNG.

    Panels (only those with data): ``loss`` (training loss), the ``eval_*loss`` keys,
    one per other numeric ``eval_*`` key (speed and memory keys left out), and
    ``learning_rate``, each against ``step``. Entries without a ``step`` are skipped.

    Args:
        log_history: ``TrainerState.log_history``: dicts with ``step`` and values.
        path: The PNG file to write (ends in ``.png``), or else a folder, which
            receives ``training_curves.png``. Local path or fsspec URL.

    Returns:
        The path written, or None when matplotlib is not installed or there is
        nothing to draw (one log line says which).

    Example:
        >>> history = [{"loss": 2.0, "learning_rate": 1e-3, "step": 1}, {"eval_loss": 1.5, "step": 1}]
        >>> out = plot_training_curves(history, "runs/doc")  # "runs/doc/training_curves.png", or None
    """
    panels = _panels(log_history)  # before importing matplotlib, which costs far more than drawing nothing
    if not panels:
        logger.warning(
            "training curves not drawn: the log history has no loss, metric or learning rate with a step"
        )
        return None
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        logger.warning("training curves not drawn: matplotlib is not installed (pip install 'toolkit[plot]')")
        return None
    columns = min(2, len(panels))
    rows = math.ceil(len(panels) / columns)
    # A bare Figure with its own Agg canvas: no pyplot, so the user's backend and
    # global figure list are left alone.
    height = 3.5 * rows
    fig = Figure(figsize=(6 * columns, height))
    FigureCanvasAgg(fig)
    # Fixed margins (in inches at top and bottom): a layout engine costs as much as drawing.
    fig.subplots_adjust(
        left=0.08, right=0.97, bottom=0.55 / height, top=1 - 0.4 / height, wspace=0.22, hspace=0.5
    )
    for i, (title, keys) in enumerate(panels):
        ax = fig.add_subplot(rows, columns, i + 1)
        for key in keys:
            steps, values = _series(log_history, key)
            if steps:
                ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=key)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize="small")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    target = _target(path)
    fs, fs_path = fsspec.core.url_to_fs(target)
    parent = fs_path.rsplit("/", 1)[0] if "/" in fs_path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(fs_path, "wb") as f:
        f.write(buffer.getvalue())
    return target


def find_trainer_state(output_dir: str) -> str:
    """Return the ``trainer_state.json`` of a run folder.

    ``output_dir/trainer_state.json`` when present, else the one of the newest
    ``checkpoint-<N>`` folder (highest N) that has one. Only fsspec is used, so the
    command line starts without importing torch.

    Args:
        output_dir: The run's output directory (local path or fsspec URL).

    Raises:
        FileNotFoundError: Naming ``output_dir`` when no state file is found.
    """
    fs, root = fsspec.core.url_to_fs(output_dir)
    if fs.exists(_join(root, STATE_FILE_NAME)):
        return _join(output_dir, STATE_FILE_NAME)
    steps = []
    if fs.isdir(root):
        for entry in fs.ls(root, detail=False):
            match = _CHECKPOINT.match(entry.rstrip("/").rsplit("/", 1)[-1])
            if match:
                steps.append((int(match.group(1)), match.group(0)))
    for _, name in sorted(steps, reverse=True):  # newest first; steps compare as numbers
        if fs.exists(_join(_join(root, name), STATE_FILE_NAME)):
            return _join(_join(output_dir, name), STATE_FILE_NAME)
    raise FileNotFoundError(
        f"no {STATE_FILE_NAME} in {output_dir!r} nor in any checkpoint-<N> folder under it; "
        "is this the output_dir of a training run?"
    )


def load_log_history(output_dir: str) -> list[dict[str, Any]]:
    """Return the ``log_history`` of the run in ``output_dir`` (see `find_trainer_state`)."""
    with fsspec.open(find_trainer_state(output_dir), "r", encoding="utf-8") as f:
        state = json.load(f)
    history = state.get("log_history", [])
    if not isinstance(history, list):
        raise ValueError(f"{STATE_FILE_NAME} in {output_dir!r}: log_history is not a list")
    return history


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m toolkit.report OUTPUT_DIR [--output PATH]``; returns the exit status.

    0: curves written (the path is printed); 1: nothing drawn (no matplotlib, or nothing
    to plot); 2: no ``trainer_state.json`` found, or a bad command line.
    """
    parser = argparse.ArgumentParser(
        prog="python -m toolkit.report",
        description="Draw training_curves.png from a run's trainer_state.json.",
    )
    parser.add_argument("output_dir", help="the run's output_dir (or a checkpoint folder)")
    parser.add_argument("--output", default=None, help="PNG file or folder to write (default: OUTPUT_DIR)")
    args = parser.parse_args(argv)
    try:
        history = load_log_history(args.output_dir)
    except (FileNotFoundError, ValueError, json.JSONDecodeError) as err:
        print(f"toolkit.report: error: {err}", file=sys.stderr)
        return 2
    written = plot_training_curves(history, args.output if args.output is not None else args.output_dir)
    if written is None:
        print("toolkit.report: nothing written (see the message above)", file=sys.stderr)
        return 1
    print(written)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
