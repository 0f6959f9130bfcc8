"""Nothing already saved is lost: an earlier run's files are never overwritten silently,
failed or damaged saves leave the previous checkpoints usable, async saves are the same
checkpoints, and tied weights survive a save/resume."""

from __future__ import annotations

import errno
import logging
import shutil

import pytest
import torch
from fsspec.implementations.local import LocalFileSystem
from torch import nn

from toolkit import Trainer
from toolkit.checkpoint import CheckpointWriteError, FsspecCheckpointIO

MAX_STEPS = 6


def _trainer(h, folder, model=None, **overrides):
    values = dict(max_steps=MAX_STEPS, per_device_train_batch_size=2, save_strategy="steps", save_steps=2,
                  logging_steps=1, learning_rate=0.05)
    values.update(overrides)
    args = h.make_args(folder, **values)
    model = model if model is not None else h.seeded(h.DropoutRegressor, seed=0)
    return Trainer(model, args, train_dataset=h.regression_data(16))


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_new_run_refuses_an_earlier_runs_output_dir(h, tmp_path):
    _trainer(h, tmp_path).train()
    _trainer(h, tmp_path).save_model()
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    with pytest.raises(ValueError, match="overwrite_output_dir"):
        _trainer(h, tmp_path).train()
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before
    # explicitly allowed: the run replaces them
    trainer = _trainer(h, tmp_path, overwrite_output_dir=True, learning_rate=0.01)
    trainer.train()
    saved = FsspecCheckpointIO().load(str(tmp_path / f"checkpoint-{MAX_STEPS}"))["model.safetensors"]
    assert torch.equal(saved["lin.weight"], trainer.model.lin.weight.detach())


def test_resuming_an_older_checkpoint_refuses_to_overwrite_newer_ones(h, tmp_path):
    _trainer(h, tmp_path).train()
    with pytest.raises(ValueError, match="checkpoint-4"):
        _trainer(h, tmp_path).train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    # resuming from the newest one is fine, and so is an explicit overwrite
    _trainer(h, tmp_path, max_steps=MAX_STEPS + 2).train(resume_from_checkpoint=True)
    _trainer(h, tmp_path, overwrite_output_dir=True).train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))


def test_async_saves_write_the_same_checkpoints(h, tmp_path):
    sync = _trainer(h, tmp_path / "sync")
    sync.train()
    asyn = _trainer(h, tmp_path / "async", save_async=True)
    asyn.train()
    io = FsspecCheckpointIO()
    for step in (2, 4, 6):
        a = io.load(str(tmp_path / "sync" / f"checkpoint-{step}"))
        b = io.load(str(tmp_path / "async" / f"checkpoint-{step}"))
        for key, value in a["model.safetensors"].items():
            assert torch.equal(value, b["model.safetensors"][key])
        assert a["trainer_state.json"]["global_step"] == b["trainer_state.json"]["global_step"] == step
    resumed = _trainer(h, tmp_path / "resumed", save_async=True, max_steps=MAX_STEPS)
    shutil.copytree(tmp_path / "async" / "checkpoint-4", tmp_path / "resumed" / "checkpoint-4")
    resumed.train(resume_from_checkpoint=True)
    for key, value in h.weights(sync.model).items():
        assert torch.equal(value, h.weights(resumed.model)[key])


def test_a_full_disk_is_a_clear_error_and_earlier_checkpoints_stay_usable(h, tmp_path, monkeypatch):
    original = LocalFileSystem.open
    calls = {"n": 0}

    def open_(self, path, mode="rb", **kwargs):
        if "w" in mode and "checkpoint-4" in path:
            calls["n"] += 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, path, mode, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "open", open_)
    with pytest.raises(CheckpointWriteError, match="checkpoint-4"):
        _trainer(h, tmp_path).train()
    monkeypatch.undo()
    assert calls["n"] >= 1
    assert [n for n in _names(tmp_path) if n.startswith("checkpoint")] == ["checkpoint-2"]
    resumed = _trainer(h, tmp_path)
    resumed.train(resume_from_checkpoint=True)
    reference = _trainer(h, tmp_path / "reference")
    reference.train()
    for key, value in h.weights(reference.model).items():
        assert torch.equal(value, h.weights(resumed.model)[key])


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(h, tmp_path, caplog):
    _trainer(h, tmp_path, max_steps=4).train()
    weights_file = tmp_path / "checkpoint-4" / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[:-10])
    trainer = _trainer(h, tmp_path, max_steps=4, overwrite_output_dir=True)
    with caplog.at_level(logging.WARNING):
        trainer.train(resume_from_checkpoint=True)
    assert "model.safetensors" in caplog.text  # the warning names the damaged file
    assert trainer.state.log_history[0]["step"] == 1  # history restored from checkpoint-2
    assert [e["step"] for e in trainer.state.log_history if "loss" in e] == [1, 2, 3, 4]


class TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(7, 5)
        self.head = nn.Linear(5, 7, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, input_ids, labels=None):
        logits = self.head(self.embed(input_ids))
        return {"loss": nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100),
                "logits": logits}


def test_tied_weights_save_and_come_back_tied(h, tmp_path):
    def tied():
        torch.manual_seed(0)
        return TiedLM()

    def make(folder):
        args = h.make_args(folder, max_steps=4, per_device_train_batch_size=4, save_strategy="steps", save_steps=2)
        return Trainer(tied(), args, train_dataset=h.token_data(16))

    reference = make(tmp_path / "ref")
    reference.train()
    reference.save_model()
    resumed = make(tmp_path / "run")
    shutil.copytree(tmp_path / "ref" / "checkpoint-2", tmp_path / "run" / "checkpoint-2")
    resumed.train(resume_from_checkpoint=True)
    assert resumed.model.head.weight is resumed.model.embed.weight
    assert torch.equal(resumed.model.embed.weight, reference.model.embed.weight)
    from toolkit.checkpoint import load_tensors

    saved = load_tensors(str(tmp_path / "ref" / "model.safetensors"))
    assert saved["head.weight"] is saved["embed.weight"]


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_that_would_run_code_is_refused(h, tmp_path):
    from toolkit.checkpoint import UnsafeCheckpointError

    _trainer(h, tmp_path / "run", max_steps=2).train()
    io = FsspecCheckpointIO()
    files = io.load(str(tmp_path / "run" / "checkpoint-2"))
    marker = tmp_path / "code-ran"
    files["optimizer.pt"] = {"state": _RunsCode(str(marker))}
    io.save(files, str(tmp_path / "evil" / "checkpoint-2"))
    trainer = _trainer(h, tmp_path / "evil", max_steps=4)
    with pytest.raises(UnsafeCheckpointError, match="optimizer.pt"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "evil" / "checkpoint-2"))
    assert not marker.exists()
    assert trainer.state.global_step == 0


def test_early_stopping_patience_survives_a_resume(h, tmp_path):
    from toolkit import EarlyStoppingCallback

    def make(folder, callback):
        args = h.make_args(folder, max_steps=6, per_device_train_batch_size=4, save_strategy="steps", save_steps=1,
                           evaluation_strategy="steps", eval_steps=1, load_best_model_at_end=True,
                           metric_for_best_model="loss", greater_is_better=True, learning_rate=0.05)
        # greater_is_better on a falling loss: every evaluation after the first is "worse"
        return Trainer(h.seeded(h.Regressor), args, train_dataset=h.regression_data(24),
                       eval_dataset=h.regression_data(8, seed=1), callbacks=[callback])

    first = EarlyStoppingCallback(early_stopping_patience=3)
    make(tmp_path / "a", first).train()
    assert first.early_stopping_patience_counter == 3
    shutil.copytree(tmp_path / "a" / "checkpoint-2", tmp_path / "b" / "checkpoint-2")
    second = EarlyStoppingCallback(early_stopping_patience=3)
    trainer = make(tmp_path / "b", second)
    trainer.train(resume_from_checkpoint=True)
    # restored counter 1 at step 2, then two more bad evaluations stop at step 4 (not 5)
    assert trainer.state.global_step == 4


