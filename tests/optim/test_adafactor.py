"""Adafactor against an independent numpy reference, plus behaviour and validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from toolkit.optim import Adafactor


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x)))


def _reference(
    p0,
    grads,
    *,
    lr,
    eps=(1e-30, 1e-3),
    clip=1.0,
    decay_rate=-0.8,
    beta1=None,
    weight_decay=0.0,
    scale_parameter=True,
    relative_step=True,
    warmup_init=False,
):
    """Adafactor written from the paper's algorithm (numpy, float64)."""
    p = p0.astype(np.float64).copy()
    factored = p.ndim >= 2
    row = col = v = None
    m = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        rho = min(1e-6 * t if warmup_init else 1e-2, 1 / math.sqrt(t)) if relative_step else lr
        alpha = rho * (max(eps[1], _rms(p)) if scale_parameter else 1.0)
        b2 = 1 - t**decay_rate
        sq = g * g + eps[0]
        if factored:
            row = (1 - b2) * sq.mean(axis=-1) if row is None else b2 * row + (1 - b2) * sq.mean(axis=-1)
            col = (1 - b2) * sq.mean(axis=-2) if col is None else b2 * col + (1 - b2) * sq.mean(axis=-2)
            v_hat = (row / row.mean(axis=-1, keepdims=True))[..., :, None] * col[..., None, :]
        else:
            v = (1 - b2) * sq if v is None else b2 * v + (1 - b2) * sq
            v_hat = v
        u = g / np.sqrt(v_hat)
        u = u / max(1.0, _rms(u) / clip)
        u = alpha * u
        if beta1 is not None:
            m = beta1 * m + (1 - beta1) * u
            u = m
        p = p - weight_decay * alpha * p - u
    return p


CONFIGS = [
    dict(lr=None),  # paper defaults: relative step + parameter scaling
    dict(lr=None, warmup_init=True),
    dict(lr=1e-2, relative_step=False, scale_parameter=False),  # what the HF Trainer builds
    dict(lr=1e-2, relative_step=False, beta1=0.9, weight_decay=0.1, clip=0.5),
]


@pytest.mark.parametrize("shape", [(6,), (4, 5), (2, 3, 4)])
@pytest.mark.parametrize("config", CONFIGS)
def test_matches_reference(shape: tuple[int, ...], config: dict) -> None:
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=shape)
    grads = [rng.normal(size=shape) * (1 + i) for i in range(6)]
    expected = _reference(p0, grads, **config)

    kwargs = dict(config)
    if "clip" in kwargs:
        kwargs["clip_threshold"] = kwargs.pop("clip")
    param = torch.nn.Parameter(torch.tensor(p0))
    optimizer = Adafactor([param], **kwargs)
    for g in grads:
        param.grad = torch.tensor(g)
        optimizer.step()
    np.testing.assert_allclose(param.detach().numpy(), expected, rtol=1e-10, atol=1e-12)


def test_decreases_quadratic_loss() -> None:
    torch.manual_seed(0)
    target = torch.randn(8, 6)
    weight = torch.nn.Parameter(torch.zeros(8, 6))
    bias = torch.nn.Parameter(torch.zeros(6))
    optimizer = Adafactor([weight, bias], lr=0.05, relative_step=False, scale_parameter=False)

    def loss_fn() -> torch.Tensor:
        return ((weight - target) ** 2).mean() + ((bias - 1.0) ** 2).mean()

    initial = loss_fn().item()
    for _ in range(100):
        optimizer.zero_grad()
        loss_fn().backward()
        optimizer.step()
    assert loss_fn().item() < 0.05 * initial


def test_factored_state_shapes() -> None:
    weight = torch.nn.Parameter(torch.randn(4, 5))
    conv = torch.nn.Parameter(torch.randn(2, 3, 7))
    bias = torch.nn.Parameter(torch.randn(5))
    optimizer = Adafactor([weight, conv, bias], beta1=0.9)
    for p in (weight, conv, bias):
        p.grad = torch.randn_like(p)
    optimizer.step()
    assert optimizer.state[weight]["exp_avg_sq_row"].shape == (4,)
    assert optimizer.state[weight]["exp_avg_sq_col"].shape == (5,)
    assert "exp_avg_sq" not in optimizer.state[weight]
    assert optimizer.state[conv]["exp_avg_sq_row"].shape == (2, 3)
    assert optimizer.state[conv]["exp_avg_sq_col"].shape == (2, 7)
    assert optimizer.state[bias]["exp_avg_sq"].shape == (5,)
    assert "exp_avg_sq_row" not in optimizer.state[bias]
    assert optimizer.state[weight]["exp_avg"].shape == (4, 5)
    assert optimizer.state[weight]["step"] == 1


def test_state_dict_round_trip_continues_identically() -> None:
    torch.manual_seed(0)
    grads = [torch.randn(3, 4) for _ in range(6)]
    start = torch.randn(3, 4)

    def make(p: torch.nn.Parameter) -> Adafactor:
        return Adafactor([p], beta1=0.9, weight_decay=0.01)

    straight = torch.nn.Parameter(start.clone())
    opt = make(straight)
    for g in grads:
        straight.grad = g.clone()
        opt.step()

    first = torch.nn.Parameter(start.clone())
    opt1 = make(first)
    for g in grads[:3]:
        first.grad = g.clone()
        opt1.step()
    state = opt1.state_dict()
    resumed = torch.nn.Parameter(first.detach().clone())
    opt2 = make(resumed)
    opt2.load_state_dict(state)
    assert opt2.state[resumed]["step"] == 3
    for g in grads[3:]:
        resumed.grad = g.clone()
        opt2.step()
    torch.testing.assert_close(resumed.detach(), straight.detach(), rtol=0, atol=0)


def test_bfloat16_parameters_updated_through_float32() -> None:
    param = torch.nn.Parameter(torch.ones(4, 4, dtype=torch.bfloat16))
    optimizer = Adafactor([param], lr=0.1, relative_step=False, scale_parameter=False)
    param.grad = torch.ones(4, 4, dtype=torch.bfloat16)
    optimizer.step()
    assert param.dtype == torch.bfloat16
    assert optimizer.state[param]["exp_avg_sq_row"].dtype == torch.float32
    assert torch.allclose(param.float(), torch.full((4, 4), 0.9), atol=1e-2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": 1e-3}, "relative_step=True"),
        ({"lr": None, "relative_step": False}, "lr is required"),
        ({"lr": 1e-3, "relative_step": False, "warmup_init": True}, "warmup_init"),
        ({"lr": -1.0, "relative_step": False}, "lr"),
        ({"clip_threshold": 0.0}, "clip_threshold"),
        ({"decay_rate": 0.5}, "decay_rate"),
        ({"beta1": 1.0}, "beta1"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"eps": (1e-30,)}, "eps"),
    ],
)
def test_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Adafactor([torch.nn.Parameter(torch.zeros(2))], **kwargs)
