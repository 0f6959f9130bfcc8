"""What the harness measures: workload sizes, targets, and the models and data every
implementation shares.

This module imports only the standard library, ``torch`` and ``safetensors`` (never
``toolkit``), because the ``hf`` implementation may run under another interpreter
whose environment holds ``transformers`` 4.34 but not toolkit's dependencies.

Every implementation gets the same model class, the same data, the same seed and the
same sizes from here; only the training machinery differs.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Sampler

__all__ = [
    "SEED",
    "LR",
    "Metric",
    "WORKLOADS",
    "METRICS",
    "config_for",
    "INTERLEAVE_BLOCKS",
    "Baton",
    "use_baton",
    "Clock",
    "training_result",
    "stack_predictions",
    "predict_result",
    "predict_rounds",
    "MLP",
    "TokenTagger",
    "TinyTransformer",
    "WideMLP",
    "DictDataset",
    "EpochPermutation",
    "pad_collate",
    "build",
    "eval_loss",
    "tensor_digest",
    "state_digest",
    "PeakRSS",
    "linear_lambda",
    "raw_save",
    "raw_load",
    "rng_state",
    "set_rng_state",
]

SEED = 1234
LR = 1e-3


@dataclass(frozen=True)
class Metric:
    """One reported figure of a workload and its target.

    Args:
        workload: The workload that produces it.
        key: Its key in the worker's result (seconds or MB).
        label: The row's label in the table.
        target: The most toolkit may take; a ratio to raw (``absolute=False``) or a
            value (``absolute=True``); ``None``: reported only.
        absolute: The target is on the value itself, not on the ratio to raw.
        unit: ``"s"``, ``"ms"`` (shown in ms, stored in s) or ``"MB"``.
        ratio_to: Another key of the same implementation's result to divide by,
            instead of raw's figure (e.g. the async stall over the synchronous save).
        by_turn: The ratio to raw compares the turns of an interleaved run one by one
            (``<key>_turns`` of the results, see `Clock.turns` and `predict_rounds`):
            each repeat's ratio is the median of the per-turn ratios. Only for figures
            whose every step (or round) does the same work: a median over turns leaves
            out a periodic cost (a save, a log).
    """

    workload: str
    key: str
    label: str
    target: float | None
    absolute: bool = False
    unit: str = "s"
    ratio_to: str | None = None
    by_turn: bool = False

    @property
    def name(self) -> str:
        """``workload/key``, the metric's identifier in the records."""
        return f"{self.workload}/{self.key}"


#: Workload name -> what it measures (the docs hold the longer story).
WORKLOADS: dict[str, str] = {
    "mlp": "tiny MLP, logging/progress bar/saves off: steady-state step, train() to first step, end to end",
    "mlp_default": "tiny MLP with default extras: logging and saves every N steps, progress bar",
    "transformer": "small transformer encoder (compute-bound): steady-state step",
    "predict_fixed": "predict over fixed-size outputs (N x C logits): time and peak RSS growth",
    "predict_varlen": "predict over variable-length sequences (padded with -100): time and peak RSS growth",
    "checkpoint": "save (model + AdamW + scheduler + RNG), load to the first resumed step, async stall",
    "resume": "resume near the end of a long epoch: train() to the first resumed step, exact batch",
    "import": "import time added over `import torch`",
}

METRICS: list[Metric] = [
    Metric("mlp", "step_s", "tiny MLP step, extras off", 1.05, unit="ms", by_turn=True),
    Metric("mlp_default", "step_s", "tiny MLP step, default extras", 1.15, unit="ms"),
    Metric("mlp", "e2e_s", "construction + train() end to end", 1.2),
    Metric("mlp", "first_step_s", "train() call to end of first step", 2.0),
    Metric("transformer", "step_s", "small transformer step", 1.02, unit="ms", by_turn=True),
    Metric("predict_fixed", "predict_s", "predict, fixed size: time", 1.1, by_turn=True),
    Metric("predict_fixed", "rss_mb", "predict, fixed size: peak RSS growth", 1.1, unit="MB"),
    Metric("predict_varlen", "predict_s", "predict, variable length: time", 1.1, by_turn=True),
    Metric("predict_varlen", "rss_mb", "predict, variable length: peak RSS growth", 1.1, unit="MB"),
    Metric("checkpoint", "save_s", "checkpoint save", 1.2),
    Metric("checkpoint", "load_s", "checkpoint load to first resumed step", 1.2),
    Metric("checkpoint", "async_stall_s", "async save stall / own sync save", 0.25, ratio_to="save_s"),
    Metric("resume", "first_step_s", "resume mid-epoch: train() to first step", 1.5),
    Metric("import", "import_s", "import added over `import torch`", 0.3, absolute=True),
]

