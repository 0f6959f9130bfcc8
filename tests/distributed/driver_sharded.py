"""Run by `test_sharded.py`: FSDP sharded (DCP) checkpoints across world sizes,
``main_process_first`` before any Trainer, and the preemption stop agreed across ranks.

Usage:
- ``python driver_sharded.py save1 OUT``: one FSDP process trains with sharded
  checkpoints (``OUT/one/checkpoint-3`` is then resumed by 2 processes).
- ``torchrun --nproc_per_node 2 driver_sharded.py multi OUT CHECKPOINT_OF_ONE``.
- ``python driver_sharded.py resume1 OUT CHECKPOINT_OF_TWO``: one FSDP process resumes
  the 2-process checkpoint.

Rank 0 prints one line ``@@RESULT@@ <json>``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import ddp_toys as toys
import torch.distributed as dist

from toolkit import Trainer, TrainerCallback, TrainingArguments

MODE, OUT = sys.argv[1], sys.argv[2]
RANK = int(os.environ.get("RANK", "0"))
SHARDED = {"fsdp": "full_shard", "fsdp_config": {"state_dict_type": "SHARDED_STATE_DICT"}}


def trainer_for(name: str, world: int, **kw) -> Trainer:
    values = {
        **toys.COMMON,
        **SHARDED,
        "per_device_train_batch_size": 6 // world,
        "max_steps": 6,
        "learning_rate": 0.01,
        "logging_steps": 3,
        "save_strategy": "steps",
        "save_steps": 3,
        **kw,
    }
    return Trainer(
        toys.seeded(toys.Regression),
        TrainingArguments(os.path.join(OUT, name), **values),
        train_dataset=toys.regression_data(),
    )


def full_weights(trainer: Trainer) -> dict:
    state = trainer.strategy.model_state_dict(trainer.model_wrapped)  # a collective; full on rank 0
    return {k: v.detach().double().reshape(-1).tolist() for k, v in state.items()}


class SignalRankOne(TrainerCallback):
    """SIGTERM to this process at ``step``, on rank 1 only."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if RANK == 1 and state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def multi(checkpoint_of_one: str) -> dict:
    result: dict = {}
    # 1. main_process_first before any process group or Trainer exists
    args = TrainingArguments(os.path.join(OUT, "mpf"), **toys.COMMON)
    group_before = dist.is_initialized()
    marker = os.path.join(OUT, "main_done")
    with args.main_process_first(desc="marker"):
        saw_marker = os.path.exists(marker)
        if RANK == 0:
            time.sleep(1.0)
            with open(marker, "w") as f:
                f.write("done")
    mpf = {"group_before": group_before, "group_after": dist.is_initialized(), "saw_marker": saw_marker}

    # 2. a checkpoint of one process resumed by two (1 -> 2)
    from_one = trainer_for("from_one", 2, save_strategy="no")
    from_one.train(resume_from_checkpoint=checkpoint_of_one)
    result["from_one_weights"] = full_weights(from_one)
    result["reuses_group"] = not from_one.strategy._owns_group  # the group main_process_first started

    # 3. sharded checkpoints at two processes, exact resume at two
    run = trainer_for("two", 2)
    run.train()
    run.save_model()  # gathered: model.safetensors
    result["two_weights"] = full_weights(run)
    result["ckpt_files"] = sorted(os.listdir(os.path.join(OUT, "two", "checkpoint-3")))
    result["model_shards"] = sorted(
        os.listdir(os.path.join(OUT, "two", "checkpoint-3", "pytorch_model_fsdp_0"))
    )
    result["optim_shards"] = sorted(os.listdir(os.path.join(OUT, "two", "checkpoint-3", "optimizer_0")))
    result["saved_model_files"] = sorted(os.listdir(os.path.join(OUT, "two")))
    resumed = trainer_for("two_resumed", 2, save_strategy="no")
    resumed.train(resume_from_checkpoint=os.path.join(OUT, "two", "checkpoint-3"))
    result["resumed_weights"] = full_weights(resumed)

    # 4. preemption: only rank 1 gets SIGTERM (after step 3); both agree at step 4, save, exit 143
    pre = trainer_for(
        "preempt", 2, max_steps=40, save_strategy="no", logging_steps=100, preemption_checkpoint=True
    )
    pre.checkpointer.preemption_sync_steps = 4
    pre.add_callback(SignalRankOne(3))
    start = time.perf_counter()
    try:
        pre.train()
        code = 0
    except SystemExit as exc:
        code = exc.code
    preempt = {
        "code": code,
        "step": pre.state.global_step,
        "seconds_per_step": (time.perf_counter() - start) / max(pre.state.global_step, 1),
    }
    result["preempt_files"] = sorted(os.listdir(os.path.join(OUT, "preempt")))

    # 5. what one agreement costs (an all-reduce of one number, with its host sync)
    from toolkit.run_checkpoint import PreemptionAgreement

    agreement = PreemptionAgreement(pre.strategy, pre._loop, pre.checkpointer, every=1)
    agreement.agree()
    start = time.perf_counter()
    for _ in range(200):
        agreement.agree()
    preempt["agree_us"] = (time.perf_counter() - start) / 200 * 1e6
    result["per_rank"] = pre.strategy.all_gather_object({"mpf": mpf, "preempt": preempt})
    return result


def save1() -> dict:
    run = trainer_for("one", 1)
    run.train()
    return {
        "world_size": run.strategy.world_size,
        "weights": full_weights(run),
        "ckpt_files": sorted(os.listdir(os.path.join(OUT, "one", "checkpoint-3"))),
    }


def resume1(checkpoint_of_two: str) -> dict:
    run = trainer_for("one_resumed", 1, save_strategy="no")
    run.train(resume_from_checkpoint=checkpoint_of_two)
    return {"world_size": run.strategy.world_size, "weights": full_weights(run)}


def main() -> None:
    if MODE == "multi":
        result = multi(sys.argv[3])
        dist.barrier()
    elif MODE == "save1":
        result = save1()
    else:
        result = resume1(sys.argv[3])
    if RANK == 0:
        print("@@RESULT@@ " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
