"""Precision and execution switches through the Trainer, on CPU: fp16 (grad scaler, skipped
steps, scaler.pt), bf16, fp16/bf16_full_eval, tf32, gradient_checkpointing, torch_compile,
jit_mode_eval."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from toolkit import Trainer, TrainerCallback
from toolkit.precision import MixedPrecision


def _small_data(n: int = 16) -> list[dict[str, torch.Tensor]]:
    # small inputs and targets: the fp16 activations' gradients stay finite at the default
    # scale of 2**16, so any skipped step in these tests is one the test caused
    g = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(n, 4, generator=g)
    y = 0.1 * torch.randn(n, generator=g)
    return [{"x": x[i], "labels": y[i]} for i in range(n)]


class Recorder(TrainerCallback):
    """Per optimizer step: scale, scheduler steps taken, learning rate, weights."""

    def __init__(self, precision) -> None:
        self.precision = precision
        self.rows: list[dict] = []

    def on_step_end(self, args, state, control, model=None, lr_scheduler=None, **kwargs):
        self.rows.append({
            "step": state.global_step,
            "scale": self.precision.scaler.get_scale(),
            "sched": lr_scheduler.last_epoch,
            "weight": model.lin.weight.detach().clone(),
        })


def test_fp16_skipped_step_keeps_weights_and_schedule_and_resumes_scale(h, tmp_path) -> None:
    model = h.seeded(h.Regressor)
    args = h.make_args(tmp_path, fp16=True, max_steps=4, save_strategy="steps", save_steps=1)
    trainer = Trainer(model, args, train_dataset=_small_data())
    assert isinstance(trainer.precision, MixedPrecision) and trainer.precision.name == "fp16-mixed"
    recorder = Recorder(trainer.precision)
    trainer.add_callback(recorder)
    backward_calls = []

    def inject_inf_at_second_step(grad):
        backward_calls.append(1)
        return torch.full_like(grad, float("inf")) if len(backward_calls) == 2 else grad

    model.lin.weight.register_hook(inject_inf_at_second_step)
    start_scale = trainer.precision.scaler.get_scale()
    trainer.train()

    rows = recorder.rows
    assert [r["scale"] for r in rows] == [start_scale, start_scale / 2, start_scale / 2, start_scale / 2]
    assert [r["sched"] for r in rows] == [1, 1, 2, 3]  # the skipped step did not advance the scheduler
    assert torch.equal(rows[1]["weight"], rows[0]["weight"])
    assert not torch.equal(rows[2]["weight"], rows[1]["weight"])
    assert model.lin.weight.dtype == torch.float32

    saved = torch.load(tmp_path / "checkpoint-2" / "scaler.pt", weights_only=True)
    assert saved["scale"] == start_scale / 2

    # resume from checkpoint-2 (after the skip): the scale is restored and the run ends where
    # the uninterrupted one did
    args = h.make_args(tmp_path, fp16=True, max_steps=4, save_strategy="steps", save_steps=1,
                       overwrite_output_dir=True)
    resumed = Trainer(h.seeded(h.Regressor, seed=1), args, train_dataset=_small_data())
    assert resumed.precision.scaler.get_scale() == start_scale
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert resumed.precision.scaler.get_scale() == start_scale / 2
    torch.testing.assert_close(resumed.model.lin.weight, model.lin.weight, atol=1e-6, rtol=0)


class DtypeProbe(nn.Module):
    """A regressor that records the dtype of its activations and of its weight."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.seen: list[tuple[torch.dtype, torch.dtype, bool]] = []

    def forward(self, x, labels=None):
        out = self.lin(x).squeeze(-1)
        self.seen.append((out.dtype, self.lin.weight.dtype, self.training))
        if labels is None:
            return {"logits": out}
        return {"loss": nn.functional.mse_loss(out.float(), labels.float()), "logits": out}