_FULL: dict[str, dict[str, Any]] = {
    "mlp": {"n_in": 32, "hidden": 128, "n_out": 4, "batch_size": 32, "steps": 1000, "warm": 100},
    "mlp_default": {
        "n_in": 32,
        "hidden": 128,
        "n_out": 4,
        "batch_size": 32,
        "steps": 1100,
        "warm": 50,
        "logging_steps": 500,
        "save_steps": 500,
    },
    "transformer": {
        "vocab": 1000,
        "d_model": 256,
        "heads": 4,
        "layers": 4,
        "seq_len": 128,
        "batch_size": 8,
        "steps": 43,
        "warm": 3,
    },
    "predict_fixed": {"n": 20000, "n_in": 32, "n_out": 1000, "batch_size": 500, "rounds": 7},
    "predict_varlen": {
        "n": 4000,
        "vocab": 1000,
        "dim": 64,
        "n_out": 32,
        "min_len": 8,
        "max_len": 128,
        "batch_size": 64,
        "rounds": 7,
    },
    "checkpoint": {"width": 1024, "blocks": 16, "batch_size": 4, "saves": 3},
    "resume": {"n_in": 16, "hidden": 32, "n_out": 4, "batch_size": 8, "batches": 10000, "resume_at": 9000},
    "import": {},
}

_QUICK: dict[str, dict[str, Any]] = {
    "mlp": {"steps": 60, "warm": 10},
    "mlp_default": {"steps": 50, "warm": 5, "logging_steps": 10, "save_steps": 20},
    "transformer": {"d_model": 64, "layers": 2, "seq_len": 32, "steps": 4, "warm": 1},
    "predict_fixed": {"n": 2000, "n_out": 100, "batch_size": 100, "rounds": 2},
    "predict_varlen": {"n": 400, "max_len": 48, "batch_size": 32, "rounds": 2},
    "checkpoint": {"width": 256, "blocks": 4, "saves": 2},
    "resume": {"batches": 200, "resume_at": 180},
}


#: The workloads run as interleaved groups (see `Baton`), with the steps per turn of a
#: measured window: about 25 ms of the tiny MLP (this machine's speed changes within a
#: tenth of a second, so turns are short), one step (about 0.25 s) of the transformer,
#: and for the prediction workloads the rounds (whole ``predict`` calls) per turn, see
#: `predict_rounds`. (Not the checkpoint workload: the kernel would write back one
#: implementation's unsynced files during another's turn.)
INTERLEAVE_BLOCKS: dict[str, int] = {
    "mlp": 20,
    "mlp_default": 20,
    "transformer": 1,
    "predict_fixed": 1,
    "predict_varlen": 1,
}


def config_for(workload: str, quick: bool) -> dict[str, Any]:
    """The sizes of ``workload`` (the full ones, or the ``--quick`` ones)."""
    if workload not in _FULL:
        raise ValueError(f"unknown workload {workload!r}; accepted: {sorted(_FULL)}")
    cfg = dict(_FULL[workload])
    if quick:
        cfg.update(_QUICK.get(workload, {}))
    return cfg


# --------------------------------------------------------------------------- timing


class Baton:
    """This worker's end of the turn-taking between the workers of an interleaved group.

    The harness starts one worker per implementation at once and lets one of them run at
    a time: a worker announces that it waits (one byte on ``write_fd``) and blocks until
    the harness gives it the turn (one byte on ``read_fd``). `Clock` hands the turn on
    every ``block`` steps of the measured window, so the implementations run in turns
    of ``block`` steps and a slow phase of the machine falls on all of them alike.

    Args:
        read_fd: Where the turn arrives.
        write_fd: Where the worker says it waits.
        block: Optimizer steps per turn inside a measured window.
    """

    def __init__(self, read_fd: int, write_fd: int, block: int) -> None:
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self.read_fd, self.write_fd, self.block = read_fd, write_fd, block

    def wait_turn(self) -> None:
        """Say this worker waits, then block until the harness gives it the turn."""
        os.write(self.write_fd, b".")
        if os.read(self.read_fd, 1) != b"g":
            raise RuntimeError("the harness closed the turn-taking pipe")

    def close(self) -> None:
        """Close both ends: the harness reads the end of the pipe as "finished"."""
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass


