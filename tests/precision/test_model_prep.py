"""Model transforms: gradient checkpointing, torch.compile, half-precision copies, jit tracing,
and the TF32 switch (mocked: it only acts on CUDA)."""

from __future__ import annotations

import logging
import types
from unittest import mock

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from toolkit.precision.model_prep import (
    compile_module,
    enable_gradient_checkpointing,
    half_copy,
    inference_model,
    trace_for_inference,
)
from toolkit.precision.tf32 import set_tf32


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(8, 1)
        self.norm = nn.BatchNorm1d(8)
        self.checkpointing = False

    def gradient_checkpointing_enable(self) -> None:
        self.checkpointing = True

    def forward(self, x, labels=None):
        h = self.a(x)
        h = checkpoint(torch.tanh, h, use_reentrant=False) if self.checkpointing else torch.tanh(h)
        out = self.b(self.norm(h)).squeeze(-1)
        return {"logits": out} if labels is None else {"loss": ((out - labels) ** 2).mean(), "logits": out}


def test_gradient_checkpointing_calls_the_model_method() -> None:
    net = Net()
    enable_gradient_checkpointing(net)
    assert net.checkpointing


def test_gradient_checkpointing_on_a_plain_module_names_the_argument() -> None:
    with pytest.raises(ValueError, match=r"gradient_checkpointing=True.*Linear.*gradient_checkpointing_enable"):
        enable_gradient_checkpointing(nn.Linear(2, 2))


def test_compile_in_place_keeps_identity_and_names() -> None:
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    keys = list(net.state_dict())
    x = torch.randn(5, 3)
    expected = net(x)
    assert compile_module(net, backend="eager") is net
    torch.testing.assert_close(net(x), expected)
    assert list(net.state_dict()) == keys
    first = net._compiled_call_impl
    compile_module(net, backend="eager")  # already compiled: left alone
    assert net._compiled_call_impl is first


def test_compile_checks_backend_and_mode_first() -> None:
    net = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="torch_compile_backend='nope'"):
        compile_module(net, backend="nope")
    with pytest.raises(ValueError, match="torch_compile_mode='fast'"):
        compile_module(net, backend="eager", mode="fast")
    assert getattr(net, "_compiled_call_impl", None) is None


def test_half_copy_leaves_the_original_alone_and_shares_nothing() -> None:
    torch.manual_seed(0)
    net = Net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    copy16 = half_copy(net, "fp16")
    assert all(v.dtype == torch.float32 for k, v in net.state_dict().items() if v.is_floating_point())
    assert copy16.a.weight.dtype == torch.float16 and not copy16.a.weight.requires_grad
    assert copy16.norm.num_batches_tracked.dtype == torch.long
    copy16.a.weight.data.zero_()
    copy16.norm.num_batches_tracked += 5
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_half_copy_keeps_tied_weights_tied() -> None:
    emb = nn.Embedding(5, 4)
    head = nn.Linear(4, 5, bias=False)
    head.weight = emb.weight
    tied = nn.ModuleDict({"emb": emb, "head": head})
    copy = half_copy(tied, "bf16")
    assert copy["emb"].weight is copy["head"].weight and copy["emb"].weight.dtype == torch.bfloat16


def test_inference_model_half_casts_inputs_and_turns_autocast_off() -> None:
    torch.manual_seed(0)
    net = Net().eval()
    model, jit_seconds = inference_model(net, half="bf16")
    assert jit_seconds is None
    with torch.autocast("cpu", dtype=torch.float16):  # the training autocast must not leak in
        out = model(torch.randn(3, 4), labels=torch.zeros(3))
    assert out["logits"].dtype == torch.bfloat16
    assert net.a.weight.dtype == torch.float32
    model.eval()
    model.train()  # the wrapper takes the evaluation loop's mode switches
    assert inference_model(net) == (net, None)


def test_trace_matches_eager_and_restores_train_modes() -> None:
    torch.manual_seed(0)
    net = Net()
    net.train()
    x = torch.randn(6, 4)
    traced, seconds = inference_model(net, jit_example=lambda: {"x": x[:4], "labels": torch.zeros(4)})
    assert seconds is not None and seconds >= 0
    assert net.training and net.norm.training  # tracing used eval mode and gave it back
    net.eval()
    with torch.no_grad():
        expected = net(x, labels=torch.zeros(6))
        got = traced(x=x, labels=torch.zeros(6))  # another batch size than the example
    torch.testing.assert_close(got["logits"], expected["logits"])
    assert isinstance(traced.module, torch.jit.ScriptModule)


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def forward(self, x):
        if torch.jit.is_tracing():
            raise RuntimeError("this model cannot be traced")
        return self.lin(x)


def test_trace_failure_falls_back_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    net = Untraceable()
    with caplog.at_level(logging.WARNING, logger="toolkit.precision.model_prep"):
        assert trace_for_inference(net, torch.ones(1, 2)) is net
    assert "jit_mode_eval" in caplog.text and "cannot be traced" in caplog.text


def test_tf32_is_left_alone_off_cuda() -> None:
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    assert set_tf32(True, torch.device("cpu")) is False
    assert set_tf32(None, torch.device("cuda", 0)) is False
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (matmul, cudnn)


@pytest.mark.parametrize("enabled", [True, False])
def test_tf32_sets_both_switches_on_cuda(enabled: bool) -> None:
    matmul, cudnn = types.SimpleNamespace(allow_tf32=None), types.SimpleNamespace(allow_tf32=None)
    with mock.patch.object(torch.backends.cuda, "matmul", matmul), mock.patch.object(
        torch.backends, "cudnn", cudnn
    ), mock.patch("torch.cuda.get_device_capability", return_value=(8, 0)):
        assert set_tf32(enabled, torch.device("cuda", 0)) is True
    assert matmul.allow_tf32 is enabled and cudnn.allow_tf32 is enabled


def test_tf32_on_a_pre_ampere_gpu_is_a_clear_error() -> None:
    matmul = types.SimpleNamespace(allow_tf32=None)
    with mock.patch.object(torch.backends.cuda, "matmul", matmul), mock.patch(
        "torch.cuda.get_device_capability", return_value=(7, 5)
    ), pytest.raises(ValueError, match="tf32=True needs an Ampere"):
        set_tf32(True, torch.device("cuda", 0))
    assert matmul.allow_tf32 is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tf32_on_a_real_gpu() -> None:
    device = torch.device("cuda", 0)
    if torch.cuda.get_device_capability(device)[0] < 8:
        pytest.skip("needs an Ampere or newer GPU")
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        set_tf32(True, device)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        set_tf32(False, device)
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
