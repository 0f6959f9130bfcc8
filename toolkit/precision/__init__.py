"""Precision plugins: fp32, autocast mixed precision (fp16/bf16) and whole-model half precision."""

from toolkit.precision.base import (
    PRECISION_NAMES,
    HalfPrecision,
    MixedPrecision,
    Precision,
    precision_from_name,
)

__all__ = ["PRECISION_NAMES", "Precision", "MixedPrecision", "HalfPrecision", "precision_from_name"]
