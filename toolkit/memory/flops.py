"""FLOP counts and model FLOPs utilisation (MFU).

* `estimate_flops`: the usual ``6 * parameters * tokens`` for a training pass of a dense
  transformer (2 for the forward, 4 for the backward); the same rule the HF Trainer uses
  for ``total_flos``.
* `device_peak_flops`: the datasheet peak of a known NVIDIA GPU for a dtype (dense tensor
  core figures, no sparsity), or None when the device is not in the table.
* `model_flops_utilization`: achieved FLOP/s over that peak.

Example:
    >>> flops = estimate_flops(num_params=125_000_000, num_tokens=2048)
    >>> flops
    1536000000000
    >>> peak = peak_flops_for_name("NVIDIA A100-SXM4-80GB", torch.bfloat16)
    >>> round(model_flops_utilization(flops, 0.01, peak), 3)
    0.492
    >>> device_peak_flops(torch.device("cpu"), torch.bfloat16) is None
    True
"""

from __future__ import annotations

import re

import torch

__all__ = [
    "estimate_flops",
    "device_peak_flops",
    "peak_flops_for_name",
    "model_flops_utilization",
    "PEAK_FLOPS",
]

_T = 1e12

# name, pattern on the lower-cased device name, {precision: peak FLOP/s}; first match wins,
# so the more specific patterns come first. "fp32" is plain FP32 (CUDA cores); "tf32" is
# FP32 matmuls on tensor cores (``torch.backends.cuda.matmul.allow_tf32``). Figures are
# NVIDIA datasheet values without structured sparsity; a missing key means the GPU has no
# tensor-core support for that format.
PEAK_FLOPS: tuple[tuple[str, str, dict[str, float]], ...] = (
    ("H200", r"h200", {"fp32": 67 * _T, "tf32": 494.7 * _T, "bf16": 989.4 * _T, "fp16": 989.4 * _T}),
    ("H100 PCIe", r"h100.*pcie", {"fp32": 51.2 * _T, "tf32": 378 * _T, "bf16": 756 * _T, "fp16": 756 * _T}),
    ("H100 NVL", r"h100.*nvl", {"fp32": 60 * _T, "tf32": 417.5 * _T, "bf16": 835.5 * _T, "fp16": 835.5 * _T}),
    ("H100 SXM", r"h100", {"fp32": 67 * _T, "tf32": 494.7 * _T, "bf16": 989.4 * _T, "fp16": 989.4 * _T}),
    ("A100", r"a100", {"fp32": 19.5 * _T, "tf32": 156 * _T, "bf16": 312 * _T, "fp16": 312 * _T}),
    ("A10G", r"a10g", {"fp32": 31.2 * _T, "tf32": 62.5 * _T, "bf16": 125 * _T, "fp16": 125 * _T}),
    ("A10", r"\ba10\b", {"fp32": 31.2 * _T, "tf32": 62.5 * _T, "bf16": 125 * _T, "fp16": 125 * _T}),
    ("L40S", r"l40s", {"fp32": 91.6 * _T, "tf32": 183 * _T, "bf16": 362 * _T, "fp16": 362 * _T}),
    ("L4", r"\bl4\b", {"fp32": 30.3 * _T, "tf32": 60 * _T, "bf16": 121 * _T, "fp16": 121 * _T}),
    ("V100S", r"v100s", {"fp32": 16.4 * _T, "fp16": 130 * _T}),
    ("V100 PCIe", r"v100.*pcie", {"fp32": 14 * _T, "fp16": 112 * _T}),
    ("V100 SXM2", r"v100", {"fp32": 15.7 * _T, "fp16": 125 * _T}),
    ("T4", r"\bt4\b", {"fp32": 8.1 * _T, "fp16": 65 * _T}),
    ("RTX 4090", r"rtx 4090", {"fp32": 82.6 * _T, "tf32": 82.6 * _T, "bf16": 165.2 * _T, "fp16": 165.2 * _T}),
)

_DTYPE_KEYS = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def estimate_flops(num_params: int, num_tokens: int) -> int:
    """Training FLOPs of a forward and backward pass: ``6 * num_params * num_tokens``.

    Example:
        >>> estimate_flops(10, 4)
        240
    """
    return 6 * int(num_params) * int(num_tokens)


def _precision_key(dtype: torch.dtype | str) -> str:
    if isinstance(dtype, str):
        key = dtype.lower()
        if key in ("fp32", "tf32", "bf16", "fp16"):
            return key
    elif dtype in _DTYPE_KEYS:
        return _DTYPE_KEYS[dtype]
    raise ValueError(f"unsupported dtype {dtype!r}; use torch.float32/bfloat16/float16 or 'tf32'")


def peak_flops_for_name(name: str, dtype: torch.dtype | str) -> float | None:
    """The table's peak FLOP/s for a device named ``name``, or None when unknown.

    ``dtype`` is ``torch.float32`` / ``torch.bfloat16`` / ``torch.float16``, or the
    strings ``"fp32"``, ``"tf32"``, ``"bf16"``, ``"fp16"``.

    Example:
        >>> peak_flops_for_name("NVIDIA H100 80GB HBM3", "bf16")
        989400000000000.0
        >>> peak_flops_for_name("Tesla V100-SXM2-16GB", torch.bfloat16) is None
        True
    """
    key = _precision_key(dtype)
    lowered = name.lower()
    for _, pattern, peaks in PEAK_FLOPS:
        if re.search(pattern, lowered):
            return peaks.get(key)
    return None


def device_peak_flops(device: torch.device | str, dtype: torch.dtype | str) -> float | None:
    """Peak FLOP/s of one CUDA ``device`` for ``dtype``; None for non-CUDA or unknown GPUs.

    The name comes from ``torch.cuda.get_device_name``. FP32 means plain FP32: pass
    ``"tf32"`` when TF32 matmuls are enabled.
    """
    device = torch.device(device)
    if device.type != "cuda":
        _precision_key(dtype)  # still reject a bad dtype
        return None
    return peak_flops_for_name(torch.cuda.get_device_name(device), dtype)


def model_flops_utilization(flops: float, seconds: float, peak: float | None) -> float | None:
    """Achieved over peak: ``flops / seconds / peak``; None without a peak or a duration.

    For several devices, pass the total FLOPs and ``peak * number_of_devices``.

    Example:
        >>> model_flops_utilization(5e14, 2.0, 1e15)
        0.25
        >>> model_flops_utilization(5e14, 2.0, None) is None
        True
    """
    if peak is None or peak <= 0 or seconds <= 0:
        return None
    return float(flops) / float(seconds) / float(peak)
