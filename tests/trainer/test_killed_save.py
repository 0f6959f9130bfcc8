"""A process killed (SIGKILL) in the middle of writing a checkpoint leaves nothing that
looks complete: ``resume_from_checkpoint=True`` falls back to the previous checkpoint,
the leftovers are cleaned up by the next save, and the resumed run is exact."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from toolkit import Trainer

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import conftest as h
    import toolkit.checkpoint.io as io_mod
    from toolkit import Trainer

    kill_on = {kill_on!r}
    original_file, original_entry = io_mod.FsspecCheckpointIO._write_file, io_mod.FsspecCheckpointIO._write_entry

    def kill_at(path):
        if "checkpoint-3" in path and os.path.basename(path).startswith(kill_on):
            os.kill(os.getpid(), signal.SIGKILL)

    def write_file(self, fs, path, data, local):  # the marker and the manifest
        kill_at(path)
        return original_file(self, fs, path, data, local)

    def write_entry(self, fs, path, name, value, local):  # each state file, streamed
        kill_at(path)
        return original_entry(self, fs, path, name, value, local)

    io_mod.FsspecCheckpointIO._write_file = write_file
    io_mod.FsspecCheckpointIO._write_entry = write_entry
    args = h.make_args({out!r}, max_steps=6, per_device_train_batch_size=2, save_strategy="steps",
                       save_steps=1, logging_steps=1, learning_rate=0.05)
    Trainer(h.seeded(h.DropoutRegressor, seed=0), args, train_dataset=h.regression_data(16)).train()
    """
)


def _trainer(h, folder):
    args = h.make_args(folder, max_steps=6, per_device_train_batch_size=2, save_strategy="steps",
                       save_steps=1, logging_steps=1, learning_rate=0.05)
    return Trainer(h.seeded(h.DropoutRegressor, seed=0), args, train_dataset=h.regression_data(16))


@pytest.mark.slow
@pytest.mark.parametrize("kill_on", ["optimizer.pt", "manifest.json"], ids=["mid-files", "before-commit"])
def test_killed_during_checkpoint_write(h, tmp_path, kill_on):
    out = tmp_path / "run"
    tests_dir = str(__import__("pathlib").Path(__file__).parent)
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(tests=tests_dir, kill_on=kill_on, out=str(out))],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    leftovers = [p.name for p in out.iterdir() if p.name.startswith("checkpoint-3")]
    assert leftovers, "the kill should have left a partial checkpoint-3"

    resumed = _trainer(h, out)
    resumed.train(resume_from_checkpoint=True)
    reference = _trainer(h, tmp_path / "reference")
    reference.train()
    for key, value in h.weights(reference.model).items():
        assert torch.equal(value, h.weights(resumed.model)[key]), key
    assert h.train_losses(resumed.state.log_history) == h.train_losses(reference.state.log_history)
    names = sorted(p.name for p in out.iterdir())
    assert not any(".tmp-" in n for n in names), names
    assert (out / "checkpoint-3" / "manifest.json").is_file()  # re-saved by the resumed run
