"""Run by `test_ddp.py` under ``torchrun --nproc_per_node 2``: Trainer checks under DDP.

Usage: ``torchrun --nproc_per_node 2 driver_trainer.py OUT_DIR``. Rank 0 prints one line
``@@RESULT@@ <json>``; every other figure is gathered to it first.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

import ddp_toys as toys
import numpy as np

from toolkit import Trainer, TrainingArguments

OUT = sys.argv[1]
RANK = int(os.environ["RANK"])
WRITES: list[str] = []


def audit(event: str, args: tuple) -> None:
    """Record every write-like file operation of this process under OUT."""
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        )
        if writing and isinstance(path, str) and path.startswith(OUT):
            WRITES.append(f"open {path}")
    elif event in ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree"):
        path = args[0]
        if isinstance(path, str) and path.startswith(OUT):
            WRITES.append(f"{event} {path}")


def args_for(name: str, **kw) -> TrainingArguments:
    return TrainingArguments(os.path.join(OUT, name), **{**toys.COMMON, **kw})


def main() -> None:
    result: dict = {}
    if RANK != 0:
        sys.addaudithook(audit)
        with open(os.path.join(OUT, f"probe-rank{RANK}.txt"), "w") as f:  # proves the hook sees writes
            f.write("probe")

    # 1. plain regression, no accumulation: 2 x 3 samples == 1 x 6 samples
    trainer = Trainer(
        toys.seeded(toys.Regression),
        args_for("reg", per_device_train_batch_size=3, num_train_epochs=2, optim="sgd", learning_rate=0.1,
                 logging_steps=2, save_strategy="no", log_level_replica="error"),
        train_dataset=toys.regression_data(),
    )
    strategy = trainer.strategy
    result["strategy"] = type(strategy).__name__
    result["world_size"] = strategy.world_size
    result["zero"] = strategy.all_gather_object([trainer.is_world_process_zero(), trainer.is_local_process_zero()])
    result["replica_log_level"] = strategy.all_gather_object(logging.getLogger("toolkit").getEffectiveLevel())
    trainer.train()
    result["reg_weights"] = toys.weights(trainer.model)
    result["reg_losses"] = toys.logged_losses(trainer)
    result["wrapped"] = type(trainer.model_wrapped).__name__

    # main_process_first: rank 0 finishes its block before the others enter theirs
    marker = os.path.join(OUT, "first.txt")
    with trainer.args.main_process_first(desc="marker"):
        if RANK == 0:
            time.sleep(0.5)
            with open(marker, "w") as f:
                f.write("done")
        seen = os.path.exists(marker)
    result["main_first_seen"] = strategy.all_gather_object(seen)

    # 2. padded token labels with gradient accumulation 2: items summed across ranks
    trainer = Trainer(
        toys.seeded(toys.TokenModel),
        args_for("tok", per_device_train_batch_size=2, gradient_accumulation_steps=2, num_train_epochs=2,
                 optim="sgd", learning_rate=0.5, logging_steps=1, save_strategy="no"),
        train_dataset=toys.padded_token_data(),
    )
    trainer.train()
    result["tok_weights"] = toys.weights(trainer.model)
    result["tok_losses"] = toys.logged_losses(trainer)

    # 3. evaluation / prediction over 13 samples (7 + 6 per rank)
    cls_args = args_for("cls", per_device_eval_batch_size=4, save_strategy="no")
    trainer = Trainer(toys.seeded(toys.Classifier), cls_args, compute_metrics=toys.class_metrics)
    data = toys.classification_data()
    metrics = trainer.evaluate(data)
    result["eval_metrics"] = strategy.all_gather_object({k: v for k, v in metrics.items() if "runtime" not in k
                                                         and "per_second" not in k})
    trainer.args.per_device_eval_batch_size = 3  # 3 batches on rank 0, 2 on rank 1
    pred = trainer.predict(data)
    result["cls_predictions"] = pred.predictions.tolist()
    result["cls_labels"] = pred.label_ids.tolist()
    result["cls_test_metrics"] = {k: v for k, v in pred.metrics.items() if k in ("test_loss", "test_accuracy",
                                                                                 "test_rows")}
    tok_trainer = Trainer(
        toys.seeded(toys.TokenModel),
        args_for("tokpred", per_device_eval_batch_size=2, include_inputs_for_metrics=True, save_strategy="no"),
        data_collator=toys.pad_collate, compute_metrics=toys.token_metrics,
    )
    tok_pred = tok_trainer.predict(toys.ragged_token_data())
    result["tok_pred_predictions"] = np.asarray(tok_pred.predictions).tolist()
    result["tok_pred_labels"] = tok_pred.label_ids.tolist()
    result["tok_pred_metrics"] = strategy.all_gather_object(
        {k: v for k, v in tok_pred.metrics.items() if k in ("test_loss", "test_token_accuracy", "test_rows",
                                                            "test_inputs_rows")}
    )

    # 4. checkpoints: saved every 3 steps, resumed from checkpoint-3 by a new trainer
    def ckpt_trainer(name: str, **kw) -> Trainer:
        return Trainer(
            toys.seeded(toys.Regression),
            args_for(name, per_device_train_batch_size=3, max_steps=6, learning_rate=0.01, logging_steps=3, **kw),
            train_dataset=toys.regression_data(),
        )

    full = ckpt_trainer("ckpt", save_strategy="steps", save_steps=3)
    full.train()
    full.save_model()
    full.save_state()
    full.save_metrics("train", {"x": 1.0})
    full.log_metrics("train", {"x": 1.0})
    result["ckpt_weights"] = toys.weights(full.model)
    resumed = ckpt_trainer("resumed", save_strategy="no")
    resumed.train(resume_from_checkpoint=os.path.join(OUT, "ckpt", "checkpoint-3"))
    result["resumed_weights"] = toys.weights(resumed.model)
    result["ckpt_files"] = {
        name: sorted(os.listdir(os.path.join(OUT, "ckpt", name))) for name in os.listdir(os.path.join(OUT, "ckpt"))
        if name.startswith("checkpoint-")
    }
    result["writes_by_other_ranks"] = strategy.all_gather_object(WRITES)[1:]
    strategy.barrier()
    if RANK == 0:
        print("@@RESULT@@ " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
