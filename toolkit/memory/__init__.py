"""Memory and compute observers: per-stage memory report, batch-size finder, FLOPs/MFU.

- `MemoryTracker`: the HF ``{stage}_mem_{cpu,gpu}_{alloc,peaked}_delta`` metrics for the
  ``init`` / ``train`` / ``eval`` / ``test`` stages; free when disabled.
- `find_executable_batch_size`, `is_oom_error`, `rebalance`: ``auto_find_batch_size``.
- `estimate_flops`, `device_peak_flops`, `model_flops_utilization`: FLOPs and MFU.
"""

from toolkit.memory.batch_size import find_executable_batch_size, is_oom_error, rebalance, release_memory
from toolkit.memory.flops import (
    PEAK_FLOPS,
    device_peak_flops,
    estimate_flops,
    model_flops_utilization,
    peak_flops_for_name,
)
from toolkit.memory.tracker import STAGES, MemoryTracker

__all__ = [
    "MemoryTracker",
    "PEAK_FLOPS",
    "STAGES",
    "device_peak_flops",
    "estimate_flops",
    "find_executable_batch_size",
    "is_oom_error",
    "model_flops_utilization",
    "peak_flops_for_name",
    "rebalance",
    "release_memory",
]
