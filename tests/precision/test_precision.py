"""Precision plugins on CPU: fp32, bf16/fp16 autocast, the fp16 grad scaler, half precision."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from toolkit.precision import HalfPrecision, MixedPrecision, Precision, precision_from_name


def _model_and_opt(lr: float = 0.1) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Linear(4, 4)
    return model, torch.optim.SGD(model.parameters(), lr=lr)


def test_fp32_steps_and_reports_it() -> None:
    model, opt = _model_and_opt()
    before = model.weight.detach().clone()
    p = Precision()
    with p.autocast():
        loss = model(torch.ones(2, 4)).sum()
    p.backward(loss)
    assert p.step(opt) is True
    assert not torch.equal(before, model.weight)
    assert p.state_dict() == {}


def test_bf16_autocast_gives_bf16_activations_and_fp32_master_weights() -> None:
    model, opt = _model_and_opt()
    p = MixedPrecision("bf16", device_type="cpu")
    with p.autocast():
        out = model(torch.ones(2, 4))
    assert out.dtype == torch.bfloat16
    assert model.weight.dtype == torch.float32
    p.backward(out.float().sum())
    assert model.weight.grad.dtype == torch.float32
    assert p.step(opt) is True
    assert p.scaler is None


def test_fp16_inf_gradient_skips_step_and_halves_scale() -> None:
    model, opt = _model_and_opt()
    p = MixedPrecision("fp16", device_type="cpu", scaler=torch.amp.GradScaler("cpu", init_scale=1024.0))
    scale = p.scaler.get_scale()
    with p.autocast():
        loss = model(torch.ones(2, 4)).float().sum()
    p.backward(loss)
    model.weight.grad[0, 0] = float("inf")
    before = model.weight.detach().clone()
    assert p.step(opt) is False
    assert torch.equal(before, model.weight)
    assert p.scaler.get_scale() == scale / 2
    # a finite step afterwards runs
    opt.zero_grad()
    with p.autocast():
        loss = model(torch.ones(2, 4)).float().sum()
    p.backward(loss)
    assert p.step(opt) is True
    assert not torch.equal(before, model.weight)


def test_fp16_scaler_state_round_trip() -> None:
    p = MixedPrecision("fp16", device_type="cpu", scaler=torch.amp.GradScaler("cpu", init_scale=1024.0))
    state = p.state_dict()
    q = MixedPrecision("fp16", device_type="cpu")
    q.load_state_dict(state)
    assert q.scaler.get_scale() == 1024.0


def test_unscale_before_clipping_gives_true_gradients() -> None:
    model, opt = _model_and_opt()
    p = MixedPrecision("fp16", device_type="cpu")
    loss = (model.weight.sum() * 1.0)
    p.backward(loss)
    p.unscale_(opt)
    assert torch.allclose(model.weight.grad, torch.ones_like(model.weight))


def test_half_precision_converts_module_and_inputs() -> None:
    p = HalfPrecision("bf16")
    model = p.convert_module(nn.Linear(2, 2))
    assert model.weight.dtype == torch.bfloat16
    batch = p.convert_input({"x": torch.ones(1, 2), "ids": torch.ones(1, dtype=torch.long)})
    assert batch["x"].dtype == torch.bfloat16 and batch["ids"].dtype == torch.long
    assert model(batch["x"]).dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("name", "cls"),
    [("fp32", Precision), ("bf16-mixed", MixedPrecision), ("fp16-mixed", MixedPrecision), ("bf16-true", HalfPrecision)],
)
def test_precision_from_name(name: str, cls: type) -> None:
    p = precision_from_name(name)
    assert type(p) is cls and p.name == name


def test_bad_names_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="accepted"):
        precision_from_name("fp8")
    with pytest.raises(ValueError, match="dtype"):
        MixedPrecision("int8")
