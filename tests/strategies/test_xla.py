"""XLAStrategy against a small fake ``torch_xla`` package that records every call.

The fake device is the CPU, so that a Trainer can really train through the strategy;
collectives simulate ``world_size`` identical replicas (a sum is ``world_size`` times
the local value).
"""

from __future__ import annotations

import importlib.machinery
import sys
import types

import pytest
import torch
from torch import nn

from toolkit import Trainer, TrainingArguments
from toolkit.connector import build_parts, precision_from_args
from toolkit.precision import MixedPrecision
from toolkit.strategies.xla import XLAStrategy, xla_requested


class FakeXLA:
    """The fake package: its modules, and the calls they received."""

    def __init__(self, world_size: int = 1, rank: int = 0, with_runtime: bool = True) -> None:
        self.calls: list[tuple] = []
        self.world_size, self.rank = world_size, rank
        rec = self.calls.append

        def module(name: str) -> types.ModuleType:
            m = types.ModuleType(name)
            m.__spec__ = importlib.machinery.ModuleSpec(name, None)
            return m

        xm = module("torch_xla.core.xla_model")
        xm.REDUCE_SUM = "sum"
        xm.xla_device = lambda: (rec(("xla_device",)), torch.device("cpu"))[1]
        xm.mark_step = lambda: rec(("mark_step",))
        xm.reduce_gradients = lambda optimizer: rec(("reduce_gradients",))

        def optimizer_step(optimizer, barrier=False):
            rec(("optimizer_step", barrier))
            optimizer.step()

        def all_reduce(reduce_type, tensor, scale=1.0):
            rec(("all_reduce", reduce_type, scale))
            return tensor * self.world_size * scale

        def all_gather(tensor, dim=0):
            rec(("all_gather", dim))
            return torch.cat([tensor] * self.world_size, dim=dim)

        def mesh_reduce(tag, data, reduce_fn):
            rec(("mesh_reduce", tag))
            others = [(r, f"object of rank {r}") for r in range(self.world_size) if r != self.rank]
            return reduce_fn([data, *others])

        xm.optimizer_step, xm.all_reduce, xm.all_gather, xm.mesh_reduce = optimizer_step, all_reduce, all_gather, mesh_reduce
        xm.rendezvous = lambda tag: rec(("rendezvous", tag))
        xm.xrt_world_size = lambda: self.world_size
        xm.get_ordinal = lambda: self.rank
        xm.get_local_ordinal = lambda: self.rank

        runtime = module("torch_xla.runtime")
        runtime.world_size = lambda: self.world_size
        runtime.global_ordinal = lambda: self.rank
        runtime.local_ordinal = lambda: self.rank

        loader = module("torch_xla.distributed.parallel_loader")

        class MpDeviceLoader:
            def __init__(self, inner, device):
                rec(("MpDeviceLoader", device))
                self.inner = inner

            def __iter__(self):
                return iter(self.inner)

            def __len__(self):
                return len(self.inner)

        loader.MpDeviceLoader = MpDeviceLoader
        amp = module("torch_xla.amp")
        amp.GradScaler = lambda: (rec(("GradScaler",)), torch.amp.GradScaler("cpu"))[1]

        root, core, dist = module("torch_xla"), module("torch_xla.core"), module("torch_xla.distributed")
        root.core, core.xla_model, root.distributed, dist.parallel_loader, root.amp = core, xm, dist, loader, amp
        self.modules = {
            "torch_xla": root, "torch_xla.core": core, "torch_xla.core.xla_model": xm,
            "torch_xla.distributed": dist, "torch_xla.distributed.parallel_loader": loader, "torch_xla.amp": amp,
        }
        if with_runtime:
            root.runtime = runtime
            self.modules["torch_xla.runtime"] = runtime
        else:
            self.modules["torch_xla.runtime"] = None  # an older torch_xla: ranks come from xla_model

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


