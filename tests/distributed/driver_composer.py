"""Run by `test_ddp.py` under ``accelerate launch --multi_gpu --num_processes 2``:
`DDPStrategy` used alone in a hand-written loop (the composer path), and its collectives.

Rank 0 prints one line ``@@RESULT@@ <json>``.
"""

from __future__ import annotations

import contextlib
import json

import ddp_toys as toys
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from toolkit.strategies.ddp import DDPStrategy


def main() -> None:
    strategy = DDPStrategy(find_unused_parameters=False)  # device and group from the launcher's environment
    strategy.setup_environment()
    model = toys.seeded(toys.Regression)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = strategy.setup(model, optimizer)
    loader = strategy.setup_dataloader(DataLoader(toys.regression_data(), batch_size=3))
    accumulation = 2
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        for i, batch in enumerate(loader):
            last = (i + 1) % accumulation == 0
            with contextlib.nullcontext() if last else strategy.no_backward_sync(model):
                loss = model(**strategy.batch_to_device(batch))["loss"] / accumulation
                strategy.backward(loss)
            if last:
                strategy.optimizer_step(optimizer)
                optimizer.zero_grad()

    rank = strategy.global_rank
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    local = torch.full((2, 3), 1.0) if rank == 0 else torch.full((1, 5), 2.0)
    result = {
        "world_size": strategy.world_size,
        "ranks": strategy.all_gather_object((rank, strategy.local_rank, strategy.node_rank)),
        "weights": toys.weights(strategy.unwrap(model)),
        "replicas_equal": bool((strategy.all_gather(flat) - flat).abs().max() == 0),
        "sum": strategy.reduce(torch.tensor(rank + 1.0), "sum").item(),
        "mean": strategy.reduce(torch.tensor(rank + 1), "mean").item(),
        "max": strategy.reduce(torch.tensor(rank + 1.0), "max").item(),
        "padded_gather": strategy.all_gather(local, padding_value=-1).tolist(),
        "broadcast": strategy.broadcast(f"from-{rank}", src=1),
        "samples_per_rank": len(loader.sampler),
    }
    strategy.barrier()
    strategy.teardown()
    result["group_destroyed"] = not dist.is_initialized()
    if rank == 0:
        print("@@RESULT@@ " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
