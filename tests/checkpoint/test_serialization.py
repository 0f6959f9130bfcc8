"""Tests for toolkit.checkpoint.serialization: tied tensors, safe pickles, JSON."""

from __future__ import annotations

import io
import json
import os

import pytest
import safetensors.torch
import torch

from toolkit.checkpoint.serialization import (
    TIED_METADATA_KEY,
    UnsafeCheckpointError,
    json_from_bytes,
    json_to_bytes,
    load_json,
    load_object,
    load_tensors,
    object_from_bytes,
    read_tensors_metadata,
    save_json,
    save_object,
    save_tensors,
    tensors_from_bytes,
    tensors_to_bytes,
)


class _RunsShell:
    """Unpickling this calls os.system: the classic malicious checkpoint."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_plain_safetensors_refuses_tied_weights(tied_model, tmp_path) -> None:
    with pytest.raises(RuntimeError, match="share memory|shared"):
        safetensors.torch.save_file(tied_model.state_dict(), str(tmp_path / "plain.safetensors"))


def test_tied_weights_round_trip_through_a_path(tied_model, tmp_path) -> None:
    sd = tied_model.state_dict()
    path = tmp_path / "model.safetensors"
    save_tensors(sd, path)
    loaded = load_tensors(path)
    assert set(loaded) == set(sd)
    assert loaded["head.weight"] is loaded["embed.weight"]
    for name, tensor in sd.items():
        assert torch.equal(loaded[name], tensor), name
    # The alias is recorded in the header; the kept name is the first in the dict.
    with open(path, "rb") as f:
        meta = read_tensors_metadata(f.read())
    assert json.loads(meta[TIED_METADATA_KEY]) == {"head.weight": "embed.weight"}
    assert meta["format"] == "pt"
    # A plain safetensors reader still gets a usable file (the kept names).
    assert set(safetensors.torch.load_file(str(path))) == set(sd) - {"head.weight"}


def test_tied_weights_load_into_a_fresh_model(tied_model) -> None:
    data = tensors_to_bytes(tied_model.state_dict())
    fresh = type(tied_model)()
    fresh.load_state_dict(tensors_from_bytes(data))
    assert fresh.head.weight is fresh.embed.weight
    assert torch.equal(fresh.embed.weight, tied_model.embed.weight)


def test_file_object_target_and_map_location(tied_model) -> None:
    buffer = io.BytesIO()
    save_tensors(tied_model.state_dict(), buffer, metadata={"note": "hi"})
    buffer.seek(0)
    loaded = load_tensors(buffer, map_location="cpu")
    assert loaded["head.weight"] is loaded["embed.weight"]
    assert read_tensors_metadata(buffer.getvalue())["note"] == "hi"


def test_non_contiguous_and_overlapping_views_keep_their_values() -> None:
    base = torch.arange(12.0).reshape(3, 4)
    tensors = {
        "base": base,
        "transposed": base.t(),  # same memory, different view: copied apart
        "row": base[1],  # same memory, different view
        "lonely_t": torch.arange(6.0).reshape(2, 3).t(),  # non-contiguous, unshared
        "empty_a": torch.empty(0),
        "empty_b": torch.empty(0, 3),
    }
    loaded = tensors_from_bytes(tensors_to_bytes(tensors))
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor), name
    assert TIED_METADATA_KEY not in read_tensors_metadata(tensors_to_bytes(tensors))


def test_bad_tensor_input_is_rejected() -> None:
    with pytest.raises(TypeError, match="'step'"):
        tensors_to_bytes({"w": torch.ones(1), "step": 3})
    with pytest.raises(ValueError, match="reserved"):
        tensors_to_bytes({"w": torch.ones(1)}, metadata={TIED_METADATA_KEY: "{}"})
    with pytest.raises(ValueError, match="not in the file"):
        raw = safetensors.torch.save({"a": torch.ones(1)}, metadata={TIED_METADATA_KEY: '{"b": "zzz"}'})
        tensors_from_bytes(raw)


def test_objects_round_trip_with_weights_only(tmp_path) -> None:
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    opt.zero_grad()
    opt.param_groups[0]["params"][0].grad = torch.ones(3)
    opt.step()
    state = {"optimizer": opt.state_dict(), "rng": torch.get_rng_state(), "step": 7, "name": "x"}
    path = tmp_path / "state.pt"
    save_object(state, path)
    loaded = load_object(path)
    assert loaded["step"] == 7 and loaded["name"] == "x"
    assert torch.equal(loaded["rng"], state["rng"])
    assert torch.equal(loaded["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])


def test_code_running_pickle_is_refused_and_does_not_run(tmp_path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"payload": _RunsShell(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError, match="evil.pt") as info:
        load_object(path)
    assert isinstance(info.value, RuntimeError)
    assert not marker.exists()
    buffer = io.BytesIO()
    torch.save(_RunsShell(str(marker)), buffer)
    with pytest.raises(UnsafeCheckpointError, match="blob.pt"):
        object_from_bytes(buffer.getvalue(), name="blob.pt")
    assert not marker.exists()


def test_json_helpers(tmp_path) -> None:
    obj = {"b": [1, 2.5, None], "a": {"x": True}}
    data = json_to_bytes(obj)
    assert data.endswith(b"\n") and data.index(b'"a"') < data.index(b'"b"')
    assert json_from_bytes(data) == obj
    save_json(obj, tmp_path / "o.json")
    assert load_json(tmp_path / "o.json") == obj
    with pytest.raises(TypeError):
        json_to_bytes({"t": torch.ones(1)})
