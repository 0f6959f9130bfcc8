"""Memory metrics through the Trainer, and auto_find_batch_size with an injected OOM."""

from __future__ import annotations

import torch

from toolkit import Trainer


def test_memory_metrics_only_when_asked(h, tmp_path):
    args = h.make_args(tmp_path, max_steps=2, skip_memory_metrics=False)
    trainer = Trainer(h.seeded(h.Regressor), args, train_dataset=h.regression_data(16),
                      eval_dataset=h.regression_data(8))
    metrics = trainer.train().metrics
    for key in ("train_mem_cpu_alloc_delta", "train_mem_cpu_peaked_delta", "init_mem_cpu_alloc_delta",
                "before_init_mem_cpu"):
        assert key in metrics, key
    assert "train_mem_gpu_alloc_delta" not in metrics  # CPU run
    assert metrics["before_init_mem_cpu"] > 0
    assert "eval_mem_cpu_alloc_delta" in trainer.evaluate()
    assert "test_mem_cpu_alloc_delta" in trainer.predict(h.regression_data(4)).metrics

    quiet = Trainer(h.seeded(h.Regressor), h.make_args(tmp_path / "q", max_steps=2),
                    train_dataset=h.regression_data(16))
    assert not any("_mem_" in k for k in quiet.train().metrics)


class OomAbove(torch.nn.Module):
    """A regressor that fails like an out-of-memory GPU for batches larger than `limit`."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)
        self.limit = limit
        self.seen: list[int] = []

    def forward(self, x, labels=None):
        self.seen.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        out = self.lin(x).squeeze(-1)
        return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}


def test_auto_find_batch_size_keeps_the_effective_batch(h, tmp_path):
    def run(limit, folder, auto):
        torch.manual_seed(0)
        model = OomAbove(limit)
        args = h.make_args(folder, max_steps=3, per_device_train_batch_size=16, auto_find_batch_size=auto,
                           optim="sgd", learning_rate=0.1)
        trainer = Trainer(model, args, train_dataset=h.regression_data(64))
        trainer.train()
        return trainer, model

    big, _ = run(10**6, tmp_path / "big", auto=False)
    found, model = run(4, tmp_path / "found", auto=True)
    assert found.state.train_batch_size == 4
    assert model.seen[:3] == [16, 8, 4]  # one failing try at 16, one at 8, then batches of 4
    for key, value in h.weights(big.model).items():
        assert torch.allclose(value, h.weights(found.model)[key], atol=1e-6), key
    assert found.state.global_step == 3
