"""A tiny regression task for the hyperparameter-search tests (CPU, a few ms per trial).

The test files reach the helpers through the ``hs`` fixture (this module)."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import torch
from torch import nn

from toolkit import Trainer, TrainingArguments


class Regressor(nn.Module):
    """``x -> lin(x)`` with a mean-squared-error loss; returns a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        out = self.lin(x).squeeze(-1)
        if labels is None:
            return {"logits": out}
        return {"loss": nn.functional.mse_loss(out, labels), "logits": out}


def regression_data(n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """A noiseless linear target ``x @ [1, 2, 3, 4]`` (deterministic)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.arange(1.0, 5.0)
    return [{"x": x[i], "labels": y[i]} for i in range(n)]


def model_init() -> nn.Module:
    torch.manual_seed(0)
    return Regressor()


def make_trainer(output_dir: Any, model_init=model_init, eval_dataset: Any = None, **overrides: Any) -> Trainer:
    """A trainer with a bad starting learning rate: plain SGD at 1e-5 barely learns in
    16 steps, at 0.1 it nearly solves the task."""
    values: dict[str, Any] = {
        "learning_rate": 1e-5,
        "optim": "sgd",
        "max_grad_norm": 0.0,
        "num_train_epochs": 2,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 16,
        "evaluation_strategy": "epoch",
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": True,
        "logging_steps": 1000,
    }
    values.update(overrides)
    args = TrainingArguments(str(output_dir), **values)
    return Trainer(
        args=args, model_init=model_init, train_dataset=regression_data(64, 0),
        eval_dataset=regression_data(32, 1) if eval_dataset is None else eval_dataset,
    )


@pytest.fixture
def optuna():
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@pytest.fixture(scope="session")
def hs():
    """This module: the model, data and trainer builder."""
    return sys.modules[__name__]