def test_bf16_gives_bf16_activations_with_fp32_master_weights(h, tmp_path) -> None:
    model = h.seeded(DtypeProbe)
    before = model.lin.weight.detach().clone()
    trainer = Trainer(model, h.make_args(tmp_path, bf16=True, max_steps=3), train_dataset=h.regression_data(16))
    trainer.train()
    assert trainer.precision.name == "bf16-mixed" and trainer.precision.scaler is None
    assert set(model.seen) == {(torch.bfloat16, torch.float32, True)}
    assert model.lin.weight.dtype == torch.float32 and not torch.equal(before, model.lin.weight)
    assert all(s["exp_avg"].dtype == torch.float32 for s in trainer.optimizer.state.values())


@pytest.mark.parametrize(("flag", "dtype"), [("bf16_full_eval", torch.bfloat16), ("fp16_full_eval", torch.float16)])
def test_full_eval_casts_a_copy_and_later_training_is_unaffected(h, tmp_path, flag, dtype) -> None:
    def run(full_eval: bool):
        model = h.seeded(DtypeProbe)
        args = h.make_args(tmp_path / str(full_eval), max_steps=3, **{flag: full_eval})
        trainer = Trainer(model, args, train_dataset=h.regression_data(16), eval_dataset=h.regression_data(8))
        trainer.train()
        trained = h.weights(model)
        model.seen.clear()
        metrics = trainer.evaluate()
        predictions = trainer.predict(h.regression_data(8)).predictions
        eval_seen = set(model.seen)
        h.assert_weights_close(h.weights(model), trained, atol=0)  # bit for bit
        trainer.train()  # a second run from the same weights
        return h.weights(model), metrics, predictions, eval_seen

    half_weights, half_metrics, half_preds, half_seen = run(True)
    fp32_weights, fp32_metrics, _, fp32_seen = run(False)
    # the copy evaluated, not the model: the probe of the training model saw nothing
    assert half_seen == set() and fp32_seen == {(torch.float32, torch.float32, False)}
    assert half_preds.dtype == (np.float32 if dtype is torch.bfloat16 else np.float16)  # numpy has no bf16
    assert half_metrics["eval_loss"] == pytest.approx(fp32_metrics["eval_loss"], rel=2e-2)
    h.assert_weights_close(half_weights, fp32_weights, atol=0)


def test_full_eval_dtype_reaches_the_forward(h, tmp_path) -> None:
    model = h.seeded(DtypeProbe)
    trainer = Trainer(model, h.make_args(tmp_path, bf16_full_eval=True), eval_dataset=h.regression_data(8))
    seen: list = []
    original = DtypeProbe.forward

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        seen.append(self.seen[-1])
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DtypeProbe, "forward", spy)
        trainer.evaluate()
    assert set(seen) == {(torch.bfloat16, torch.bfloat16, False)}
    assert model.lin.weight.dtype == torch.float32


def test_tf32_on_cpu_changes_nothing(h, tmp_path) -> None:
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    for value in (True, False):
        Trainer(h.seeded(h.Regressor), h.make_args(tmp_path, tf32=value))
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


class Checkpointed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 8)
        self.out = nn.Linear(8, 1)
        self.use_checkpointing = False
        self.recomputed = 0

    def gradient_checkpointing_enable(self) -> None:
        self.use_checkpointing = True

    def _block(self, x):
        self.recomputed += 1
        return torch.tanh(self.lin(x))

    def forward(self, x, labels=None):
        hidden = checkpoint(self._block, x, use_reentrant=False) if self.use_checkpointing else self._block(x)
        out = self.out(hidden).squeeze(-1)
        return {"loss": nn.functional.mse_loss(out, labels), "logits": out}


def test_gradient_checkpointing_is_enabled_and_trains_identically(h, tmp_path) -> None:
    results = {}
    for flag in (False, True):
        model = h.seeded(Checkpointed)
        Trainer(model, h.make_args(tmp_path, max_steps=3, gradient_checkpointing=flag),
                train_dataset=h.regression_data(16)).train()
        results[flag] = (model.use_checkpointing, model.recomputed, h.weights(model))
    assert results[True][0] and not results[False][0]
    assert results[True][1] == 2 * results[False][1]  # each block ran again in backward
    h.assert_weights_close(results[True][2], results[False][2])


