"""Run by `test_deepspeed.py` under ``torchrun --nproc_per_node 2``: the Trainer with
``deepspeed=<config>`` (ZeRO 2 and 3, "auto" values): train, checkpoint, resume; bf16 with
CPU offload; fp16 at ZeRO 2 (with and without an overflowing step); ``load_best_model_at_end``
under ZeRO-3.

Usage: ``driver_deepspeed_trainer.py OUT_DIR``. Rank 0 prints one line ``@@RESULT@@ <json>``.
"""

from __future__ import annotations

import json
import os
import sys

import ddp_toys as toys
import torch
from safetensors.torch import load_file

from toolkit import Trainer, TrainingArguments

OUT = sys.argv[1]

CONFIG = {
    "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto", "steps_per_print": 10**9,
}


def args_for(name: str, stage: int, **kw) -> TrainingArguments:
    config = {**CONFIG, "zero_optimization": {"stage": stage}}
    common = {k: v for k, v in toys.COMMON.items() if k != "ddp_find_unused_parameters"}
    return TrainingArguments(
        os.path.join(OUT, name), deepspeed=config, per_device_train_batch_size=3, gradient_accumulation_steps=2,
        learning_rate=0.1, optim="sgd", lr_scheduler_type="linear", num_train_epochs=2, max_grad_norm=1.0,
        save_strategy="steps", save_steps=2, logging_steps=1, **{**common, **kw},
    )


class PoisonedRegression(toys.Regression):
    """`Regression` whose first training forward returns an infinite loss (an fp16 overflow
    on every rank in the first step) and which records its weight at each training forward."""

    def __init__(self) -> None:
        super().__init__()
        self.calls, self.seen = 0, []

    def forward(self, x, labels=None):
        out = super().forward(x, labels)
        if self.training and labels is not None:
            self.calls += 1
            self.seen.append(self.lin.weight.detach().float().reshape(-1).tolist())
            if self.calls == 1:
                out["loss"] = out["loss"] * float("inf")
        return out


def fp16_runs() -> dict:
    """ZeRO 2, fp16 from ``fp16=True`` through ``"enabled": "auto"``: a clean run and one whose
    first step overflows (DeepSpeed's dynamic loss scale; hysteresis 1 halves it at once)."""
    fp16 = {"enabled": "auto", "loss_scale": 0, "initial_scale_power": 8, "loss_scale_window": "auto",
            "hysteresis": 1, "min_loss_scale": "auto"}
    results = {}
    for name, cls in (("fp16", toys.Regression), ("fp16_overflow", PoisonedRegression)):
        torch.manual_seed(0)
        model = cls()
        config = {**CONFIG, "fp16": dict(fp16), "zero_optimization": {"stage": 2}}
        trainer = Trainer(model, TrainingArguments(
            os.path.join(OUT, name), deepspeed=config, fp16=True, per_device_train_batch_size=3,
            gradient_accumulation_steps=2, learning_rate=0.1, optim="sgd", lr_scheduler_type="linear",
            num_train_epochs=2, max_grad_norm=1.0, save_strategy="no", logging_steps=1,
            **{k: v for k, v in toys.COMMON.items() if k != "ddp_find_unused_parameters"}),
            train_dataset=toys.regression_data())
        trainer.train()
        engine = trainer.model_wrapped
        full = trainer.strategy.model_state_dict(engine)
        results[name] = {
            "dtype": str(trainer.strategy.dtype), "config_fp16": trainer.strategy.config["fp16"],
            "param_dtype": str(next(engine.module.parameters()).dtype),
            "weights": {k: v.reshape(-1).tolist() for k, v in full.items()},
            "losses": toys.logged_losses(trainer),
            "lrs": [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h],
            "global_step": trainer.state.global_step, "engine_global_steps": engine.global_steps,
            "skipped_steps": engine.skipped_steps, "loss_scale": trainer.strategy.loss_scale,
            "seen": getattr(model, "seen", None),
        }
    return results


