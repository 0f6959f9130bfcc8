"""Apple MPS: device choice from the arguments, and the precision it gets (availability mocked)."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from toolkit import TrainingArguments
from toolkit.connector import build_parts
from toolkit.precision import MixedPrecision


def _args(tmp_path, **kw) -> TrainingArguments:
    return TrainingArguments(str(tmp_path), report_to="none", **kw)


def _mps(available: bool):
    return mock.patch("toolkit.strategies.base._mps_available", return_value=available)


@pytest.fixture
def no_cuda():
    with mock.patch("torch.cuda.is_available", return_value=False):
        yield


@pytest.mark.filterwarnings("ignore:`use_mps_device` is deprecated:FutureWarning")
def test_use_mps_device_selects_mps(tmp_path, no_cuda) -> None:
    with _mps(True):
        parts = build_parts(_args(tmp_path, use_mps_device=True))
    assert parts.strategy.device == torch.device("mps")


def test_mps_is_the_default_when_available(tmp_path, no_cuda) -> None:
    with _mps(True):
        assert build_parts(_args(tmp_path)).strategy.device.type == "mps"
        assert build_parts(_args(tmp_path, use_cpu=True)).strategy.device.type == "cpu"  # explicit CPU wins


@pytest.mark.filterwarnings("ignore:`use_mps_device` is deprecated:FutureWarning")
def test_use_mps_device_without_mps_is_a_clear_error(tmp_path, no_cuda) -> None:
    with _mps(False), pytest.raises(ValueError, match="MPS is not available"):
        build_parts(_args(tmp_path, use_mps_device=True))


@pytest.mark.parametrize(("flag", "scaled"), [("fp16", True), ("bf16", False)])
def test_mixed_precision_on_mps_autocasts_for_mps(tmp_path, no_cuda, flag: str, scaled: bool) -> None:
    with _mps(True):
        precision = build_parts(_args(tmp_path, **{flag: True})).precision
    assert isinstance(precision, MixedPrecision) and precision.device_type == "mps"
    assert (precision.scaler is not None) is scaled


def test_cpu_amp_backend_refuses_mps(tmp_path, no_cuda) -> None:
    with _mps(True), pytest.raises(ValueError, match="cpu_amp"):
        build_parts(_args(tmp_path, bf16=True, half_precision_backend="cpu_amp"))


@pytest.mark.skipif(not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
                    reason="needs Apple MPS")
def test_bf16_autocast_on_a_real_mps_device() -> None:
    precision = MixedPrecision("bf16", device_type="mps")
    layer = torch.nn.Linear(2, 2).to("mps")
    with precision.autocast():
        assert layer(torch.ones(1, 2, device="mps")).dtype == torch.bfloat16
