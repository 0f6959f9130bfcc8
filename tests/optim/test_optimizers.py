"""Optimizer names -> classes and kwargs, optim_args parsing, create_optimizer."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from toolkit.optim import (
    Adafactor,
    AdamW,
    create_optimizer,
    get_optimizer_cls_and_kwargs,
    parse_optim_args,
)
from toolkit.types import OptimizerNames

AVAILABLE = {
    "adamw_hf": AdamW,
    "adamw_torch": torch.optim.AdamW,
    "adamw_torch_fused": torch.optim.AdamW,
    "adafactor": Adafactor,
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
}

NEEDS_PACKAGE = {
    "adamw_anyprecision": ("torchdistx", "torchdistx"),
    "adamw_apex_fused": ("apex", "apex"),
    "adamw_torch_xla": ("torch_xla", "torch_xla"),
    "adamw_torch_npu_fused": ("torch_npu", "torch_npu"),
    "adamw_bnb_8bit": ("bitsandbytes", "bitsandbytes"),
    "adamw_8bit": ("bitsandbytes", "bitsandbytes"),
    "lion_8bit": ("bitsandbytes", "bitsandbytes"),
    "lion_32bit": ("bitsandbytes", "bitsandbytes"),
    "paged_adamw_32bit": ("bitsandbytes", "bitsandbytes"),
    "paged_adamw_8bit": ("bitsandbytes", "bitsandbytes"),
    "paged_lion_32bit": ("bitsandbytes", "bitsandbytes"),
    "paged_lion_8bit": ("bitsandbytes", "bitsandbytes"),
}


def test_every_enum_member_is_covered_by_these_tests() -> None:
    assert {m.value for m in OptimizerNames} == set(AVAILABLE) | set(NEEDS_PACKAGE)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 1))


@pytest.mark.parametrize("name", sorted(AVAILABLE))
def test_available_optimizer_constructs_and_steps(name: str) -> None:
    model = _model()
    optimizer = create_optimizer(model, name, learning_rate=1e-2, weight_decay=0.01)
    assert type(optimizer) is AVAILABLE[name]
    assert optimizer.param_groups[0]["lr"] == 1e-2
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0]
    before = [p.detach().clone() for p in model.parameters()]
    loss = model(torch.randn(16, 4)).pow(2).mean()
    loss.backward()
    optimizer.step()
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
    assert all(changed)


@pytest.mark.parametrize("name", sorted(NEEDS_PACKAGE))
def test_optional_package_optimizer_raises_import_error(name: str) -> None:
    module, package = NEEDS_PACKAGE[name]
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here")
    with pytest.raises(ImportError, match=package):
        get_optimizer_cls_and_kwargs(name, learning_rate=1e-3)


def test_adam_family_kwargs() -> None:
    cls, kwargs = get_optimizer_cls_and_kwargs(
        OptimizerNames.ADAMW_TORCH, learning_rate=3e-4, adam_beta1=0.8, adam_beta2=0.95, adam_epsilon=1e-6
    )
    assert cls is torch.optim.AdamW
    assert kwargs == {"lr": 3e-4, "betas": (0.8, 0.95), "eps": 1e-6}

    _, kwargs = get_optimizer_cls_and_kwargs("adamw_torch_fused", learning_rate=1e-3)
    assert kwargs["fused"] is True

    cls, kwargs = get_optimizer_cls_and_kwargs("adamw_hf", learning_rate=1e-3)
    assert cls is AdamW and kwargs == {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}


def test_fused_adamw_is_really_fused_on_cpu() -> None:
    optimizer = create_optimizer(nn.Linear(3, 3), "adamw_torch_fused", learning_rate=1e-3)
    assert optimizer.defaults["fused"] is True


def test_adafactor_gets_trainer_settings() -> None:
    cls, kwargs = get_optimizer_cls_and_kwargs("adafactor", learning_rate=1e-3)
    assert cls is Adafactor
    assert kwargs == {"lr": 1e-3, "scale_parameter": False, "relative_step": False}


def test_parse_optim_args_conversions() -> None:
    parsed = parse_optim_args("momentum=0.9, nesterov=True,dampening=0,foreach=false,x=none,mode=abc,e=1e-3")
    assert parsed == {
        "momentum": 0.9,
        "nesterov": True,
        "dampening": 0,
        "foreach": False,
        "x": None,
        "mode": "abc",
        "e": 1e-3,
    }
    assert type(parsed["dampening"]) is int
    assert parse_optim_args(None) == {} and parse_optim_args("") == {}


@pytest.mark.parametrize("bad", ["momentum", "momentum=", "=0.9", "a=1,a=2"])
def test_parse_optim_args_rejects_malformed(bad: str) -> None:
    with pytest.raises(ValueError, match="optim_args"):
        parse_optim_args(bad)


def test_optim_args_merged_into_kwargs() -> None:
    optimizer = create_optimizer(_model(), "sgd", learning_rate=0.1, optim_args="momentum=0.9,nesterov=True")
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["nesterov"] is True

    optimizer = create_optimizer(_model(), "rmsprop", learning_rate=0.1, optim_args="alpha=0.9,centered=true")
    assert optimizer.defaults["alpha"] == 0.9 and optimizer.defaults["centered"] is True

    optimizer = create_optimizer(_model(), "adamw_hf", learning_rate=0.1, optim_args="correct_bias=False")
    assert optimizer.defaults["correct_bias"] is False


def test_optim_args_unknown_key_rejected() -> None:
    with pytest.raises(ValueError, match=r"optim_args.*'mommentum'.*accepted keys.*momentum"):
        get_optimizer_cls_and_kwargs("sgd", learning_rate=0.1, optim_args="mommentum=0.9")


def test_unknown_name_lists_accepted() -> None:
    with pytest.raises(ValueError, match=r"optim='adam_w'.*accepted values.*'adamw_torch'.*'rmsprop'"):
        get_optimizer_cls_and_kwargs("adam_w", learning_rate=1e-3)
    with pytest.raises(ValueError, match="optim="):
        create_optimizer(_model(), "nope", learning_rate=1e-3)


def test_create_optimizer_without_trainable_parameters() -> None:
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad"):
        create_optimizer(model, learning_rate=1e-3)


def _shapes(tensors):
    return [(tuple(t.shape), t.device.type) for t in tensors]


def test_optimizer_state_like_predicts_the_lazy_state_of_common_optimizers() -> None:
    from toolkit.optim import AdamW as ToolkitAdamW
    from toolkit.optim import optimizer_state_like

    w = torch.nn.Parameter(torch.zeros(3, 2))
    frozen = torch.nn.Parameter(torch.zeros(5), requires_grad=False)
    cases = [
        (torch.optim.AdamW([w, frozen]), 2),
        (torch.optim.Adam([w], amsgrad=True), 3),
        (ToolkitAdamW([w]), 2),
        (torch.optim.SGD([w], lr=0.1), 0),
        (torch.optim.SGD([w], lr=0.1, momentum=0.9), 1),
        (torch.optim.RMSprop([w], momentum=0.5, centered=True), 3),
    ]
    for optimizer, count in cases:
        assert _shapes(optimizer_state_like(optimizer)) == [((3, 2), "meta")] * count, type(optimizer)


def test_optimizer_state_like_gives_the_real_state_once_it_exists() -> None:
    from toolkit.optim import Adafactor, optimizer_state_like

    w = torch.nn.Parameter(torch.ones(4, 3))
    optimizer = Adafactor([w], lr=0.01, relative_step=False)
    assert optimizer_state_like(optimizer) == []  # unknown before its first step
    w.grad = torch.ones(4, 3)
    optimizer.step()
    real = optimizer_state_like(optimizer)
    assert real and all(t.device.type == "cpu" for t in real)
    assert {tuple(t.shape) for t in real} >= {(4,), (3,)}  # factored second moments
