"""Model cards: the pure builder (YAML header, hyperparameters, results table) and
`Trainer.create_model_card` writing ``README.md`` into ``output_dir`` (local or URL)."""

from __future__ import annotations

import uuid

import pytest
import torch
from torch import nn

from toolkit import Trainer, TrainingArguments
from toolkit.checkpoint import files
from toolkit.modelcard import build_model_card, evaluation_table, to_yaml, training_hyperparameters

yaml = pytest.importorskip("yaml")


def header(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def table(card: str) -> tuple[list[str], list[list[str]]]:
    lines = [line for line in card.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return cells[0], cells[2:]


class Reg(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def forward(self, x, labels=None):
        out = self.lin(x).squeeze(-1)
        return {"loss": nn.functional.mse_loss(out, labels), "logits": out}


def data(n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = x.sum(-1)
    return [{"x": x[i], "labels": y[i]} for i in range(n)]


def mae(pred):
    return {"mae": float(abs(pred.predictions - pred.label_ids).mean())}


def trained(output_dir: str, **overrides) -> Trainer:
    values = dict(
        report_to="none", disable_tqdm=True, use_cpu=True, save_strategy="no", evaluation_strategy="epoch",
        logging_strategy="epoch", num_train_epochs=3, per_device_train_batch_size=4, learning_rate=0.05, seed=7,
        gradient_accumulation_steps=2, warmup_steps=1,
    )
    values.update(overrides)
    torch.manual_seed(0)
    trainer = Trainer(Reg(), TrainingArguments(output_dir, **values), train_dataset=data(16, 0),
                      eval_dataset=data(8, 1), compute_metrics=mae)
    trainer.train()
    return trainer


def test_trainer_card_has_header_hyperparameters_and_every_evaluation(tmp_path):
    trainer = trained(str(tmp_path / "my-model"))
    path = trainer.create_model_card(
        language="en", license="apache-2.0", tags=["regression"], tasks="tabular-regression",
        dataset="toy sums", dataset_tags="toy/sums", dataset_args="default", finetuned_from="org/base-model",
    )
    assert path == str(tmp_path / "my-model" / "README.md")
    card = (tmp_path / "my-model" / "README.md").read_text(encoding="utf-8")

    meta = header(card)
    assert meta["language"] == "en" and meta["license"] == "apache-2.0"
    assert meta["base_model"] == "org/base-model" and meta["datasets"] == ["toy/sums"]
    assert meta["tags"] == ["generated_from_trainer", "regression"]
    evals = [e for e in trainer.state.log_history if "eval_loss" in e]
    assert len(evals) == 3
    (model,) = meta["model-index"]
    assert model["name"] == "my-model"
    (result,) = model["results"]
    assert result["task"]["type"] == "tabular-regression"
    assert result["dataset"] == {"name": "toy sums", "type": "toy/sums", "config": "default", "args": "default"}
    values = {m["type"]: m["value"] for m in result["metrics"]}
    assert values == {"loss": evals[-1]["eval_loss"], "mae": evals[-1]["eval_mae"]}

    for line in ("- learning_rate: 0.05", "- train_batch_size: 4", "- eval_batch_size: 8", "- seed: 7",
                 "- gradient_accumulation_steps: 2", "- total_train_batch_size: 8", "- lr_scheduler_type: linear",
                 "- lr_scheduler_warmup_steps: 1", "- num_epochs: 3", "- optimizer: adamw_torch with betas=(0.9,0.999)"):
        assert line in card, line
    columns, rows = table(card)
    assert columns == ["Training Loss", "Epoch", "Step", "Validation Loss", "Mae"]
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e and "eval_loss" not in e]
    assert len(rows) == 3
    for row, ev, loss in zip(rows, evals, losses):
        assert float(row[0]) == pytest.approx(loss, abs=1e-4)
        assert float(row[1]) == ev["epoch"] and int(row[2]) == ev["step"]
        assert float(row[3]) == pytest.approx(ev["eval_loss"], abs=1e-4)
        assert float(row[4]) == pytest.approx(ev["eval_mae"], abs=1e-4)
    assert "- toolkit 0.1.0" in card and f"- PyTorch {torch.__version__}" in card


def test_card_written_through_fsspec(tmp_path):
    root = f"memory://card-{uuid.uuid4().hex}"
    trainer = trained(f"{root}/run", num_train_epochs=1)
    try:
        path = trainer.create_model_card(model_name="remote")
        assert path == f"{root}/run/README.md"
        meta = header(files.read_bytes(path).decode("utf-8"))
        assert meta["model-index"][0]["name"] == "remote"
    finally:
        files.remove(root)


def test_evaluation_table_from_a_log_history():
    history = [
        {"eval_loss": 3.0, "epoch": 0.0, "step": 0},
        {"loss": 2.0, "learning_rate": 0.1, "epoch": 1.0, "step": 5},
        {"eval_a_loss": 1.5, "eval_a_runtime": 0.1, "epoch": 1.0, "step": 5},
        {"eval_b_loss": 1.25, "eval_b_train_mem_cpu_alloc_delta": 9, "epoch": 1.0, "step": 5},
        {"train_loss": 2.0, "train_runtime": 1.0, "epoch": 1.0, "step": 5},
    ]
    columns, rows, final = evaluation_table(history)
    assert columns == ["Training Loss", "Epoch", "Step", "Validation Loss", "A Loss", "B Loss"]
    assert rows == [["No log", 0.0, 0, 3.0, "", ""], [2.0, 1.0, 5, "", 1.5, 1.25]]
    assert final == {"eval_a_loss": 1.5, "eval_b_loss": 1.25}
    assert "No evaluation was run" in build_model_card({}, [{"loss": 1.0, "step": 1}], model_name="m")


def test_hyperparameters_of_mixed_precision_and_steps():
    hp = training_hyperparameters(
        {"learning_rate": 1e-4, "per_device_train_batch_size": 2, "per_device_eval_batch_size": 2,
         "max_steps": 100, "num_train_epochs": 3.0, "bf16": True, "optim": "sgd", "label_smoothing_factor": 0.1},
        world_size=4,
    )
    assert hp["training_steps"] == 100 and "num_epochs" not in hp
    assert hp["mixed_precision_training"] == "bf16 (mixed precision)" and hp["optimizer"] == "sgd"
    assert hp["num_devices"] == 4 and hp["total_train_batch_size"] == 8 and hp["total_eval_batch_size"] == 8
    assert hp["label_smoothing_factor"] == 0.1


def test_yaml_writer_round_trips_awkward_values():
    value = {"name": 'a: "quoted" # not a comment', "unicode": "é✓", "nested": {"list": [1, 2.5, None, True]},
             "items": [{"k": "v", "empty": []}, "plain"], "nan": float("nan"), "none": {}}
    back = yaml.safe_load(to_yaml(value))
    assert back["name"] == value["name"] and back["unicode"] == "é✓"
    assert back["nested"] == {"list": [1, 2.5, None, True]} and back["items"] == [{"k": "v", "empty": []}, "plain"]
    assert back["nan"] != back["nan"] and back["none"] == {}