_BATON: Baton | None = None


def use_baton(baton: Baton | None) -> None:
    """Make every `Clock` created from now on hand the turn over with ``baton``."""
    global _BATON
    _BATON = baton


class Clock:
    """Timestamps at chosen optimizer steps, written by each implementation's hook.

    ``call`` is set just before ``train()`` (or the raw loop) is called; `step` is
    called at the end of every optimizer step with the global step number.

    With a baton in use (see `use_baton`) and two marks ``(warm, end)``, the clock hands
    the turn to the next worker at step ``warm`` and every ``baton.block`` steps after it
    before ``end``; the time spent waiting is kept in ``paused`` and left out of
    `per_step` and of the end-to-end time of `training_result`.
    """

    def __init__(self, marks: Sequence[int] = ()) -> None:
        self.marks = set(marks)
        self.at: dict[int, float] = {}
        self.first: float | None = None
        self.last_step = 0
        self.call: float | None = None
        self.paused = 0.0
        #: (handed the turn on, got it back) pairs, perf_counter seconds.
        self.handoffs: list[tuple[float, float]] = []
        #: The step at which each of `handoffs` happened.
        self.handoff_steps: list[int] = []
        self._baton = _BATON
        self._pauses: set[int] = set()
        if self._baton is not None and len(self.marks) >= 2:
            self._pauses = set(range(min(self.marks), max(self.marks), self._baton.block))

    def start(self) -> None:
        """Mark the call of ``train()``."""
        self.call = time.perf_counter()

    def step(self, global_step: int) -> None:
        """Record the end of optimizer step ``global_step``."""
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        if global_step in self.marks:
            self.at[global_step] = now
        self.last_step = global_step
        if global_step in self._pauses:
            self._pauses.discard(global_step)
            self._baton.wait_turn()
            back = time.perf_counter()
            self.handoffs.append((now, back))
            self.handoff_steps.append(global_step)
            self.paused += back - now

    def per_step(self, warm: int, end: int) -> float:
        """Mean seconds per step between the ends of steps ``warm`` and ``end`` (turns
        given to other workers left out)."""
        return (self.at[end] - self.at[warm] - self.paused) / (end - warm)

    def turns(self, end: int) -> list[float]:
        """Mean seconds per step of each turn of the measured window ending at step
        ``end``: from getting the turn back to handing it on (the last turn: to ``end``).
        Empty without turn-taking."""
        if not self.handoffs:
            return []
        starts = [back for _, back in self.handoffs]
        ends = [out for out, _ in self.handoffs[1:]] + [self.at[end]]
        steps = [b - a for a, b in zip(self.handoff_steps, self.handoff_steps[1:] + [end])]
        return [(t1 - t0) / n for t0, t1, n in zip(starts, ends, steps)]

    def to_first_step(self) -> float:
        """Seconds from `start` to the end of the first step."""
        assert self.call is not None and self.first is not None, "the clock saw no call or no step"
        return self.first - self.call


# --------------------------------------------------------------------------- models and data


def _digest_update(h: Any, t: torch.Tensor) -> None:
    t = t.detach().contiguous().cpu()
    h.update(f"{t.dtype}{list(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def tensor_digest(*tensors: torch.Tensor) -> str:
    """sha256 (16 hex digits) of dtypes, shapes and bytes: equal digests, equal tensors."""
    h = hashlib.sha256()
    for t in tensors:
        _digest_update(h, t)
    return h.hexdigest()[:16]


class _Recorder:
    """Counts forward calls and keeps the digest of the inputs of one chosen call."""

    def _init_recorder(self) -> None:
        self.calls = 0
        self.record_call: int | None = None
        self.recorded: str | None = None
        self.last_batch = 0

    def _see(self, x: torch.Tensor) -> None:
        self.calls += 1
        self.last_batch = len(x)
        if self.calls == self.record_call:
            self.recorded = tensor_digest(x)


class MLP(nn.Module, _Recorder):
    """Linear-ReLU-Linear classifier with an HF-style dict output (``loss``, ``logits``)."""

    def __init__(self, n_in: int, hidden: int, n_out: int) -> None:
        super().__init__()
        self._init_recorder()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        self._see(x)
        logits = self.net(x)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits} if loss is not None else {"logits": logits}


