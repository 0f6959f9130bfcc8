"""Shared fixtures for the checkpoint tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import fsspec
import pytest
import torch
from torch import nn


@pytest.fixture(params=["local", "memory"])
def root(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A fresh checkpoint root, on the local disk or in fsspec's memory store."""
    if request.param == "local":
        yield str(tmp_path / "out")
        return
    url = f"memory://toolkit-tests-{uuid.uuid4().hex}"
    yield url
    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


class TiedLM(nn.Module):
    """A tiny language model whose output layer shares the input embedding's weight."""

    def __init__(self, vocab: int = 11, dim: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.embed(ids)))


@pytest.fixture
def tied_model() -> TiedLM:
    """A seeded tied-weight model."""
    torch.manual_seed(0)
    return TiedLM()
