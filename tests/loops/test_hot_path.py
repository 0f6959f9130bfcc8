"""Structural guards of the per-step path: no host reads, no idle callbacks, no growing
allocations, no per-step ``model.train()`` walk, and a light ``import toolkit``.

These check the shape of the work done per step rather than timings, so they are
deterministic on a busy machine; docs/performance.md has the measured figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
import torch
from torch import nn

import toolkit
from toolkit import Trainer, TrainerCallback, TrainingArguments
from toolkit.callbacks import CallbackHandler
from toolkit.loops import TrainLoop
from toolkit.utils.nested import nested_to

TOOLKIT_DIR = str(Path(toolkit.__file__).resolve().parent)
HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy")


class MLP(nn.Module):
    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        # (no Dropout layer unless asked: torch's dropout keeps a few bytes per call, which the
        # allocation guard below would count)
        drop = [nn.Dropout(dropout)] if dropout else []
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), *drop, nn.Linear(16, 1))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        out = self.net(x).squeeze(-1)
        if labels is None:
            return {"logits": out}
        return {"loss": nn.functional.mse_loss(out, labels), "logits": out}


def _dataset(n: int = 128) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    y = torch.randn(n, generator=g)
    return [{"x": x[i], "labels": y[i]} for i in range(n)]


def _quiet_args(tmp_path: Path, max_steps: int, **kwargs) -> TrainingArguments:
    base = dict(
        max_steps=max_steps,
        per_device_train_batch_size=4,
        report_to="none",
        disable_tqdm=True,
        logging_strategy="no",
        save_strategy="no",
    )
    base.update(kwargs)
    return TrainingArguments(str(tmp_path / "out"), **base)


@pytest.fixture
def host_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, int]]:
    """Every host read of a tensor (``item``, ``tolist``, ``bool()``...) made by toolkit code."""
    calls: list[tuple[str, str, int]] = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            frame = sys._getframe(1)
            if frame.f_code.co_filename.startswith(TOOLKIT_DIR):
                calls.append((_name, frame.f_code.co_filename, frame.f_lineno))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    return calls


def _trainer_host_reads(tmp_path: Path, steps: int, host_reads: list, **kwargs) -> list:
    del host_reads[:]
    trainer = Trainer(MLP(), _quiet_args(tmp_path, steps, **kwargs), train_dataset=_dataset())
    trainer.train()
    return list(host_reads)


@pytest.mark.parametrize("accumulation", [1, 2])
def test_no_host_read_per_step_when_nothing_is_logged(tmp_path, host_reads, accumulation):
    # both runs stay in the first epoch (32 batches): the sampler draws its permutation once
    short = _trainer_host_reads(tmp_path / "a", 3, host_reads, gradient_accumulation_steps=accumulation)
    long = _trainer_host_reads(tmp_path / "b", 12, host_reads, gradient_accumulation_steps=accumulation)
    # the end of train() reads the loss once; nothing in between depends on the number of steps
    assert len(long) == len(short) <= 2, long


def test_host_reads_follow_the_logging_period(tmp_path, host_reads):
    """The spy sees the reads a due log makes: the guard above would catch a per-step one."""
    quiet = _trainer_host_reads(tmp_path / "a", 12, host_reads)
    logged = _trainer_host_reads(tmp_path / "b", 12, host_reads, logging_strategy="steps", logging_steps=3)
    assert len(logged) >= len(quiet) + 4  # one read of the loss sums per log, 4 logs


class _EventRecorder(TrainerCallback):
    """Overrides only ``on_log``; records every event method fetched from the instance."""

    def __init__(self) -> None:
        self.fetched: list[str] = []

    def __getattribute__(self, name: str):
        if name.startswith("on_"):
            object.__getattribute__(self, "fetched").append(name)
        return object.__getattribute__(self, name)

    def on_log(self, args, state, control, **kwargs):
        return control


def test_events_without_listeners_are_not_dispatched(tmp_path):
    recorder = _EventRecorder()
    trainer = Trainer(
        MLP(),
        _quiet_args(tmp_path, 6, logging_strategy="steps", logging_steps=3),
        train_dataset=_dataset(),
        callbacks=[recorder],
    )
    handler = trainer.callback_handler
    # with logging and saving off, no default callback listens to the per-micro-batch events
    assert not handler.has_listeners("on_step_begin")
    assert not handler.has_listeners("on_substep_end")
    trainer.train()
    assert set(recorder.fetched) == {"on_log"}
    assert recorder.fetched.count("on_log") == 3  # logs at steps 3 and 6, and the final metrics


def test_handler_fires_only_overridden_events():
    calls: list[str] = []

    class OnlyStepEnd(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            calls.append("on_step_end")

    handler = CallbackHandler([OnlyStepEnd()])
    state, control = toolkit.TrainerState(), toolkit.TrainerControl()
    for event in ("on_step_begin", "on_substep_end", "on_step_end", "on_epoch_begin"):
        getattr(handler, event)(None, state, control)
    assert calls == ["on_step_end"]
    assert [e for e in toolkit.callbacks.EVENTS if handler.has_listeners(e)] == ["on_step_end"]


def _python_bytes_growth(steps_a: int, steps_b: int, step_fn=None, files: tuple[str, ...] = ()) -> int:
    """Growth of the Python memory allocated by toolkit code (and ``files``), from optimizer
    step ``steps_a`` to ``steps_b`` of one run.

    Only allocations whose innermost frame is in those files count: torch itself keeps a
    few bytes per forward/backward (a plain PyTorch loop shows the same growth).
    """
    snapshots: dict[int, tracemalloc.Snapshot] = {}

    class Mark(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in (steps_a, steps_b):
                snapshots[state.global_step] = tracemalloc.take_snapshot()

    torch.manual_seed(0)
    model = MLP()
    data = [{"x": torch.randn(4, 8), "labels": torch.randn(4)} for _ in range(16)]
    loop = TrainLoop(
        model,
        torch.optim.AdamW(model.parameters()),
        data,
        max_steps=steps_b,
        max_grad_norm=1.0,
        callbacks=CallbackHandler([Mark()]),
        step_fn=step_fn,
    )
    tracemalloc.start()
    try:
        loop.run()
    finally:
        tracemalloc.stop()
    ours = [tracemalloc.Filter(True, f"{d}*") for d in (TOOLKIT_DIR, *files)]
    sizes = [sum(t.size for t in snapshots[s].filter_traces(ours).traces) for s in (steps_a, steps_b)]
    return sizes[1] - sizes[0]


def test_per_step_python_allocations_do_not_grow():
    # 200 steps between the marks: keeping one small object per step would be >= 10 kB
    assert _python_bytes_growth(100, 300) < 2_000


def test_allocation_guard_catches_a_leak():
    kept: list[torch.Tensor] = []
    from toolkit.loops import make_training_step
    from toolkit.strategies import SingleDeviceStrategy

    inner = make_training_step(SingleDeviceStrategy("cpu"))

    def leaking_step(model, batch, scale):
        loss = inner(model, batch, scale)
        kept.append(loss * 1)  # what a loop that hoards per-step losses does
        return loss

    assert _python_bytes_growth(100, 300, step_fn=leaking_step, files=(__file__,)) > 10_000


def test_train_mode_is_restored_after_evaluation_without_a_per_step_walk(tmp_path, monkeypatch):
    modes: list[bool] = []

    class Recording(MLP):
        def forward(self, x, labels=None):
            if labels is not None and torch.is_grad_enabled():
                modes.append(self.training and all(m.training for m in self.modules()))
            return super().forward(x, labels)

    walks: list[int] = []
    original = nn.Module.train

    def counting_train(self, mode=True):
        if isinstance(self, Recording):
            walks.append(int(mode))
        return original(self, mode)

    monkeypatch.setattr(nn.Module, "train", counting_train)
    trainer = Trainer(
        Recording(dropout=0.5),
        _quiet_args(tmp_path, 12, evaluation_strategy="steps", eval_steps=4),
        train_dataset=_dataset(),
        eval_dataset=_dataset(8),
    )
    trainer.train()
    assert len(modes) == 12 and all(modes)  # every training forward ran in train mode, dropout included
    # 4 epochs of 4 steps would need 12 calls if each step walked the module tree; here: one per
    # epoch and one after each of the 3 evaluations
    assert sum(walks) <= 3 + 3 + 1


def test_nested_to_keeps_tensors_already_on_the_device():
    x, y = torch.ones(2, 3), torch.zeros(2)
    batch = {"x": x, "labels": y, "n": 2}
    moved = nested_to(batch, torch.device("cpu"))
    assert moved is not batch and moved == {"x": x, "labels": y, "n": 2}  # a new dict, same tensors
    assert moved["x"] is x
    pair = (x, None)
    assert nested_to(pair, "cpu") is pair
    nested = {"inner": {"x": x}}
    assert nested_to(nested, "cpu")["inner"]["x"] is x
    if torch.cuda.is_available():
        assert nested_to(batch, "cuda")["x"].is_cuda


def test_nested_to_moves_tensors_found_elsewhere():
    # a tensor on another device is moved, also on the CPU path that reads a flag per tensor
    assert nested_to({"x": torch.ones(2), "n": 1}, "meta")["x"].is_meta
    with pytest.raises(NotImplementedError, match="meta"):  # a move to the CPU was attempted
        nested_to({"x": torch.ones(2), "y": torch.empty(2, device="meta")}, "cpu")
    with pytest.raises(NotImplementedError, match="meta"):
        nested_to((torch.empty(2, device="meta"),), torch.device("cpu"))


OPTIONAL = (
    "tensorboard",
    "mlflow",
    "wandb",
    "optuna",
    "deepspeed",
    "transformers",
    "matplotlib",
    "ray",
    "apex",
    "torch_xla",
    "accelerate",
    "datasets",
    "sklearn",
    "psutil",
)


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=str(Path(TOOLKIT_DIR).parent),
    )
    return {m.split(".")[0] for m in json.loads(out.stdout.strip().splitlines()[-1])}


def test_import_toolkit_is_lazy():
    top = _modules_after("import toolkit")
    assert "torch" not in top  # names resolve on first use


def test_importing_the_trainer_pulls_no_optional_integration():
    top = _modules_after("import toolkit\nfrom toolkit import Trainer, TrainingArguments")
    assert "torch" in top
    assert not top & set(OPTIONAL), sorted(top & set(OPTIONAL))


def test_importing_the_trainer_leaves_fsdp_and_dcp_unloaded():
    """FSDP's and distributed checkpoint's packages cost ~75 ms to import: only a run that
    shards (or reads a sharded checkpoint) loads them."""
    code = (
        "import sys, json, torch\nbefore = set(sys.modules)\n"
        "from toolkit import Trainer, TrainingArguments\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=str(Path(TOOLKIT_DIR).parent)
    )
    new = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "toolkit.run_checkpoint" in new  # the check sees what the Trainer imports
    heavy = {"toolkit.strategies.fsdp", "torch.distributed.fsdp", "torch.distributed.checkpoint"}
    assert not new & heavy, sorted(new & heavy)


def test_gradient_accumulators_are_kept_between_steps():
    # a hook on a parameter's gradient accumulator, taken (and let go) before step 2, keeps
    # firing only if autograd reuses that node instead of building a new one per forward
    model = MLP()
    fired: list[int] = []

    class HookOnce(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 1:
                weight = model.net[0].weight
                node = weight.view_as(weight).grad_fn.next_functions[0][0]
                node.register_hook(lambda *_: fired.append(loop.state.global_step))

    loader = torch.utils.data.DataLoader(_dataset(32), batch_size=4, collate_fn=toolkit.default_data_collator)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loop = TrainLoop(model, optimizer, loader, max_steps=4, callbacks=CallbackHandler([HookOnce()]))
    loop.run()
    assert fired == [1, 2, 3]  # the backward of steps 2, 3 and 4 (before each step's count)
    # strategies whose engines own the parameters hold none
    from toolkit.strategies.xla import XLAStrategy

    assert XLAStrategy.grad_accumulators(object.__new__(XLAStrategy), model) == []
