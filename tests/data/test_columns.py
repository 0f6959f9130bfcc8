"""Tests of signature_columns, RemoveColumnsCollator and remove_columns_from_hf_dataset."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from toolkit.data import (
    RemoveColumnsCollator,
    columns,
    default_data_collator,
    remove_columns_from_hf_dataset,
    signature_columns,
)


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def forward(self, x, labels=None):
        return self.lin(x)


class KwargsModel(nn.Module):
    def forward(self, x, **kwargs):
        return x


class Wrapper(nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def test_signature_columns():
    assert signature_columns(Model()) == ["x", "labels", "label", "label_ids"]
    assert signature_columns(Model(), label_names=["target", "labels"]) == [
        "x",
        "labels",
        "label",
        "label_ids",
        "target",
    ]
    assert signature_columns(Wrapper(Model())) == ["x", "labels", "label", "label_ids"]
    assert signature_columns(KwargsModel()) is None


def test_drops_unknown_keys_and_logs_once(caplog):
    collate = RemoveColumnsCollator(
        default_data_collator, signature_columns(Model()), model_name="Model", description="training"
    )
    feats = [
        {"x": [1.0, 2.0], "label": 1, "text": "hi", "idx": 0},
        {"x": [3.0, 4.0], "label": 0, "text": "yo", "idx": 1},
    ]
    with caplog.at_level(logging.INFO, logger="toolkit.data.columns"):
        batch = collate(feats)
        collate(feats)
    assert set(batch) == {"x", "labels"}
    records = [r for r in caplog.records if "Dropping" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.INFO
    msg = records[0].getMessage()
    assert "text" in msg and "idx" in msg and "Model.forward" in msg and "training" in msg


def test_error_when_nothing_left_names_both_sides():
    collate = RemoveColumnsCollator(default_data_collator, signature_columns(Model()), model_name="Model")
    with pytest.raises(ValueError) as err:
        collate([{"text": "a", "idx": 1}])
    msg = str(err.value)
    assert "'idx'" in msg and "'text'" in msg and "'x'" in msg and "remove_unused_columns=False" in msg


def test_kwargs_forward_and_non_dict_pass_through():
    seen = []
    collate = RemoveColumnsCollator(lambda f: seen.append(f) or f, signature_columns(KwargsModel()))
    feats = [{"x": 1, "anything": 2}]
    assert collate(feats) == feats
    tuples = [(torch.ones(1), torch.zeros(1))]
    collate2 = RemoveColumnsCollator(lambda f: f, ["x"])
    assert collate2(tuples) == tuples


class FakeHFDataset:
    def __init__(self, columns):
        self.column_names = list(columns)

    def remove_columns(self, cols):
        return FakeHFDataset([c for c in self.column_names if c not in cols])


def test_items_a_collator_could_change_are_copies():
    items = [{"x": torch.ones(2), "labels": 1}, {"x": torch.zeros(2), "labels": 0}]

    def popping_collator(features):
        return [f.pop("labels") for f in features]

    wrapped = RemoveColumnsCollator(popping_collator, signature_columns(Model()))
    assert wrapped(items) == [1, 0]
    assert all("labels" in item for item in items)  # the dataset's own dicts are intact


def test_the_default_collator_gets_the_items_themselves(monkeypatch):
    items = [{"x": torch.ones(2), "labels": 1}, {"x": torch.zeros(2), "labels": 0}]
    seen = []

    def spy(features):
        seen.extend(features)
        return default_data_collator(features)

    monkeypatch.setattr(columns, "default_data_collator", spy)
    columns.RemoveColumnsCollator(spy, signature_columns(Model()))(items)
    assert seen[0] is items[0]  # the default collator changes nothing: no copies made


def test_with_the_default_collator_the_first_item_decides():
    collate = RemoveColumnsCollator(default_data_collator, signature_columns(Model()))
    # a later item's extra key would be dropped by filtering and is ignored by the
    # default collator (it reads the first item's keys): the same batch either way
    items = [{"x": [1.0, 2.0], "label": 1}, {"x": [3.0, 4.0], "label": 0, "text": "extra"}]
    batch = collate(items)
    filtered = default_data_collator([{k: v for k, v in i.items() if k != "text"} for i in items])
    assert batch.keys() == filtered.keys() == {"x", "labels"}
    assert all(torch.equal(batch[k], filtered[k]) for k in batch)
    # an extra key in the first item is filtered out of every item
    first_extra = [{"x": [1.0, 2.0], "label": 1, "idx": 7}, {"x": [3.0, 4.0], "label": 0, "idx": 8}]
    assert set(collate(first_extra)) == {"x", "labels"}


def test_remove_columns_from_hf_dataset(caplog):
    ds = FakeHFDataset(["x", "label", "text"])
    with caplog.at_level(logging.INFO, logger="toolkit.data.columns"):
        out = remove_columns_from_hf_dataset(ds, signature_columns(Model()), description="evaluation")
    assert out.column_names == ["x", "label"]
    assert any("text" in r.getMessage() for r in caplog.records)
    assert remove_columns_from_hf_dataset(ds, None) is ds
    assert remove_columns_from_hf_dataset([1, 2, 3], ["x"]) == [1, 2, 3]
    with pytest.raises(ValueError, match="remove_unused_columns=False"):
        remove_columns_from_hf_dataset(FakeHFDataset(["text"]), ["x"])
