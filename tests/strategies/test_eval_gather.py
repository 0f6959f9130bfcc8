"""`OrderedGather` + `EvaluationLoop(strategy=...)` + the strided `ShardedEvalSampler`: every
sample exactly once, in dataset order, for many dataset and batch sizes, including a rank
that runs out of batches first (or has none at all).

Two ranks are simulated by two threads exchanging objects through a barrier, so the
ordering logic is tested in milliseconds; the real 2-process run is in tests/distributed/.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from toolkit.data import ShardedEvalSampler
from toolkit.loops.evaluation import EvaluationLoop
from toolkit.strategies import SingleDeviceStrategy, Strategy
from toolkit.strategies.eval_gather import OrderedGather


class _Exchange:
    def __init__(self, world: int) -> None:
        self.barrier = threading.Barrier(world, timeout=10)
        self.slots: list = [None] * world

    def __call__(self, rank: int, obj):
        self.slots[rank] = obj
        self.barrier.wait()
        out = list(self.slots)
        self.barrier.wait()
        return out


class ThreadRank(Strategy):
    """A fake distributed strategy: one thread per rank, collectives through `_Exchange`."""

    def __init__(self, exchange: _Exchange, rank: int, world: int) -> None:
        super().__init__("cpu")
        self.exchange, self.rank, self.world = exchange, rank, world

    @property
    def world_size(self) -> int:
        return self.world

    @property
    def global_rank(self) -> int:
        return self.rank

    def reduce(self, tensor, op="mean"):
        total = torch.stack(self.exchange(self.rank, tensor.detach().clone())).sum(0)
        return total / self.world if op == "mean" else total

    def all_gather(self, tensor):
        return torch.stack(self.exchange(self.rank, tensor.detach().clone()))

    def all_gather_object(self, obj):
        return self.exchange(self.rank, obj)


class Toy(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(n)
        self.x = torch.randn(n, 3, generator=g)
        self.y = torch.randint(0, 2, (n,), generator=g)
        self.lengths = [1 + i % 4 for i in range(n)]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return {"x": self.x[i], "y": self.y[i], "seq": torch.full((self.lengths[i],), float(i))}


def collate(items):
    width = max(len(it["seq"]) for it in items)
    seq = torch.full((len(items), width), -100.0)
    for row, it in enumerate(items):
        seq[row, : len(it["seq"])] = it["seq"]
    return {"x": torch.stack([it["x"] for it in items]), "y": torch.stack([it["y"] for it in items]), "seq": seq}


MODEL = nn.Linear(3, 2)


def step(model, batch, loss_only, ignore_keys):
    logits = model(batch["x"])
    loss = nn.functional.cross_entropy(logits, batch["y"])
    return loss, (logits, batch["seq"]), batch["y"]


def run_ranks(n: int, batch_size: int, world: int = 2, loss_only: bool = False):
    data = Toy(n)
    exchange = _Exchange(world)
    outputs: list = [None] * world
    errors: list = []

    def rank_main(rank: int) -> None:
        try:
            strategy = ThreadRank(exchange, rank, world)
            sampler = ShardedEvalSampler(n, num_replicas=world, rank=rank, contiguous=False)
            loader = DataLoader(data, batch_size=batch_size, sampler=sampler, collate_fn=collate)
            loop = EvaluationLoop(prediction_step=step, gather=OrderedGather(strategy), strategy=strategy)
            outputs[rank] = loop.run(MODEL, loader, prediction_loss_only=loss_only)
        except Exception as exc:  # surfaced below
            errors.append(exc)
            exchange.barrier.abort()

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    single = EvaluationLoop(prediction_step=step).run(MODEL, DataLoader(data, batch_size=batch_size, collate_fn=collate))
    return data, outputs, single


def single_loss(n: int, batch_size: int) -> float:
    loader = DataLoader(Toy(n), batch_size=batch_size, collate_fn=collate)
    return EvaluationLoop(prediction_step=step).run(MODEL, loader).metrics["eval_loss"]


@pytest.mark.parametrize("n", [1, 2, 5, 9, 13])
@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_each_sample_once_in_order_with_exact_loss(n: int, batch_size: int) -> None:
    data, outputs, single = run_ranks(n, batch_size)
    for out in outputs:
        (logits, seq), labels = out.predictions, out.label_ids
        np.testing.assert_array_equal(labels, data.y.numpy())
        np.testing.assert_allclose(logits, single.predictions[0], atol=1e-6)
        np.testing.assert_array_equal(seq[:, 0], np.arange(n))  # sample i carries the value i, in order
        np.testing.assert_array_equal(seq, single.predictions[1])  # ragged widths padded with -100
        assert out.num_samples == n
        assert out.metrics["eval_loss"] == pytest.approx(single.metrics["eval_loss"], abs=1e-6)


def test_three_ranks_and_loss_only() -> None:
    data, outputs, single = run_ranks(7, 2, world=3)
    for out in outputs:
        np.testing.assert_array_equal(out.label_ids, data.y.numpy())
        assert out.metrics["eval_loss"] == pytest.approx(single.metrics["eval_loss"], abs=1e-6)
    _, outputs, _ = run_ranks(5, 2, loss_only=True)  # no gathering, the loss summed once at the end
    for out in outputs:
        assert out.predictions is None and out.num_samples == 5
        assert out.metrics["eval_loss"] == pytest.approx(single_loss(5, 2), abs=1e-6)


def test_single_device_gather_is_identity() -> None:
    gather = OrderedGather(SingleDeviceStrategy("cpu"))
    tree = {"a": torch.arange(3), "b": (torch.tensor(2.0), None)}
    out = gather(tree)
    assert torch.equal(out["a"], torch.arange(3)) and out["b"][0].shape == (1,) and out["b"][1] is None
    assert gather(None) is None
