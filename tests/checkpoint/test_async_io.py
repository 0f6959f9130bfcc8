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


@pytest.fixture
def parallel_copies(monkeypatch):
    """Make every snapshot big enough for the two-thread copy, in small pieces; record the helpers."""
    from toolkit.checkpoint import async_io

    monkeypatch.setattr(async_io, "_PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(async_io, "_PIECE_BYTES", 64)
    monkeypatch.setattr(async_io, "_usable_cpus", lambda: 2)
    started: list[str] = []
    real_start = threading.Thread.start

    def start(self):
        started.append(self.name)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    return started


def test_two_thread_snapshot_copies_every_layout_exactly(parallel_copies) -> None:
    from toolkit.checkpoint.async_io import SnapshotBuffers

    base = torch.arange(1000.0)
    row = torch.randn(5)
    state = {
        "big": torch.randn(37, 53),
        "transposed": torch.randn(40, 30).t(),
        "channels_last": torch.randn(2, 3, 8, 8).to(memory_format=torch.channels_last),
        "shared": base,
        "shared_view": base[100:900],
        "ints": torch.arange(777, dtype=torch.int64),
        "expanded": row.expand(4, 5),
        "scalar": torch.tensor(3.5),
    }
    expected = {k: v.clone() for k, v in state.items()}
    buffers = SnapshotBuffers()
    for round_ in range(2):  # fresh buffers, then reused ones
        copy = snapshot(state, buffers)
        for key, value in expected.items():
            assert torch.equal(copy[key], value), (round_, key)
        assert copy["channels_last"].stride() == state["channels_last"].stride()
        assert copy["shared_view"].untyped_storage().data_ptr() == copy["shared"].untyped_storage().data_ptr()
        for key, value in state.items():
            if key != "expanded":
                value.add_(1)
        row.mul_(2)
        expected = {k: v.clone() for k, v in state.items()}
    assert parallel_copies.count("toolkit-snapshot-copy") == 2


def test_small_snapshot_copies_on_the_caller_only(monkeypatch) -> None:
    from toolkit.checkpoint import async_io

    names: list[str] = []
    monkeypatch.setattr(threading.Thread, "start", lambda self: names.append(self.name))
    copy = async_io.snapshot({"w": torch.ones(10)}, async_io.SnapshotBuffers())
    assert torch.equal(copy["w"], torch.ones(10)) and names == []


def test_copy_error_in_either_thread_reaches_the_caller(parallel_copies) -> None:
    from toolkit.checkpoint.async_io import _copy_all

    good = [(torch.empty(100), torch.randn(100)) for _ in range(20)]
    bad = (torch.empty(3), torch.randn(4))  # shapes that cannot be copied
    with pytest.raises(RuntimeError):
        _copy_all([*good[:10], bad, *good[10:]])


@pytest.fixture
def allocations(monkeypatch):
    """The shapes of the snapshot buffers created."""
    from toolkit.checkpoint import async_io

    made: list[tuple[int, ...]] = []
    real = async_io._empty_like_layout

    def counting(t):
        made.append(tuple(t.shape))
        return real(t)

    monkeypatch.setattr(async_io, "_empty_like_layout", counting)
    return made


def _stepped_adamw(model: torch.nn.Module) -> torch.optim.Optimizer:
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    return opt


def test_prepared_buffers_serve_the_first_snapshot_without_allocating(allocations) -> None:
    from toolkit.checkpoint.async_io import SnapshotBuffers
    from toolkit.optim import optimizer_state_like

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    buffers = SnapshotBuffers()
    # before the first step: the optimizer's state is predicted as meta tensors
    added = buffers.prepare({"weights": model.state_dict(), "optimizer": optimizer_state_like(opt)})
    n_params = sum(p.numel() for p in model.parameters())
    assert added == 3 * 4 * n_params and len(allocations) == 12
    assert buffers.prepare({"weights": model.state_dict()}) == 0  # already there
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    allocations.clear()
    copy = snapshot({"model": model.state_dict(), "optimizer": opt.state_dict()}, buffers)
    assert allocations == [()] * 4  # only AdamW's scalar step counters, which are not predicted
    assert torch.equal(copy["model"]["0.weight"], model[0].weight)
    assert torch.equal(copy["optimizer"]["state"][2]["exp_avg_sq"], opt.state[model[2].weight]["exp_avg_sq"])
    del copy
    # a second train() prepares again: the buffers of the latest snapshot count
    assert buffers.prepare({"weights": model.state_dict(), "optimizer": optimizer_state_like(opt)}) == 0


def test_prepare_shares_one_buffer_for_tied_tensors(tied_model) -> None:
    from toolkit.checkpoint.async_io import SnapshotBuffers

    buffers = SnapshotBuffers()
    state = {"model.safetensors": tied_model.state_dict()}
    buffers.prepare(state)
    before = buffers.nbytes
    copy = snapshot(state, buffers)
    assert buffers.nbytes == before
    assert (
        copy["model.safetensors"]["head.weight"].data_ptr()
        == copy["model.safetensors"]["embed.weight"].data_ptr()
    )


def test_a_snapshot_stops_the_touching_and_takes_untouched_buffers(allocations) -> None:
    from toolkit.checkpoint.async_io import SnapshotBuffers, _buffer_needs

    buffers = SnapshotBuffers()
    state = {"w": torch.randn(64, 64), "b": torch.randn(64)}
    assert buffers._allocate(*_buffer_needs(state)) == 4 * (64 * 64 + 64)
    buffers._stop_preparing.set()  # as a snapshot starting on another thread does
    buffers._touch_pending()  # returns at once: nothing written
    assert len(buffers._free) == 0 and sum(map(len, buffers._untouched.values())) == 2
    allocations.clear()
    copy = snapshot(state, buffers)
    assert allocations == [] and torch.equal(copy["w"], state["w"]) and torch.equal(copy["b"], state["b"])


def test_prepared_buffers_are_allocated_by_the_caller_and_written_by_the_worker(root, allocations) -> None:
    model = torch.nn.Linear(8, 4)
    with AsyncCheckpointIO(FsspecCheckpointIO(fsync=False)) as io:
        io.prepare({"model.safetensors": model.state_dict()})
        assert allocations == [(4, 8), (4,)]  # on the calling thread, before prepare returns
        io._worker.wait()
        buffers = io._free_buffers[-1]
        assert sum(map(len, buffers._free.values())) == 2 and not any(buffers._untouched.values())


def test_async_prepare_then_save_right_away_writes_the_state(root, allocations) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = _stepped_adamw(model)
    with AsyncCheckpointIO(FsspecCheckpointIO(fsync=False)) as io:
        io.prepare({"model.safetensors": model.state_dict(), "optimizer.pt": opt.state_dict()})
        io.save({"model.safetensors": model.state_dict(), "optimizer.pt": opt.state_dict()}, f"{root}/c-1")
        io._worker.wait()
        allocations.clear()
        model[0].weight.data.add_(1.0)
        io.save({"model.safetensors": model.state_dict(), "optimizer.pt": opt.state_dict()}, f"{root}/c-2")
        assert allocations == []  # the buffers made by prepare or by the first save are reused
        loaded = io.load(f"{root}/c-2")
    assert torch.equal(loaded["model.safetensors"]["0.weight"], model[0].weight.detach())


def test_prepare_failure_is_logged_and_saves_still_work(root, monkeypatch, caplog) -> None:
    from toolkit.checkpoint import async_io

    def broken(self):
        raise MemoryError("no room")

    monkeypatch.setattr(async_io.SnapshotBuffers, "_touch_pending", broken)
    with AsyncCheckpointIO(FsspecCheckpointIO(fsync=False)) as io:
        io.prepare({"w": torch.ones(3)})
        io.wait()
        io.save({"w.safetensors": {"w": torch.ones(3)}}, f"{root}/c-1")
    assert "preparing checkpoint buffers failed" in caplog.text
