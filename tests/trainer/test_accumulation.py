"""Gradient accumulation through the facade: k micro-batches equal one big batch."""

from __future__ import annotations

import pytest
import torch

from toolkit import Trainer
from toolkit.callbacks import TrainerCallback


def _train(h, tmp_path, model_cls, data, *, batch_size, accumulation, optim, **overrides):
    model = h.seeded(model_cls)
    values = {"max_steps": 2, "max_grad_norm": 0.0, "lr_scheduler_type": "constant", **overrides}
    args = h.make_args(
        tmp_path / f"run-{batch_size}-{accumulation}",
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        optim=optim,
        **values,
    )
    Trainer(model, args, train_dataset=data).train()
    return h.weights(model)


@pytest.mark.parametrize("optim", ["sgd", "adamw_torch"])
def test_four_micro_batches_equal_one_big_batch(h, tmp_path, optim):
    data = h.regression_data(64)
    small = _train(h, tmp_path, h.Regressor, data, batch_size=8, accumulation=4, optim=optim)
    big = _train(h, tmp_path, h.Regressor, data, batch_size=32, accumulation=1, optim=optim)
    h.assert_weights_close(small, big, atol=1e-6)
    # the runs trained at all (the check above is not comparing two untouched models)
    assert h.weights_differ(small, h.weights(h.seeded(h.Regressor)), atol=1e-3)


def test_clipping_sees_the_whole_window(h, tmp_path):
    """Clipping applies to the accumulated gradient, so it too matches the big batch."""
    data = h.regression_data(64)
    small = _train(
        h, tmp_path, h.Regressor, data, batch_size=8, accumulation=4, optim="sgd", max_grad_norm=0.5
    )
    big = _train(
        h, tmp_path, h.Regressor, data, batch_size=32, accumulation=1, optim="sgd", max_grad_norm=0.5
    )
    unclipped = _train(h, tmp_path / "u", h.Regressor, data, batch_size=32, accumulation=1, optim="sgd")
    h.assert_weights_close(small, big, atol=1e-6)
    assert h.weights_differ(big, unclipped, atol=1e-4)


def test_padded_labels_items_mode_matches_big_batch_micro_batch_mode_does_not(h, tmp_path):
    data = h.token_data(64)
    # the micro-batches really hold different numbers of label tokens
    counts = {int((item["labels"] != -100).sum()) for item in data}
    assert len(counts) > 3

    def run(accumulation, batch_size, mode):
        return _train(
            h,
            tmp_path / mode,
            h.TokenModel,
            data,
            batch_size=batch_size,
            accumulation=accumulation,
            optim="sgd",
            loss_normalization=mode,
            learning_rate=0.5,
        )

    big = run(1, 32, "items")
    items = run(4, 8, "items")
    per_micro_batch = run(4, 8, "micro_batch")
    h.assert_weights_close(items, big, atol=1e-6)
    assert h.weights_differ(per_micro_batch, big, atol=1e-5)


def test_micro_batch_mode_is_the_mean_of_micro_batch_means(h, tmp_path):
    """With equal item counts per micro-batch both modes agree (the HF 4.34 behaviour is
    only different where padding makes the micro-batches unequal)."""
    data = h.regression_data(64)
    items = _train(h, tmp_path / "i", h.Regressor, data, batch_size=8, accumulation=4, optim="sgd")
    micro = _train(
        h,
        tmp_path / "m",
        h.Regressor,
        data,
        batch_size=8,
        accumulation=4,
        optim="sgd",
        loss_normalization="micro_batch",
    )
    h.assert_weights_close(items, micro, atol=1e-6)


def test_logged_loss_with_accumulation_is_the_window_mean(h, tmp_path):
    """The logged loss of a step is the loss of its whole window (as a big batch would give)."""
    data = h.regression_data(32)

    def logged(batch_size, accumulation):
        model = h.seeded(h.Regressor)
        args = h.make_args(
            tmp_path / f"log{accumulation}",
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            max_steps=1,
            logging_steps=1,
            optim="sgd",
        )
        trainer = Trainer(model, args, train_dataset=data)
        trainer.train()
        return h.train_losses(trainer.state.log_history)

    small, big = logged(8, 4), logged(32, 1)
    assert [s for s, _ in small] == [1]
    assert small == pytest.approx(big, abs=1e-4)


@pytest.mark.parametrize(("mode", "divisor"), [("items", 1), ("micro_batch", 4)])
def test_short_last_window(h, tmp_path, mode, divisor):
    """9 micro-batches with GA=4: windows of 4, 4 and 1. The lone micro-batch of the last
    window is a full mean in "items" mode and is divided by GA in "micro_batch" mode."""
    item = h.regression_data(1)[0]
    data = [item] * 9  # identical samples: the last window's gradient does not depend on the order
    model = h.seeded(h.Regressor)
    snapshots = {}

    class Snap(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            snapshots[state.global_step] = h.weights(model)

    args = h.make_args(
        tmp_path,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=4,
        num_train_epochs=1,
        optim="sgd",
        learning_rate=0.1,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        loss_normalization=mode,
    )
    out = Trainer(model, args, train_dataset=data, callbacks=[Snap()]).train()
    assert out.global_step == 3
    probe = h.Regressor()
    probe.load_state_dict(snapshots[2])
    probe(item["x"][None], item["labels"][None])["loss"].backward()
    for name, param in probe.named_parameters():
        expected = snapshots[2][name] - 0.1 * param.grad / divisor
        torch.testing.assert_close(snapshots[3][name], expected, atol=1e-6, rtol=0)
