"""TrainLoop used alone (no facade): steps, accumulation weights, events, stop, resume."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from toolkit.callbacks import CallbackHandler, TrainerCallback
from toolkit.data import ResumableRandomSampler
from toolkit.loops import LossTracker, TrainLoop


class TokenModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, input_ids, labels):
        logits = self.head(self.emb(input_ids))
        return {"loss": nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)}


def _token_batches(sizes: list[int], seq: int = 6, seed: int = 1) -> list[dict]:
    """Batches whose labels have different numbers of -100 (padding) entries."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, b in enumerate(sizes):
        ids = torch.randint(0, 10, (b, seq), generator=g)
        labels = ids % 3
        labels[:, seq - 1 - (i % 4) :] = -100
        out.append({"input_ids": ids, "labels": labels})
    return out


def _cat(batches: list[dict]) -> dict:
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


def _train(batches, ga, mode="items", steps=1) -> nn.Module:
    model = TokenModel()
    loop = TrainLoop(model, torch.optim.SGD(model.parameters(), lr=0.5), batches, max_steps=steps,
                     gradient_accumulation_steps=ga, loss_normalization=mode)
    loop.run()
    return model


def test_item_weighting_equals_one_big_batch_with_padding() -> None:
    micro = _token_batches([2, 3, 2, 1])
    accumulated = _train(micro, ga=4)
    big = _train([_cat(micro)], ga=1)
    for a, b in zip(accumulated.parameters(), big.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    per_micro = _train(micro, ga=4, mode="micro_batch")
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(per_micro.parameters(), big.parameters()))


def test_event_counts_and_stop_at_max_steps() -> None:
    seen: list[str] = []

    class Recorder(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            seen.append("begin")

        def on_substep_end(self, args, state, control, **kw):
            seen.append("sub")

        def on_step_end(self, args, state, control, **kw):
            seen.append("end")

    model = TokenModel()
    batches = _token_batches([2] * 5)
    loop = TrainLoop(model, torch.optim.SGD(model.parameters(), lr=0.1), batches, max_steps=4,
                     gradient_accumulation_steps=2, callbacks=CallbackHandler([Recorder()]))
    loop.run()
    # epoch of 5 batches = windows of 2, 2, 1 -> 3 steps per epoch; 4 steps = epoch 0 + 1 window of epoch 1
    assert seen == ["begin", "sub", "end"] * 2 + ["begin", "end"] + ["begin", "sub", "end"]
    assert loop.state.global_step == 4
    assert loop.state.epoch == pytest.approx(1 + 1 / 3)


def test_log_fn_gets_mean_loss_of_the_interval() -> None:
    logs: list[dict] = []

    class LogEvery2(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            control.should_log = state.global_step % 2 == 0

    class Const(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return {"loss": x.sum() + 0 * self.w}

    batches = [{"x": torch.tensor([float(i)])} for i in range(1, 5)]
    model = Const()
    loop = TrainLoop(model, torch.optim.SGD(model.parameters(), lr=0.0), batches, max_steps=4,
                     callbacks=CallbackHandler([LogEvery2()]), log_fn=logs.append)
    mean = loop.run()
    assert [e["loss"] for e in logs] == [1.5, 3.5]
    assert mean == pytest.approx(2.5)


def test_request_stop_saves_and_stops() -> None:
    saved: list[int] = []
    model = TokenModel()
    loop = TrainLoop(model, torch.optim.SGD(model.parameters(), lr=0.1), _token_batches([2] * 10), max_steps=10)

    class StopAt3(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == 3:
                loop.request_stop(save=True)

    loop.callbacks = CallbackHandler([StopAt3()])
    loop.save_fn = lambda metrics: saved.append(loop.state.global_step)
    loop.run()
    assert loop.state.global_step == 4 and saved == [4]


def test_resume_position_is_exact_and_uses_the_sampler() -> None:
    data = list(range(20))
    seen_full: list[int] = []

    def run(resume_at: int | None, record: list[int], steps: int) -> TrainLoop:
        model = nn.Linear(1, 1)
        sampler = ResumableRandomSampler(len(data), seed=3)
        loader = torch.utils.data.DataLoader(data, batch_size=2, sampler=sampler)

        def step(m, batch, scale):
            record.extend(batch.tolist())
            return torch.zeros(())

        loop = TrainLoop(model, torch.optim.SGD(model.parameters(), lr=0.1), loader, step_fn=step, max_steps=steps)
        if resume_at is not None:
            loop.resume({"epoch": 0, "batches_in_epoch": resume_at})
            loop.state.global_step = resume_at
        loop.run()
        return loop

    run(None, seen_full, 15)  # 10 batches per epoch: 1.5 epochs
    tail: list[int] = []
    loop = run(7, tail, 15)
    assert tail == seen_full[14:]
    assert loop.epoch == 1 and loop.batches_in_epoch == 5


def test_loss_tracker_filters_nonfinite_and_counts_them() -> None:
    t = LossTracker("cpu", capacity=3)
    for v in [1.0, float("nan"), 3.0, float("inf"), 2.0]:
        t.add(torch.tensor(v))
    filtered, raw, n_bad = t.pop()
    assert n_bad == 2
    assert filtered == pytest.approx(2.0 * 5)  # the mean of the finite values stands in for the bad ones
    assert not math.isfinite(raw)
    assert t.pop() == (0.0, 0.0, 0)


def test_bad_parameters_are_rejected() -> None:
    model = nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="max_steps"):
        TrainLoop(model, opt, [], max_steps=0)
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        TrainLoop(model, opt, [], max_steps=1, gradient_accumulation_steps=0)
    with pytest.raises(ValueError, match="nan_inf_policy"):
        TrainLoop(model, opt, [], max_steps=1, nan_inf_policy="ignore")
