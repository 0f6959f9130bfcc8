"""ApexPrecision against a small fake ``apex`` package that records the calls it gets.

The fake follows apex AMP's contract: ``initialize`` patches the optimizer so that the
step after an overflow is skipped; ``scale_loss`` multiplies the loss by a dynamic scale,
and on exit unscales the gradients, halves the scale on inf/NaN (resetting its
"unskipped" counter) and counts clean steps otherwise.
"""

from __future__ import annotations

import contextlib
import sys
import types

import pytest
import torch
from torch import nn

from toolkit import Trainer, TrainingArguments
from toolkit.connector import build_parts, precision_from_args
from toolkit.precision.apex import ApexPrecision


class FakeAmp(types.ModuleType):
    def __init__(self) -> None:
        super().__init__("apex.amp")
        self.calls: list[tuple] = []
        self.loss_scale = 2.0**8
        self.unskipped = 0
        self.skip_next = False

    def initialize(self, model, optimizer, opt_level="O1"):
        self.calls.append(("initialize", opt_level))
        self.pairs = []
        if opt_level == "O2":  # like apex: fp32 master copies replace the model's parameters in the optimizer
            for group in optimizer.param_groups:
                masters = [p.detach().clone().requires_grad_(True) for p in group["params"]]
                self.pairs += list(zip(group["params"], masters))
                group["params"] = masters
        step, zero_grad = optimizer.step, optimizer.zero_grad

        def patched_step(*args, **kwargs):
            if self.skip_next:
                self.skip_next = False
                self.calls.append(("skipped_step",))
                return None
            out = step(*args, **kwargs)
            for model_param, master in self.pairs:  # masters -> model weights
                model_param.data.copy_(master.data)
            return out

        def patched_zero_grad(set_to_none=True):
            zero_grad(set_to_none=set_to_none)
            for model_param, _ in self.pairs:
                model_param.grad = None

        optimizer.step, optimizer.zero_grad = patched_step, patched_zero_grad
        return model, optimizer

    @contextlib.contextmanager
    def scale_loss(self, loss, optimizer):
        self.calls.append(("scale_loss", self.loss_scale))
        yield loss * self.loss_scale
        params = [m for m, _ in self.pairs] or [p for g in optimizer.param_groups for p in g["params"]]
        grads = [p.grad for p in params if p.grad is not None]
        overflow = any(not torch.isfinite(g).all() for g in grads)
        for g in grads:
            g.div_(self.loss_scale)
        for model_param, master in self.pairs:  # model gradients -> master gradients
            master.grad = None if model_param.grad is None else model_param.grad.detach().float().clone()
        if overflow:
            self.loss_scale /= 2
            self.unskipped = 0
            self.skip_next = True
        else:
            self.unskipped += 1

    def state_dict(self):
        return {"loss_scaler0": {"loss_scale": self.loss_scale, "unskipped": self.unskipped}}

    def load_state_dict(self, state):
        self.calls.append(("load_state_dict",))
        self.loss_scale = state["loss_scaler0"]["loss_scale"]
        self.unskipped = state["loss_scaler0"]["unskipped"]


@pytest.fixture
def amp(monkeypatch: pytest.MonkeyPatch) -> FakeAmp:
    fake = FakeAmp()
    package = types.ModuleType("apex")
    package.amp = fake
    monkeypatch.setitem(sys.modules, "apex", package)
    monkeypatch.setitem(sys.modules, "apex.amp", fake)
    return fake


def _step(p: ApexPrecision, model: nn.Module, opt: torch.optim.Optimizer, inject_inf: bool = False) -> bool:
    loss = model(torch.ones(2, 3)).sum()
    if inject_inf:
        model.weight.register_hook(lambda g: torch.full_like(g, float("inf")))
    p.backward(loss)
    stepped = p.step(opt)
    opt.zero_grad()
    return stepped


def test_missing_apex_is_a_clear_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "apex", None)
    with pytest.raises(ImportError, match="apex"):
        ApexPrecision("O1")


def test_bad_opt_level_names_the_argument(amp: FakeAmp) -> None:
    with pytest.raises(ValueError, match="fp16_opt_level='O4'"):
        ApexPrecision("O4")


def test_initialize_scale_loss_and_skipped_step(amp: FakeAmp) -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    p = ApexPrecision("O2")
    assert p.setup(model, opt) == (model, opt)
    assert p.setup(model, opt) == (model, opt)  # once per optimizer
    assert amp.calls == [("initialize", "O2")]

    before = model.weight.detach().clone()
    assert _step(p, model, opt) is True
    after_first = model.weight.detach().clone()
    assert not torch.equal(before, after_first)
    # the gradient apex unscaled is the true one: d(sum(Wx+b))/dW = 2 * ones for two rows of ones
    assert amp.calls[1] == ("scale_loss", 256.0)

    assert _step(p, model, opt, inject_inf=True) is False
    assert torch.equal(after_first, model.weight)
    assert amp.loss_scale == 128.0 and ("skipped_step",) in amp.calls
    assert p.state_dict() == {"loss_scaler0": {"loss_scale": 128.0, "unskipped": 0}}


