"""Resuming from checkpoints: bit-identical continuation, discovery of the newest valid
checkpoint, and errors raised before any training."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from toolkit import Trainer
from toolkit.callbacks import TrainerCallback

# 24 samples / batch 2 = 12 micro-batches per epoch; with GA=2 that is 6 optimizer steps
# per epoch, so checkpoint-4 is mid-epoch and checkpoint-6 is at the epoch boundary.
N_SAMPLES, MAX_STEPS = 24, 10


class StartStep(TrainerCallback):
    """Remembers ``global_step`` when training begins (after a resume has loaded the state)."""

    def __init__(self) -> None:
        self.step: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.step = state.global_step


def _trainer(h, output_dir, model_seed=0, callbacks=None):
    args = h.make_args(
        output_dir,
        max_steps=MAX_STEPS,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        save_strategy="steps",
        save_steps=2,
        logging_steps=1,
        optim="adamw_torch",
        learning_rate=0.05,
        lr_scheduler_type="linear",
        warmup_steps=2,
    )
    model = h.seeded(h.DropoutRegressor, seed=model_seed)
    return Trainer(model, args, train_dataset=h.regression_data(N_SAMPLES), callbacks=callbacks)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, h):
    """The uninterrupted run: its folder, final weights and logged losses."""
    folder = tmp_path_factory.mktemp("reference")
    trainer = _trainer(h, folder)
    trainer.train()
    return folder, h.weights(trainer.model), h.train_losses(trainer.state.log_history)


def _assert_identical(h, trainer, reference):
    _, weights, losses = reference
    assert trainer.state.global_step == MAX_STEPS
    final = h.weights(trainer.model)
    for k in weights:
        assert torch.equal(final[k], weights[k]), k
    assert h.train_losses(trainer.state.log_history) == losses


def test_resume_without_the_rng_state_differs(h, tmp_path, reference, monkeypatch):
    """Sanity check of the setup: the dropout draws matter, so the bit-identical resumes
    below really depend on the random-number state restored from the checkpoint."""
    folder, weights, losses = reference
    assert [s for s, _ in losses] == list(range(1, MAX_STEPS + 1))
    monkeypatch.setattr("toolkit.utils.seed.set_rng_state", lambda state: None)
    trainer = _trainer(h, tmp_path)
    trainer.train(resume_from_checkpoint=str(folder / "checkpoint-4"))
    assert h.weights_differ(h.weights(trainer.model), weights, atol=0)


@pytest.mark.parametrize("checkpoint", ["checkpoint-4", "checkpoint-6", "checkpoint-2", "checkpoint-8"])
def test_resume_is_bit_identical(h, tmp_path, reference, checkpoint):
    folder = reference[0]
    starts = StartStep()
    trainer = _trainer(h, tmp_path, model_seed=1, callbacks=[starts])
    trainer.train(resume_from_checkpoint=str(folder / checkpoint))
    assert starts.step == int(checkpoint.split("-")[1])
    _assert_identical(h, trainer, reference)


def test_resume_from_true_picks_the_newest_valid_checkpoint(h, tmp_path, reference):
    folder = reference[0]
    for name in ("checkpoint-2", "checkpoint-4"):
        shutil.copytree(folder / name, tmp_path / name)
    starts = StartStep()
    trainer = _trainer(h, tmp_path, model_seed=1, callbacks=[starts])
    trainer.train(resume_from_checkpoint=True)
    assert starts.step == 4
    _assert_identical(h, trainer, reference)


def test_checkpoint_without_manifest_is_skipped_by_true(h, tmp_path, reference, caplog):
    folder = reference[0]
    for name in ("checkpoint-2", "checkpoint-4"):
        shutil.copytree(folder / name, tmp_path / name)
    (tmp_path / "checkpoint-4" / "manifest.json").unlink()
    before = sorted(p.name for p in (tmp_path / "checkpoint-4").iterdir())
    starts = StartStep()
    trainer = _trainer(h, tmp_path, model_seed=1, callbacks=[starts])
    trainer.train(resume_from_checkpoint=True)
    assert starts.step == 2
    _assert_identical(h, trainer, reference)
    # the uncommitted folder is neither overwritten nor deleted, and the run saved the others
    assert sorted(p.name for p in (tmp_path / "checkpoint-4").iterdir()) == before
    assert "Not saving the checkpoint of step 4" in caplog.text
    assert (tmp_path / "checkpoint-10" / "manifest.json").is_file()


def test_explicit_checkpoint_without_manifest_is_refused(h, tmp_path, reference):
    shutil.copytree(reference[0] / "checkpoint-4", tmp_path / "checkpoint-4")
    (tmp_path / "checkpoint-4" / "manifest.json").unlink()
    trainer = _trainer(h, tmp_path / "out")
    with pytest.raises(ValueError, match="resume_from_checkpoint"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))


def test_bad_path_raises_before_training(h, tmp_path):
    steps = StartStep()
    trainer = _trainer(h, tmp_path, callbacks=[steps])
    before = h.weights(trainer.model)
    with pytest.raises(ValueError, match="resume_from_checkpoint"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "does-not-exist"))
    assert steps.step is None  # training never began
    assert not h.weights_differ(before, h.weights(trainer.model), atol=0)
    assert not list(tmp_path.glob("checkpoint-*"))


def test_resume_true_without_checkpoints_raises(h, tmp_path):
    trainer = _trainer(h, tmp_path)
    with pytest.raises(ValueError, match="no valid checkpoint"):
        trainer.train(resume_from_checkpoint=True)


def test_resume_restores_the_best_metric_and_history(h, tmp_path, reference):
    folder = reference[0]
    trainer = _trainer(h, tmp_path)
    trainer.train(resume_from_checkpoint=str(folder / "checkpoint-4"))
    steps = [e["step"] for e in trainer.state.log_history if "loss" in e]
    assert steps == list(range(1, MAX_STEPS + 1))  # steps 1-4 came from the checkpoint


def test_a_resumed_run_logs_the_losses_of_an_uninterrupted_one(h, tmp_path):
    """logging_steps=3 does not divide save_steps=2: checkpoint-4 is saved one step into a
    logging window, whose loss sum travels in loop_state.json."""

    def make(out):
        args = h.make_args(
            out, max_steps=9, per_device_train_batch_size=2, save_strategy="steps", save_steps=2,
            logging_steps=3, learning_rate=0.05,
        )
        return Trainer(h.seeded(h.DropoutRegressor, seed=0), args, train_dataset=h.regression_data(N_SAMPLES))

    full = make(tmp_path / "full")
    full.train()
    expected = h.train_losses(full.state.log_history)
    assert [s for s, _ in expected] == [3, 6, 9]
    window = json.loads((tmp_path / "full" / "checkpoint-4" / "loop_state.json").read_text())["loss_window"]
    assert window["since_step"] == 3 and window["sums"][2] == 1  # one micro-batch since the log at step 3
    resumed = make(tmp_path / "full")
    resumed.args.overwrite_output_dir = True
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-4"))
    assert h.train_losses(resumed.state.log_history) == expected
