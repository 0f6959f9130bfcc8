"""MemoryTracker: CPU deltas against known allocations, the peak thread, nesting, off = free."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest
import torch

from toolkit.memory import tracker as tracker_module
from toolkit.memory.tracker import MemoryTracker

MB = 2**20
BLOCK = 128 * MB
THREAD_NAME = "toolkit-memory-peak"


def _sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


def _mem_keys(metrics: dict) -> list[str]:
    return sorted(k for k in metrics if "_mem_" in k)


@pytest.fixture
def tracker() -> MemoryTracker:
    return MemoryTracker(device="cpu", sample_interval=0.001)


def test_alloc_delta_matches_a_kept_allocation(tracker):
    with tracker.track("train") as metrics:
        block = np.ones(BLOCK, dtype=np.uint8)  # pages touched, so resident
    try:
        assert metrics["train_mem_cpu_alloc_delta"] == pytest.approx(BLOCK, rel=0.15)
        assert metrics["train_mem_cpu_peaked_delta"] < 0.15 * BLOCK
    finally:
        del block


def test_freed_block_shows_as_peak_not_alloc(tracker):
    with tracker.track("eval") as metrics:
        block = np.ones(BLOCK, dtype=np.uint8)
        time.sleep(0.05)  # the sampler (1 ms) sees the block while it lives
        del block
    assert metrics["eval_mem_cpu_peaked_delta"] == pytest.approx(BLOCK, rel=0.2)
    assert abs(metrics["eval_mem_cpu_alloc_delta"]) < 0.15 * BLOCK


def test_torch_tensor_counts_too(tracker):
    with tracker.track("test") as metrics:
        t = torch.ones(BLOCK // 4, dtype=torch.float32)
    assert metrics["test_mem_cpu_alloc_delta"] == pytest.approx(BLOCK, rel=0.15)
    del t


def test_metric_names_on_cpu_device_have_no_gpu(tracker):
    with tracker.track("train") as metrics:
        pass
    assert _mem_keys(metrics) == ["train_mem_cpu_alloc_delta", "train_mem_cpu_peaked_delta"]
    assert all(isinstance(v, int) for v in metrics.values())
    assert tracker.gpu_device is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA default")
def test_default_device_without_cuda_reports_cpu_only():
    t = MemoryTracker()
    with t.track("train") as metrics:
        pass
    assert not any("gpu" in k for k in metrics)


def test_sampling_thread_lives_only_while_a_stage_is_tracked(tracker):
    assert _sampler_threads() == []
    tracker.start("train")
    assert len(_sampler_threads()) == 1
    tracker.start("eval")  # nested: no second thread
    assert len(_sampler_threads()) == 1
    tracker.stop("eval")
    assert len(_sampler_threads()) == 1
    tracker.stop("train")
    assert _sampler_threads() == []


def test_track_stops_when_the_block_raises(tracker):
    with pytest.raises(KeyError), tracker.track("train"):
        raise KeyError("boom")
    assert tracker.current_stage is None
    assert _sampler_threads() == []
    assert "train" in tracker.cpu


def test_nested_eval_is_folded_into_train(tracker):
    train_metrics: dict = {}
    eval_metrics: dict = {"eval_loss": 1.0}
    tracker.start("train")
    tracker.start("eval")
    assert tracker.current_stage == "train"
    block = np.ones(BLOCK, dtype=np.uint8)  # allocated "during eval"
    tracker.stop_and_update_metrics(eval_metrics)  # innermost stage: eval -> no-op
    assert tracker.current_stage == "train"
    assert eval_metrics == {"eval_loss": 1.0}
    tracker.stop_and_update_metrics(train_metrics)
    assert tracker.current_stage is None
    assert _mem_keys(train_metrics) == ["train_mem_cpu_alloc_delta", "train_mem_cpu_peaked_delta"]
    assert train_metrics["train_mem_cpu_alloc_delta"] == pytest.approx(BLOCK, rel=0.15)
    assert "eval" not in tracker.cpu
    del block


def test_stopping_the_outer_stage_forgets_open_inner_ones(tracker):
    tracker.start("train")
    tracker.start("eval")  # e.g. evaluation raised before its stop
    tracker.stop("train")
    assert tracker.current_stage is None
    assert _sampler_threads() == []
    tracker.stop("eval")  # not started any more: no-op
    tracker.stop()  # nothing open: no-op


def test_update_metrics_of_a_nested_stage_adds_nothing(tracker):
    with tracker.track("eval"):
        pass
    tracker.start("train")
    metrics: dict = {}
    tracker.update_metrics("eval", metrics)  # train is running: eval is nested
    assert metrics == {}
    tracker.stop("train")
    tracker.update_metrics("eval", metrics)  # standalone again: earlier eval figures
    assert _mem_keys(metrics) == ["eval_mem_cpu_alloc_delta", "eval_mem_cpu_peaked_delta"]


def test_init_figures_ride_along_with_the_first_report_only(tracker):
    tracker.start("init")
    tracker.stop_and_update_metrics()  # the Trainer's __init__: no metrics dict
    with tracker.track("eval") as first:
        pass
    assert _mem_keys(first) == [
        "before_init_mem_cpu",
        "eval_mem_cpu_alloc_delta",
        "eval_mem_cpu_peaked_delta",
        "init_mem_cpu_alloc_delta",
        "init_mem_cpu_peaked_delta",
    ]
    assert first["before_init_mem_cpu"] > 0
    assert first["before_init_mem_cpu"] == tracker.cpu["init"]["begin"]
    with tracker.track("train") as second:
        pass
    assert _mem_keys(second) == ["train_mem_cpu_alloc_delta", "train_mem_cpu_peaked_delta"]


def test_peaked_delta_is_peak_above_end(tracker):
    tracker.start("train")
    tracker.stop("train")
    figures = tracker.cpu["train"]
    assert figures["alloc"] == figures["end"] - figures["begin"]
    assert figures["peaked"] >= 0


def test_unknown_stage_is_rejected(tracker):
    with pytest.raises(ValueError, match="unknown stage"):
        tracker.start("evaluate")
    assert _sampler_threads() == []


def test_bad_interval_is_rejected():
    with pytest.raises(ValueError):
        MemoryTracker(sample_interval=0)


def test_disabled_tracker_does_nothing_at_all(monkeypatch):
    import psutil

    def forbidden(*args, **kwargs):
        raise AssertionError("a disabled tracker must not call this")

    monkeypatch.setattr(psutil, "Process", forbidden)
    monkeypatch.setattr(tracker_module.gc, "collect", forbidden)
    monkeypatch.setattr(tracker_module.threading, "Thread", forbidden)
    monkeypatch.setattr(torch.cuda, "is_available", forbidden)
    monkeypatch.setattr(torch.cuda, "memory_allocated", forbidden)
    before = threading.active_count()

    t = MemoryTracker(enabled=False, device="cuda")
    assert not t.enabled and t.current_stage is None and t.gpu_device is None
    metrics: dict = {"train_loss": 0.5}
    t.start("train")
    t.start("not-even-a-stage")
    t.stop("train")
    t.update_metrics("train", metrics)
    t.stop_and_update_metrics(metrics)
    with t.track("eval") as tracked:
        pass
    assert metrics == {"train_loss": 0.5}
    assert tracked == {}
    assert threading.active_count() == before


def test_enabled_tracker_collects_garbage_at_boundaries(monkeypatch, tracker):
    calls = []
    real = gc.collect
    monkeypatch.setattr(tracker_module.gc, "collect", lambda *a: calls.append(1) or real(*a))
    with tracker.track("train"):
        pass
    assert len(calls) == 2


class _FakeAllocator:
    """Stands in for the CUDA allocator counters so the GPU path runs on any machine."""

    def __init__(self) -> None:
        self.allocated = 1000
        self.peak = 1000
        self.calls: list[tuple[str, object]] = []

    def alloc(self, n: int) -> None:
        self.allocated += n
        self.peak = max(self.peak, self.allocated)

    def install(self, monkeypatch) -> None:
        def reset(device=None):
            self.calls.append(("reset", device))
            self.peak = self.allocated

        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", reset)
        monkeypatch.setattr(torch.cuda, "empty_cache", lambda: self.calls.append(("empty_cache", None)))
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: self.allocated)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: self.peak)


def test_gpu_figures_from_the_allocator_counters(monkeypatch):
    fake = _FakeAllocator()
    fake.install(monkeypatch)
    t = MemoryTracker(device="cuda:1", sample_interval=0.001)
    assert t.gpu_device == torch.device("cuda:1")
    t.start("init")
    fake.alloc(500)  # the model moved to the device
    t.stop_and_update_metrics()
    assert ("reset", torch.device("cuda:1")) in fake.calls
    with t.track("train") as metrics:
        fake.alloc(300)  # kept
        fake.alloc(2000)  # activations ...
        fake.alloc(-2000)  # ... freed
        t.start("eval")  # nested: must not reset the peak counter
        t.stop("eval")
    assert metrics["init_mem_gpu_alloc_delta"] == 500
    assert metrics["init_mem_gpu_peaked_delta"] == 0
    assert metrics["before_init_mem_gpu"] == 1000
    assert metrics["train_mem_gpu_alloc_delta"] == 300
    assert metrics["train_mem_gpu_peaked_delta"] == 2000
    assert "before_init_mem_cpu" in metrics and "train_mem_cpu_alloc_delta" in metrics
    assert [c for c in fake.calls if c[0] == "reset"] == [("reset", torch.device("cuda:1"))] * 2


def test_cpu_device_never_touches_cuda(monkeypatch):
    fake = _FakeAllocator()
    fake.install(monkeypatch)
    with MemoryTracker(device="cpu").track("train") as metrics:
        pass
    assert fake.calls == []
    assert not any("gpu" in k for k in metrics)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_deltas_follow_the_allocator():
    t = MemoryTracker(device="cuda", sample_interval=0.001)
    with t.track("train") as metrics:
        kept = torch.ones(BLOCK // 4, device="cuda")  # 128 MiB
        temp = torch.ones(2 * BLOCK // 4, device="cuda")  # 256 MiB, freed
        del temp
    assert metrics["train_mem_gpu_alloc_delta"] == BLOCK
    assert metrics["train_mem_gpu_peaked_delta"] == 2 * BLOCK
    assert "train_mem_cpu_alloc_delta" in metrics
    t.start("init")
    t.stop()
    with t.track("eval") as second:
        pass
    assert "before_init_mem_gpu" in second and "eval_mem_gpu_alloc_delta" in second
    del kept
