"""Saving: the model, the state, metrics files, checkpoint folders, rotation, the best model."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from toolkit import Trainer
from toolkit.state import TrainerState

CHECKPOINT_FILES = {
    "model.safetensors",
    "optimizer.pt",
    "scheduler.pt",
    "rng_state.pth",
    "trainer_state.json",
    "training_args.json",
}


def _checkpoints(folder) -> list[str]:
    names = [n for n in os.listdir(folder) if n.startswith("checkpoint-")]
    return sorted(names, key=lambda n: int(n.split("-")[1]))


def test_save_model_writes_safetensors_and_arguments(h, tmp_path):
    model = h.seeded(h.Regressor)
    trainer = Trainer(model, h.make_args(tmp_path / "out", max_steps=2), train_dataset=h.regression_data(8))
    trainer.train()
    target = tmp_path / "saved"
    trainer.save_model(str(target))
    tensors = load_file(str(target / "model.safetensors"))
    assert tensors.keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        assert torch.equal(tensors[k], v), k
    saved_args = json.loads((target / "training_args.json").read_text())
    assert saved_args["max_steps"] == 2 and saved_args["output_dir"] == str(tmp_path / "out")
    assert not (target / "pytorch_model.bin").exists()


def test_save_model_defaults_to_output_dir(h, tmp_path):
    trainer = Trainer(h.seeded(h.Regressor), h.make_args(tmp_path))
    trainer.save_model()
    assert (tmp_path / "model.safetensors").is_file()


def test_save_model_without_safetensors_writes_pytorch_model_bin(h, tmp_path):
    model = h.seeded(h.Regressor)
    trainer = Trainer(model, h.make_args(tmp_path, save_safetensors=False))
    trainer.save_model()
    assert not (tmp_path / "model.safetensors").exists()
    state = torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v), k


def test_save_state_writes_trainer_state(h, tmp_path):
    trainer = Trainer(
        h.seeded(h.Regressor),
        h.make_args(tmp_path, max_steps=4, logging_steps=2),
        train_dataset=h.regression_data(16),
    )
    trainer.train()
    trainer.save_state()
    state = TrainerState.load_from_json(str(tmp_path / "trainer_state.json"))
    assert state.global_step == 4 and state.max_steps == 4
    assert state.log_history == trainer.state.log_history
    assert [e["step"] for e in state.log_history if "loss" in e] == [2, 4]


def test_save_and_log_metrics(h, tmp_path, capsys):
    trainer = Trainer(h.seeded(h.Regressor), h.make_args(tmp_path))
    trainer.save_metrics("train", {"train_loss": 0.5, "epoch": 1.0})
    trainer.save_metrics("eval", {"eval_loss": 0.25})
    assert json.loads((tmp_path / "train_results.json").read_text()) == {"train_loss": 0.5, "epoch": 1.0}
    assert json.loads((tmp_path / "eval_results.json").read_text()) == {"eval_loss": 0.25}
    assert json.loads((tmp_path / "all_results.json").read_text()) == {
        "train_loss": 0.5,
        "epoch": 1.0,
        "eval_loss": 0.25,
    }
    trainer.save_metrics("test", {"test_loss": 1.0}, combined=False)
    assert "test_loss" not in json.loads((tmp_path / "all_results.json").read_text())

    trainer.log_metrics("eval", {"eval_loss": 0.25, "eval_runtime": 3725.0})
    printed = capsys.readouterr().out
    assert "***** eval metrics *****" in printed
    assert "eval_loss" in printed and "0.25" in printed
    assert "1:02:05" in printed  # runtimes are shown as h:mm:ss


def test_save_steps_write_checkpoint_folders(h, tmp_path):
    model = h.seeded(h.Regressor)
    args = h.make_args(tmp_path, max_steps=6, save_strategy="steps", save_steps=2)
    trainer = Trainer(model, args, train_dataset=h.regression_data(24))
    trainer.train()
    assert _checkpoints(tmp_path) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    for name in _checkpoints(tmp_path):
        files = set(os.listdir(tmp_path / name))
        assert CHECKPOINT_FILES <= files, name
        assert "manifest.json" in files
        state = json.loads((tmp_path / name / "trainer_state.json").read_text())
        assert state["global_step"] == int(name.split("-")[1])
    last = load_file(str(tmp_path / "checkpoint-6" / "model.safetensors"))
    for k, v in model.state_dict().items():
        assert torch.equal(last[k], v), k


def test_save_only_model_keeps_only_weights_and_state(h, tmp_path):
    args = h.make_args(tmp_path, max_steps=2, save_strategy="steps", save_steps=2, save_only_model=True)
    Trainer(h.seeded(h.Regressor), args, train_dataset=h.regression_data(8)).train()
    files = set(os.listdir(tmp_path / "checkpoint-2"))
    assert {"model.safetensors", "trainer_state.json"} <= files
    assert not {"optimizer.pt", "scheduler.pt", "rng_state.pth"} & files


def test_save_total_limit_keeps_the_newest(h, tmp_path):
    args = h.make_args(tmp_path, max_steps=8, save_strategy="steps", save_steps=2, save_total_limit=2)
    Trainer(h.seeded(h.Regressor), args, train_dataset=h.regression_data(32)).train()
    assert _checkpoints(tmp_path) == ["checkpoint-6", "checkpoint-8"]


def _scripted_metric(values):
    """compute_metrics returning the next of ``values`` as ``score`` at each evaluation."""
    it = iter(values)

    def compute(pred):
        return {"score": next(it)}

    return compute


def _best_run(h, tmp_path, scores, **overrides):
    model = h.seeded(h.Regressor)
    values = {
        "max_steps": 8,
        "save_strategy": "steps",
        "save_steps": 2,
        "evaluation_strategy": "steps",
        "eval_steps": 2,
        "metric_for_best_model": "score",
        "greater_is_better": True,
        **overrides,
    }
    args = h.make_args(tmp_path, **values)
    trainer = Trainer(
        model,
        args,
        train_dataset=h.regression_data(32),
        eval_dataset=h.regression_data(4, seed=1),
        compute_metrics=_scripted_metric(scores),
    )
    trainer.train()
    return trainer, model


def test_rotation_keeps_the_best_and_the_newest(h, tmp_path):
    trainer, _ = _best_run(h, tmp_path, [1.0, 9.0, 2.0, 3.0], save_total_limit=2, load_best_model_at_end=True)
    assert trainer.state.best_metric == 9.0
    assert trainer.state.best_model_checkpoint.endswith("checkpoint-4")
    assert _checkpoints(tmp_path) == ["checkpoint-4", "checkpoint-8"]


def test_rotation_with_limit_one_keeps_best_and_newest(h, tmp_path):
    trainer, _ = _best_run(h, tmp_path, [9.0, 1.0, 2.0, 3.0], save_total_limit=1, load_best_model_at_end=True)
    assert _checkpoints(tmp_path) == ["checkpoint-2", "checkpoint-8"]


def test_load_best_model_at_end_loads_the_best_weights(h, tmp_path):
    trainer, model = _best_run(h, tmp_path, [1.0, 9.0, 2.0, 3.0], load_best_model_at_end=True)
    best = load_file(str(tmp_path / "checkpoint-4" / "model.safetensors"))
    last = load_file(str(tmp_path / "checkpoint-8" / "model.safetensors"))
    assert any(not torch.equal(best[k], last[k]) for k in best)
    for k, v in model.state_dict().items():
        assert torch.equal(v, best[k]), k


def test_without_load_best_model_at_end_the_last_weights_stay(h, tmp_path):
    trainer, model = _best_run(h, tmp_path, [1.0, 9.0, 2.0, 3.0])
    assert trainer.state.best_model_checkpoint.endswith("checkpoint-4")
    last = load_file(str(tmp_path / "checkpoint-8" / "model.safetensors"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, last[k]), k


@pytest.mark.parametrize(("greater_is_better", "best"), [(True, "checkpoint-4"), (False, "checkpoint-6")])
def test_best_metric_direction(h, tmp_path, greater_is_better, best):
    trainer, _ = _best_run(h, tmp_path, [3.0, 9.0, 1.0, 5.0], greater_is_better=greater_is_better)
    assert trainer.state.best_model_checkpoint.endswith(best)


class _Tokenizer:
    """A tokenizer stand-in: pads with id 9 and saves a vocabulary file."""

    pad_token_id = 9
    padding_side = "right"
    model_input_names = ["input_ids", "attention_mask"]

    def save_pretrained(self, folder):
        import os

        with open(os.path.join(folder, "vocab.txt"), "w") as f:
            f.write("a\nb\n")


def test_tokenizer_pads_by_default_and_is_saved_with_the_model(h, tmp_path):
    from toolkit.data import DataCollatorWithPadding

    trainer = Trainer(h.seeded(h.TokenModel), h.make_args(tmp_path), tokenizer=_Tokenizer())
    assert isinstance(trainer.data_collator, DataCollatorWithPadding)
    batch = trainer.data_collator([{"input_ids": [1, 2, 3]}, {"input_ids": [4]}])
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 9, 9]]
    trainer.save_model()
    assert (tmp_path / "vocab.txt").read_text() == "a\nb\n"
    assert (tmp_path / "model.safetensors").is_file()
