"""Weight-decay parameter groups: biases and normalisation weights are not decayed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from toolkit.optim import (
    fit_param_groups,
    get_decay_parameter_names,
    get_parameter_names,
    is_norm_module,
    param_groups_for_weight_decay,
)
from toolkit.strategies import SingleDeviceStrategy


class MyRMSNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 4)
        self.ln = nn.LayerNorm(4)
        self.rms = MyRMSNorm(4)
        self.bn = nn.BatchNorm1d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.inorm = nn.InstanceNorm1d(4, affine=True)
        self.torch_rms = nn.RMSNorm(4)
        self.head = nn.Linear(4, 3, bias=False)
        self.scale = nn.Parameter(torch.ones(1))  # registered on the root module


def test_decay_names_exclude_bias_and_every_norm_kind() -> None:
    names = set(get_decay_parameter_names(Block()))
    assert names == {"embed.weight", "proj.weight", "head.weight", "scale"}


def test_parameter_names_with_type_list_matches_named_parameters_order() -> None:
    model = Block()
    all_names = [n for n, _ in model.named_parameters()]
    assert sorted(get_parameter_names(model, [])) == sorted(all_names)
    kept = get_parameter_names(model, [nn.LayerNorm])
    assert "ln.weight" not in kept and "ln.bias" not in kept
    assert "rms.weight" in kept  # only the listed types are skipped
    with pytest.raises(ValueError, match="forbidden_layer_types"):
        get_parameter_names(model, ["LayerNorm"])


def test_is_norm_module_by_type_and_by_name() -> None:
    assert is_norm_module(nn.LayerNorm(3))
    assert is_norm_module(nn.BatchNorm2d(3))
    assert is_norm_module(nn.InstanceNorm2d(3))
    assert is_norm_module(MyRMSNorm(3))
    assert not is_norm_module(nn.Linear(3, 3))
    assert not is_norm_module(nn.Embedding(3, 3))


def test_param_groups_split_skip_frozen_and_empty() -> None:
    model = Block()
    model.head.weight.requires_grad_(False)
    groups = param_groups_for_weight_decay(model, 0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    decay_ids = {id(p) for p in groups[0]["params"]}
    no_decay_ids = {id(p) for p in groups[1]["params"]}
    assert decay_ids == {id(model.embed.weight), id(model.proj.weight), id(model.scale)}
    assert id(model.head.weight) not in decay_ids | no_decay_ids
    assert id(model.proj.bias) in no_decay_ids and id(model.rms.weight) in no_decay_ids
    trainable = sum(1 for p in model.parameters() if p.requires_grad)
    assert len(decay_ids) + len(no_decay_ids) == trainable

    only_norm = nn.Sequential(nn.LayerNorm(3))
    groups = param_groups_for_weight_decay(only_norm, 0.1)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0


def test_tied_weights_appear_once() -> None:
    model = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5, bias=False))
    model[1].weight = model[0].weight
    groups = param_groups_for_weight_decay(model, 0.01)
    assert len(groups) == 1 and len(groups[0]["params"]) == 1


def test_negative_weight_decay_rejected() -> None:
    with pytest.raises(ValueError, match="weight_decay"):
        param_groups_for_weight_decay(nn.Linear(2, 2), -0.1)


def test_zero_weight_decay_is_one_group_in_two_group_order() -> None:
    model = Block()
    two = param_groups_for_weight_decay(model, 0.1)
    one = param_groups_for_weight_decay(model, 0.0)
    assert len(one) == 1 and one[0]["weight_decay"] == 0.0
    assert [id(p) for p in one[0]["params"]] == [id(p) for g in two for p in g["params"]]


def _steps(model: nn.Module, opt: torch.optim.Optimizer, n: int) -> None:
    for i in range(n):
        opt.zero_grad()
        model(torch.full((3, 4), float(i + 1))).pow(2).sum().backward()
        opt.step()


def test_two_group_state_of_equal_settings_loads_into_one_group() -> None:
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    old = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    old.load_state_dict(ref.state_dict())
    two = [{"params": [p for n, p in old.named_parameters() if n.endswith("weight") and n != "1.weight"],
            "weight_decay": 0.0},
           {"params": [p for n, p in old.named_parameters() if not (n.endswith("weight") and n != "1.weight")],
            "weight_decay": 0.0}]
    old_opt = torch.optim.AdamW(two, lr=0.1)  # what a run saved before groups were joined
    ref_opt = torch.optim.AdamW(param_groups_for_weight_decay(ref, 0.0), lr=0.1)
    _steps(old, old_opt, 3)
    _steps(ref, ref_opt, 3)
    new = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    new.load_state_dict(old.state_dict())
    new_opt = torch.optim.AdamW(param_groups_for_weight_decay(new, 0.0), lr=0.1)
    with pytest.raises(ValueError):
        new_opt.load_state_dict(old_opt.state_dict())  # torch alone refuses the other grouping
    SingleDeviceStrategy("cpu").load_optimizer_state_dict(new_opt, old_opt.state_dict())
    _steps(new, new_opt, 2)
    _steps(ref, ref_opt, 2)
    for a, b in zip(new.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b)


def test_groups_of_different_settings_are_left_for_torch_to_refuse() -> None:
    model = nn.Linear(4, 2)
    saved = torch.optim.AdamW(param_groups_for_weight_decay(model, 0.1), lr=0.1).state_dict()
    one = torch.optim.AdamW(param_groups_for_weight_decay(model, 0.0), lr=0.1)
    assert fit_param_groups(saved, one) is saved
    with pytest.raises(ValueError):
        SingleDeviceStrategy("cpu").load_optimizer_state_dict(one, saved)