class _Recorder(nn.Module):
    """Remembers the first feature of every training sample it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.seen: list[float] = []

    def forward(self, x, labels=None):
        if self.training:
            self.seen.extend(x[:, 0].tolist())
        out = self.lin(x).squeeze(-1)
        return {"loss": nn.functional.mse_loss(out, labels), "logits": out}


def test_ignore_data_skip_restarts_the_epoch_instead_of_skipping(h, tmp_path):
    def make(folder, **kw):
        torch.manual_seed(0)
        model = _Recorder()
        args = h.make_args(folder, max_steps=6, per_device_train_batch_size=2, save_strategy="steps", save_steps=2, **kw)
        return Trainer(model, args, train_dataset=h.regression_data(16)), model

    full, full_model = make(tmp_path / "full")
    full.train()
    epoch = full_model.seen  # 6 steps x 2 samples of one 8-step epoch

    skipping, model = make(tmp_path / "a")
    shutil.copytree(tmp_path / "full" / "checkpoint-2", tmp_path / "a" / "checkpoint-2")
    skipping.train(resume_from_checkpoint=True)
    assert model.seen == epoch[4:]  # continues at the third batch

    restarting, model = make(tmp_path / "b", ignore_data_skip=True)
    shutil.copytree(tmp_path / "full" / "checkpoint-2", tmp_path / "b" / "checkpoint-2")
    restarting.train(resume_from_checkpoint=True)
    assert model.seen == epoch[: len(model.seen)]  # starts the epoch over
    assert restarting.state.global_step == 6


def test_resuming_a_checkpoint_not_named_by_step_compares_its_global_step(h, tmp_path):
    _trainer(h, tmp_path / "run").train()  # checkpoints 2, 4, 6
    shutil.copytree(tmp_path / "run" / "checkpoint-4", tmp_path / "store" / "last-checkpoint")
    # only checkpoint-6 is newer than the copied step-4 state: refused without overwrite_output_dir
    with pytest.raises(ValueError, match="checkpoint-6"):
        _trainer(h, tmp_path / "run").train(resume_from_checkpoint=str(tmp_path / "store" / "last-checkpoint"))
    shutil.rmtree(tmp_path / "run" / "checkpoint-6")
    trainer = _trainer(h, tmp_path / "run")
    trainer.train(resume_from_checkpoint=str(tmp_path / "store" / "last-checkpoint"))
    assert trainer.state.global_step == MAX_STEPS


def test_async_saves_allocate_their_buffers_before_the_first_save(h, tmp_path, monkeypatch):
    from toolkit import TrainerCallback
    from toolkit.checkpoint import async_io

    made: list[tuple[str, tuple[int, ...]]] = []
    phase = ["set-up"]
    real = async_io._empty_like_layout

    def counting(t):
        made.append((phase[0], tuple(t.shape)))
        return real(t)

    monkeypatch.setattr(async_io, "_empty_like_layout", counting)
    trainer = _trainer(h, tmp_path, save_async=True)
    touched: list[bool] = []

    class LetThePreparationFinish(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 0:
                io = trainer.checkpointer.manager.io
                io._worker.wait()  # the worker has written every prepared buffer once
                touched.append(not any(io._free_buffers[-1]._untouched.values()))
                phase[0] = "training"

    trainer.add_callback(LetThePreparationFinish())
    trainer.train()
    before = [shape for when, shape in made if when == "set-up"]
    during = [shape for when, shape in made if when == "training"]
    n_tensors = len(trainer.model.state_dict())
    assert len(before) == n_tensors + 2 * len(list(trainer.model.parameters()))  # weights + AdamW moments
    assert touched == [True]
    rng = tuple(torch.get_rng_state().shape)
    assert during and all(shape in ((), rng) for shape in during)  # step counters, the RNG state
    saved = FsspecCheckpointIO().load(str(tmp_path / f"checkpoint-{MAX_STEPS}"))["model.safetensors"]
    assert torch.equal(saved["lin.weight"], trainer.model.lin.weight.detach())
    # train() returns with the snapshot buffers (the size of the saved state) freed
    assert trainer.checkpointer.manager.io._free_buffers == []
