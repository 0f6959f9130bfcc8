"""Predictions are accumulated without repeated concatenation: fixed-size CPU outputs go
into one array pre-sized to the dataset, variable-length ones are joined (and padded) once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import toolkit.loops.evaluation as evaluation
from toolkit.loops.evaluation import EvaluationLoop, PredictionAccumulator


class Rows(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"x": torch.tensor([float(i)]), "n": torch.tensor(1 + i % 5)}


def fixed_step(model, batch, loss_only, ignore_keys):
    x = batch["x"]
    return None, x * torch.arange(6.0), batch["x"].squeeze(1).long()


def ragged_step(model, batch, loss_only, ignore_keys):
    width = int(batch["n"].max())
    return None, batch["x"].expand(-1, width).contiguous(), None


@pytest.fixture
def joins(monkeypatch) -> dict:
    counts = {"cat": 0, "concatenate": 0, "pad_and_concatenate": 0}
    cat, concatenate, pad = torch.cat, np.concatenate, evaluation.pad_and_concatenate

    def count(name, fn):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(torch, "cat", count("cat", cat))
    monkeypatch.setattr(np, "concatenate", count("concatenate", concatenate))
    monkeypatch.setattr(evaluation, "pad_and_concatenate", count("pad_and_concatenate", pad))
    return counts


def test_fixed_size_outputs_fill_one_presized_array_without_joining(joins) -> None:
    data = DataLoader(Rows(23), batch_size=4)
    out = EvaluationLoop(prediction_step=fixed_step).run(torch.nn.Identity(), data)
    assert joins == {"cat": 0, "concatenate": 0, "pad_and_concatenate": 0}
    expected = np.arange(23.0)[:, None] * np.arange(6.0)
    np.testing.assert_array_equal(out.predictions, expected)
    np.testing.assert_array_equal(out.label_ids, np.arange(23))
    assert out.predictions.dtype == np.float32 and out.label_ids.dtype == np.int64
    assert out.predictions.base is not None and out.predictions.base.shape == (23, 6)  # the one array


def test_variable_length_outputs_are_padded_in_one_join(joins) -> None:
    data = DataLoader(Rows(23), batch_size=4)
    out = EvaluationLoop(prediction_step=ragged_step).run(torch.nn.Identity(), data)
    assert joins["pad_and_concatenate"] == 1 and joins["cat"] == 0
    assert out.predictions.shape == (23, 5)
    for i, row in enumerate(out.predictions):
        width = max(1 + j % 5 for j in range(i - i % 4, min(i - i % 4 + 4, 23)))
        assert (row[:width] == i).all() and (row[width:] == -100).all(), i


def test_accumulator_keeps_every_row_past_its_capacity() -> None:
    acc = PredictionAccumulator(capacity=5)
    for start in range(0, 9, 3):
        acc.add(torch.arange(start, start + 3.0)[:, None].expand(-1, 2))
    result = acc.result()
    np.testing.assert_array_equal(result[:, 0], np.arange(9.0))
    assert acc.buffers == [None]  # it went back to chunks at the batch that did not fit


def test_bfloat16_outputs_are_kept_as_float32() -> None:
    acc = PredictionAccumulator(capacity=4)
    acc.add(torch.ones(2, 3, dtype=torch.bfloat16))
    acc.add(torch.full((2, 3), 2.0, dtype=torch.bfloat16))
    result = acc.result()
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, [[1.0] * 3] * 2 + [[2.0] * 3] * 2)


def test_capacity_is_checked() -> None:
    with pytest.raises(ValueError, match="capacity"):
        PredictionAccumulator(capacity=-1)
