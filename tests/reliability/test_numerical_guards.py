"""Numerical guards: with ``nan_inf_policy="skip"`` a step whose loss is NaN or inf leaves
the weights and the optimizer state exactly as they were; with ``"raise"`` training stops
with `FloatingPointError` naming the step, and every checkpoint on disk is a committed one
from before that step (none partial, none holding non-finite values)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from toolkit import Trainer
from toolkit.callbacks import TrainerCallback
from toolkit.checkpoint import FsspecCheckpointIO

pytestmark = pytest.mark.slow  # the reliability suites run in CI: pytest -m slow tests/reliability
BAD_CALL = 3  # the 3rd training forward pass (step 3 without accumulation)
IO = FsspecCheckpointIO()


class BadLossAt(nn.Module):
    """A regressor whose ``bad_call``-th training forward gives a non-finite loss, with
    non-finite gradients too (the value multiplies the output)."""

    def __init__(self, value: float, bad_call: int = BAD_CALL) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.value, self.bad_call, self.calls = value, bad_call, 0

    def forward(self, x, labels=None):
        out = self.lin(x).squeeze(-1)
        loss = nn.functional.mse_loss(out, labels)
        if self.training:
            self.calls += 1
            if self.calls == self.bad_call:
                loss = loss + (out * self.value).sum()
        return {"loss": loss, "logits": out}


class Snapshots(TrainerCallback):
    """Weights and optimizer state after every optimizer step (step 0: before training)."""

    def __init__(self) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}
        self.optimizer: dict[int, dict] = {}

    def _take(self, step, model, optimizer) -> None:
        self.weights[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.optimizer[step] = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else {}

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self._take(0, model, optimizer)

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        self._take(state.global_step, model, optimizer)


def _same_tree(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_tree(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_tree(x, y) for x, y in zip(a, b))
    return a == b


def _trainer(h, out, value, callbacks=None, **overrides):
    values = dict(
        max_steps=6, per_device_train_batch_size=2, logging_steps=1, learning_rate=0.05, optim="adamw_torch"
    )
    values.update(overrides)
    return Trainer(
        h.seeded(BadLossAt, value=value),
        h.make_args(out, **values),
        train_dataset=h.regression_data(24),
        callbacks=callbacks,
    )


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_skip_leaves_weights_and_optimizer_state_untouched(h, tmp_path, value):
    snaps = Snapshots()
    trainer = _trainer(h, tmp_path, value, callbacks=[snaps], nan_inf_policy="skip")
    out = trainer.train()
    assert out.global_step == 6
    assert _same_tree(snaps.weights[BAD_CALL], snaps.weights[BAD_CALL - 1]), (
        "the skipped step changed the weights"
    )
    assert _same_tree(snaps.optimizer[BAD_CALL], snaps.optimizer[BAD_CALL - 1]), (
        "the skipped step changed Adam's state"
    )
    for step in (1, 2, 4, 5, 6):  # every other step did update
        assert not _same_tree(snaps.weights[step], snaps.weights[step - 1]), step
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values())
    # the loss logged for every other step is finite (a log window holding only the bad step
    # logs NaN: the loss tracker counts an all-non-finite window as NaN)
    losses = dict(h.train_losses(trainer.state.log_history))
    assert all(math.isfinite(v) for s, v in losses.items() if s != BAD_CALL), losses


@pytest.mark.parametrize("save_async", [False, True], ids=["sync", "async"])
def test_raise_stops_before_the_bad_update_and_leaves_only_committed_checkpoints(h, tmp_path, save_async):
    snaps = Snapshots()
    trainer = _trainer(
        h,
        tmp_path,
        float("nan"),
        callbacks=[snaps],
        nan_inf_policy="raise",
        save_strategy="steps",
        save_steps=1,
        save_async=save_async,
    )
    with pytest.raises(FloatingPointError, match=rf"step {BAD_CALL}.*nan_inf_policy='raise'"):
        trainer.train()
    trainer.checkpointer.wait()  # background saves of the steps before finish (as they do at interpreter exit)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not [n for n in names if ".tmp-" in n], names
    checkpoints = [n for n in names if n.startswith("checkpoint-")]
    assert checkpoints == [f"checkpoint-{s}" for s in range(1, BAD_CALL)], checkpoints
    for name in checkpoints:
        files = IO.load(str(tmp_path / name))  # verified against the manifest
        assert all(torch.isfinite(v).all() for v in files["model.safetensors"].values())
    last = IO.load(str(tmp_path / f"checkpoint-{BAD_CALL - 1}"))["model.safetensors"]
    assert _same_tree(last, snaps.weights[BAD_CALL - 1])
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values()), (
        "the NaN update was applied"
    )
