"""DDPStrategy in one process (a 1-process gloo group), the registry and the connector's choice.

The 2-process behaviour is tested in tests/distributed/ (real launches).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from toolkit import TrainingArguments
from toolkit.connector import build_parts, strategy_from_args
from toolkit.strategies import SingleDeviceStrategy
from toolkit.strategies.ddp import DDPStrategy, default_backend
from toolkit.strategies.registry import available_strategies, get_strategy_class, register_strategy
from toolkit.utils.env import DistributedEnv

LAUNCH = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
          "MASTER_PORT": "29999"}


@pytest.fixture
def group(tmp_path: Path):
    """A started 1-process DDPStrategy; torn down afterwards."""
    strategy = DDPStrategy("cpu", init_method=f"file://{tmp_path / 'pg'}", env=DistributedEnv(),
                           find_unused_parameters=False)
    strategy.setup_environment()
    yield strategy
    strategy.teardown()
    assert not dist.is_initialized()


def test_registry_names_and_errors() -> None:
    assert set(available_strategies()) >= {"single_device", "ddp"}
    assert get_strategy_class("ddp") is DDPStrategy
    assert get_strategy_class("single_device") is SingleDeviceStrategy
    with pytest.raises(ValueError, match="'ddp'"):
        get_strategy_class("dpp")
    with pytest.raises(ValueError, match="already registered"):
        register_strategy("ddp", DDPStrategy, "again")


def test_connector_picks_ddp_under_a_launch_without_starting_anything(monkeypatch, tmp_path) -> None:
    for key, value in LAUNCH.items():
        monkeypatch.setenv(key, value)
    args = TrainingArguments(str(tmp_path), use_cpu=True, ddp_backend="gloo", ddp_timeout=60,
                             ddp_bucket_cap_mb=5, ddp_broadcast_buffers=False, report_to="none")
    strategy = build_parts(args).strategy
    assert isinstance(strategy, DDPStrategy) and not dist.is_initialized()  # arguments and parts: no side effects
    assert (strategy.world_size, strategy.global_rank, strategy.local_rank, strategy.is_global_zero) == (2, 1, 1, False)
    assert (strategy.backend, strategy.timeout, strategy.bucket_cap_mb, strategy.broadcast_buffers) == (
        "gloo", timedelta(seconds=60), 5, False)
    assert strategy.device == torch.device("cpu")
    with pytest.raises(ValueError, match="runs one process, but the launcher started 2"):
        strategy_from_args(args, "single_device")
    mine = SingleDeviceStrategy("cpu")
    assert strategy_from_args(args, mine) is mine  # an instance beats a name and detection


def test_connector_single_process_defaults_and_names(tmp_path) -> None:
    args = TrainingArguments(str(tmp_path), use_cpu=True, report_to="none")
    assert type(strategy_from_args(args)) is SingleDeviceStrategy
    assert type(strategy_from_args(args, "ddp")) is DDPStrategy
    with pytest.raises(ValueError, match="not registered"):
        strategy_from_args(args, "nope")


def test_setup_environment_needs_a_rendezvous(monkeypatch) -> None:
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        DDPStrategy("cpu", env=DistributedEnv()).setup_environment()
    assert default_backend(torch.device("cpu")) == "gloo"
    assert default_backend(torch.device("cuda", 0)) == "nccl"


def test_wrap_unwrap_sync_and_collectives(group: DDPStrategy) -> None:
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    wrapped, same = group.setup(model, opt)
    assert isinstance(wrapped, DistributedDataParallel) and same is opt
    assert group.setup_module(model) is wrapped and group.setup_module(wrapped) is wrapped  # no second wrapper
    assert group.unwrap(wrapped) is model
    with group.no_backward_sync(wrapped):
        assert not wrapped.require_backward_grad_sync
    with pytest.raises(ValueError, match="optimizer"):
        group.setup(nn.Linear(3, 2), opt)
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(group.reduce(t, "sum"), t) and torch.equal(t, torch.tensor([1.0, 2.0]))
    assert group.reduce(torch.tensor(3), "mean").item() == 3.0
    with pytest.raises(ValueError, match="accepted"):
        group.reduce(t, "prod")
    assert group.all_gather(torch.ones(2, 3)).shape == (1, 2, 3)
    assert group.all_gather(torch.tensor(5.0)).shape == (1,)
    assert group.all_gather_object({"a": 1}) == [{"a": 1}]
    assert group.broadcast("x") == "x"
    group.barrier()
    loader = DataLoader(list(range(5)), batch_size=2)
    assert group.setup_dataloader(loader) is loader  # one process: nothing to shard


def test_teardown_only_destroys_a_group_it_started(group: DDPStrategy) -> None:
    second = DDPStrategy("cpu", env=DistributedEnv())
    second.setup_environment()  # the group exists: used, not owned
    second.teardown()
    assert dist.is_initialized()
    assert "DDPStrategy(device='cpu'" in repr(group)