def test_state_round_trip(amp: FakeAmp) -> None:
    p = ApexPrecision()
    p.load_state_dict({"loss_scaler0": {"loss_scale": 64.0, "unskipped": 3}})
    assert p.state_dict()["loss_scaler0"]["loss_scale"] == 64.0
    p.load_state_dict({})  # nothing saved: nothing loaded
    assert amp.calls == [("load_state_dict",)]


def test_backward_before_setup_is_an_error(amp: FakeAmp) -> None:
    with pytest.raises(RuntimeError, match="setup"):
        ApexPrecision().backward(torch.ones((), requires_grad=True))


def _args(tmp_path, **kw) -> TrainingArguments:
    values = dict(
        report_to="none", disable_tqdm=True, save_strategy="no", use_cpu=True, per_device_train_batch_size=4,
        learning_rate=0.05, logging_steps=1000,
    )
    values.update(kw)
    return TrainingArguments(str(tmp_path), **values)


def test_connector_picks_apex_for_fp16_only(amp: FakeAmp, tmp_path) -> None:
    p = precision_from_args(_args(tmp_path, fp16=True, half_precision_backend="apex", fp16_opt_level="O3"),
                            torch.device("cpu"))
    assert isinstance(p, ApexPrecision) and p.opt_level == "O3"
    with pytest.raises(ValueError, match="apex.*fp16 only"):
        precision_from_args(_args(tmp_path, bf16=True, half_precision_backend="apex"), torch.device("cpu"))
    # apex without fp16 changes nothing
    assert type(build_parts(_args(tmp_path, half_precision_backend="apex")).precision).__name__ == "Precision"


class _Reg(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def forward(self, x, labels=None):
        out = self.lin(x).squeeze(-1)
        return {"loss": nn.functional.mse_loss(out, labels), "logits": out}


# apex patches optimizer.step after the scheduler exists, as it does under the HF Trainer
@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_trainer_trains_through_apex_and_checkpoints_its_scale(amp: FakeAmp, tmp_path) -> None:
    torch.manual_seed(0)
    data = [{"x": torch.randn(3), "labels": torch.randn(())} for _ in range(12)]
    args = _args(tmp_path, fp16=True, half_precision_backend="apex", fp16_opt_level="O2", max_steps=3,
                 save_strategy="steps", save_steps=3)
    trainer = Trainer(_Reg(), args, train_dataset=data)
    assert isinstance(trainer.precision, ApexPrecision)
    trainer.train()
    names = [c[0] for c in amp.calls]
    assert names.count("initialize") == 1 and names.count("scale_loss") == 3
    assert amp.calls[0] == ("initialize", "O2")
    saved = torch.load(tmp_path / "checkpoint-3" / "scaler.pt", weights_only=True)
    assert saved == {"loss_scaler0": {"loss_scale": 256.0, "unskipped": 3}}


def test_trainer_without_apex_fails_at_construction(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "apex", None)
    with pytest.raises(ImportError, match="NVIDIA apex"):
        Trainer(_Reg(), _args(tmp_path, fp16=True, half_precision_backend="apex"), train_dataset=[])


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_o2_master_weights_survive_a_second_train_and_foreign_optimizers_are_refused(amp: FakeAmp, tmp_path) -> None:
    torch.manual_seed(0)
    data = [{"x": torch.randn(3), "labels": torch.randn(())} for _ in range(12)]
    args = _args(tmp_path, fp16=True, half_precision_backend="apex", fp16_opt_level="O2", max_steps=2,
                 lr_scheduler_type="constant")
    trainer = Trainer(_Reg(), args, train_dataset=data)
    trainer.train()
    held = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    model_ids = {id(p) for p in trainer.model.parameters()}
    assert held and not any(id(p) in model_ids for p in held)  # the optimizer trains master copies
    after_first = trainer.model.lin.weight.detach().clone()
    trainer.train()  # the same (apex-patched) optimizer again: no ownership error, no second initialize
    assert [c[0] for c in amp.calls].count("initialize") == 1
    assert not torch.equal(after_first, trainer.model.lin.weight)  # the masters still train the model
    # an optimizer of another model is still refused, apex or not
    other = torch.optim.SGD(_Reg().parameters(), lr=0.1)
    with pytest.raises(ValueError, match="optimizer: none of its parameters"):
        trainer.strategy.setup(trainer.model, other)
