"""A mid-epoch resume starts at the right batch without fetching the skipped samples,
and reads its checkpoint once (verified), not a verification pass and then a load."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from toolkit import Trainer, TrainingArguments
from toolkit.checkpoint import FsspecCheckpointIO

BATCH, BATCHES = 2, 40


class Counting(Dataset):
    def __init__(self) -> None:
        self.fetched: list[int] = []

    def __len__(self) -> int:
        return BATCH * BATCHES

    def __getitem__(self, i: int) -> dict:
        self.fetched.append(i)
        return {"x": torch.full((3,), float(i)), "labels": torch.tensor([float(i % 3)])}


class Recorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3, 1)
        self.seen: list[list[int]] = []

    def forward(self, x, labels=None):
        self.seen.append(x[:, 0].long().tolist())
        out = self.lin(x / 100)
        return {"loss": nn.functional.mse_loss(out, labels), "logits": out}


def _trainer(tmp_path, dataset: Dataset, **overrides) -> Trainer:
    args = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=BATCH,
        num_train_epochs=1,
        report_to=[],
        use_cpu=True,
        logging_steps=1000,
        save_strategy="steps",
        save_steps=30,
        disable_tqdm=True,
        seed=3,
    )
    args.update(overrides)
    return Trainer(model=Recorder(), args=TrainingArguments(**args), train_dataset=dataset)


def test_resume_fetches_only_the_rest_of_the_epoch_and_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    full = _trainer(tmp_path / "full", Counting())
    full.train()
    uninterrupted = full.model.seen
    assert len(uninterrupted) == BATCHES

    _trainer(tmp_path, Counting(), max_steps=30).train()  # leaves checkpoint-30, mid-epoch
    loads: list[str] = []
    verifies: list[str] = []
    real_load, real_verify = FsspecCheckpointIO.load, FsspecCheckpointIO.verify
    monkeypatch.setattr(
        FsspecCheckpointIO,
        "load",
        lambda self, path, *a, **k: loads.append(path) or real_load(self, path, *a, **k),
    )
    monkeypatch.setattr(
        FsspecCheckpointIO, "verify", lambda self, path: verifies.append(path) or real_verify(self, path)
    )
    data = Counting()
    resumed = _trainer(tmp_path, data, overwrite_output_dir=True)
    resumed.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-30"))
    assert resumed.model.seen == uninterrupted[30:]  # the very batches the full run saw next
    expected = [i for batch in uninterrupted[30:] for i in batch]
    assert sorted(data.fetched) == sorted(expected)  # nothing of the 30 skipped batches was fetched
    checkpoint_reads = [p for p in loads + verifies if p.endswith("checkpoint-30")]
    assert len(checkpoint_reads) == 1 and not verifies  # read once, verified on the way
