"""FLOPs estimate, the peak table and MFU."""

from __future__ import annotations

import pytest
import torch

from toolkit.memory import flops as flops_module
from toolkit.memory.flops import (
    device_peak_flops,
    estimate_flops,
    model_flops_utilization,
    peak_flops_for_name,
)

T = 1e12


def test_estimate_flops_is_six_n_t():
    assert estimate_flops(1_000, 10) == 60_000
    assert estimate_flops(7_000_000_000, 2048) == 6 * 7_000_000_000 * 2048
    assert isinstance(estimate_flops(3.0, 2), int)


@pytest.mark.parametrize(
    "name, dtype, peak",
    [
        ("NVIDIA H200", torch.bfloat16, 989.4 * T),
        ("NVIDIA H100 80GB HBM3", torch.float16, 989.4 * T),
        ("NVIDIA H100 PCIe", torch.bfloat16, 756 * T),
        ("NVIDIA H100 NVL", "bf16", 835.5 * T),
        ("NVIDIA A100-SXM4-80GB", torch.bfloat16, 312 * T),
        ("NVIDIA A100-PCIE-40GB", torch.float32, 19.5 * T),
        ("NVIDIA A100-SXM4-40GB", "tf32", 156 * T),
        ("NVIDIA A10G", torch.bfloat16, 125 * T),
        ("NVIDIA A10", torch.float32, 31.2 * T),
        ("NVIDIA L4", torch.bfloat16, 121 * T),
        ("NVIDIA L40S", torch.bfloat16, 362 * T),
        ("Tesla V100-SXM2-16GB", torch.float16, 125 * T),
        ("Tesla V100-PCIE-32GB", torch.float16, 112 * T),
        ("Tesla T4", torch.float16, 65 * T),
        ("NVIDIA GeForce RTX 4090", torch.bfloat16, 165.2 * T),
    ],
)
def test_peak_table(name, dtype, peak):
    assert peak_flops_for_name(name, dtype) == pytest.approx(peak)


@pytest.mark.parametrize(
    "name, dtype",
    [
        ("Tesla V100-SXM2-16GB", torch.bfloat16),
        ("Tesla T4", "tf32"),
        ("NVIDIA GeForce GTX 1080", torch.float32),
    ],
)
def test_no_peak_when_unknown_or_unsupported(name, dtype):
    assert peak_flops_for_name(name, dtype) is None


def test_bad_dtype_is_rejected():
    with pytest.raises(ValueError):
        peak_flops_for_name("NVIDIA H100", torch.int8)
    with pytest.raises(ValueError):
        device_peak_flops("cpu", "fp8")


def test_device_peak_flops_cpu_is_none():
    assert device_peak_flops(torch.device("cpu"), torch.float32) is None
    assert device_peak_flops("meta", torch.bfloat16) is None


def test_device_peak_flops_reads_the_cuda_name(monkeypatch):
    seen = []
    monkeypatch.setattr(flops_module.torch.cuda, "get_device_name", lambda d: seen.append(d) or "NVIDIA H200")
    assert device_peak_flops("cuda:1", torch.bfloat16) == pytest.approx(989.4 * T)
    assert seen == [torch.device("cuda:1")]


def test_model_flops_utilization():
    assert model_flops_utilization(3e14, 1.5, 1e15) == pytest.approx(0.2)
    assert model_flops_utilization(3e14, 0.0, 1e15) is None
    assert model_flops_utilization(3e14, 1.0, None) is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_peak_flops_on_this_gpu():
    name = torch.cuda.get_device_name(0)
    assert device_peak_flops("cuda:0", torch.bfloat16) == peak_flops_for_name(name, torch.bfloat16)