def test_gradient_checkpointing_on_a_plain_module_fails_before_training(h, tmp_path) -> None:
    model = h.seeded(h.Regressor)
    before = h.weights(model)
    trainer = Trainer(model, h.make_args(tmp_path, max_steps=2, gradient_checkpointing=True),
                      train_dataset=h.regression_data(8))
    with pytest.raises(ValueError, match="gradient_checkpointing=True.*Regressor"):
        trainer.train()
    h.assert_weights_close(h.weights(model), before, atol=0)


def test_torch_compile_trains_to_the_same_weights(h, tmp_path) -> None:
    results = {}
    for backend in (None, "eager"):
        model = h.seeded(h.Regressor)
        args = h.make_args(tmp_path / str(backend), max_steps=4, torch_compile_backend=backend, save_strategy="steps",
                           save_steps=4)
        assert args.torch_compile is (backend is not None)
        Trainer(model, args, train_dataset=h.regression_data(16)).train()
        results[backend] = (model, h.weights(model))
    compiled, _ = results["eager"]
    assert getattr(compiled, "_compiled_call_impl", None) is not None
    assert getattr(results[None][0], "_compiled_call_impl", None) is None
    h.assert_weights_close(results["eager"][1], results[None][1], atol=1e-6)
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "eager" / "checkpoint-4" / "model.safetensors"))
    assert set(saved) == {"lin.weight", "lin.bias"}  # no compile wrapper in the names


def test_torch_compile_bad_backend_names_the_argument(h, tmp_path) -> None:
    trainer = Trainer(h.seeded(h.Regressor), h.make_args(tmp_path, max_steps=1, torch_compile_backend="nope"),
                      train_dataset=h.regression_data(8))
    with pytest.raises(ValueError, match="torch_compile_backend='nope'"):
        trainer.train()


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_jit_mode_eval_predicts_like_eager(h, tmp_path) -> None:
    def run(jit: bool):
        model = h.seeded(h.Regressor)
        trainer = Trainer(model, h.make_args(tmp_path, jit_mode_eval=jit), eval_dataset=h.regression_data(10))
        out = trainer.predict(h.regression_data(10))  # 10 items: the last batch is smaller than the traced one
        return out, trainer.evaluate()

    (jit_out, jit_metrics), (eager_out, eager_metrics) = run(True), run(False)
    torch.testing.assert_close(torch.from_numpy(jit_out.predictions), torch.from_numpy(eager_out.predictions))
    assert jit_metrics["eval_loss"] == pytest.approx(eager_metrics["eval_loss"])
    assert "eval_jit_compilation_time" in jit_metrics and "test_jit_compilation_time" in jit_out.metrics
    assert "eval_jit_compilation_time" not in eager_metrics


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)

    def forward(self, x, labels=None):
        if torch.jit.is_tracing():
            raise RuntimeError("data-dependent control flow")
        out = self.lin(x).squeeze(-1)
        return {"loss": nn.functional.mse_loss(out, labels), "logits": out}


def test_jit_mode_eval_falls_back_with_a_warning(h, tmp_path, caplog) -> None:
    trainer = Trainer(h.seeded(Untraceable), h.make_args(tmp_path, jit_mode_eval=True),
                      eval_dataset=h.regression_data(8))
    with caplog.at_level(logging.WARNING, logger="toolkit"):
        metrics = trainer.evaluate()
    assert "eval_loss" in metrics
    assert "tracing the model failed" in caplog.text


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_on_cuda_uses_the_cuda_scaler(h, tmp_path) -> None:
    model = h.seeded(h.Regressor)
    args = h.make_args(tmp_path, use_cpu=False, fp16=True, max_steps=3)
    trainer = Trainer(model, args, train_dataset=_small_data())
    trainer.train()
    assert trainer.precision.device_type == "cuda" and trainer.precision.scaler is not None
    assert model.lin.weight.dtype == torch.float32 and model.lin.weight.is_cuda
