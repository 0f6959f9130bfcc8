"""Signals during training and during evaluation.

SIGTERM (what schedulers send before killing a job): the current step finishes, a
checkpoint is saved, training exits with code 143 and a log line saying how to resume,
and the resumed run is exact. SIGINT (Ctrl-C): training stops at once without a save
(``KeyboardInterrupt``, as with the HF Trainer and Lightning), a log line names the newest
checkpoint, no partial checkpoint is left even when it lands inside a write, and resuming
from the newest checkpoint is exact. The signals are real (``os.kill`` on this process,
handled by the installed handlers); ``test_soak.py`` covers signals sent by another process.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import pytest
import torch

import toolkit.checkpoint.io as io_mod
from toolkit import Trainer
from toolkit.callbacks import TrainerCallback
from toolkit.checkpoint import FsspecCheckpointIO

pytestmark = pytest.mark.slow  # the reliability suites run in CI: pytest -m slow tests/reliability
MAX_STEPS = 8
IO = FsspecCheckpointIO()


class SignalAt(TrainerCallback):
    """Sends ``signum`` to this process while step ``step`` trains, or while the
    evaluation after step ``step`` runs (``during_eval``)."""

    def __init__(self, signum: int, step: int, during_eval: bool = False) -> None:
        self.signum, self.step, self.during_eval = signum, step, during_eval
        self.sent = False

    def _send(self) -> None:
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)

    def on_step_begin(self, args, state, control, **kwargs):
        if not self.during_eval and state.global_step == self.step - 1:
            self._send()

    def on_prediction_step(self, args, state, control, **kwargs):
        if self.during_eval and state.global_step == self.step:
            self._send()


def _trainer(h, out, callbacks=None, **overrides: Any) -> Trainer:
    values = dict(
        max_steps=MAX_STEPS,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        save_strategy="steps",
        save_steps=2,
        evaluation_strategy="steps",
        eval_steps=3,
        logging_steps=1,
        learning_rate=0.05,
    )
    values.update(overrides)
    return Trainer(
        h.seeded(h.DropoutRegressor, seed=0),
        h.make_args(out, **values),
        train_dataset=h.regression_data(20),
        eval_dataset=h.regression_data(6, seed=1),
        callbacks=callbacks,
    )


@pytest.fixture(scope="module")
def reference(h, tmp_path_factory) -> dict[str, Any]:
    trainer = _trainer(h, tmp_path_factory.mktemp("reference"))
    trainer.train()
    return {"weights": h.weights(trainer.model), "losses": h.train_losses(trainer.state.log_history)}


def _checkpoints(out) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint-"))


def _assert_clean(out) -> None:
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if ".tmp-" in n], names
    for name in _checkpoints(out):
        IO.verify(str(out / name))


def _resume_and_compare(h, out, reference, **overrides: Any) -> None:
    resumed = _trainer(h, out, **overrides)
    resumed.train(resume_from_checkpoint=True)
    weights = h.weights(resumed.model)
    for key, value in reference["weights"].items():
        assert torch.equal(value, weights[key]), key
    assert h.train_losses(resumed.state.log_history) == reference["losses"]


@pytest.mark.parametrize("save_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("during_eval", [False, True], ids=["training", "evaluation"])
def test_sigterm_saves_exits_143_and_resumes_exactly(h, tmp_path, reference, caplog, during_eval, save_async):
    # step 5 trains, or the evaluation after step 3 runs, when the signal arrives
    step = 3 if during_eval else 5
    trainer = _trainer(
        h, tmp_path, callbacks=[SignalAt(signal.SIGTERM, step, during_eval)], save_async=save_async
    )
    previous = signal.getsignal(signal.SIGTERM)
    with caplog.at_level(logging.WARNING, logger="toolkit"), pytest.raises(SystemExit) as exit_info:
        trainer.train()
    assert exit_info.value.code == 143
    assert signal.getsignal(signal.SIGTERM) is previous
    # during training: the step finishes; during the evaluation that ends step 3: the evaluation
    # finishes, then the run saves and stops at that same step
    stop = step
    assert f"Training stopped on a termination signal at step {stop}" in caplog.text
    assert "resume_from_checkpoint=True" in caplog.text
    # the scheduled checkpoints before the signal, and one at the step it stopped
    expected = sorted({f"checkpoint-{s}" for s in range(2, stop + 1, 2)} | {f"checkpoint-{stop}"})
    assert _checkpoints(tmp_path) == expected
    _assert_clean(tmp_path)
    _resume_and_compare(h, tmp_path, reference, save_async=save_async)


@pytest.mark.parametrize("during_eval", [False, True], ids=["training", "evaluation"])
def test_sigint_stops_at_once_without_a_save(h, tmp_path, reference, caplog, during_eval):
    step = 3 if during_eval else 5
    trainer = _trainer(h, tmp_path, callbacks=[SignalAt(signal.SIGINT, step, during_eval)])
    with caplog.at_level(logging.WARNING, logger="toolkit"), pytest.raises(KeyboardInterrupt):
        trainer.train()
    newest = "checkpoint-2" if during_eval else "checkpoint-4"  # the eval at step 3 precedes no save
    assert "Training interrupted (SIGINT)" in caplog.text
    assert f"The newest checkpoint is {tmp_path / newest}" in caplog.text
    assert _checkpoints(tmp_path)[-1] == newest
    _assert_clean(tmp_path)
    _resume_and_compare(h, tmp_path, reference)


@pytest.mark.parametrize("file_index", [1, 3], ids=["first-file", "third-file"])
def test_sigint_inside_a_checkpoint_write_leaves_no_partial_checkpoint(
    h, tmp_path, reference, monkeypatch, file_index
):
    """Ctrl-C lands while checkpoint-4's files are being written (the interrupt is raised
    inside the write): the half-written folder is removed; checkpoint-2 is the newest."""
    counter = {"n": 0}

    def wrap(original):
        def write(self, fs, path, *args, **kwargs):
            if "checkpoint-4" in str(path) and not str(path).endswith(io_mod.PARTIAL_MARKER):
                counter["n"] += 1
                if counter["n"] == file_index:
                    os.kill(os.getpid(), signal.SIGINT)
            return original(self, fs, path, *args, **kwargs)

        return write

    for name in ("_write_file", "_write_entry"):
        if hasattr(io_mod.FsspecCheckpointIO, name):
            monkeypatch.setattr(
                io_mod.FsspecCheckpointIO, name, wrap(getattr(io_mod.FsspecCheckpointIO, name))
            )
    trainer = _trainer(h, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    monkeypatch.undo()
    assert counter["n"] >= file_index
    assert _checkpoints(tmp_path) == ["checkpoint-2"]
    _assert_clean(tmp_path)
    _resume_and_compare(h, tmp_path, reference)


def test_sigterm_during_an_epoch_end_evaluation_stops_at_that_epochs_end(h, tmp_path, caplog):
    def make(out, callbacks=None):
        return Trainer(
            h.seeded(h.DropoutRegressor, seed=0),
            h.make_args(
                out, max_steps=MAX_STEPS, per_device_train_batch_size=2, per_device_eval_batch_size=2,
                save_strategy="steps", save_steps=100, evaluation_strategy="epoch", logging_steps=1,
                learning_rate=0.05,
            ),
            train_dataset=h.regression_data(8),  # 4 steps per epoch: evaluations after steps 4 and 8
            eval_dataset=h.regression_data(6, seed=1),
            callbacks=callbacks,
        )

    full = make(tmp_path / "reference")
    full.train()
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="toolkit"), pytest.raises(SystemExit):
        make(out, callbacks=[SignalAt(signal.SIGTERM, 4, during_eval=True)]).train()
    assert "Training stopped on a termination signal at step 4" in caplog.text
    assert _checkpoints(out) == ["checkpoint-4"]
    resumed = make(out)
    resumed.train(resume_from_checkpoint=True)
    expected = h.weights(full.model)
    for key, value in h.weights(resumed.model).items():
        assert torch.equal(value, expected[key]), key
