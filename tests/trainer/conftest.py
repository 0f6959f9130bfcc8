"""Shared tiny models, datasets and argument builders for the `Trainer` integration tests.

The test files reach these through the ``h`` fixture (this module), so that every file
uses the same few models without a helper package on ``sys.path``.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import IterableDataset

from toolkit import TrainingArguments

N_FEATURES = 4
VOCAB = 7
SEQ_LEN = 6


class Regressor(nn.Module):
    """``x -> lin(x)``; mean squared error against float ``labels``. Returns a dict."""

    def __init__(self, n_features: int = N_FEATURES) -> None:
        super().__init__()
        self.lin = nn.Linear(n_features, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        out = self.lin(x).squeeze(-1)
        if labels is None:
            return {"logits": out}
        return {"loss": nn.functional.mse_loss(out, labels), "logits": out}


class DropoutRegressor(Regressor):
    """A `Regressor` with dropout on its input, so that training consumes random numbers."""

    def __init__(self, n_features: int = N_FEATURES, p: float = 0.3) -> None:
        super().__init__(n_features)
        self.drop = nn.Dropout(p)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return super().forward(self.drop(x), labels)


class TokenModel(nn.Module):
    """Embedding + linear head over a vocabulary; token-level cross entropy ignoring -100."""

    def __init__(self, vocab: int = VOCAB, dim: int = 5) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.head(self.embed(input_ids))
        if labels is None:
            return {"logits": logits}
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        return {"loss": loss, "logits": logits}


class Classifier(nn.Module):
    """``x -> logits`` over ``n_classes``; cross entropy against integer ``labels``."""

    def __init__(self, n_features: int = N_FEATURES, n_classes: int = 3) -> None:
        super().__init__()
        self.lin = nn.Linear(n_features, n_classes)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.lin(x)
        if labels is None:
            return {"logits": logits}
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


def regression_data(
    n: int = 32, seed: int = 0, n_features: int = N_FEATURES
) -> list[dict[str, torch.Tensor]]:
    """``n`` samples ``{"x", "labels"}`` of a noisy linear target (deterministic)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_features, generator=g)
    y = x @ torch.arange(1.0, n_features + 1) + 0.1 * torch.randn(n, generator=g)
    return [{"x": x[i], "labels": y[i]} for i in range(n)]


def classification_data(n: int = 16, seed: int = 0, n_classes: int = 3) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, N_FEATURES, generator=g)
    y = torch.randint(0, n_classes, (n,), generator=g)
    return [{"x": x[i], "labels": y[i]} for i in range(n)]


def token_data(n: int = 32, seed: int = 0, seq_len: int = SEQ_LEN) -> list[dict[str, torch.Tensor]]:
    """Sequences of a fixed padded length whose labels are -100 past a random length
    (between 1 and ``seq_len``), so that micro-batches hold different token counts."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(n):
        ids = torch.randint(0, VOCAB, (seq_len,), generator=g)
        labels = torch.randint(0, VOCAB, (seq_len,), generator=g)
        length = int(torch.randint(1, seq_len + 1, (1,), generator=g))
        labels[length:] = -100
        items.append({"input_ids": ids, "labels": labels})
    return items


class Stream(IterableDataset):
    """An iterable dataset (no length) over a list of items."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __iter__(self):
        return iter(self.items)


def make_args(output_dir: Any, **overrides: Any) -> TrainingArguments:
    """Quiet, CPU-only arguments for tests: no tqdm, no integrations, no saving unless asked."""
    values: dict[str, Any] = {
        "report_to": "none",
        "disable_tqdm": True,
        "save_strategy": "no",
        "use_cpu": True,
        "learning_rate": 0.05,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "logging_steps": 1000,
    }
    values.update(overrides)
    return TrainingArguments(str(output_dir), **values)


def seeded(cls: type[nn.Module], seed: int = 0, **kwargs: Any) -> nn.Module:
    """A model built right after ``torch.manual_seed(seed)`` (same weights every time)."""
    torch.manual_seed(seed)
    return cls(**kwargs)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the model's parameters and buffers."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_weights_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=lambda m, k=k: f"{k}: {m}")


def weights_differ(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6) -> bool:
    return any(not torch.allclose(a[k], b[k], atol=atol, rtol=0) for k in a)


def train_losses(log_history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """``(step, loss)`` of every training-loss entry of a log history."""
    return [(e["step"], e["loss"]) for e in log_history if "loss" in e]


@pytest.fixture(scope="session")
def h():
    """This module: the shared tiny models, datasets and builders."""
    return sys.modules[__name__]