class WideMLP(nn.Module, _Recorder):
    """Linear + LayerNorm blocks (the checkpoint workload's weights), regression loss."""

    def __init__(self, width: int, blocks: int) -> None:
        super().__init__()
        self._init_recorder()
        layers: list[nn.Module] = []
        for _ in range(blocks):
            layers += [nn.Linear(width, width), nn.LayerNorm(width)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        self._see(x)
        out = self.net(x)
        if labels is None:
            return {"logits": out}
        return {"loss": nn.functional.mse_loss(out, labels), "logits": out}


class TokenTagger(nn.Module, _Recorder):
    """Embedding + linear per token: logits of shape (batch, length, n_out)."""

    def __init__(self, vocab: int, dim: int, n_out: int) -> None:
        super().__init__()
        self._init_recorder()
        self.emb = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, n_out)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        self._see(input_ids)
        logits = self.head(torch.tanh(self.emb(input_ids)))
        if labels is None:
            return {"logits": logits}
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        return {"loss": loss, "logits": logits}


class TinyTransformer(nn.Module, _Recorder):
    """A small encoder language model (no dropout, so every implementation agrees)."""

    def __init__(self, vocab: int, d_model: int, heads: int, layers: int, seq_len: int) -> None:
        super().__init__()
        self._init_recorder()
        self.emb = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.randn(seq_len, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        self._see(input_ids)
        h = self.encoder(self.emb(input_ids) + self.pos[: input_ids.shape[1]])
        logits = self.head(h)
        if labels is None:
            return {"logits": logits}
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
        return {"loss": loss, "logits": logits}


class DictDataset(Dataset):
    """Map-style dataset of dicts built from equal-length columns (tensors or lists)."""

    def __init__(self, **columns: Any) -> None:
        lengths = {len(c) for c in columns.values()}
        if len(lengths) != 1:
            raise ValueError(f"columns differ in length: {lengths}")
        self.columns = columns
        self.n = lengths.pop()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {k: c[i] for k, c in self.columns.items()}


class EpochPermutation(Sampler[int]):
    """The raw loop's shuffling: ``randperm`` seeded with ``seed + epoch``, from a start.

    The same order as toolkit's resumable sampler, so raw and toolkit train on the same
    batches; ``start`` skips samples without reading them (a resumed raw run).
    """

    def __init__(self, n: int, seed: int, start: int = 0) -> None:
        self.n, self.seed, self.start, self.epoch = n, seed, start, 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.start = 0
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n - self.start

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=g)[self.start :]
        self.start = 0
        return iter(order.tolist())


