"""Run by `test_deepspeed.py` under ``torchrun --nproc_per_node 2`` (CPU, gloo):
`DeepSpeedStrategy` in a hand-written loop for ZeRO stages 2 and 3: train, save a
DeepSpeed checkpoint, resume it in a fresh engine, export the full weights.

Usage: ``driver_deepspeed.py OUT_DIR``. Rank 0 prints one line ``@@RESULT@@ <json>``.
"""

from __future__ import annotations

import json
import os
import sys

import ddp_toys as toys
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from toolkit.strategies.deepspeed import DeepSpeedStrategy

ACCUMULATION, MICRO, LR, MAX_NORM = 2, 3, 0.1, 1.0


def config(stage: int) -> dict:
    return {
        "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
        "zero_optimization": {"stage": stage, "reduce_bucket_size": "auto"},
        "steps_per_print": 10**9, "wall_clock_breakdown": False,
    }


def build(strategy: DeepSpeedStrategy):
    model = toys.seeded(toys.Regression)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))
    return strategy.setup(model, optimizer, lr_scheduler=scheduler)


def run_epoch(strategy, engine, loader, epoch: int) -> None:
    loader.sampler.set_epoch(epoch)
    for i, batch in enumerate(loader):
        last = (i + 1) % ACCUMULATION == 0
        ctx = strategy.no_backward_sync(engine) if not last else torch.enable_grad()
        with ctx:
            loss = engine(**strategy.batch_to_device(batch))["loss"] / ACCUMULATION
            strategy.backward(loss)
        if last:
            strategy.optimizer_step(None)


def flat(strategy, engine) -> list[float]:
    state = strategy.model_state_dict(engine)
    return torch.cat([state[k].reshape(-1) for k in sorted(state)]).tolist()


def main() -> None:
    out = sys.argv[1]
    results: dict = {}
    for stage in (2, 3):
        strategy = DeepSpeedStrategy(config(stage), "cpu", auto_values={
            "micro_batch_size": MICRO, "gradient_accumulation_steps": ACCUMULATION, "max_grad_norm": MAX_NORM,
        })
        strategy.setup_environment()
        engine, _ = build(strategy)
        loader = strategy.setup_dataloader(DataLoader(toys.regression_data(), batch_size=MICRO))
        ckpt = os.path.join(out, f"zero{stage}")
        run_epoch(strategy, engine, loader, 0)
        strategy.save_checkpoint(ckpt, client_state={"epoch": 1})
        after_one = flat(strategy, engine)
        run_epoch(strategy, engine, loader, 1)
        final = flat(strategy, engine)
        lr = engine.get_lr()[0]
        weights_path = os.path.join(out, f"zero{stage}_model.safetensors")
        strategy.export_weights(engine, weights_path)
        exported = load_file(weights_path)
        exported_flat = torch.cat([exported[k].reshape(-1) for k in sorted(exported)]).tolist()

        # resume in a fresh engine from the checkpoint, then train the second epoch again
        strategy2 = DeepSpeedStrategy(config(stage), "cpu", auto_values={
            "micro_batch_size": MICRO, "gradient_accumulation_steps": ACCUMULATION, "max_grad_norm": MAX_NORM,
        })
        engine2, _ = build(strategy2)
        client = strategy2.load_checkpoint(ckpt)
        loaded = flat(strategy2, engine2)
        run_epoch(strategy2, engine2, loader, client["epoch"])
        results[f"zero{stage}"] = {
            "config": strategy.config, "after_one_epoch": after_one, "final": final, "exported": exported_flat,
            "loaded": loaded, "resumed_final": flat(strategy2, engine2), "lr": lr, "resumed_lr": engine2.get_lr()[0],
            "global_steps": engine.global_steps, "stage": engine.zero_optimization_stage(),
            "world_size": strategy.world_size,
            "checkpoint_files": sorted(os.listdir(ckpt)),
        }
    if strategy.is_global_zero:
        print("@@RESULT@@ " + json.dumps(results), flush=True)
    strategy.teardown()


if __name__ == "__main__":
    main()
