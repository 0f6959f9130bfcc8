"""SIGTERM during training: the step finishes, a checkpoint is saved, the process exits
with code 143, and resuming from that checkpoint ends exactly like an uninterrupted run."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from toolkit import Trainer
from toolkit.callbacks import TrainerCallback


class SigtermAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step - 1:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while step `self.step` runs


def _trainer(h, folder, callbacks=None, **overrides):
    args = h.make_args(folder, max_steps=8, per_device_train_batch_size=2, save_strategy="no",
                       logging_steps=1, learning_rate=0.05, **overrides)
    model = h.seeded(h.DropoutRegressor, seed=0)
    return Trainer(model, args, train_dataset=h.regression_data(20), callbacks=callbacks)


def test_sigterm_saves_exits_and_resumes_exactly(h, tmp_path) -> None:
    reference = _trainer(h, tmp_path / "ref")
    reference.train()

    folder = tmp_path / "run"
    preempted = _trainer(h, folder, callbacks=[SigtermAt(3)])
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_info:
        preempted.train()
    assert exit_info.value.code == 143
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler was put back
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-3"]

    resumed = _trainer(h, folder)
    resumed.train(resume_from_checkpoint=True)
    for name, value in h.weights(reference.model).items():
        assert torch.equal(value, h.weights(resumed.model)[name]), name
    assert h.train_losses(resumed.state.log_history) == h.train_losses(reference.state.log_history)


def test_preemption_checkpoint_off_leaves_sigterm_alone(h, tmp_path) -> None:
    trainer = _trainer(h, tmp_path, preemption_checkpoint=False)
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        trainer.add_callback(SigtermAt(2))
        trainer.train()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == [signal.SIGTERM]
    assert trainer.state.global_step == 8
    assert not any(p.name.startswith("checkpoint") for p in tmp_path.iterdir())
