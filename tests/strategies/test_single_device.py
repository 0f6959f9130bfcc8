"""SingleDeviceStrategy: device choice, optimizer ownership check, identity collectives."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from torch import nn

from toolkit.precision import MixedPrecision
from toolkit.strategies import SingleDeviceStrategy, move_to_device, select_device


def test_cpu_setup_and_topology() -> None:
    s = SingleDeviceStrategy("cpu")
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    wrapped, same_opt = s.setup(model, opt)
    assert wrapped is model and same_opt is opt
    assert (s.world_size, s.global_rank, s.local_rank, s.is_global_zero) == (1, 0, 0, True)


def test_setup_refuses_optimizer_of_another_model() -> None:
    s = SingleDeviceStrategy("cpu")
    model, other = nn.Linear(2, 1), nn.Linear(2, 1)
    with pytest.raises(ValueError, match="optimizer"):
        s.setup(model, torch.optim.SGD(other.parameters(), lr=0.1))
    mixed = torch.optim.SGD([*model.parameters(), *other.parameters()], lr=0.1)
    with pytest.raises(ValueError, match="do not belong"):
        s.setup(model, mixed)


def test_device_selection_prefers_cuda_then_mps_then_cpu() -> None:
    with mock.patch("torch.cuda.is_available", return_value=False), mock.patch(
        "toolkit.strategies.base._mps_available", return_value=True
    ):
        assert select_device(None) == torch.device("mps")
        assert select_device(None, use_cpu=True) == torch.device("cpu")
    with mock.patch("torch.cuda.is_available", return_value=False), mock.patch(
        "toolkit.strategies.base._mps_available", return_value=False
    ):
        assert select_device(None) == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda:0")
        with pytest.raises(ValueError, match="MPS is not available"):
            select_device("mps")


def test_move_to_device_keeps_structure() -> None:
    from collections import namedtuple

    Pair = namedtuple("Pair", "a b")
    batch = {"x": torch.ones(1), "nested": [torch.zeros(1), (torch.ones(1), "text")], "p": Pair(torch.ones(1), 3)}
    moved = move_to_device(batch, torch.device("cpu"))
    assert isinstance(moved["nested"], list) and isinstance(moved["nested"][1], tuple)
    assert isinstance(moved["p"], Pair) and moved["p"].b == 3
    assert moved["nested"][1][1] == "text"


def test_clip_grad_norm_clips_and_returns_tensor() -> None:
    s = SingleDeviceStrategy("cpu")
    model = nn.Linear(3, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model.weight.grad = torch.full_like(model.weight, 10.0)
    norm = s.clip_grad_norm(model, opt, 1.0)
    assert isinstance(norm, torch.Tensor)
    assert torch.isclose(norm, torch.tensor(10.0 * 3**0.5))
    assert torch.isclose(model.weight.grad.norm(), torch.tensor(1.0), atol=1e-5)


def test_backward_and_step_go_through_the_precision() -> None:
    s = SingleDeviceStrategy("cpu", precision=MixedPrecision("fp16", device_type="cpu", scaler=torch.amp.GradScaler("cpu", init_scale=8.0)))
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with s.autocast():
        loss = model(torch.ones(1, 2)).float().sum()
    s.backward(loss)
    # the fp16 scaler multiplied the gradient by its scale
    assert model.bias.grad.item() == s.precision.scaler.get_scale()
    assert s.optimizer_step(opt) is True


def test_identity_collectives() -> None:
    s = SingleDeviceStrategy("cpu")
    t = torch.arange(3.0)
    assert torch.equal(s.reduce(t, "sum"), t)
    assert s.all_gather(t).shape == (1, 3)
    assert s.broadcast({"a": 1}) == {"a": 1}
    with pytest.raises(ValueError, match="op"):
        s.reduce(t, "max")
