"""Tests of default_data_collator and DataCollatorWithPadding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from toolkit.data import DataCollatorWithPadding, default_data_collator


def test_label_renamed_int_long_and_dtypes():
    feats = [
        {"x": [1.0, 2.0], "ids": [1, 2], "flag": True, "label": 1, "text": "a", "none": None},
        {"x": [3.0, 4.0], "ids": [3, 4], "flag": False, "label": 0, "text": "b", "none": None},
    ]
    batch = default_data_collator(feats)
    assert set(batch) == {"x", "ids", "flag", "labels"}
    assert batch["labels"].dtype == torch.int64 and batch["labels"].tolist() == [1, 0]
    assert batch["x"].dtype == torch.float32 and batch["x"].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert batch["ids"].dtype == torch.int64
    assert batch["flag"].dtype == torch.bool and batch["flag"].tolist() == [True, False]


def test_float_label_and_label_ids():
    assert default_data_collator([{"label": 0.5}, {"label": 1.5}])["labels"].dtype == torch.float32
    b = default_data_collator([{"label_ids": [1, 2]}, {"label_ids": [3, 4]}])
    assert b["labels"].dtype == torch.int64 and b["labels"].tolist() == [[1, 2], [3, 4]]
    b = default_data_collator([{"label_ids": torch.tensor([1, 2])}, {"label_ids": torch.tensor([3, 4])}])
    assert b["labels"].tolist() == [[1, 2], [3, 4]]
    # "label" wins over "label_ids"; None label is skipped and label_ids used
    b = default_data_collator([{"label": None, "label_ids": 3}, {"label": None, "label_ids": 4}])
    assert b["labels"].tolist() == [3, 4]


def test_tensors_stacked_keep_dtype_and_numpy_converted():
    feats = [
        {
            "t": torch.ones(2, dtype=torch.float16),
            "a": np.array([1, 2], dtype=np.int32),
            "f": np.float64(1.5),
        },
        {
            "t": torch.zeros(2, dtype=torch.float16),
            "a": np.array([3, 4], dtype=np.int32),
            "f": np.float64(2.5),
        },
    ]
    b = default_data_collator(feats)
    assert b["t"].dtype == torch.float16 and b["t"].shape == (2, 2)
    assert b["a"].dtype == torch.int64 and b["a"].tolist() == [[1, 2], [3, 4]]
    assert b["f"].dtype == torch.float32 and b["f"].tolist() == [1.5, 2.5]


def test_dataclass_and_object_features():
    @dataclasses.dataclass
    class Item:
        input_ids: list
        label: int

    b = default_data_collator([Item([1, 2], 0), Item([3, 4], 1)])
    assert b["input_ids"].tolist() == [[1, 2], [3, 4]] and b["labels"].tolist() == [0, 1]


def test_tuple_features_give_tuple():
    ds = torch.utils.data.TensorDataset(torch.arange(6.0).reshape(3, 2), torch.tensor([0, 1, 2]))
    out = default_data_collator([ds[0], ds[1], ds[2]])
    assert isinstance(out, tuple) and len(out) == 2
    assert torch.equal(out[0], torch.arange(6.0).reshape(3, 2))
    assert out[1].tolist() == [0, 1, 2]


def test_ragged_and_empty_errors():
    with pytest.raises(ValueError, match="DataCollatorWithPadding"):
        default_data_collator([{"input_ids": [1, 2]}, {"input_ids": [1]}])
    with pytest.raises(ValueError, match="empty"):
        default_data_collator([])
    with pytest.raises(ValueError, match="encode labels"):
        default_data_collator([{"label": "pos"}])
    with pytest.raises(TypeError, match="dicts"):
        default_data_collator([3, 4])


FEATS = [
    {"input_ids": [5, 6, 7], "token_type_ids": [0, 0, 1], "label": 1},
    {"input_ids": [8], "token_type_ids": [0], "label": 0},
]


def test_padding_right_longest():
    b = DataCollatorWithPadding(pad_token_id=9)(FEATS)
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 9, 9]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b["token_type_ids"].tolist() == [[0, 0, 1], [0, 0, 0]]
    assert b["labels"].tolist() == [1, 0]
    assert b["input_ids"].dtype == torch.int64 and b["attention_mask"].dtype == torch.int64


def test_padding_left_from_tokenizer_and_pad_id_priority():
    class Tok:
        padding_side = "left"
        pad_token_id = 4

    b = DataCollatorWithPadding(tokenizer=Tok(), pad_token_id=9)(FEATS)
    assert b["input_ids"].tolist() == [[5, 6, 7], [4, 4, 8]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert b["token_type_ids"].tolist() == [[0, 0, 1], [0, 0, 0]]
    # no pad id anywhere -> 0
    assert DataCollatorWithPadding()(FEATS)["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]


def test_pad_to_multiple_and_max_length():
    b = DataCollatorWithPadding(pad_to_multiple_of=4)(FEATS)
    assert b["input_ids"].shape == (2, 4) and b["attention_mask"].tolist()[1] == [1, 0, 0, 0]
    b = DataCollatorWithPadding(padding="max_length", max_length=5)(FEATS)
    assert b["input_ids"].shape == (2, 5) and b["input_ids"].tolist()[0] == [5, 6, 7, 0, 0]
    b = DataCollatorWithPadding(padding="max_length", max_length=5, pad_to_multiple_of=4)(FEATS)
    assert b["input_ids"].shape == (2, 8)
    with pytest.raises(ValueError, match="longer than max_length"):
        DataCollatorWithPadding(padding="max_length", max_length=2)(FEATS)


def test_existing_mask_and_label_sequences_and_other_keys():
    feats = [
        {"input_ids": [1, 2], "attention_mask": [1, 1], "labels": [3, 4], "pos": [0, 1]},
        {"input_ids": [1], "attention_mask": [1], "labels": [5], "pos": [0]},
    ]
    b = DataCollatorWithPadding(label_pad_token_id=-100)(feats)
    assert b["attention_mask"].tolist() == [[1, 1], [1, 0]]
    assert b["labels"].tolist() == [[3, 4], [5, -100]]
    assert b["pos"].tolist() == [[0, 1], [0, 0]]
    # a sequence under "label" is padded with the label pad id and renamed
    b = DataCollatorWithPadding()([{"input_ids": [1, 2], "label": [7, 8]}, {"input_ids": [1], "label": [9]}])
    assert b["labels"].tolist() == [[7, 8], [9, -100]] and "label" not in b


def test_tensor_sequences_padded():
    feats = [{"input_ids": torch.tensor([1, 2, 3])}, {"input_ids": torch.tensor([4])}]
    b = DataCollatorWithPadding()(feats)
    assert b["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]


def test_no_padding_and_bad_arguments():
    same = [{"input_ids": [1, 2]}, {"input_ids": [3, 4]}]
    b = DataCollatorWithPadding(padding=False)(same)
    assert b["input_ids"].tolist() == [[1, 2], [3, 4]] and "attention_mask" not in b
    with pytest.raises(ValueError, match="max_length"):
        DataCollatorWithPadding(padding="max_length")
    with pytest.raises(ValueError, match="accepted values"):
        DataCollatorWithPadding(padding="shortest")
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        DataCollatorWithPadding(pad_to_multiple_of=0)
    with pytest.raises(ValueError, match="return_tensors"):
        DataCollatorWithPadding(return_tensors="np")


def test_delegates_to_tokenizer_pad_and_pads_labels():
    calls = []

    class Tok:
        pad_token_id = 0
        padding_side = "right"

        def pad(self, features, padding, max_length, pad_to_multiple_of, return_tensors):
            calls.append((features, padding, max_length, pad_to_multiple_of, return_tensors))
            n = 4
            ids = torch.tensor([f["input_ids"] + [0] * (n - len(f["input_ids"])) for f in features])
            return {"input_ids": ids, "attention_mask": (ids != 0).long()}

    b = DataCollatorWithPadding(tokenizer=Tok(), pad_to_multiple_of=4)(
        [{"input_ids": [1, 2, 3], "labels": [1, 1, 1]}, {"input_ids": [4], "labels": [2]}]
    )
    ((features, padding, _, multiple, rt),) = calls
    assert padding == "longest" and multiple == 4 and rt == "pt"
    assert all("labels" not in f for f in features)
    assert b["input_ids"].shape == (2, 4)
    assert b["labels"].tolist() == [[1, 1, 1, -100], [2, -100, -100, -100]]