def install(monkeypatch: pytest.MonkeyPatch, **kwargs) -> FakeXLA:
    fake = FakeXLA(**kwargs)
    for name, module in fake.modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return fake


@pytest.fixture
def xla(monkeypatch: pytest.MonkeyPatch) -> FakeXLA:
    return install(monkeypatch)


def _args(tmp_path, **kw) -> TrainingArguments:
    values = dict(report_to="none", disable_tqdm=True, save_strategy="no", logging_steps=1000,
                  per_device_train_batch_size=4, learning_rate=0.05)
    values.update(kw)
    return TrainingArguments(str(tmp_path), **values)


def test_missing_torch_xla_is_a_clear_import_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "torch_xla", None)
    with pytest.raises(ImportError, match="needs `torch_xla`"):
        XLAStrategy()
    with pytest.raises(ImportError, match="torch_xla"):  # tpu_num_cores asks for XLA explicitly
        build_parts(_args(tmp_path, tpu_num_cores=8))


def test_when_xla_is_requested(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("PJRT_DEVICE", raising=False)
    monkeypatch.setitem(sys.modules, "torch_xla", None)
    assert xla_requested(_args(tmp_path, tpu_num_cores=8))
    assert not xla_requested(_args(tmp_path, tpu_num_cores=8, use_cpu=True))  # explicit CPU wins
    assert not xla_requested(_args(tmp_path))
    monkeypatch.setenv("PJRT_DEVICE", "TPU")
    assert not xla_requested(_args(tmp_path))  # not installed
    install(monkeypatch)
    assert xla_requested(_args(tmp_path))
    monkeypatch.delenv("PJRT_DEVICE")
    assert not xla_requested(_args(tmp_path))  # installed, but no PJRT device named


@pytest.mark.parametrize("with_runtime", [True, False])
def test_topology_from_the_runtime(monkeypatch: pytest.MonkeyPatch, with_runtime: bool) -> None:
    install(monkeypatch, world_size=4, rank=2, with_runtime=with_runtime)
    s = XLAStrategy()
    assert (s.world_size, s.global_rank, s.local_rank, s.is_global_zero, s.is_distributed) == (4, 2, 2, False, True)


def test_collectives_go_through_torch_xla(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch, world_size=2, rank=0)
    s = XLAStrategy()
    t = torch.tensor([1.0, 3.0])
    torch.testing.assert_close(s.reduce(t, "sum"), 2 * t)
    torch.testing.assert_close(s.reduce(t, "mean"), t)
    assert ("all_reduce", "sum", 0.5) in fake.calls
    with pytest.raises(ValueError, match="op='max'"):
        s.reduce(t, "max")
    assert s.all_gather(t).shape == (2, 2)
    assert s.broadcast("mine", src=0) == "mine"
    assert s.broadcast("mine", src=1) == "object of rank 1"
    s.barrier("saved")
    assert ("rendezvous", "saved") in fake.calls


def test_step_paths_reduce_gradients_once(xla: FakeXLA) -> None:
    s = XLAStrategy()
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.ones(1, 2)).sum().backward()
    assert s.optimizer_step(opt) is True
    assert xla.names()[-2:] == ["optimizer_step", "mark_step"]  # fp32: xm.optimizer_step does it all
    xla.calls.clear()
    model(torch.ones(1, 2)).sum().backward()
    s.clip_grad_norm(model, opt, 1.0)  # clipping needs the summed gradients first
    assert s.optimizer_step(opt) is True
    assert xla.names() == ["reduce_gradients", "mark_step"]


def test_fp16_scaler_step_reduces_first(xla: FakeXLA, tmp_path) -> None:
    precision = precision_from_args(_args(tmp_path, fp16=True), torch.device("xla", 0))
    assert isinstance(precision, MixedPrecision) and precision.device_type == "xla"
    assert ("GradScaler",) in xla.calls
    precision.device_type = "cpu"  # the fake device is the CPU
    s = XLAStrategy(precision=precision)
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    xla.calls.clear()
    s.backward(model(torch.ones(1, 2)).sum())
    assert s.optimizer_step(opt) is True
    assert xla.names() == ["reduce_gradients", "mark_step"]


