"""`TensorBoardLogger`: scalars and hyper-parameters through `torch.utils.tensorboard`."""

from __future__ import annotations

import json
import os
from typing import Any

from toolkit.loggers.base import Logger, flatten_params, require_package

__all__ = ["TensorBoardLogger"]

_HPARAM_TYPES = (bool, int, float, str)


class TensorBoardLogger(Logger):
    """Writes scalars to TensorBoard event files in ``log_dir``.

    The `SummaryWriter` is created on first use (constructing the logger imports and
    writes nothing) and closed by `finalize`; using the logger again opens a new event
    file in the same folder. Hyper-parameters are written twice, into the same event
    file: as text (tag ``hparams``, the JSON of the nested dict) and as the HParams
    plugin's session (flattened with ``/``; values that are not bool/int/float/str are
    stored as their ``str``), so they show in both the Text and the HParams tab.

    Args:
        log_dir: folder of the event files (TensorBoard's ``--logdir``).
        **writer_kwargs: passed to `torch.utils.tensorboard.SummaryWriter`
            (e.g. ``flush_secs``).

    Raises:
        ImportError: when the ``tensorboard`` package is missing (``toolkit[tensorboard]``).
    """

    def __init__(self, log_dir: str | os.PathLike, **writer_kwargs: Any) -> None:
        require_package("tensorboard", "tensorboard", "TensorBoardLogger")
        self.log_dir = os.fspath(log_dir)
        self._writer_kwargs = writer_kwargs
        self._writer: Any = None

    @property
    def name(self) -> str:
        return "tensorboard"

    @property
    def writer(self) -> Any:
        """The underlying `SummaryWriter` (created on first access)."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self.log_dir, **self._writer_kwargs)
        return self._writer

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        writer = self.writer
        for key, value in metrics.items():
            writer.add_scalar(key, value, global_step=step)
        writer.flush()

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        writer = self.writer
        writer.add_text("hparams", json.dumps(params, indent=2, default=str), global_step=0)
        flat = {k: v if type(v) in _HPARAM_TYPES else str(v) for k, v in flatten_params(params).items()}
        if flat:
            file_writer = writer._get_file_writer()
            for summary in hparams(flat, metric_dict={}):
                file_writer.add_summary(summary)
        writer.flush()

    def finalize(self, status: str = "success") -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __repr__(self) -> str:
        return f"TensorBoardLogger({self.log_dir!r})"
