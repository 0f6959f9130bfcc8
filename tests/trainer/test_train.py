"""`Trainer.train`: seeding, logging, run length, schedulers, optimizers, clipping."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from toolkit import Trainer
from toolkit.optim import get_scheduler
from toolkit.types import TrainOutput

# ----------------------------------------------------------------------------- seeds


def _run_with_seed(h, tmp_path, seed):
    model = h.seeded(h.DropoutRegressor)
    args = h.make_args(tmp_path / f"seed{seed}", seed=seed, max_steps=6)
    Trainer(model, args, train_dataset=h.regression_data(24)).train()
    return h.weights(model)


def test_same_seed_same_weights_other_seed_differs(h, tmp_path):
    first = _run_with_seed(h, tmp_path / "a", 3)
    second = _run_with_seed(h, tmp_path / "b", 3)
    other = _run_with_seed(h, tmp_path / "c", 4)
    for k in first:
        assert torch.equal(first[k], second[k]), k
    assert h.weights_differ(first, other, atol=1e-6)


# ----------------------------------------------------------------------------- logging


def _train(h, tmp_path, data=None, model=None, **overrides):
    model = model if model is not None else h.seeded(h.Regressor)
    trainer = Trainer(model, h.make_args(tmp_path, **overrides), train_dataset=data or h.regression_data(40))
    return trainer, trainer.train()


def test_log_history_every_three_steps_and_final_metrics(h, tmp_path):
    trainer, out = _train(h, tmp_path, max_steps=10, logging_steps=3)
    history = trainer.state.log_history
    assert [e["step"] for e in history] == [3, 6, 9, 10]
    for entry in history[:3]:
        assert set(entry) == {"loss", "learning_rate", "epoch", "step"}
        assert math.isfinite(entry["loss"])
    final = history[-1]
    for key in (
        "train_runtime",
        "train_samples_per_second",
        "train_steps_per_second",
        "train_loss",
        "total_flos",
    ):
        assert key in final, key
        assert key in out.metrics, key
    assert "loss" not in final
    assert isinstance(out, TrainOutput)
    assert out.global_step == 10 == trainer.state.global_step
    assert out.training_loss == pytest.approx(out.metrics["train_loss"])
    assert out.metrics["total_flos"] > 0
    # 10 steps of 4 samples over 40 samples: one epoch; the epoch logged at step 3 is 0.3
    assert history[0]["epoch"] == pytest.approx(0.3)
    assert final["epoch"] == pytest.approx(1.0)


def test_total_flos_counts_six_flops_per_parameter_and_token(h, tmp_path):
    # 10 samples in batches of 4: 4 + 4 + 2 samples (the last batch is smaller)
    model = h.seeded(h.Regressor)
    _, out = _train(h, tmp_path / "samples", data=h.regression_data(10), model=model, num_train_epochs=1)
    params = sum(p.numel() for p in model.parameters())
    assert out.metrics["total_flos"] == 6 * params * 10
    # with input_ids the tokens are their elements
    tokens = h.token_data(6)
    _, out = _train(h, tmp_path / "tokens", data=tokens, model=h.seeded(h.TokenModel), num_train_epochs=1)
    params = sum(p.numel() for p in h.TokenModel().parameters())
    assert out.metrics["total_flos"] == 6 * params * sum(t["input_ids"].numel() for t in tokens)


def test_total_flos_from_the_model_or_an_override(h, tmp_path):
    class Counted(h.Regressor):
        def floating_point_ops(self, inputs):
            return 1000 * len(inputs["x"])

    _, out = _train(h, tmp_path / "model", data=h.regression_data(10), model=Counted(), num_train_epochs=1)
    assert out.metrics["total_flos"] == 1000 * 10

    class FlopsTrainer(Trainer):
        def floating_point_ops(self, inputs):
            return 7

    trainer = FlopsTrainer(h.seeded(h.Regressor), h.make_args(tmp_path / "override", num_train_epochs=1),
                           train_dataset=h.regression_data(10))
    assert trainer.train().metrics["total_flos"] == 7 * 3  # three steps


def test_logging_first_step_adds_step_one(h, tmp_path):
    trainer, _ = _train(h, tmp_path, max_steps=10, logging_steps=3, logging_first_step=True)
    assert [s for s, _ in h.train_losses(trainer.state.log_history)] == [1, 3, 6, 9]


def test_logging_strategy_epoch(h, tmp_path):
    trainer, _ = _train(h, tmp_path, data=h.regression_data(20), num_train_epochs=3, logging_strategy="epoch")
    # 20 samples / batch 4 = 5 steps per epoch
    logged = [e for e in trainer.state.log_history if "loss" in e]
    assert [e["step"] for e in logged] == [5, 10, 15]
    assert [e["epoch"] for e in logged] == [1.0, 2.0, 3.0]


def test_train_loss_is_mean_of_step_losses(h, tmp_path):
    """With logging every step, train_loss is the mean of the logged (rounded) losses."""
    trainer, out = _train(h, tmp_path, max_steps=6, logging_steps=1)
    losses = [loss for _, loss in h.train_losses(trainer.state.log_history)]
    assert len(losses) == 6
    assert out.training_loss == pytest.approx(sum(losses) / 6, abs=1e-3)


# ----------------------------------------------------------------------------- run length


def test_max_steps_overrides_epochs_and_cycles_the_data(h, tmp_path):
    trainer, out = _train(h, tmp_path, data=h.regression_data(40), max_steps=25, num_train_epochs=1)
    assert out.global_step == 25
    assert trainer.state.epoch == pytest.approx(2.5)


@pytest.mark.parametrize(("epochs", "steps"), [(2, 20), (1.5, 15), (0.3, 3)])
def test_num_train_epochs_sets_the_step_count(h, tmp_path, epochs, steps):
    trainer, out = _train(h, tmp_path, data=h.regression_data(40), num_train_epochs=epochs)
    assert out.global_step == steps
    assert trainer.state.epoch == pytest.approx(epochs)


def test_epochs_with_accumulation_round_up_partial_windows(h, tmp_path):
    # 10 batches per epoch with GA=3: windows of 3, 3, 3, 1 -> 4 optimizer steps per epoch
    trainer, out = _train(
        h, tmp_path, data=h.regression_data(40), num_train_epochs=2, gradient_accumulation_steps=3
    )
    assert out.global_step == 8


def test_iterable_dataset_with_max_steps(h, tmp_path):
    trainer, out = _train(h, tmp_path, data=h.Stream(h.regression_data(20)), max_steps=7)
    assert out.global_step == 7


def test_iterable_dataset_without_max_steps_is_refused_before_training(h, tmp_path):
    model = h.seeded(h.Regressor)
    before = h.weights(model)
    trainer = Trainer(model, h.make_args(tmp_path), train_dataset=h.Stream(h.regression_data(20)))
    with pytest.raises(ValueError, match="max_steps"):
        trainer.train()
    assert trainer.state.global_step == 0
    assert not h.weights_differ(before, h.weights(model), atol=0)


# ----------------------------------------------------------------------------- schedulers

SCHEDULERS = [
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
]


@pytest.mark.parametrize("name", SCHEDULERS)
def test_each_scheduler_drives_the_logged_learning_rate(h, tmp_path, name):
    trainer, _ = _train(
        h,
        tmp_path,
        max_steps=8,
        logging_steps=1,
        lr_scheduler_type=name,
        warmup_steps=2,
        learning_rate=0.1,
    )
    logged = [e["learning_rate"] for e in trainer.state.log_history if "learning_rate" in e]
    reference_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    reference = get_scheduler(name, reference_opt, num_warmup_steps=2, num_training_steps=8)
    expected = []
    for _ in range(8):
        reference_opt.step()
        reference.step()
        expected.append(reference.get_last_lr()[0])
    assert logged == pytest.approx(expected, abs=1e-12)


def test_linear_warmup_matches_the_formula(h, tmp_path):
    trainer, _ = _train(
        h,
        tmp_path,
        max_steps=10,
        logging_steps=1,
        lr_scheduler_type="linear",
        warmup_steps=4,
        learning_rate=0.1,
    )
    logged = {e["step"]: e["learning_rate"] for e in trainer.state.log_history if "learning_rate" in e}
    # the rate logged at step s is the one the next step will use (s scheduler steps done)
    for s in range(1, 11):
        expected = 0.1 * s / 4 if s < 4 else 0.1 * (10 - s) / (10 - 4)
        assert logged[s] == pytest.approx(expected, abs=1e-12), s


def test_warmup_ratio(h, tmp_path):
    trainer, _ = _train(h, tmp_path, max_steps=10, logging_steps=1, warmup_ratio=0.5, learning_rate=0.1)
    logged = {e["step"]: e["learning_rate"] for e in trainer.state.log_history if "learning_rate" in e}
    assert logged[1] == pytest.approx(0.1 * 1 / 5)
    assert logged[5] == pytest.approx(0.1)


def test_reduce_lr_on_plateau_runs_with_evaluation(h, tmp_path):
    model = h.seeded(h.Regressor)
    args = h.make_args(
        tmp_path,
        max_steps=6,
        lr_scheduler_type="reduce_lr_on_plateau",
        evaluation_strategy="steps",
        eval_steps=2,
        learning_rate=0.05,
    )
    trainer = Trainer(
        model, args, train_dataset=h.regression_data(24), eval_dataset=h.regression_data(8, seed=1)
    )
    assert trainer.train().global_step == 6
    assert isinstance(trainer.lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert trainer.lr_scheduler.last_epoch == 3  # stepped once per evaluation


# ----------------------------------------------------------------------------- optimizers


@pytest.mark.parametrize(
    ("optim", "optim_args", "cls_name"),
    [
        ("adamw_torch", None, "AdamW"),
        ("adamw_hf", None, "AdamW"),
        ("adafactor", None, "Adafactor"),
        ("sgd", "momentum=0.9,nesterov=True", "SGD"),
        ("rmsprop", None, "RMSprop"),
        ("adagrad", None, "Adagrad"),
    ],
)
def test_optimizer_names_construct_and_train(h, tmp_path, optim, optim_args, cls_name):
    model = h.seeded(h.Regressor)
    before = h.weights(model)
    trainer, out = _train(h, tmp_path, model=model, max_steps=2, optim=optim, optim_args=optim_args)
    assert type(trainer.optimizer).__name__ == cls_name
    assert trainer.optimizer.param_groups[0]["initial_lr"] == pytest.approx(0.05)
    if optim == "sgd":
        assert trainer.optimizer.param_groups[0]["momentum"] == 0.9
        assert trainer.optimizer.param_groups[0]["nesterov"] is True
    if optim == "adamw_hf":
        assert type(trainer.optimizer).__module__.startswith("toolkit")
    assert h.weights_differ(before, h.weights(model))


class NormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.out = nn.Linear(4, 1)

    def forward(self, x, labels=None):
        y = self.out(self.norm(self.lin(x))).squeeze(-1)
        return {"loss": nn.functional.mse_loss(y, labels), "logits": y}


def test_weight_decay_skips_biases_and_layer_norm(h, tmp_path):
    model = NormNet()
    trainer, _ = _train(h, tmp_path, model=model, max_steps=1, weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in trainer.optimizer.param_groups}
    assert groups == {
        0.1: {"lin.weight", "out.weight"},
        0.0: {"lin.bias", "norm.weight", "norm.bias", "out.bias"},
    }


def test_max_grad_norm_limits_the_update(h, tmp_path):
    data = [{"x": item["x"], "labels": item["labels"] * 1e6} for item in h.regression_data(8)]

    def step_size(max_grad_norm):
        model = h.seeded(h.Regressor)
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        _train(
            h,
            tmp_path / str(max_grad_norm),
            data=data,
            model=model,
            max_steps=1,
            optim="sgd",
            learning_rate=1.0,
            lr_scheduler_type="constant",
            max_grad_norm=max_grad_norm,
            per_device_train_batch_size=8,
        )
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        return float((after - before).norm())

    assert step_size(0.5) <= 1.0 * 0.5 + 1e-5
    assert step_size(0.5) == pytest.approx(0.5, rel=1e-4)  # the gradient was far larger: clipped to the limit
    assert step_size(0.0) > 1e3  # without clipping the huge gradient moves the weights a lot


def test_include_tokens_per_second_counts_input_ids(h, tmp_path):
    from toolkit import Trainer

    args = h.make_args(tmp_path, max_steps=3, per_device_train_batch_size=4, include_tokens_per_second=True)
    out = Trainer(h.seeded(h.TokenModel), args, train_dataset=h.token_data(12)).train()
    runtime = out.metrics["train_runtime"]
    tokens = 3 * 4 * h.SEQ_LEN
    assert out.metrics["train_tokens_per_second"] == pytest.approx(tokens / runtime, rel=0.05)
    plain = Trainer(h.seeded(h.TokenModel), h.make_args(tmp_path / "b", max_steps=3), train_dataset=h.token_data(12))
    assert "train_tokens_per_second" not in plain.train().metrics
