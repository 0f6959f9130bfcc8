"""`JSONLinesLogger`: one JSON object per logging call, one per line."""

from __future__ import annotations

import json
import os
from typing import Any

from toolkit.loggers._files import write_hparams_json
from toolkit.loggers.base import Logger

__all__ = ["JSONLinesLogger"]


class JSONLinesLogger(Logger):
    """Appends ``{"step": step, **metrics}`` as one line of ``save_dir/<name>`` per call.

    Each call opens, appends and closes the file, so a crash loses at most the line being
    written and a resumed run continues the same file. NaN and infinity are written as
    Python's `json` writes them (``NaN``, ``Infinity``), which `json.loads` reads back.
    Hyper-parameters go to ``save_dir/hparams.json``. A metric called ``step`` would
    clash with the step; the step passed in wins.

    Args:
        save_dir: folder of the file (created on first write).
        name: file name inside ``save_dir``.

    Example:
        >>> import json
        >>> lg = JSONLinesLogger("runs/jsonl")
        >>> lg.log_metrics({"loss": 0.5}, step=1)
        >>> lg.log_metrics({"eval_loss": 0.4}, step=1)
        >>> [json.loads(line) for line in open(lg.path)]
        [{'step': 1, 'loss': 0.5}, {'step': 1, 'eval_loss': 0.4}]
    """

    def __init__(self, save_dir: str | os.PathLike, name: str = "metrics.jsonl") -> None:
        self.save_dir = os.fspath(save_dir)
        self.filename = name
        self._hparams: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return "jsonl"

    @property
    def path(self) -> str:
        """Path of the JSON lines file."""
        return os.path.join(self.save_dir, self.filename)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        record = {"step": int(step), **{k: v for k, v in metrics.items() if k != "step"}}
        os.makedirs(self.save_dir, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        self._hparams.update(params)
        write_hparams_json(self.save_dir, self._hparams)

    def __repr__(self) -> str:
        return f"JSONLinesLogger({self.path!r})"
