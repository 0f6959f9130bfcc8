"""Progress display: a tqdm bar (`ProgressCallback`) or plain printed logs (`PrinterCallback`).

The facade registers exactly one of the two: `ProgressCallback` by default and
`PrinterCallback` when ``disable_tqdm`` is set. Both show logs on the main process only.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from tqdm import tqdm

from toolkit.callbacks.base import TrainerCallback, without_event_objects
from toolkit.state import TrainerControl, TrainerState

__all__ = ["ProgressCallback", "PrinterCallback"]


def _printable_logs(logs: dict[str, Any] | None) -> dict[str, Any]:
    """A shallow copy of ``logs`` without ``total_flos`` (the caller's dict is left intact)."""
    return {k: v for k, v in (logs or {}).items() if k != "total_flos"}


def _is_terminal(stream: IO[str] | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # closed or unusual streams
        return False


class ProgressCallback(TrainerCallback):
    """Shows a tqdm bar for training steps and one for prediction batches; writes logs above them.

    Owns two bars: the training bar (created on ``on_train_begin`` with
    ``total=state.max_steps``, advanced on ``on_step_end``, closed on ``on_train_end``)
    and the prediction bar (created on the first ``on_prediction_step`` of an evaluation,
    closed on ``on_evaluate`` / ``on_predict``). Bars exist on the world main process only.

    When the bar's stream is not a terminal (CI logs, files), carriage-return redraws
    would become thousands of lines, so the bar redraws at most every
    ``non_tty_mininterval`` seconds and uses ASCII characters.

    Args:
        file: stream the bars draw on; ``None`` means ``sys.stderr`` at bar creation.
        non_tty_mininterval: minimum seconds between redraws when ``file`` is not a terminal.

    Example:
        >>> import io
        >>> cb = ProgressCallback(file=io.StringIO())
        >>> state = TrainerState(max_steps=3)
        >>> _ = cb.on_train_begin(None, state, TrainerControl())
        >>> state.global_step = 3
        >>> _ = cb.on_step_end(None, state, TrainerControl())
        >>> cb.training_bar.n
        3
        >>> _ = cb.on_train_end(None, state, TrainerControl())
    """

    def __init__(self, file: IO[str] | None = None, non_tty_mininterval: float = 30.0) -> None:
        self.file = file
        self.non_tty_mininterval = non_tty_mininterval
        self.training_bar: tqdm | None = None
        self.prediction_bar: tqdm | None = None
        self.current_step = 0

    def _new_bar(self, total: int | None, leave: bool) -> tqdm:
        stream = self.file if self.file is not None else sys.stderr
        if _is_terminal(stream):
            return tqdm(total=total, leave=leave, file=stream, dynamic_ncols=True)
        interval = self.non_tty_mininterval
        return tqdm(
            total=total, leave=leave, file=stream, ascii=True, mininterval=interval, maxinterval=interval
        )

    @without_event_objects
    def on_train_begin(
        self, args: Any, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        """Create the training bar (main process only)."""
        if state.is_world_process_zero:
            if self.training_bar is not None:
                self.training_bar.close()
            self.training_bar = self._new_bar(total=state.max_steps, leave=True)
        self.current_step = 0
        return control

    @without_event_objects
    def on_step_end(
        self, args: Any, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        """Advance the training bar to ``state.global_step``."""
        if self.training_bar is not None:
            self.training_bar.update(state.global_step - self.current_step)
            self.current_step = state.global_step
        return control

    def on_prediction_step(
        self,
        args: Any,
        state: TrainerState,
        control: TrainerControl,
        eval_dataloader: Any = None,
        **kwargs: Any,
    ) -> TrainerControl:
        """Advance the prediction bar, creating it on the first batch of an evaluation.

        Its total is ``len(eval_dataloader)`` when the loader has a length; otherwise the
        bar only counts batches. Nothing is shown when no ``eval_dataloader`` is passed.
        """
        if not state.is_world_process_zero or eval_dataloader is None:
            return control
        if self.prediction_bar is None:
            try:
                total: int | None = len(eval_dataloader)
            except TypeError:
                total = None
            self.prediction_bar = self._new_bar(total=total, leave=self.training_bar is None)
        self.prediction_bar.update(1)
        return control

    def _close_prediction_bar(self) -> None:
        if self.prediction_bar is not None:
            self.prediction_bar.close()
            self.prediction_bar = None

    def on_evaluate(
        self, args: Any, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        """Close the prediction bar."""
        self._close_prediction_bar()
        return control

    def on_predict(
        self, args: Any, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        """Close the prediction bar."""
        self._close_prediction_bar()
        return control

    def on_log(
        self,
        args: Any,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> TrainerControl:
        """Write the logs (without ``total_flos``) to stdout above the training bar."""
        if state.is_world_process_zero and self.training_bar is not None:
            self.training_bar.write(str(_printable_logs(logs)))
        return control

    def on_train_end(
        self, args: Any, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        """Close the bars."""
        self._close_prediction_bar()
        if self.training_bar is not None:
            self.training_bar.close()
            self.training_bar = None
        return control


class PrinterCallback(TrainerCallback):
    """Prints each logs dictionary (without ``total_flos``) on the local main process.

    Used instead of `ProgressCallback` when ``disable_tqdm`` is set.

    Example:
        >>> _ = PrinterCallback().on_log(None, TrainerState(), TrainerControl(),
        ...                              logs={"loss": 0.5, "total_flos": 1e9})
        {'loss': 0.5}
    """

    def on_log(
        self,
        args: Any,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> TrainerControl:
        """Print the logs."""
        if state.is_local_process_zero:
            print(_printable_logs(logs))
        return control
