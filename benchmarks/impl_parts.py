"""The ``toolkit-parts`` implementation: a composer's own loop built from toolkit's parts.

`SingleDeviceStrategy`, `ResumableRandomSampler` + ``default_data_collator``,
``create_optimizer`` / ``get_scheduler``, `TrainLoop` with one callback (timing, and
with the extras: log and save intervals, a tqdm bar), `CheckpointManager` over
`FsspecCheckpointIO` (or `AsyncCheckpointIO`) and `EvaluationLoop` for predictions.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader

from benchmarks import workloads as W
from toolkit.callbacks import CallbackHandler, TrainerCallback
from toolkit.checkpoint import AsyncCheckpointIO, CheckpointManager, FsspecCheckpointIO
from toolkit.data import ResumableRandomSampler, default_data_collator
from toolkit.loops import TrainLoop
from toolkit.loops.evaluation import EvaluationLoop
from toolkit.loops.steps import prediction_step
from toolkit.optim import create_optimizer, get_scheduler, optimizer_state_like
from toolkit.strategies import SingleDeviceStrategy
from toolkit.utils.seed import get_rng_state

__all__ = ["WORKLOADS", "prepare"]


class _Hooks(TrainerCallback):
    """Timing, optional log/save intervals and progress bar."""

    def __init__(
        self, clock: W.Clock, logging_steps: int = 0, save_steps: int = 0, bar: bool = False
    ) -> None:
        self.clock, self.logging_steps, self.save_steps = clock, logging_steps, save_steps
        self.bar = None
        if bar:
            from tqdm.auto import tqdm

            self.bar = tqdm()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.reset(total=state.max_steps)
            self.bar.update(state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step = state.global_step
        self.clock.step(step)
        if self.bar is not None:
            self.bar.update(1)
        if self.logging_steps and step % self.logging_steps == 0:
            control.should_log = True
        if self.save_steps and step % self.save_steps == 0:
            control.should_save = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()


class _FirstStepHooks(_Hooks):
    """`_Hooks` plus a call before the first step (a separate class, so that the runs
    without it have no ``on_step_begin`` listener)."""

    def __init__(self, clock: W.Clock, before_first_step: Callable[[], None]) -> None:
        super().__init__(clock)
        self.before_first_step: Callable[[], None] | None = before_first_step

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.before_first_step is not None:
            self.before_first_step()
            self.before_first_step = None


class _Run:
    """The parts of one training run, built the way a composer would."""

    def __init__(
        self,
        model: torch.nn.Module,
        ds: Any,
        cfg: dict[str, Any],
        steps: int,
        hooks: _Hooks,
        manager: CheckpointManager | None = None,
    ) -> None:
        self.strategy = SingleDeviceStrategy("cpu")
        self.model, _ = self.strategy.setup(model)
        self.sampler = ResumableRandomSampler(len(ds), seed=W.SEED)
        loader = DataLoader(
            ds, batch_size=cfg["batch_size"], sampler=self.sampler, collate_fn=default_data_collator
        )
        self.optimizer = create_optimizer(self.model, "adamw_torch", learning_rate=W.LR, weight_decay=0.0)
        self.scheduler = get_scheduler("linear", self.optimizer, num_warmup_steps=0, num_training_steps=steps)
        self.manager = manager
        self.hooks = hooks
        self.loop = TrainLoop(
            self.model,
            self.optimizer,
            loader,
            lr_scheduler=self.scheduler,
            strategy=self.strategy,
            max_steps=steps,
            max_grad_norm=1.0,
            callbacks=CallbackHandler([hooks]),
            log_fn=self._log,
            save_fn=self._save,
        )
        if manager is not None and isinstance(manager.io, AsyncCheckpointIO):
            # the first save's buffers are made in the background while training starts
            manager.io.prepare(
                {
                    "model.safetensors": self.model.state_dict(),
                    "optimizer.pt": optimizer_state_like(self.optimizer),
                }
            )

    def _log(self, logs: dict[str, float]) -> None:
        if self.hooks.bar is not None:
            self.hooks.bar.write(str({**logs, "step": self.loop.state.global_step}))

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds: model, optimizer, scheduler, RNG, loop position."""
        return {
            "model.safetensors": self.strategy.model_state_dict(self.model),
            "optimizer.pt": self.optimizer.state_dict(),
            "scheduler.pt": self.scheduler.state_dict(),
            "rng_state.pth": get_rng_state(),
            "progress.json": {"global_step": self.loop.state.global_step, "loop": self.loop.state_dict()},
        }

    def _save(self, metrics: Any) -> None:
        self.manager.save(self.loop.state.global_step, self.state())

    def resume(self, path: str) -> None:
        """Restore everything from a checkpoint folder written by `_save`."""
        state = CheckpointManager(os.path.dirname(path)).load(path)
        self.strategy.load_model_state_dict(self.model, state["model.safetensors"])
        self.optimizer.load_state_dict(state["optimizer.pt"])
        self.scheduler.load_state_dict(state["scheduler.pt"])
        self.loop.state.global_step = state["progress.json"]["global_step"]
        self.loop.resume(state["progress.json"]["loop"], state["rng_state.pth"])


