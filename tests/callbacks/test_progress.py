"""ProgressCallback (tqdm bars) and PrinterCallback."""

from __future__ import annotations

import contextlib
import io

from toolkit.callbacks import CallbackHandler, PrinterCallback, ProgressCallback
from toolkit.state import TrainerControl, TrainerState


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class NoLenLoader:
    def __iter__(self):
        return iter(range(3))


def train(handler, state, n_steps, log_every=0):
    control = handler.on_train_begin(None, state, TrainerControl())
    for step in range(1, n_steps + 1):
        state.global_step = step
        control = handler.on_step_end(None, state, control)
        if log_every and step % log_every == 0:
            control = handler.on_log(None, state, control, logs={"loss": 0.25, "total_flos": 1.0e12})
    return handler.on_train_end(None, state, control)


def test_training_bar_follows_global_step():
    cb = ProgressCallback(file=io.StringIO())
    state = TrainerState(max_steps=10)
    cb.on_train_begin(None, state, TrainerControl())
    bar = cb.training_bar
    assert bar is not None and bar.total == 10
    for step in (1, 2, 5):  # jumps (e.g. after a resume) are handled
        state.global_step = step
        cb.on_step_end(None, state, TrainerControl())
    assert bar.n == 5
    cb.on_train_end(None, state, TrainerControl())
    assert cb.training_bar is None


def test_no_bars_off_main_process():
    stream = io.StringIO()
    cb = ProgressCallback(file=stream)
    state = TrainerState(max_steps=10, is_world_process_zero=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        train(CallbackHandler([cb]), state, 10, log_every=5)
        cb.on_prediction_step(None, state, TrainerControl(), eval_dataloader=[1, 2])
    assert cb.prediction_bar is None
    assert stream.getvalue() == "" and out.getvalue() == ""


def test_on_log_writes_logs_without_total_flos():
    cb = ProgressCallback(file=io.StringIO())
    state = TrainerState(max_steps=4)
    logs = {"loss": 0.123456789, "learning_rate": 5e-05, "epoch": 1.0, "total_flos": 3.0e12}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cb.on_train_begin(None, state, TrainerControl())
        cb.on_log(None, state, TrainerControl(), logs=logs)
        cb.on_train_end(None, state, TrainerControl())
    assert out.getvalue().strip() == str({"loss": 0.123456789, "learning_rate": 5e-05, "epoch": 1.0})
    assert "total_flos" in logs  # the caller's dict is not mutated


def test_on_log_without_training_bar_is_silent():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ProgressCallback(file=io.StringIO()).on_log(None, TrainerState(), TrainerControl(), logs={"a": 1})
    assert out.getvalue() == ""


def test_prediction_bar_lifecycle():
    stream = io.StringIO()
    cb = ProgressCallback(file=stream)
    state = TrainerState(max_steps=4)
    loader = [0, 1, 2]
    handler = CallbackHandler([cb], eval_dataloader=loader)  # passed as a handler object
    control = TrainerControl()
    assert cb.prediction_bar is None
    control = handler.on_prediction_step(None, state, control)
    bar = cb.prediction_bar
    assert bar is not None and bar.total == 3 and bar.n == 1
    handler.on_prediction_step(None, state, control)
    handler.on_prediction_step(None, state, control)
    assert cb.prediction_bar is bar and bar.n == 3
    handler.on_evaluate(None, state, control, metrics={"eval_loss": 1.0})
    assert cb.prediction_bar is None
    # a new evaluation gets a fresh bar; on_predict closes it too
    handler.on_prediction_step(None, state, control)
    assert cb.prediction_bar is not None and cb.prediction_bar is not bar
    handler.on_predict(None, state, control, metrics={})
    assert cb.prediction_bar is None


def test_prediction_bar_without_length_counts_batches():
    cb = ProgressCallback(file=io.StringIO())
    state = TrainerState()
    cb.on_prediction_step(None, state, TrainerControl(), eval_dataloader=NoLenLoader())
    assert cb.prediction_bar.total is None and cb.prediction_bar.n == 1
    cb.on_evaluate(None, state, TrainerControl(), metrics={})
    assert cb.prediction_bar is None


def test_prediction_bar_needs_a_dataloader():
    cb = ProgressCallback(file=io.StringIO())
    cb.on_prediction_step(None, TrainerState(), TrainerControl())
    assert cb.prediction_bar is None


def test_train_end_closes_leftover_prediction_bar():
    cb = ProgressCallback(file=io.StringIO())
    state = TrainerState(max_steps=2)
    cb.on_train_begin(None, state, TrainerControl())
    cb.on_prediction_step(None, state, TrainerControl(), eval_dataloader=[1, 2])
    cb.on_train_end(None, state, TrainerControl())
    assert cb.prediction_bar is None and cb.training_bar is None


class FakeClock:
    """Replaces tqdm's clock so a 500-step run "takes" 250 s without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def train_with_clock(stream_ctx, cb, clock, n_steps, seconds_per_step):
    with stream_ctx:
        handler = CallbackHandler([cb])
        state = TrainerState(max_steps=n_steps)
        control = handler.on_train_begin(None, state, TrainerControl())
        for step in range(1, n_steps + 1):
            clock.now += seconds_per_step
            state.global_step = step
            control = handler.on_step_end(None, state, control)
        handler.on_train_end(None, state, control)


def redraws(text: str) -> int:
    return text.count("\r") + text.count("\n")


def test_non_tty_stderr_prints_few_lines_for_500_steps(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr("tqdm.std.time", clock)
    err = io.StringIO()  # not a tty
    # ProgressCallback() draws on sys.stderr as it is when the bar is created
    train_with_clock(contextlib.redirect_stderr(err), ProgressCallback(), clock, 500, 0.5)
    text = err.getvalue()
    assert 2 <= redraws(text) <= 15, repr(text)  # ~250 s / 30 s, plus first and last
    assert "500/500" in text
    assert all(ord(ch) < 128 for ch in text)  # ascii bar


def test_tty_keeps_frequent_redraws(monkeypatch):
    """Control for the test above: the same run on a terminal redraws on almost every step."""
    clock = FakeClock()
    monkeypatch.setattr("tqdm.std.time", clock)
    tty = FakeTTY()
    train_with_clock(contextlib.nullcontext(), ProgressCallback(file=tty), clock, 500, 0.5)
    assert redraws(tty.getvalue()) > 100


def test_bar_settings_depend_on_the_stream():
    """A terminal keeps tqdm's quick redraws; other streams get the slow ASCII bar."""
    tty = FakeTTY()
    cb = ProgressCallback(file=tty)
    state = TrainerState(max_steps=50)
    cb.on_train_begin(None, state, TrainerControl())
    bar = cb.training_bar
    assert bar.mininterval < 1 and bar.maxinterval == 10
    cb.on_train_end(None, state, TrainerControl())
    cb = ProgressCallback(file=io.StringIO(), non_tty_mininterval=12.5)
    cb.on_train_begin(None, state, TrainerControl())
    assert cb.training_bar.mininterval == 12.5 and cb.training_bar.ascii
    cb.on_train_end(None, state, TrainerControl())


def test_printer_callback_prints_logs_on_local_main_process_only():
    logs = {"loss": 0.5, "epoch": 0.25, "total_flos": 9.0}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        PrinterCallback().on_log(None, TrainerState(), TrainerControl(), logs=logs)
        PrinterCallback().on_log(None, TrainerState(is_local_process_zero=False), TrainerControl(), logs=logs)
    assert out.getvalue() == str({"loss": 0.5, "epoch": 0.25}) + "\n"
    assert "total_flos" in logs
