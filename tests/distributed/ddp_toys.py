"""Models, data and settings shared by the distributed drivers and their single-process
references (imported by path from both sides, so it must stay dependency-free)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

VOCAB = 11


class Regression(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)

    def forward(self, x, labels=None):
        out = self.lin(x).squeeze(-1)
        if labels is None:
            return {"logits": out}
        return {"loss": nn.functional.mse_loss(out, labels), "logits": out}


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x, labels=None):
        logits = self.lin(x)
        if labels is None:
            return {"logits": logits}
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


class TokenModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 8)
        self.out = nn.Linear(8, VOCAB)

    def forward(self, input_ids, labels=None):
        logits = self.out(torch.tanh(self.emb(input_ids)))
        if labels is None:
            return {"logits": logits}
        loss = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=-100)
        return {"loss": loss, "logits": logits}


def seeded(cls: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return cls()


def regression_data(n: int = 24) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(n, generator=g)
    return [{"x": x[i], "labels": y[i]} for i in range(n)]


def classification_data(n: int = 13) -> list[dict]:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, 4, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return [{"x": x[i], "labels": y[i]} for i in range(n)]


def padded_token_data(n: int = 16, length: int = 6) -> list[dict]:
    """Fixed-length sequences whose labels are -100 after a varying real length."""
    g = torch.Generator().manual_seed(3)
    items = []
    for i in range(n):
        real = 1 + (i * 5) % length
        ids = torch.randint(1, VOCAB, (length,), generator=g)
        labels = ids.roll(-1).clone()
        ids[real:] = 0
        labels[real:] = -100
        items.append({"input_ids": ids, "labels": labels})
    return items


def ragged_token_data(n: int = 13) -> list[dict]:
    """Sequences of lengths 2..7 (batches are padded by `pad_collate`)."""
    g = torch.Generator().manual_seed(4)
    items = []
    for i in range(n):
        ids = torch.randint(1, VOCAB, (2 + (i * 5) % 6,), generator=g)
        items.append({"input_ids": ids, "labels": ids.roll(-1)})
    return items


def pad_collate(items: list[dict]) -> dict:
    width = max(len(it["input_ids"]) for it in items)
    ids = torch.zeros(len(items), width, dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    for row, it in enumerate(items):
        ids[row, : len(it["input_ids"])] = it["input_ids"]
        labels[row, : len(it["labels"])] = it["labels"]
    return {"input_ids": ids, "labels": labels}


def class_metrics(p) -> dict:
    preds = np.asarray(p.predictions).argmax(-1)
    return {"accuracy": float((preds == p.label_ids).mean()), "rows": int(len(p.label_ids))}


def token_metrics(p) -> dict:
    mask = p.label_ids != -100
    preds = np.asarray(p.predictions).argmax(-1)
    inputs = np.asarray(p.inputs)
    return {
        "token_accuracy": float((preds[mask] == p.label_ids[mask]).mean()),
        "rows": int(len(p.label_ids)),
        "inputs_rows": int(len(inputs)),
    }


def weights(model: nn.Module) -> dict[str, list]:
    return {k: v.detach().double().reshape(-1).tolist() for k, v in model.state_dict().items()}


COMMON = {"report_to": "none", "disable_tqdm": True, "use_cpu": True, "seed": 7, "ddp_find_unused_parameters": False}


def logged_losses(trainer) -> list[float]:
    """The training losses a Trainer logged, in order."""
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def assert_weights_close(a: dict, b: dict, tol: float) -> None:
    """Two `weights` dicts hold the same tensors within ``tol`` (absolute)."""
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=tol, rtol=0, err_msg=key)


def trained_reference(model_cls: type[nn.Module], data: list, output_dir: str, **args):
    """A single-process Trainer on ``model_cls`` (seeded) and ``data``, trained with
    `COMMON` plus ``args``: the run a distributed one is compared with."""
    from toolkit import Trainer, TrainingArguments  # the drivers import this file before toolkit

    trainer = Trainer(seeded(model_cls), TrainingArguments(str(output_dir), **{**COMMON, **args}), train_dataset=data)
    trainer.train()
    return trainer
