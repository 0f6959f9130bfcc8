"""Run by `test_fsdp.py` under ``torchrun --nproc_per_node 2``: Trainer checks under FSDP2.

Usage: ``torchrun --nproc_per_node 2 driver_fsdp.py OUT_DIR``. Rank 0 prints one line
``@@RESULT@@ <json>``.
"""

from __future__ import annotations

import json
import math
import os
import sys

import ddp_toys as toys
import torch

from toolkit import Trainer, TrainingArguments

OUT = sys.argv[1]
RANK = int(os.environ["RANK"])


def args_for(name: str, **kw) -> TrainingArguments:
    return TrainingArguments(os.path.join(OUT, name), **{**toys.COMMON, **kw})


def full_weights(trainer: Trainer) -> dict:
    state = trainer.strategy.model_state_dict(trainer.model_wrapped)  # a collective; full on rank 0
    return {k: v.detach().double().reshape(-1).tolist() for k, v in state.items()}


def main() -> None:
    result: dict = {}
    # 1. regression, root only, gradient clipping on (max_grad_norm=1.0 by default)
    trainer = Trainer(
        toys.seeded(toys.Regression),
        args_for("reg", fsdp="full_shard", per_device_train_batch_size=3, num_train_epochs=2, optim="sgd",
                 learning_rate=0.1, logging_steps=2, save_strategy="no"),
        train_dataset=toys.regression_data(),
    )
    trainer.train()
    result["strategy"] = type(trainer.strategy).__name__
    result["world_size"] = trainer.strategy.world_size
    result["dtensor"] = type(next(trainer.model.parameters())).__name__
    result["reg_weights"] = full_weights(trainer)
    result["reg_losses"] = toys.logged_losses(trainer)
    # the clipped norm is the full global norm: rank r takes samples 3r..3r+2 of the first 6
    data = toys.regression_data()[3 * RANK: 3 * RANK + 3]
    batch = {k: torch.stack([d[k] for d in data]) for k in data[0]}
    trainer.model_wrapped(**batch)["loss"].backward()
    norm = trainer.strategy.clip_grad_norm(trainer.model_wrapped, trainer.optimizer, 1e9)
    result["grad_norm"] = [type(norm).__name__, float(norm)]
    trainer.optimizer.zero_grad()

    # 2. tokens, layer-class auto wrap + accumulation (set_requires_gradient_sync) + activation checkpointing
    trainer = Trainer(
        toys.seeded(toys.TokenModel),
        args_for("tok", fsdp="shard_grad_op auto_wrap", per_device_train_batch_size=2, gradient_accumulation_steps=2,
                 num_train_epochs=2, optim="sgd", learning_rate=0.5, logging_steps=1, save_strategy="no",
                 fsdp_config={"transformer_layer_cls_to_wrap": ["Linear", "Embedding"],
                              "activation_checkpointing": True, "forward_prefetch": True,
                              "limit_all_gathers": True, "sync_module_states": True}),
        train_dataset=toys.padded_token_data(),
    )
    trainer.train()
    result["tok_weights"] = full_weights(trainer)
    result["tok_losses"] = toys.logged_losses(trainer)

    # 3. checkpoints every 3 steps (adamw), saved model; checkpoint-3 is resumed by the test at world size 1
    full = Trainer(
        toys.seeded(toys.Regression),
        args_for("ckpt", fsdp="full_shard", per_device_train_batch_size=3, max_steps=6, learning_rate=0.01,
                 logging_steps=3, save_strategy="steps", save_steps=3),
        train_dataset=toys.regression_data(),
    )
    full.train()
    full.save_model()
    result["ckpt_weights"] = full_weights(full)
    resumed = Trainer(
        toys.seeded(toys.Regression),
        args_for("resumed", fsdp="full_shard", per_device_train_batch_size=3, max_steps=6, learning_rate=0.01,
                 logging_steps=3, save_strategy="no"),
        train_dataset=toys.regression_data(),
    )
    resumed.train(resume_from_checkpoint=os.path.join(OUT, "ckpt", "checkpoint-3"))
    result["resumed_weights"] = full_weights(resumed)
    result["ckpt_files"] = sorted(os.listdir(os.path.join(OUT, "ckpt", "checkpoint-3")))

    # 4. bf16 mixed precision (MixedPrecisionPolicy) and CPU offload
    for name, kw in (("bf16", {"bf16": True}), ("offload", {"fsdp": "full_shard offload"})):
        trainer = Trainer(
            toys.seeded(toys.TokenModel),
            args_for(name, **{"fsdp": "full_shard", **kw}, per_device_train_batch_size=2, num_train_epochs=1,
                     optim="sgd", learning_rate=0.5, logging_steps=1, save_strategy="no"),
            train_dataset=toys.padded_token_data(),
        )
        out = trainer.train()
        result[f"{name}_loss_finite"] = math.isfinite(out.training_loss)
        result[f"{name}_steps"] = trainer.state.global_step
    trainer.strategy.barrier()
    if RANK == 0:
        print("@@RESULT@@ " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
