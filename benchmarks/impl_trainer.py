"""The workloads driven through a Trainer with the Hugging Face API.

toolkit's `Trainer` reproduces the API of the HF Trainer, so one driver serves both
``toolkit`` and ``hf``: each passes its ``Trainer``, ``TrainingArguments`` and
``TrainerCallback`` classes (`TrainerAPI`). Timestamps come from a callback's
``on_step_end`` / ``on_save`` (the last callback, so the built-in ones ran first).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks import workloads as W

__all__ = ["TrainerAPI", "workloads_for"]


@dataclass
class TrainerAPI:
    """The three classes the driver needs from a Trainer package."""

    Trainer: Any
    TrainingArguments: Any
    TrainerCallback: Any


def _args(
    api: TrainerAPI, output_dir: str, cfg: dict[str, Any], steps: int, extras: bool = False, **overrides: Any
) -> Any:
    kwargs: dict[str, Any] = {
        "output_dir": output_dir,
        "max_steps": steps,
        "per_device_train_batch_size": cfg["batch_size"],
        "per_device_eval_batch_size": cfg["batch_size"],
        "learning_rate": W.LR,
        "lr_scheduler_type": "linear",
        "warmup_steps": 0,
        "max_grad_norm": 1.0,
        "weight_decay": 0.0,
        "seed": W.SEED,
        "report_to": "none",
        "dataloader_num_workers": 0,
    }
    if not extras:
        kwargs.update(logging_strategy="no", save_strategy="no", disable_tqdm=True)
    kwargs.update(overrides)
    return api.TrainingArguments(**kwargs)


def _clock_callback(
    api: TrainerAPI,
    clock: W.Clock,
    on_save: Callable[[], None] | None = None,
    on_first_step_begin: Callable[[], None] | None = None,
) -> Any:
    class ClockCallback(api.TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock.step(state.global_step)

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if on_save is not None:
                on_save()

    if on_first_step_begin is None:  # an event the timing does not need is not overridden
        return ClockCallback()

    class FirstStepClockCallback(ClockCallback):
        begun = False

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not self.begun:
                self.begun = True
                on_first_step_begin()

    return FirstStepClockCallback()


def _training(
    api: TrainerAPI, workload: str, cfg: dict[str, Any], ctx: dict[str, Any], extras: bool = False
) -> dict[str, Any]:
    model, ds = W.build(workload, cfg)
    steps, warm = cfg["steps"], cfg["warm"]
    clock = W.Clock([warm, steps])
    over: dict[str, Any] = {}
    if extras:
        over = {"logging_steps": cfg["logging_steps"], "save_steps": cfg["save_steps"], "disable_tqdm": False}
    start = time.perf_counter()
    args = _args(api, ctx["workdir"], cfg, steps, extras=extras, **over)
    trainer = api.Trainer(model=model, args=args, train_dataset=ds, callbacks=[_clock_callback(api, clock)])
    clock.start()
    trainer.train()
    end = time.perf_counter()
    return W.training_result(clock, warm, steps, end - start, model, ds)


def _predict(api: TrainerAPI, workload: str, cfg: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    model, ds = W.build(workload, cfg)
    varlen = workload == "predict_varlen"
    args = _args(api, ctx["workdir"], cfg, 1)
    trainer = api.Trainer(model=model, args=args, data_collator=W.pad_collate if varlen else None)
    return W.predict_rounds(lambda: trainer.predict(ds).predictions, cfg.get("rounds", 1))


def _checkpoint(api: TrainerAPI, cfg: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    model, ds = W.build("checkpoint", cfg)
    out: dict[str, Any] = {}

    def save_run(folder: str, key: str, steps: int, **over: Any) -> list[float]:
        times: list[float] = []
        holder: dict[str, Any] = {}

        class Saving(api.TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                if key == "save_s" and state.global_step == 1:  # the state being saved (not timed)
                    out["saved_digest"] = W.state_digest(holder["t"].model, holder["t"].optimizer)
                holder["step_end"] = time.perf_counter()

            def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                times.append(time.perf_counter() - holder["step_end"])

        args = _args(api, folder, cfg, steps, save_strategy="steps", save_steps=1, **over)
        holder["t"] = api.Trainer(
            model=model if key == "save_s" else W.build("checkpoint", cfg)[0],
            args=args,
            train_dataset=ds,
            callbacks=[Saving()],
        )
        holder["t"].train()
        return times

    sync_dir = os.path.join(ctx["workdir"], "sync")
    out["save_samples_s"] = save_run(sync_dir, "save_s", cfg["saves"])
    out["save_s"] = statistics.median(out["save_samples_s"])
    if "save_async" in getattr(api.TrainingArguments, "__dataclass_fields__", {}):
        out["async_stall_s"] = save_run(
            os.path.join(ctx["workdir"], "async"), "async_stall_s", 1, save_async=True
        )[0]
    else:
        out["async_stall_s"] = None

    model2, _ = W.build("checkpoint", cfg, seed=W.SEED + 7)
    holder: dict[str, Any] = {}

    def check() -> None:
        start = time.perf_counter()
        out["loaded_digest"] = W.state_digest(holder["t"].model, holder["t"].optimizer)
        out["spent"] = time.perf_counter() - start

    clock = W.Clock()
    # a folder of its own: the sync one holds checkpoints after the one resumed from
    args = _args(api, os.path.join(ctx["workdir"], "resumed"), cfg, 2)
    holder["t"] = api.Trainer(
        model=model2,
        args=args,
        train_dataset=ds,
        callbacks=[_clock_callback(api, clock, on_first_step_begin=check)],
    )
    clock.start()
    holder["t"].train(resume_from_checkpoint=os.path.join(sync_dir, "checkpoint-1"))
    out["load_s"] = clock.to_first_step() - out.pop("spent")
    out["steps"] = clock.last_step
    return out


def _prepare(api: TrainerAPI, cfg: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    model, ds = W.build("resume", cfg)
    at = cfg["resume_at"]
    model.record_call = at + 1
    args = _args(api, ctx["workdir"], cfg, at + 1, save_strategy="steps", save_steps=at)
    api.Trainer(model=model, args=args, train_dataset=ds).train()
    return {"checkpoint": os.path.join(ctx["workdir"], f"checkpoint-{at}"), "expected_batch": model.recorded}


def _resume(api: TrainerAPI, cfg: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    model, ds = W.build("resume", cfg, seed=W.SEED + 7)
    model.record_call = 1
    clock = W.Clock()
    args = _args(api, os.path.join(ctx["workdir"], "resumed"), cfg, cfg["resume_at"] + 1)
    trainer = api.Trainer(model=model, args=args, train_dataset=ds, callbacks=[_clock_callback(api, clock)])
    clock.start()
    trainer.train(resume_from_checkpoint=ctx["prepared"]["checkpoint"])
    return {"first_step_s": clock.to_first_step(), "first_batch": model.recorded, "steps": clock.last_step}


def workloads_for(api: TrainerAPI) -> tuple[dict[str, Callable[..., dict[str, Any]]], Callable[..., dict]]:
    """The ``WORKLOADS`` table and the ``prepare`` function of a Trainer package."""
    table = {
        "mlp": lambda cfg, ctx: _training(api, "mlp", cfg, ctx),
        "mlp_default": lambda cfg, ctx: _training(api, "mlp_default", cfg, ctx, extras=True),
        "transformer": lambda cfg, ctx: _training(api, "transformer", cfg, ctx),
        "predict_fixed": lambda cfg, ctx: _predict(api, "predict_fixed", cfg, ctx),
        "predict_varlen": lambda cfg, ctx: _predict(api, "predict_varlen", cfg, ctx),
        "checkpoint": lambda cfg, ctx: _checkpoint(api, cfg, ctx),
        "resume": lambda cfg, ctx: _resume(api, cfg, ctx),
    }
    return table, lambda cfg, ctx: _prepare(api, cfg, ctx)