def _training(
    workload: str, cfg: dict[str, Any], ctx: dict[str, Any], extras: bool = False
) -> dict[str, Any]:
    model, ds = W.build(workload, cfg)
    steps, warm = cfg["steps"], cfg["warm"]
    clock = W.Clock([warm, steps])
    start = time.perf_counter()
    if extras:
        hooks = _Hooks(clock, cfg["logging_steps"], cfg["save_steps"], bar=True)
        run = _Run(model, ds, cfg, steps, hooks, CheckpointManager(ctx["workdir"]))
    else:
        run = _Run(model, ds, cfg, steps, _Hooks(clock))
    clock.start()
    run.loop.run()
    end = time.perf_counter()
    return W.training_result(clock, warm, steps, end - start, model, ds)


def _predict(workload: str, cfg: dict[str, Any]) -> dict[str, Any]:
    model, ds = W.build(workload, cfg)
    collate = W.pad_collate if workload == "predict_varlen" else default_data_collator
    loader = DataLoader(ds, batch_size=cfg["batch_size"], collate_fn=collate)

    def predict() -> Any:
        return EvaluationLoop(prediction_step=prediction_step).run(model, loader, "Prediction").predictions

    return W.predict_rounds(predict, cfg.get("rounds", 1))


def _checkpoint(cfg: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    model, ds = W.build("checkpoint", cfg)
    sync_dir = os.path.join(ctx["workdir"], "sync")
    for key, io in (
        ("save_s", FsspecCheckpointIO()),
        ("async_stall_s", AsyncCheckpointIO(FsspecCheckpointIO())),
    ):
        root = sync_dir if key == "save_s" else os.path.join(ctx["workdir"], "async")
        manager = CheckpointManager(root, io=io)
        run = _Run(
            model if key == "save_s" else W.build("checkpoint", cfg)[0],
            ds,
            cfg,
            cfg["saves"] if key == "save_s" else 1,
            _Hooks(W.Clock(), 0, 1),
            manager,
        )
        times: list[float] = []

        def timed_save(metrics: Any, run: _Run = run, key: str = key, times: list[float] = times) -> None:
            step = run.loop.state.global_step
            if key == "save_s" and step == 1:
                out["saved_digest"] = W.state_digest(run.model, run.optimizer)
            start = time.perf_counter()
            run.manager.save(step, run.state())
            times.append(time.perf_counter() - start)

        run.loop.save_fn = timed_save
        run.loop.run()
        if key == "save_s":
            out["save_samples_s"] = times
            out["save_s"] = statistics.median(times)
        else:
            out[key] = times[0]
            io.wait()
            io.close()

    model2, _ = W.build("checkpoint", cfg, seed=W.SEED + 7)
    holder: dict[str, _Run] = {}

    def check() -> None:
        start = time.perf_counter()
        out["loaded_digest"] = W.state_digest(holder["run"].model, holder["run"].optimizer)
        out["spent"] = time.perf_counter() - start

    clock = W.Clock()
    clock.start()
    holder["run"] = run = _Run(model2, ds, cfg, 2, _FirstStepHooks(clock, check))
    run.resume(os.path.join(sync_dir, "checkpoint-1"))
    run.loop.run()
    out["load_s"] = clock.to_first_step() - out.pop("spent")
    out["steps"] = clock.last_step
    return out


def prepare(cfg: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Resume set-up: run to ``resume_at + 1`` uninterrupted, saving at ``resume_at``."""
    model, ds = W.build("resume", cfg)
    at = cfg["resume_at"]
    model.record_call = at + 1
    _Run(model, ds, cfg, at + 1, _Hooks(W.Clock(), 0, at), CheckpointManager(ctx["workdir"])).loop.run()
    return {"checkpoint": os.path.join(ctx["workdir"], f"checkpoint-{at}"), "expected_batch": model.recorded}


def resume(cfg: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Resume from the prepared checkpoint; time from the set-up to the end of the first step."""
    model, ds = W.build("resume", cfg, seed=W.SEED + 7)
    model.record_call = 1
    clock = W.Clock()
    clock.start()
    run = _Run(model, ds, cfg, cfg["resume_at"] + 1, _Hooks(clock))
    run.resume(ctx["prepared"]["checkpoint"])
    run.loop.run()
    return {"first_step_s": clock.to_first_step(), "first_batch": model.recorded, "steps": clock.last_step}


WORKLOADS = {
    "mlp": lambda cfg, ctx: _training("mlp", cfg, ctx),
    "mlp_default": lambda cfg, ctx: _training("mlp_default", cfg, ctx, extras=True),
    "transformer": lambda cfg, ctx: _training("transformer", cfg, ctx),
    "predict_fixed": lambda cfg, ctx: _predict("predict_fixed", cfg),
    "predict_varlen": lambda cfg, ctx: _predict("predict_varlen", cfg),
    "checkpoint": _checkpoint,
    "resume": resume,
}