def pad_collate(samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Pad ``input_ids`` with 0 and ``labels`` with -100 to the longest in the batch."""
    longest = max(len(s["input_ids"]) for s in samples)
    ids = torch.zeros(len(samples), longest, dtype=torch.long)
    labels = torch.full((len(samples), longest), -100, dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s["input_ids"])
        ids[i, :n] = s["input_ids"]
        labels[i, :n] = s["labels"]
    return {"input_ids": ids, "labels": labels}


def build(workload: str, cfg: Mapping[str, Any], seed: int = SEED) -> tuple[nn.Module, Dataset]:
    """The model (initialised from ``seed``) and the dataset (always from `SEED`) of a workload."""
    g = torch.Generator().manual_seed(SEED + 1)
    if workload in ("mlp", "mlp_default", "resume"):
        n = cfg["batch_size"] * cfg.get("batches", cfg.get("steps", 0))
        x = torch.randn(n, cfg["n_in"], generator=g)
        y = (x[:, : cfg["n_out"]].argmax(1) + (torch.rand(n, generator=g) < 0.2).long()) % cfg["n_out"]
        torch.manual_seed(seed)
        return MLP(cfg["n_in"], cfg["hidden"], cfg["n_out"]), DictDataset(x=x, labels=y)
    if workload == "transformer":
        n = cfg["batch_size"] * cfg["steps"]
        ids = torch.randint(0, cfg["vocab"], (n, cfg["seq_len"]), generator=g)
        torch.manual_seed(seed)
        model = TinyTransformer(cfg["vocab"], cfg["d_model"], cfg["heads"], cfg["layers"], cfg["seq_len"])
        return model, DictDataset(input_ids=ids, labels=ids.roll(-1, dims=1))
    if workload == "predict_fixed":
        x = torch.randn(cfg["n"], cfg["n_in"], generator=g)
        torch.manual_seed(seed)
        return MLP(cfg["n_in"], cfg["n_in"], cfg["n_out"]), DictDataset(x=x)
    if workload == "predict_varlen":
        lengths = torch.randint(cfg["min_len"], cfg["max_len"] + 1, (cfg["n"],), generator=g).tolist()
        ids = [torch.randint(1, cfg["vocab"], (n,), generator=g) for n in lengths]
        labels = [torch.randint(0, cfg["n_out"], (n,), generator=g) for n in lengths]
        torch.manual_seed(seed)
        return TokenTagger(cfg["vocab"], cfg["dim"], cfg["n_out"]), DictDataset(input_ids=ids, labels=labels)
    if workload == "checkpoint":
        n = cfg["batch_size"] * 4
        x = torch.randn(n, cfg["width"], generator=g)
        torch.manual_seed(seed)
        return WideMLP(cfg["width"], cfg["blocks"]), DictDataset(
            x=x, labels=torch.randn(n, cfg["width"], generator=g)
        )
    raise ValueError(f"no model for workload {workload!r}")


def eval_loss(model: nn.Module, dataset: Dataset, limit: int = 1024) -> float:
    """Mean loss of ``model`` over the first ``limit`` samples, in eval mode (the final
    loss that the implementations must agree on)."""
    from torch.utils.data import DataLoader, default_collate

    n = min(limit, len(dataset))
    collate = pad_collate if isinstance(model, TokenTagger) else default_collate
    loader = DataLoader(torch.utils.data.Subset(dataset, range(n)), batch_size=256, collate_fn=collate)
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in loader:
            k = len(next(iter(batch.values())))
            total += float(model(**batch)["loss"]) * k
            count += k
    model.train(was_training)
    return total / count


def training_result(
    clock: Clock, warm: int, steps: int, e2e_s: float, model: nn.Module, dataset: Dataset
) -> dict[str, Any]:
    """The record of a training workload, the same for every implementation: step and
    end-to-end times from ``clock`` (``e2e_s`` less the turns given to other workers),
    the model's call counters and its final eval loss."""
    return {
        "step_s": clock.per_step(warm, steps),
        "e2e_s": e2e_s - clock.paused,
        "paused_s": clock.paused,
        "handoffs": clock.handoffs,
        "step_s_turns": clock.turns(steps),
        "first_step_s": clock.to_first_step(),
        "steps": clock.last_step,
        "batch": model.last_batch,
        "calls": model.calls,
        "final_loss": eval_loss(model, dataset),
    }


def stack_predictions(outs: Sequence[torch.Tensor], varlen: bool) -> torch.Tensor:
    """Join per-batch outputs into one tensor; variable-length ones (``[batch, len, C]``)
    are padded along ``len`` with -100, as the Trainer pads predictions."""
    if not varlen:
        return torch.cat(list(outs))
    longest = max(o.shape[1] for o in outs)
    total = sum(len(o) for o in outs)
    preds = torch.full((total, longest, outs[0].shape[2]), -100.0, dtype=outs[0].dtype)
    row = 0
    for o in outs:
        preds[row : row + len(o), : o.shape[1]] = o
        row += len(o)
    return preds


def predict_result(seconds: float, mem: PeakRSS, preds: Any) -> dict[str, Any]:
    """The record of a prediction workload: time, memory growth, shape and digest of the
    predictions (a numpy array)."""
    return {
        "predict_s": seconds,
        "rss_mb": mem.growth_mb,
        "shape": list(preds.shape),
        "digest": tensor_digest(torch.from_numpy(preds)),
    }


def predict_rounds(call: Callable[[], Any], rounds: int = 1) -> dict[str, Any]:
    """Time ``call`` (one whole prediction, returning the predictions as a numpy array)
    ``rounds`` times in this process and return the workload's record.

    The first round runs under `PeakRSS` (the memory figure) and gives the shape and the
    digest. ``predict_s`` is the median of the rounds (``first_predict_s`` the first one,
    ``predict_s_rounds`` all of them). With a baton in use (an interleaved group) the
    turn is handed on every ``baton.block`` rounds and ``predict_s_turns`` holds each
    turn's mean round, which the harness compares turn by turn with raw's.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    baton = _BATON
    times: list[float] = []
    record: dict[str, Any] = {}
    for i in range(rounds):
        if i and baton is not None and i % baton.block == 0:
            baton.wait_turn()
        gc.collect()
        with PeakRSS() if i == 0 else contextlib.nullcontext() as mem:
            start = time.perf_counter()
            preds = call()
            times.append(time.perf_counter() - start)
        if i == 0:
            record = predict_result(times[0], mem, preds)
        del preds
    record["first_predict_s"] = times[0]
    record["predict_s"] = statistics.median(times)
    record["predict_s_rounds"] = times
    if baton is not None:
        b = baton.block
        record["predict_s_turns"] = [statistics.fmean(times[i : i + b]) for i in range(0, rounds, b)]
    return record


def state_digest(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> str:
    """Digest of the model's weights and the optimizer's state tensors (in order)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        _digest_update(h, t)
    if optimizer is not None:
        state = optimizer.state_dict()["state"]
        for key in sorted(state):
            for name, value in sorted(state[key].items()):
                h.update(f"{key}/{name}".encode())
                _digest_update(h, torch.as_tensor(value))
    return h.hexdigest()[:16]


def linear_lambda(total_steps: int) -> Any:
    """The linear decay to zero (no warm-up) of the HF ``linear`` schedule."""

    def f(step: int) -> float:
        return max(0.0, (total_steps - step) / max(1, total_steps))

    return f


# --------------------------------------------------------------------------- memory


def _rss_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakRSS:
    """Peak resident-memory growth (MB) of the process over a ``with`` block.

    Resets the kernel's high-water mark (``/proc/self/clear_refs``) when it can and
    reads ``VmHWM`` after; otherwise samples ``VmRSS`` from a thread every 2 ms.
    """

    def __enter__(self) -> PeakRSS:
        self.sampler: threading.Thread | None = None
        self._peak = 0
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
            self.exact = True
        except OSError:
            self.exact = False
        self.before = _rss_kb("VmRSS") or 0
        if not self.exact:
            self._stop = threading.Event()
            self.sampler = threading.Thread(target=self._sample, daemon=True)
            self.sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_kb("VmRSS") or 0)
            time.sleep(0.002)

    def __exit__(self, *exc: Any) -> None:
        if self.sampler is not None:
            self._stop.set()
            self.sampler.join()
            peak = max(self._peak, _rss_kb("VmRSS") or 0)
        else:
            peak = _rss_kb("VmHWM") or 0
        self.growth_mb = max(0, peak - self.before) / 1024


