"""`precision_from_args`: which precision each flag combination builds, and the clear errors."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from toolkit import TrainingArguments
from toolkit.connector import precision_from_args
from toolkit.precision import MixedPrecision, Precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


def _args(tmp_path, **kw) -> TrainingArguments:
    return TrainingArguments(str(tmp_path), report_to="none", **kw)


def test_no_flag_is_fp32(tmp_path) -> None:
    assert type(precision_from_args(_args(tmp_path), CPU)) is Precision
    # full-eval flags change evaluation only, never the training precision
    assert type(precision_from_args(_args(tmp_path, bf16_full_eval=True), CPU)) is Precision


@pytest.mark.parametrize("backend", ["auto", "cpu_amp"])
@pytest.mark.parametrize(("flag", "name"), [("fp16", "fp16-mixed"), ("bf16", "bf16-mixed")])
def test_cpu_mixed_precision(tmp_path, backend: str, flag: str, name: str) -> None:
    p = precision_from_args(_args(tmp_path, half_precision_backend=backend, **{flag: True}), CPU)
    assert isinstance(p, MixedPrecision) and p.name == name and p.device_type == "cpu"
    assert (p.scaler is not None) is (flag == "fp16")


def test_backend_that_does_not_fit_the_device(tmp_path) -> None:
    with pytest.raises(ValueError, match="half_precision_backend='cuda_amp' needs a CUDA device"):
        precision_from_args(_args(tmp_path, fp16=True, half_precision_backend="cuda_amp"), CPU)
    with pytest.raises(ValueError, match="half_precision_backend='cpu_amp' needs the CPU"):
        precision_from_args(_args(tmp_path, fp16=True, half_precision_backend="cpu_amp"), CUDA)


def test_bf16_on_a_gpu_without_bf16(tmp_path) -> None:
    with mock.patch("torch.cuda.is_bf16_supported", return_value=False), pytest.raises(
        ValueError, match="bf16=True.*does not support bfloat16"
    ):
        precision_from_args(_args(tmp_path, bf16=True), CUDA)
    with mock.patch("torch.cuda.is_bf16_supported", return_value=True):
        assert precision_from_args(_args(tmp_path, bf16=True), CUDA).device_type == "cuda"
