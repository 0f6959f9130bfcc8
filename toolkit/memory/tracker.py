"""Per-stage memory report: CPU RSS and CUDA allocator deltas under the HF metric names.

`MemoryTracker` measures what one stage of a run (``init``, ``train``, ``eval``,
``test``) cost in memory and reports it as:

* ``{stage}_mem_cpu_alloc_delta``: resident set size (RSS) of this process at the end of
  the stage minus at its start, in bytes; negative when the stage released memory.
* ``{stage}_mem_cpu_peaked_delta``: how far the RSS rose above its end value during the
  stage and came back down, ``max(0, peak - end)``; never negative. ``alloc + peaked``
  is what the stage needed on top of what it started with.
* ``{stage}_mem_gpu_alloc_delta`` / ``{stage}_mem_gpu_peaked_delta``: the same from
  ``torch.cuda.memory_allocated`` / ``torch.cuda.max_memory_allocated`` (tensors
  allocated through PyTorch only), present only when the tracked device is CUDA.
* ``before_init_mem_cpu`` / ``before_init_mem_gpu``: absolute usage when ``init``
  started; reported, with the ``init_*`` figures, along with the first stage reported
  afterwards (``init`` has no metrics dict of its own in the Trainer).

How it measures: the CPU peak comes from a daemon thread that samples the RSS every
``sample_interval`` seconds while a stage is tracked (it exists only between ``start``
and ``stop``), so a spike shorter than the interval, or one during which the sampling
thread cannot get the GIL, can be missed: the peak is a lower bound. The GPU peak uses
the CUDA allocator's peak counter, which is reset (``torch.cuda.reset_peak_memory_stats``)
at the start of each tracked stage; that disturbs any other tool relying on that counter.
``gc.collect()`` (and ``torch.cuda.empty_cache()`` on CUDA) run at each stage boundary
so garbage waiting for collection is not counted; that costs time, which is one reason
the Trainer keeps the tracker off by default (``skip_memory_metrics=True``).

Nesting: only the outermost stage is tracked (the peak counters are single, process-wide
values). An ``eval`` started inside ``train`` is a no-op; its memory counts towards
``train`` and it reports no ``eval_mem_*`` metrics.

Disabled (``enabled=False``): every method returns at once; no thread, no ``psutil``
call, no ``gc.collect()``, no CUDA call.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["MemoryTracker", "STAGES"]

logger = logging.getLogger(__name__)

#: The stages a tracker knows, in the order the Trainer meets them.
STAGES = ("init", "train", "eval", "test")


class _PeakSampler:
    """A daemon thread recording the highest RSS seen until `stop` is called."""

    def __init__(self, read_rss, interval: float, first: int) -> None:
        self._read_rss = read_rss
        self._interval = interval
        self.peak = first
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="toolkit-memory-peak", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            rss = self._read_rss()
            if rss > self.peak:
                self.peak = rss
            self._done.wait(self._interval)

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.peak


class MemoryTracker:
    """Owns the memory figures of the stages of one run, and the sampling thread.

    Args:
        enabled: False makes every method a no-op that costs nothing.
        device: The accelerator whose allocator is measured. ``None`` means the current
            CUDA device when CUDA is available, otherwise none; a non-CUDA device means
            CPU figures only.
        sample_interval: Seconds between two RSS samples of the peak thread. Smaller
            catches shorter spikes but costs more (one sample is tens of microseconds
            holding the GIL).

    Example:
        >>> import numpy as np
        >>> tracker = MemoryTracker(device=torch.device("cpu"))
        >>> with tracker.track("train") as metrics:
        ...     block = np.ones(64 * 2**20, dtype=np.uint8)  # 64 MiB, kept alive
        >>> sorted(metrics)
        ['train_mem_cpu_alloc_delta', 'train_mem_cpu_peaked_delta']
        >>> metrics["train_mem_cpu_alloc_delta"] > 32 * 2**20
        True
        >>> with MemoryTracker(enabled=False).track("train") as metrics:
        ...     pass
        >>> metrics
        {}
    """

    def __init__(
        self, enabled: bool = True, device: torch.device | str | None = None, sample_interval: float = 0.005
    ) -> None:
        self._enabled = bool(enabled)
        if not self._enabled:
            return
        if sample_interval <= 0:
            raise ValueError(f"sample_interval must be > 0, got {sample_interval}")
        import psutil  # a declared dependency; imported only when tracking is on

        self._process = psutil.Process()
        self._interval = float(sample_interval)
        self._gpu: torch.device | None = _resolve_cuda_device(device)
        self._stack: list[str] = []  # every started stage not yet stopped, outermost first
        self._sampler: _PeakSampler | None = None
        self._begin: dict[str, int] = {}
        self.cpu: dict[str, dict[str, int]] = {}
        self.gpu: dict[str, dict[str, int]] = {}
        self._init_reported = False

    # ------------------------------------------------------------------ state
    @property
    def enabled(self) -> bool:
        """Whether the tracker measures anything."""
        return self._enabled

    @property
    def current_stage(self) -> str | None:
        """The stage being measured (the outermost started one), or None."""
        if not self._enabled or not self._stack:
            return None
        return self._stack[0]

    @property
    def gpu_device(self) -> torch.device | None:
        """The CUDA device measured, or None when only the CPU is."""
        return self._gpu if self._enabled else None

    # --------------------------------------------------------------- stages
    def start(self, stage: str) -> None:
        """Begin measuring ``stage``, unless another stage is already being measured.

        Raises:
            ValueError: ``stage`` is not one of `STAGES`.
        """
        if not self._enabled:
            return
        _check_stage(stage)
        self._stack.append(stage)
        if len(self._stack) > 1:  # nested: the outer stage accounts for it
            return
        gc.collect()
        gpu = self._gpu
        if gpu is not None:
            torch.cuda.reset_peak_memory_stats(gpu)
            torch.cuda.empty_cache()
            self._begin["gpu"] = torch.cuda.memory_allocated(gpu)
        rss = self._rss()
        self._begin["cpu"] = rss
        self._sampler = _PeakSampler(self._rss, self._interval, rss)

    def stop(self, stage: str | None = None) -> None:
        """End ``stage`` (default: the innermost started one); only the outermost records figures.

        Stopping the outermost stage also forgets stages left open inside it (one that
        raised before its own `stop`).
        """
        if not self._enabled or not self._stack:
            return
        if stage is None:
            stage = self._stack[-1]
        if stage not in self._stack:
            logger.debug("MemoryTracker.stop(%r): that stage was not started", stage)
            return
        index = len(self._stack) - 1 - self._stack[::-1].index(stage)
        del self._stack[index:]
        if index > 0:  # nested
            return
        sampler, self._sampler = self._sampler, None
        peak = sampler.stop() if sampler is not None else 0
        gc.collect()
        gpu = self._gpu
        if gpu is not None:
            torch.cuda.empty_cache()
            end = torch.cuda.memory_allocated(gpu)
            gpu_peak = torch.cuda.max_memory_allocated(gpu)
            self.gpu[stage] = _figures(self._begin["gpu"], end, gpu_peak)
        end = self._rss()
        self.cpu[stage] = _figures(self._begin["cpu"], end, max(peak, end))

    def update_metrics(self, stage: str, metrics: MutableMapping[str, Any]) -> None:
        """Add the figures of ``stage`` (and, the first time, those of ``init``) to ``metrics``.

        Nothing is added while ``stage`` runs nested inside another tracked stage.
        """
        if not self._enabled:
            return
        if self._stack and self._stack[0] != stage:
            return
        stages = [stage]
        if not self._init_reported and "init" in self.cpu:
            self._init_reported = True
            if stage != "init":
                stages.insert(0, "init")
        for name in stages:
            for kind in ("alloc", "peaked"):
                if name in self.cpu:
                    metrics[f"{name}_mem_cpu_{kind}_delta"] = self.cpu[name][kind]
                if name in self.gpu:
                    metrics[f"{name}_mem_gpu_{kind}_delta"] = self.gpu[name][kind]
        if stages[0] == "init":
            metrics["before_init_mem_cpu"] = self.cpu["init"]["begin"]
            if "init" in self.gpu:
                metrics["before_init_mem_gpu"] = self.gpu["init"]["begin"]

    def stop_and_update_metrics(
        self, metrics: MutableMapping[str, Any] | None = None, stage: str | None = None
    ) -> None:
        """`stop` then, when ``metrics`` is given, `update_metrics` (stage: innermost started one)."""
        if not self._enabled or not self._stack:
            return
        if stage is None:
            stage = self._stack[-1]
        self.stop(stage)
        if metrics is not None:
            self.update_metrics(stage, metrics)

    @contextmanager
    def track(self, stage: str) -> Iterator[dict[str, Any]]:
        """Measure the ``with`` block as ``stage``; the yielded dict is filled on exit.

        The stage is stopped even when the block raises, so the sampling thread never
        outlives it.
        """
        metrics: dict[str, Any] = {}
        if not self._enabled:
            yield metrics
            return
        self.start(stage)
        try:
            yield metrics
        finally:
            self.stop_and_update_metrics(metrics, stage)

    # --------------------------------------------------------------- readers
    def _rss(self) -> int:
        return int(self._process.memory_info().rss)


def _figures(begin: int, end: int, peak: int) -> dict[str, int]:
    return {"begin": begin, "end": end, "alloc": end - begin, "peaked": max(0, peak - end)}


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")


def _resolve_cuda_device(device: torch.device | str | None) -> torch.device | None:
    # An index-less "cuda" means the current device at each call (resolved late, so a
    # tracker built before ``torch.cuda.set_device`` follows it, and CUDA is not initialised here).
    if device is None:
        return torch.device("cuda") if torch.cuda.is_available() else None
    device = torch.device(device)
    return device if device.type == "cuda" else None
