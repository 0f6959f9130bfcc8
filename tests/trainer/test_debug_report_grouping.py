"""group_by_length, debug="underflow_overflow" and the run report, through the Trainer."""

from __future__ import annotations

import torch
from torch import nn

from toolkit import Trainer
from toolkit.data import DataCollatorWithPadding, LengthGroupedSampler
from toolkit.debug import UnderflowOverflowError


class BagOfTokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.EmbeddingBag(10, 4)
        self.head = nn.Linear(4, 2)
        self.batch_lengths: list[int] = []

    def forward(self, input_ids, attention_mask=None, labels=None):
        self.batch_lengths.append(input_ids.shape[1])
        logits = self.head(self.emb(input_ids))
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


def test_group_by_length_batches_similar_lengths(h, tmp_path):
    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": torch.randint(1, 10, (n,), generator=g).tolist(), "labels": n % 2}
            for n in [2, 30] * 16]
    args = h.make_args(tmp_path, max_steps=8, per_device_train_batch_size=4, group_by_length=True)
    model = BagOfTokens()
    trainer = Trainer(model, args, train_dataset=data, data_collator=DataCollatorWithPadding())
    assert isinstance(trainer.get_train_dataloader().sampler, LengthGroupedSampler)
    trainer.train()
    # grouped: many batches hold only short sequences (padded length 2); unsorted, almost none would
    assert model.batch_lengths.count(2) >= 3
    assert model.batch_lengths[0] == 30  # the longest batch first


class Overflows(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 1)

    def forward(self, x, labels=None):
        out = (self.inner(x) * 1e39).squeeze(-1)  # inf in float32
        return {"loss": nn.functional.mse_loss(out, labels), "logits": out}


def test_debug_underflow_overflow_stops_and_names_the_module(h, tmp_path, capsys):
    args = h.make_args(tmp_path, max_steps=2, debug="underflow_overflow")
    trainer = Trainer(Overflows(), args, train_dataset=h.regression_data(8))
    try:
        trainer.train()
    except UnderflowOverflowError as err:
        assert "inner" in str(err.report) or "inner" in capsys.readouterr().out
    else:
        raise AssertionError("the overflow was not detected")
    # hooks are removed after training: a plain forward no longer raises
    trainer.model(torch.ones(1, 4), labels=torch.ones(1))


def test_training_curves_png_written_at_the_end(h, tmp_path):
    pytest_mpl = __import__("importlib").util.find_spec("matplotlib")
    args = h.make_args(tmp_path, max_steps=4, logging_steps=1)
    Trainer(h.seeded(h.Regressor), args, train_dataset=h.regression_data(16)).train()
    png = tmp_path / "training_curves.png"
    if pytest_mpl is None:
        assert not png.exists()
    else:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
