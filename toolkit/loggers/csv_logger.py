"""`CSVLogger`: one row per logging call in a wide CSV file readable by `csv.DictReader`."""

from __future__ import annotations

import csv
import io
import os
from typing import Any

from toolkit.loggers._files import atomic_write_text, write_hparams_json
from toolkit.loggers.base import Logger

__all__ = ["CSVLogger"]


class CSVLogger(Logger):
    """Writes metrics to ``save_dir/<name>``: a ``step`` column, then one column per metric.

    The file is wide (one row per `log_metrics` call). When a metric name appears that
    the header does not have yet, the file is rewritten once (atomically) with the union
    of the columns; older rows get an empty cell for it. A file that already exists is
    continued, not replaced, so a resumed run appends to the same table. Each call opens,
    appends and closes the file: nothing stays open and nothing is buffered.
    Hyper-parameters go to ``save_dir/hparams.json``.

    A metric called ``step`` would clash with the step column; the step passed in wins.

    Args:
        save_dir: folder of the file (created on first write).
        name: file name inside ``save_dir``.

    Example:
        >>> import csv
        >>> lg = CSVLogger("runs/csv")
        >>> lg.log_metrics({"loss": 0.5}, step=1)
        >>> lg.log_metrics({"loss": 0.25, "eval_loss": 0.3}, step=2)
        >>> [dict(r) for r in csv.DictReader(open(lg.path))]
        [{'step': '1', 'loss': '0.5', 'eval_loss': ''}, {'step': '2', 'loss': '0.25', 'eval_loss': '0.3'}]
    """

    def __init__(self, save_dir: str | os.PathLike, name: str = "metrics.csv") -> None:
        self.save_dir = os.fspath(save_dir)
        self.filename = name
        self._columns: list[str] | None = None  # header of the file, read lazily
        self._hparams: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return "csv"

    @property
    def path(self) -> str:
        """Path of the CSV file."""
        return os.path.join(self.save_dir, self.filename)

    def _read_columns(self) -> list[str]:
        if self._columns is None:
            self._columns = []
            if os.path.isfile(self.path):
                with open(self.path, newline="", encoding="utf-8") as f:
                    self._columns = next(csv.reader(f), [])
        return self._columns

    def _rewrite(self, columns: list[str]) -> None:
        rows: list[dict[str, str]] = []
        if os.path.isfile(self.path):
            with open(self.path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buf.getvalue())
        self._columns = columns

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        row: dict[str, Any] = {k: v for k, v in metrics.items() if k != "step"}
        row = {"step": int(step), **row}
        columns = self._read_columns()
        if any(k not in columns for k in row):
            columns = list(dict.fromkeys([*columns, *row]))
            self._rewrite(columns)
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=columns, restval="").writerow(row)

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        self._hparams.update(params)
        write_hparams_json(self.save_dir, self._hparams)

    def finalize(self, status: str = "success") -> None:
        self._columns = None  # nothing is open; re-read the header if used again

    def __repr__(self) -> str:
        return f"CSVLogger({self.path!r})"
