"""Run by `test_fsdp.py` as a plain ``python`` process (no launcher): one-process FSDP
resumes a checkpoint written by 2 FSDP processes.

Usage: ``python driver_fsdp_single.py OUT_DIR CHECKPOINT``. Prints ``@@RESULT@@ <json>``.
"""

from __future__ import annotations

import json
import sys

import ddp_toys as toys

from toolkit import Trainer, TrainingArguments


def main() -> None:
    out, checkpoint = sys.argv[1], sys.argv[2]
    trainer = Trainer(
        toys.seeded(toys.Regression),
        TrainingArguments(out, **{**toys.COMMON, "fsdp": "full_shard", "per_device_train_batch_size": 6,
                                  "max_steps": 6, "learning_rate": 0.01, "logging_steps": 3, "save_strategy": "no"}),
        train_dataset=toys.regression_data(),
    )
    trainer.train(resume_from_checkpoint=checkpoint)
    state = trainer.strategy.model_state_dict(trainer.model_wrapped)
    result = {
        "strategy": type(trainer.strategy).__name__, "world_size": trainer.strategy.world_size,
        "weights": {k: v.detach().double().reshape(-1).tolist() for k, v in state.items()},
    }
    trainer.strategy.teardown()
    print("@@RESULT@@ " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
