"""Tests for AsyncCheckpointIO: snapshot on the caller, write in the background, errors surface."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, namedtuple
from typing import Any

import pytest
import torch

from toolkit.checkpoint import AsyncCheckpointIO, CheckpointIO, FsspecCheckpointIO, snapshot


class GatedIO(CheckpointIO):
    """Delegates to a real IO, but each save waits for ``gate`` and may fail on demand."""

    def __init__(self, inner: CheckpointIO) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.started = threading.Event()
        self.fail_with: BaseException | None = None
        self.saved: list[str] = []

    def save(self, state: dict[str, Any], path: str) -> None:
        self.started.set()
        assert self.gate.wait(timeout=30), "test never opened the gate"
        if self.fail_with is not None:
            raise self.fail_with
        self.inner.save(state, path)
        self.saved.append(path)

    def load(self, path, map_location=None, **kwargs):
        return self.inner.load(path, map_location, **kwargs)

    def exists(self, path):
        return self.inner.exists(path)

    def remove(self, path):
        self.inner.remove(path)

    def list(self, path):
        return self.inner.list(path)


def test_save_returns_before_the_write_and_writes_the_snapshot(root) -> None:
    gated = GatedIO(FsspecCheckpointIO(fsync=False))
    weights = torch.zeros(4)
    nested = {"step": 1, "hist": [torch.ones(2)]}
    with AsyncCheckpointIO(gated) as io:
        io.save({"model.safetensors": {"w": weights}, "extra.pt": nested}, f"{root}/checkpoint-1")
        assert gated.started.wait(timeout=30)
        assert io.pending == 1 and gated.saved == []  # the caller is free while the write waits
        weights.add_(5.0)  # training goes on, in place
        nested["hist"][0].mul_(10)
        nested["step"] = 99
        gated.gate.set()
        io.wait()
        assert io.pending == 0
        loaded = io.load(f"{root}/checkpoint-1")
    assert torch.equal(loaded["model.safetensors"]["w"], torch.zeros(4))
    assert loaded["extra.pt"]["step"] == 1
    assert torch.equal(loaded["extra.pt"]["hist"][0], torch.ones(2))


def test_background_error_surfaces_on_wait_once(root) -> None:
    gated = GatedIO(FsspecCheckpointIO(fsync=False))
    gated.fail_with = OSError("disk on fire")
    gated.gate.set()
    io = AsyncCheckpointIO(gated)
    io.save({"a.json": 1}, f"{root}/checkpoint-1")  # returns: the failure happens later
    with pytest.raises(OSError, match="disk on fire"):
        io.wait()
    io.wait()  # reported once
    gated.fail_with = None
    io.save({"a.json": 2}, f"{root}/checkpoint-2")
    io.close()
    assert gated.saved == [f"{root}/checkpoint-2"]
    io.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        io.save({"a.json": 3}, f"{root}/checkpoint-3")


def test_background_error_surfaces_on_the_next_save(root) -> None:
    gated = GatedIO(FsspecCheckpointIO(fsync=False))
    gated.fail_with = ValueError("boom")
    gated.gate.set()
    io = AsyncCheckpointIO(gated)
    io.save({"a.json": 1}, f"{root}/checkpoint-1")
    deadline = time.monotonic() + 30
    while io.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(ValueError, match="boom"):
        io.save({"a.json": 2}, f"{root}/checkpoint-2")
    io.close()
    assert gated.saved == []  # the save that reported the error was not started


def test_error_surfaces_on_close(root) -> None:
    gated = GatedIO(FsspecCheckpointIO(fsync=False))
    gated.fail_with = OSError("late")
    gated.gate.set()
    io = AsyncCheckpointIO(gated)
    io.save({"a.json": 1}, f"{root}/checkpoint-1")
    with pytest.raises(OSError, match="late"):
        io.close()


def test_pending_saves_beyond_the_limit_block_the_caller(root) -> None:
    gated = GatedIO(FsspecCheckpointIO(fsync=False))
    io = AsyncCheckpointIO(gated, max_pending=1)
    io.save({"a.json": 1}, f"{root}/checkpoint-1")
    second_done = threading.Event()

    def second() -> None:
        io.save({"a.json": 2}, f"{root}/checkpoint-2")
        second_done.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert not second_done.wait(timeout=0.3)  # blocked while the first write is held
    gated.gate.set()
    thread.join(timeout=30)
    assert second_done.is_set()
    io.close()
    assert gated.saved == [f"{root}/checkpoint-1", f"{root}/checkpoint-2"]


def test_other_methods_wait_for_pending_saves(root) -> None:
    gated = GatedIO(FsspecCheckpointIO(fsync=False))
    io = AsyncCheckpointIO(gated)
    io.save({"a.json": 1}, f"{root}/checkpoint-1")
    threading.Timer(0.1, gated.gate.set).start()
    assert io.exists(f"{root}/checkpoint-1")  # waited for the write
    assert io.list(root) == ["checkpoint-1"]
    io.remove(f"{root}/checkpoint-1")
    assert not io.exists(f"{root}/checkpoint-1")
    io.close()


def test_tied_weights_survive_the_snapshot(root, tied_model) -> None:
    with AsyncCheckpointIO(FsspecCheckpointIO(fsync=False)) as io:
        io.save({"model.safetensors": tied_model.state_dict()}, f"{root}/checkpoint-1")
        loaded = io.load(f"{root}/checkpoint-1")["model.safetensors"]
    assert loaded["head.weight"] is loaded["embed.weight"]


def test_snapshot_copies_containers_and_keeps_sharing() -> None:
    point = namedtuple("point", "x y")
    base = torch.arange(6.0)
    state = OrderedDict(
        a=base,
        a_view=base[2:4],
        same=base,
        tup=(1, [base]),
        pt=point(torch.ones(1), 2),
        blob=bytearray(b"xy"),
        s={1, 2},
    )
    copy = snapshot(state)
    assert isinstance(copy, OrderedDict) and isinstance(copy["pt"], point)
    assert copy["a"] is copy["same"] and copy["a"] is not base
    assert copy["a_view"].untyped_storage().data_ptr() == copy["a"].untyped_storage().data_ptr()
    assert copy["blob"] == b"xy" and isinstance(copy["blob"], bytes)
    base.fill_(-1)
    state["tup"][1].append(0)
    assert torch.equal(copy["a"], torch.arange(6.0)) and torch.equal(copy["a_view"], torch.tensor([2.0, 3.0]))
    assert copy["tup"] == (1, [copy["a"]]) and copy["s"] == {1, 2}


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="max_pending"):
        AsyncCheckpointIO(FsspecCheckpointIO(), max_pending=0)
    with pytest.raises(TypeError, match="CheckpointIO"):
        AsyncCheckpointIO(object())  # type: ignore[arg-type]
