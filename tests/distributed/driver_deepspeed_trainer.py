"""Run by `test_deepspeed.py` under ``torchrun --nproc_per_node 2``: the Trainer with
``deepspeed=<config>`` (ZeRO 2 and 3, "auto" values): train, checkpoint, resume.

Usage: ``driver_deepspeed_trainer.py OUT_DIR``. Rank 0 prints one line ``@@RESULT@@ <json>``.
"""

from __future__ import annotations

import json
import os
import sys

import ddp_toys as toys

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
            "resumed_losses": [h["loss"] for h in resumed.state.log_history if "loss" in h],
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
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "lrs": [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h],
        "scheduled": type(trainer.lr_scheduler.optimizer).__name__,
    }
    if trainer.strategy.is_global_zero:
        print("@@RESULT@@ " + json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
