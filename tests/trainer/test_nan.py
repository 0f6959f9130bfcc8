"""Non-finite training losses: the warn (default), skip and raise policies."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn

from toolkit import Trainer
from toolkit.callbacks import TrainerCallback

NAN_STEP = 3


class NanAtCall(nn.Module):
    """A regressor whose loss is NaN on its ``bad_call``-th training forward pass.

    By default the NaN is a constant added to the loss, so the gradient stays finite and
    what happens to the weights depends only on the policy; with ``nan_gradient`` the
    gradient is NaN too."""

    def __init__(self, bad_call: int = NAN_STEP, nan_gradient: bool = False) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.bad_call = bad_call
        self.nan_gradient = nan_gradient
        self.calls = 0

    def forward(self, x, labels=None):
        out = self.lin(x).squeeze(-1)
        loss = nn.functional.mse_loss(out, labels)
        if self.training:
            self.calls += 1
            if self.calls == self.bad_call:
                loss = loss + (out.sum() if self.nan_gradient else 1.0) * float("nan")
        return {"loss": loss, "logits": out}


class WeightsPerStep(TrainerCallback):
    def __init__(self, model) -> None:
        self.model = model
        self.snapshots = {0: {k: v.clone() for k, v in model.state_dict().items()}}

    def on_step_end(self, args, state, control, **kwargs):
        self.snapshots[state.global_step] = {k: v.clone() for k, v in self.model.state_dict().items()}


def _run(h, tmp_path, nan_gradient=False, **overrides):
    model = h.seeded(NanAtCall, nan_gradient=nan_gradient)
    snapshots = WeightsPerStep(model)
    values = {"max_steps": 6, "logging_steps": 2, "optim": "sgd", **overrides}
    trainer = Trainer(
        model, h.make_args(tmp_path, **values), train_dataset=h.regression_data(24), callbacks=[snapshots]
    )
    return trainer, snapshots


def _moved(snapshots, step) -> bool:
    before, after = snapshots.snapshots[step - 1], snapshots.snapshots[step]
    return any(not torch.equal(before[k], after[k]) for k in before)


def test_default_policy_warns_and_filters_the_logged_loss(h, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="toolkit")
    trainer, snapshots = _run(h, tmp_path)
    out = trainer.train()
    warnings = [r.getMessage() for r in caplog.records if "NaN or inf" in r.getMessage()]
    assert len(warnings) == 1
    assert "between steps 3 and 4" in warnings[0]
    losses = dict(h.train_losses(trainer.state.log_history))
    assert sorted(losses) == [2, 4, 6]
    assert all(math.isfinite(v) for v in losses.values())
    assert math.isfinite(out.training_loss)
    # the update of the NaN step was applied (the gradient was finite): warn does not skip
    assert _moved(snapshots, NAN_STEP)
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values())


def test_without_the_filter_the_nan_is_logged(h, tmp_path):
    trainer, _ = _run(h, tmp_path, logging_nan_inf_filter=False)
    trainer.train()
    losses = dict(h.train_losses(trainer.state.log_history))
    assert math.isnan(losses[4])
    assert math.isfinite(losses[2]) and math.isfinite(losses[6])


def test_raise_policy_raises(h, tmp_path):
    trainer, _ = _run(h, tmp_path, nan_inf_policy="raise")
    with pytest.raises(FloatingPointError, match="step 3"):
        trainer.train()
    assert trainer.state.global_step == NAN_STEP - 1


def test_skip_policy_leaves_the_weights_of_that_step(h, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="toolkit")
    trainer, snapshots = _run(h, tmp_path, nan_inf_policy="skip")
    out = trainer.train()
    assert out.global_step == 6
    assert not _moved(snapshots, NAN_STEP)
    for step in (1, 2, 4, 5, 6):
        assert _moved(snapshots, step), step
    assert any("Skipping the update of step 3" in r.getMessage() for r in caplog.records)


def test_skip_policy_with_accumulation_drops_the_whole_window(h, tmp_path):
    # GA=2: forward call 3 is the first micro-batch of step 2
    trainer, snapshots = _run(h, tmp_path, nan_inf_policy="skip", gradient_accumulation_steps=2)
    trainer.train()
    assert not _moved(snapshots, 2)
    assert _moved(snapshots, 1) and _moved(snapshots, 3)


def test_skip_policy_keeps_nan_gradients_out_of_the_weights(h, tmp_path):
    trainer, snapshots = _run(h, tmp_path, nan_gradient=True, nan_inf_policy="skip")
    trainer.train()
    assert not _moved(snapshots, NAN_STEP)
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values())
    assert _moved(snapshots, NAN_STEP + 1)


def test_warn_policy_applies_nan_gradients(h, tmp_path):
    """The contrast to the test above: the default policy does not protect the weights."""
    trainer, _ = _run(h, tmp_path, nan_gradient=True, max_grad_norm=0.0)
    trainer.train()
    assert not all(torch.isfinite(v).all() for v in trainer.model.state_dict().values())
