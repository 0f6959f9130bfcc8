"""Tests for toolkit.utils.nested: tree operations and padded concatenation."""

from __future__ import annotations

from collections import OrderedDict, defaultdict, namedtuple

import numpy as np
import pytest
import torch

from toolkit.utils.nested import (
    find_batch_size,
    nested_detach,
    nested_map,
    nested_numpify,
    nested_to,
    nested_truncate,
    pad_and_concatenate,
)

Pair = namedtuple("Pair", ["a", "b"])


def _tree() -> dict:
    w = torch.ones(3, 2, requires_grad=True)
    return {
        "logits": w * 2,
        "extra": (w.sum(1), [w[:, 0] + 1, None]),
        "pair": Pair(torch.arange(3), torch.zeros(3, 4)),
        "name": "text",
    }


def test_nested_map_keeps_structure_and_none() -> None:
    out = nested_map(lambda x: x * 10 if isinstance(x, int) else x, (1, [2, None], {"k": 3}))
    assert out == (10, [20, None], {"k": 30})
    assert isinstance(out[1], list)
    od = nested_map(lambda x: x + 1, OrderedDict(b=1, a=2))
    assert isinstance(od, OrderedDict) and list(od) == ["b", "a"]
    p = nested_map(lambda x: -x, Pair(1, 2))
    assert isinstance(p, Pair) and p == Pair(-1, -2)
    dd = defaultdict(int, {"x": 1})  # cannot be rebuilt from a dict: falls back to dict
    assert nested_map(lambda x: x, dd) == {"x": 1}


def test_nested_detach_shares_memory_and_keeps_types() -> None:
    tree = _tree()
    out = nested_detach(tree)
    assert not out["logits"].requires_grad
    assert out["logits"].data_ptr() == tree["logits"].data_ptr()
    assert isinstance(out["pair"], Pair)
    assert isinstance(out["extra"][1], list) and out["extra"][1][1] is None
    assert out["name"] == "text"


def test_nested_to_same_device_is_no_copy() -> None:
    t = torch.ones(2)
    out = nested_to({"a": (t,)}, "cpu")
    assert out["a"][0] is t
    out64 = nested_to([t], torch.device("cpu"), non_blocking=True)
    assert out64[0].data_ptr() == t.data_ptr()


def test_nested_numpify_bf16_to_float32_and_zero_copy() -> None:
    bf = torch.tensor([1.5, 2.0], dtype=torch.bfloat16)
    f32 = torch.arange(4.0)
    out = nested_numpify({"bf": bf, "f": (f32,), "n": None, "arr": np.ones(1)})
    assert out["bf"].dtype == np.float32 and out["bf"].tolist() == [1.5, 2.0]
    assert out["f"][0].dtype == np.float32
    assert np.shares_memory(out["f"][0], f32.numpy())
    assert out["n"] is None and isinstance(out["arr"], np.ndarray)
    # tensors that require grad are detached first
    assert nested_numpify(torch.ones(2, requires_grad=True)).tolist() == [1.0, 1.0]


def test_find_batch_size() -> None:
    assert find_batch_size(torch.zeros(5, 3)) == 5
    assert find_batch_size(np.zeros((4,))) == 4
    assert find_batch_size({"mask": None, "ids": [torch.zeros(7, 2)]}) == 7
    assert find_batch_size((torch.tensor(1.0), torch.zeros(3))) == 3  # 0-d is skipped
    assert find_batch_size({"text": ["a", "b"]}) is None
    assert find_batch_size(None) is None


def test_nested_truncate_views() -> None:
    t = torch.arange(10).reshape(5, 2)
    a = np.arange(5)
    out = nested_truncate({"t": t, "x": (a, torch.tensor(3.0)), "s": "keep"}, 3)
    assert out["t"].shape == (3, 2) and out["t"].data_ptr() == t.data_ptr()
    assert out["x"][0].tolist() == [0, 1, 2] and np.shares_memory(out["x"][0], a)
    assert out["x"][1].item() == 3.0 and out["s"] == "keep"


def test_pad_and_concatenate_same_shape_is_one_concatenate(monkeypatch) -> None:
    calls = []
    real = np.concatenate
    monkeypatch.setattr(np, "concatenate", lambda *a, **k: calls.append(1) or real(*a, **k))
    arrays = [np.full((2, 3), i) for i in range(5)]
    out = pad_and_concatenate(arrays)
    assert len(calls) == 1
    np.testing.assert_array_equal(out, real(arrays, axis=0))


def test_pad_and_concatenate_pads_sequences_exactly() -> None:
    a = np.array([[1, 2], [3, 4]])
    b = np.array([[5, 6, 7, 8]])
    c = np.array([[9], [10]])
    out = pad_and_concatenate([a, b, c])
    expected = np.array(
        [
            [1, 2, -100, -100],
            [3, 4, -100, -100],
            [5, 6, 7, 8],
            [9, -100, -100, -100],
            [10, -100, -100, -100],
        ]
    )
    np.testing.assert_array_equal(out, expected)


def test_pad_and_concatenate_pads_every_trailing_dim_and_custom_index() -> None:
    a = np.ones((1, 2, 3), dtype=np.float32)
    b = np.ones((2, 3, 2), dtype=np.float32)
    out = pad_and_concatenate([a, b], padding_index=0)
    assert out.shape == (3, 3, 3) and out.dtype == np.float32
    expected = np.zeros((3, 3, 3), dtype=np.float32)
    expected[0, :2, :3] = 1
    expected[1:, :3, :2] = 1
    np.testing.assert_array_equal(out, expected)


def test_pad_and_concatenate_1d_0d_single_and_dtype() -> None:
    out = pad_and_concatenate([np.array([1, 2]), np.array([3])])
    assert out.tolist() == [1, 2, 3]
    assert pad_and_concatenate([np.array(1.5), np.array(2.5)]).tolist() == [1.5, 2.5]
    single = np.zeros((2, 2))
    assert pad_and_concatenate([single]) is single
    # unsigned arrays widen so that -100 fits
    u = pad_and_concatenate([np.ones((1, 1), np.uint8), np.ones((1, 2), np.uint8)])
    assert u.dtype.kind == "i" and u[0, 1] == -100


def test_pad_and_concatenate_errors() -> None:
    with pytest.raises(ValueError, match="at least one"):
        pad_and_concatenate([])
    with pytest.raises(ValueError, match="number of dimensions"):
        pad_and_concatenate([np.zeros((2, 2)), np.zeros((2,))])