# --------------------------------------------------------------------------- the raw checkpoint


def rng_state() -> dict[str, Any]:
    """Python and torch RNG states (numpy's too when it is importable)."""
    state: dict[str, Any] = {"python": random.getstate(), "cpu": torch.get_rng_state()}
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:  # pragma: no cover
        pass
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    random.setstate(state["python"])
    torch.set_rng_state(state["cpu"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])


def _fsync_write(path: str, write: Any) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def raw_save(
    folder: str, model: nn.Module, optimizer: Any, scheduler: Any, extra: dict | None = None
) -> None:
    """The plain checkpoint: ``safetensors`` weights, ``torch.save`` of optimizer,
    scheduler and RNG, a small JSON; every file fsynced."""
    import safetensors.torch

    os.makedirs(folder, exist_ok=True)
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = os.path.join(folder, "model.safetensors")
    safetensors.torch.save_file(weights, path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    for name, obj in (
        ("optimizer.pt", optimizer.state_dict()),
        ("scheduler.pt", scheduler.state_dict()),
        ("rng_state.pth", rng_state()),
    ):
        _fsync_write(os.path.join(folder, name), lambda f, obj=obj: torch.save(obj, f))
    _fsync_write(os.path.join(folder, "progress.json"), lambda f: f.write(json.dumps(extra or {}).encode()))


def raw_load(folder: str) -> dict[str, Any]:
    """Read back what `raw_save` wrote. The pickles are read with ``weights_only=False``
    (the C unpickler), as a hand-written loop must for numpy's RNG state; toolkit reads
    them with the slower weights-only unpickler, which refuses code-running pickles."""
    import safetensors.torch

    out: dict[str, Any] = {"model": safetensors.torch.load_file(os.path.join(folder, "model.safetensors"))}
    for key, name in (("optimizer", "optimizer.pt"), ("scheduler", "scheduler.pt"), ("rng", "rng_state.pth")):
        out[key] = torch.load(os.path.join(folder, name), weights_only=False)
    with open(os.path.join(folder, "progress.json"), encoding="utf-8") as f:
        out["progress"] = json.load(f)
    return out
