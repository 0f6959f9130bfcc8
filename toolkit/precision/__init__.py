"""Precision plugins: fp32, autocast mixed precision (fp16/bf16), whole-model half precision,
apex AMP; the TF32 switch; and the model transforms tied to execution (activation
checkpointing, torch.compile, half-precision and TorchScript inference copies)."""

from toolkit.precision.apex import APEX_OPT_LEVELS, ApexPrecision
from toolkit.precision.base import (
    PRECISION_NAMES,
    HalfPrecision,
    MixedPrecision,
    Precision,
    precision_from_name,
)
from toolkit.precision.model_prep import (
    COMPILE_MODES,
    compile_module,
    enable_gradient_checkpointing,
    half_copy,
    inference_model,
    trace_for_inference,
)
from toolkit.precision.tf32 import set_tf32

__all__ = [
    "PRECISION_NAMES",
    "Precision",
    "MixedPrecision",
    "HalfPrecision",
    "ApexPrecision",
    "APEX_OPT_LEVELS",
    "precision_from_name",
    "set_tf32",
    "COMPILE_MODES",
    "compile_module",
    "enable_gradient_checkpointing",
    "half_copy",
    "inference_model",
    "trace_for_inference",
]
