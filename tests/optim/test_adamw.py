"""The HF-semantics AdamW against an independent numpy reference (and torch's AdamW)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from toolkit.optim import AdamW

STEPS = 10


def _grads(shape: tuple[int, ...], steps: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(size=shape) for _ in range(steps)]


def _reference(p0, grads, lr, beta1, beta2, eps, wd, correct_bias):
    """HF AdamW written out: eps added before bias correction, decay after the step."""
    p = p0.astype(np.float64).copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        step_size = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t) if correct_bias else lr
        p = p - step_size * m / (np.sqrt(v) + eps)
        p = p - lr * wd * p
    return p


def _run(p0, grads, dtype=torch.float64, **kwargs):
    param = torch.nn.Parameter(torch.tensor(p0, dtype=dtype))
    optimizer = AdamW([param], **kwargs)
    for g in grads:
        param.grad = torch.tensor(g, dtype=dtype)
        optimizer.step()
    return param.detach().double().numpy(), optimizer


@pytest.mark.parametrize("correct_bias", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_matches_reference_formula(correct_bias: bool, weight_decay: float) -> None:
    p0 = np.random.default_rng(1).normal(size=(3, 4))
    grads = _grads((3, 4), STEPS)
    kwargs = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-6, weight_decay=weight_decay, correct_bias=correct_bias)
    expected = _reference(
        p0, grads, lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-6, wd=weight_decay, correct_bias=correct_bias
    )
    got64, optimizer = _run(p0, grads, **kwargs)
    np.testing.assert_allclose(got64, expected, rtol=0, atol=1e-12)
    got32, _ = _run(p0, grads, dtype=torch.float32, **kwargs)
    np.testing.assert_allclose(got32, expected, rtol=0, atol=1e-6)
    assert optimizer.state[optimizer.param_groups[0]["params"][0]]["step"] == STEPS


def test_matches_torch_adamw_when_the_formulas_coincide() -> None:
    # With eps -> 0 and no decay, HF AdamW and torch AdamW are the same algorithm. (With
    # eps=1e-6 on both sides they differ by a few 1e-6 after 10 steps at lr=1e-2; see the
    # next test for why.)
    eps = 1e-12
    p0 = np.random.default_rng(2).normal(size=(5,))
    grads = _grads((5,), STEPS)
    ours, _ = _run(p0, grads, dtype=torch.float32, lr=1e-2, eps=eps)
    param = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float32))
    theirs_opt = torch.optim.AdamW([param], lr=1e-2, eps=eps, weight_decay=0.0)
    for g in grads:
        param.grad = torch.tensor(g, dtype=torch.float32)
        theirs_opt.step()
    np.testing.assert_allclose(ours, param.detach().double().numpy(), rtol=0, atol=1e-6)


def test_differs_from_torch_adamw_by_the_documented_eps_scaling() -> None:
    # Tiny gradients make eps matter: torch uses eps, HF effectively eps * sqrt(1 - beta2**t).
    p0 = np.zeros(3)
    grads = [np.full(3, 1e-6)]
    ours, _ = _run(p0, grads, lr=1.0, eps=1e-6)
    param = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    torch_opt = torch.optim.AdamW([param], lr=1.0, eps=1e-6, weight_decay=0.0)
    param.grad = torch.full((3,), 1e-6, dtype=torch.float64)
    torch_opt.step()
    # Step 1 has m_hat = sqrt(v_hat) = g. torch moves by g / (g + eps) = 0.5; HF by
    # s * g / (s * g + eps) with s = sqrt(1 - beta2), i.e. about 0.03.
    s = math.sqrt(1 - 0.999)
    np.testing.assert_allclose(param.detach().numpy(), -0.5, rtol=1e-12)
    np.testing.assert_allclose(ours, -s * 1e-6 / (s * 1e-6 + 1e-6), rtol=1e-12)


def test_validation_and_sparse() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    for kwargs, word in [
        ({"lr": -1.0}, "lr"),
        ({"betas": (1.0, 0.9)}, r"betas\[0\]"),
        ({"betas": (0.9, -0.1)}, r"betas\[1\]"),
        ({"eps": -1.0}, "eps"),
        ({"weight_decay": -0.1}, "weight_decay"),
    ]:
        with pytest.raises(ValueError, match=word):
            AdamW([p], **kwargs)
    emb = torch.nn.Embedding(4, 2, sparse=True)
    optimizer = AdamW(emb.parameters())
    emb(torch.tensor([1])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        optimizer.step()


def test_state_dict_round_trip_continues_identically() -> None:
    p0 = np.random.default_rng(3).normal(size=(4,))
    grads = _grads((4,), 6)
    straight, _ = _run(p0, grads, lr=1e-2, weight_decay=0.01)

    param = torch.nn.Parameter(torch.tensor(p0))
    optimizer = AdamW([param], lr=1e-2, weight_decay=0.01)
    for g in grads[:3]:
        param.grad = torch.tensor(g)
        optimizer.step()
    saved_param, saved_state = param.detach().clone(), optimizer.state_dict()
    resumed = torch.nn.Parameter(saved_param)
    optimizer2 = AdamW([resumed], lr=1e-2, weight_decay=0.01)
    optimizer2.load_state_dict(saved_state)
    for g in grads[3:]:
        resumed.grad = torch.tensor(g)
        optimizer2.step()
    np.testing.assert_allclose(resumed.detach().numpy(), straight, rtol=0, atol=1e-14)