def test_data_and_state(xla: FakeXLA) -> None:
    s = XLAStrategy()
    loader = s.setup_dataloader([1, 2])
    assert list(loader) == [1, 2] and ("MpDeviceLoader", s.device) in xla.calls
    xla.calls.clear()
    batch = s.batch_to_device({"x": torch.ones(1)})
    assert xla.names() == ["mark_step"] and batch["x"].device == s.device
    model = nn.Linear(2, 1)
    state = s.model_state_dict(model)
    assert set(state) == {"weight", "bias"} and all(v.device.type == "cpu" for v in state.values())


def test_trainer_trains_on_the_xla_strategy(xla: FakeXLA, tmp_path) -> None:
    class Reg(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 1)

        def forward(self, x, labels=None):
            out = self.lin(x).squeeze(-1)
            return {"loss": nn.functional.mse_loss(out, labels), "logits": out}

    torch.manual_seed(0)
    data = [{"x": torch.randn(3), "labels": torch.randn(())} for _ in range(12)]
    model = Reg()
    before = model.lin.weight.detach().clone()
    trainer = Trainer(model, _args(tmp_path, tpu_num_cores=1, max_steps=3, max_grad_norm=0.0, bf16=True),
                      train_dataset=data)
    assert isinstance(trainer.strategy, XLAStrategy)
    assert trainer.precision.name == "bf16-mixed"
    trainer.train()
    assert xla.names().count("optimizer_step") == 3
    assert xla.names().count("mark_step") >= 6  # a step boundary per batch and per update
    assert not torch.equal(before, model.lin.weight)


def test_xla_is_registered_and_the_trainer_feeds_batches_through_mp_device_loader(xla: FakeXLA, tmp_path) -> None:
    from toolkit.strategies.registry import available_strategies, get_strategy_class
    from toolkit.strategies.xla import XLADeviceLoader

    assert get_strategy_class("xla") is XLAStrategy and "xla" in available_strategies()
    assert isinstance(build_parts(_args(tmp_path, tpu_num_cores=1), "xla").strategy, XLAStrategy)

    class Reg(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 1)

        def forward(self, x, labels=None):
            out = self.lin(x).squeeze(-1)
            return {"loss": nn.functional.mse_loss(out, labels), "logits": out}

    torch.manual_seed(0)
    data = [{"x": torch.randn(3), "labels": torch.randn(())} for _ in range(12)]
    args = _args(tmp_path, tpu_num_cores=1, num_train_epochs=2, save_strategy="steps", save_steps=4)
    trainer = Trainer(Reg(), args, train_dataset=data, eval_dataset=data[:5])
    trainer.train()
    # one MpDeviceLoader for training (the wrapper keeps the sampler reachable, so each epoch reshuffles)
    assert xla.names().count("MpDeviceLoader") == 1
    loader = trainer.strategy.setup_dataloader(trainer.get_train_dataloader())
    assert isinstance(loader, XLADeviceLoader) and trainer.strategy.setup_dataloader(loader) is loader
    assert len(loader) == 3 and loader.batch_size == 4 and hasattr(loader.sampler, "set_epoch")
    assert trainer._loop.train_dataloader.sampler.epoch == 1  # set_epoch reached the sampler through the wrapper
    # a mid-epoch resume positions the sampler through the wrapper too
    resumed = Trainer(Reg(), _args(tmp_path / "resumed", tpu_num_cores=1, num_train_epochs=2), train_dataset=data)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    torch.testing.assert_close(resumed.model.lin.weight, trainer.model.lin.weight)
    xla.calls.clear()
    assert trainer.evaluate()["eval_loss"] > 0
    assert xla.names().count("MpDeviceLoader") == 1  # evaluation batches too
