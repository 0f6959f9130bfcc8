"""find_executable_batch_size, is_oom_error, rebalance."""

from __future__ import annotations

import logging
import weakref

import pytest
import torch

from toolkit.memory import batch_size as bs_module
from toolkit.memory.batch_size import find_executable_batch_size, is_oom_error, rebalance


@pytest.mark.parametrize(
    "exc",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"),
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.35 GiB total capacity)"),
        RuntimeError("CUDA error: out of memory"),
        RuntimeError("MPS backend out of memory (MPS allocated: 1.00 GB)"),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried"
        ),
        RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if you passed in"),
        MemoryError(),
    ],
    ids=["cuda-oom-type", "cuda-msg", "cuda-error", "mps", "cpu-allocator", "cudnn", "memoryerror"],
)
def test_is_oom_error_recognises(exc):
    assert is_oom_error(exc)


@pytest.mark.parametrize(
    "exc",
    [RuntimeError("mat1 and mat2 shapes cannot be multiplied"), ValueError("out of memory"), KeyError("x")],
)
def test_is_oom_error_rejects(exc):
    assert not is_oom_error(exc)


def test_real_cpu_allocator_failure_is_oom():
    with pytest.raises(RuntimeError) as info:
        torch.empty(2**60, dtype=torch.uint8)  # beyond any address space
    assert is_oom_error(info.value)


def _fake_oom_above(limit, tried):
    def train(batch_size, *args, **kwargs):
        tried.append(batch_size)
        if batch_size > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
        return batch_size, args, kwargs

    return train


def test_halves_until_it_fits(caplog):
    tried: list[int] = []
    run = find_executable_batch_size(_fake_oom_above(16, tried), starting_batch_size=128)
    with caplog.at_level(logging.WARNING, logger=bs_module.__name__):
        assert run("a", k=1) == (16, ("a",), {"k": 1})
    assert tried == [128, 64, 32, 16]
    assert run.batch_size == 16
    assert [r.getMessage().rsplit(" ", 1)[-1] for r in caplog.records] == ["64", "32", "16"]
    assert run("b") == (16, ("b",), {})  # the size that worked is kept
    assert tried == [128, 64, 32, 16, 16]


def test_decorator_form_and_real_cpu_oom():
    tried: list[int] = []

    @find_executable_batch_size(starting_batch_size=64)
    def run(batch_size):
        tried.append(batch_size)
        if batch_size > 8:
            torch.empty(2**60, dtype=torch.uint8)
        return batch_size

    assert run() == 8
    assert tried == [64, 32, 16, 8]


def test_reaches_zero():
    tried: list[int] = []
    run = find_executable_batch_size(_fake_oom_above(0, tried), starting_batch_size=8)
    with pytest.raises(RuntimeError, match="No executable batch size found, reached zero."):
        run()
    assert tried == [8, 4, 2, 1]


def test_other_errors_propagate_without_retry():
    tried: list[int] = []

    @find_executable_batch_size(starting_batch_size=32)
    def run(batch_size):
        tried.append(batch_size)
        raise ValueError("bad data")

    with pytest.raises(ValueError, match="bad data"):
        run()
    assert tried == [32]


def test_auto_find_off_calls_once_and_lets_oom_through():
    tried: list[int] = []
    run = find_executable_batch_size(
        _fake_oom_above(16, tried), starting_batch_size=32, auto_find_batch_size=False
    )
    with pytest.raises(torch.cuda.OutOfMemoryError):
        run()
    assert tried == [32]
    ok = find_executable_batch_size(
        _fake_oom_above(16, tried), starting_batch_size=8, auto_find_batch_size=False
    )
    assert ok()[0] == 8


def test_failed_attempt_is_freed_before_memory_is_released(monkeypatch):
    """The tensors of the failed call are unreachable when the cleanup runs."""

    class Big:
        pass

    refs: list[weakref.ref] = []
    alive_at_release: list[bool] = []
    monkeypatch.setattr(bs_module, "release_memory", lambda: alive_at_release.append(any(r() for r in refs)))

    @find_executable_batch_size(starting_batch_size=4)
    def run(batch_size):
        activations = Big()
        refs.append(weakref.ref(activations))
        if batch_size > 2:
            raise RuntimeError("CUDA out of memory.")
        return batch_size

    assert run() == 2
    assert alive_at_release == [False, False]  # once before the first try, once after the OOM


def test_bad_starting_batch_size():
    with pytest.raises(ValueError):
        find_executable_batch_size(lambda b: b, starting_batch_size=0)


def test_rebalance_keeps_the_effective_batch():
    batch, accumulation = 64, 2
    while batch > 1:
        new_batch, new_accumulation = rebalance(batch, accumulation)
        assert new_batch * new_accumulation == batch * accumulation
        batch, accumulation = new_batch, new_accumulation
    assert (batch, accumulation) == (1, 128)
    assert rebalance(27, 1, factor=3) == (9, 3)


def test_rebalance_warns_when_it_cannot_keep_it(caplog):
    with caplog.at_level(logging.WARNING, logger=bs_module.__name__):
        assert rebalance(5, 1) == (2, 2)
    assert "Effective batch changes from 5 to 4" in caplog.text


@pytest.mark.parametrize("args", [(1, 1), (8, 0), (8, 1, 1)])
def test_rebalance_rejects(args):
    with pytest.raises(ValueError):
        rebalance(*args)