def zero3_load_best() -> dict:
    """ZeRO-3 with ``load_best_model_at_end``: the best checkpoint is the first (the highest
    eval loss, ``greater_is_better=True``), so loading it changes the trained weights."""
    common = {k: v for k, v in toys.COMMON.items() if k != "ddp_find_unused_parameters"}
    out = os.path.join(OUT, "zero3_best")
    trainer = Trainer(toys.seeded(toys.Regression), TrainingArguments(
        out, deepspeed={**CONFIG, "zero_optimization": {"stage": 3}}, per_device_train_batch_size=3,
        gradient_accumulation_steps=2, learning_rate=0.1, optim="sgd", lr_scheduler_type="linear", num_train_epochs=2,
        max_grad_norm=1.0, evaluation_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
        logging_steps=2, load_best_model_at_end=True, metric_for_best_model="loss", greater_is_better=True,
        per_device_eval_batch_size=4, **common), train_dataset=toys.regression_data(),
        eval_dataset=toys.regression_data(10))
    trainer.train()
    engine = trainer.model_wrapped
    full = trainer.strategy.model_state_dict(engine)
    optimizer = engine.optimizer
    masters_fresh = all(torch.equal(a.float(), b.float()) for a, b in zip(
        optimizer.fp16_partitioned_groups_flat, optimizer.fp32_partitioned_groups_flat))
    return {
        "stage": engine.zero_optimization_stage(), "best": trainer.state.best_model_checkpoint,
        "weights": {k: v.reshape(-1).tolist() for k, v in full.items()},
        "checkpoints": {name: {k: v.reshape(-1).tolist() for k, v in
                               load_file(os.path.join(out, name, "model.safetensors")).items()}
                        for name in ("checkpoint-2", "checkpoint-4")},
        "eval_losses": [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h],
        "eval_after": trainer.evaluate()["eval_loss"], "masters_fresh": masters_fresh,
    }


def main() -> None:
    results = {}
    for stage in (2, 3):
        trainer = Trainer(toys.seeded(toys.Regression), args_for(f"zero{stage}", stage),
                          train_dataset=toys.regression_data())
        trainer.train()
        full = trainer.strategy.model_state_dict(trainer.model_wrapped)
        resumed = Trainer(toys.seeded(toys.Regression), args_for(f"zero{stage}_resumed", stage),
                          train_dataset=toys.regression_data())
        resumed.train(resume_from_checkpoint=os.path.join(OUT, f"zero{stage}", "checkpoint-2"))
        full_resumed = resumed.strategy.model_state_dict(resumed.model_wrapped)
        results[f"zero{stage}"] = {
            "strategy": type(trainer.strategy).__name__, "stage": trainer.model_wrapped.zero_optimization_stage(),
            "weights": {k: v.reshape(-1).tolist() for k, v in full.items()},
            "resumed": {k: v.reshape(-1).tolist() for k, v in full_resumed.items()},
            "global_step": trainer.state.global_step, "losses": [h["loss"] for h in trainer.state.log_history
                                                                 if "loss" in h],
            "lrs": [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h],
            "resumed_global_step": resumed.state.global_step,
            "resumed_losses": toys.logged_losses(resumed),
            "checkpoint_files": sorted(os.listdir(os.path.join(OUT, f"zero{stage}", "checkpoint-2"))),
        }
        trainer.strategy.barrier()

    # bf16 ("auto" from bf16=True), CPU optimizer offload, DeepSpeed's optimizer from the config
    # (torch's AdamW inside: no op compile) driven by the Trainer's linear scheduler
    config = {**CONFIG, "bf16": {"enabled": "auto"},
              "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}},
              "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto",
                                                        "weight_decay": "auto", "torch_adam": True}}}
    common = {k: v for k, v in toys.COMMON.items() if k != "ddp_find_unused_parameters"}
    trainer = Trainer(toys.seeded(toys.Regression), TrainingArguments(
        os.path.join(OUT, "offload"), deepspeed=config, bf16=True, per_device_train_batch_size=3,
        gradient_accumulation_steps=2, learning_rate=0.1, lr_scheduler_type="linear", num_train_epochs=2,
        save_strategy="no", logging_steps=1, **common), train_dataset=toys.regression_data())
    trainer.train()
    results["offload"] = {
        "dtype": str(trainer.strategy.dtype), "config": trainer.strategy.config,
        "losses": toys.logged_losses(trainer),
        "lrs": [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h],
        "scheduled": type(trainer.lr_scheduler.optimizer).__name__,
    }
    results.update(fp16_runs())
    results["zero3_best"] = zero3_load_best()
    if trainer.strategy.is_global_zero:
        print("@@RESULT@@ " + json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
