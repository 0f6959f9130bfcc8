"""The ``raw`` implementation: a clean hand-written PyTorch loop, the baseline of every ratio.

DataLoader, AdamW, the linear schedule, gradient clipping; with the default extras a
tqdm bar, a log every ``logging_steps`` and a checkpoint every ``save_steps``
(`workloads.raw_save`: safetensors + ``torch.save``, fsynced). Imports nothing of toolkit.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, default_collate

from benchmarks import workloads as W

__all__ = ["WORKLOADS", "prepare"]


def _train(
    model: torch.nn.Module,
    ds: Any,
    cfg: dict[str, Any],
    steps: int,
    clock: W.Clock,
    *,
    collate: Callable = default_collate,
    resume_from: str | None = None,
    before_first_step: Callable[[torch.nn.Module, Any], None] | None = None,
    after_step: Callable[[int, torch.nn.Module, Any, Any], None] | None = None,
    extras: dict[str, Any] | None = None,
) -> None:
    """Train ``model`` for ``steps`` optimizer steps (from a raw checkpoint when given)."""
    clock.start()
    bs = cfg["batch_size"]
    sampler = W.EpochPermutation(len(ds), W.SEED)
    loader = DataLoader(ds, batch_size=bs, sampler=sampler, collate_fn=collate)
    optimizer = torch.optim.AdamW(model.parameters(), lr=W.LR, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, W.linear_lambda(steps))
    step, epoch = 0, 0
    if resume_from is not None:
        state = W.raw_load(resume_from)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["progress"]["step"]
        epoch, done = divmod(step, len(loader))
        sampler.epoch, sampler.start = epoch, done * bs
        W.set_rng_state(state["rng"])
    pbar = running = None
    if extras:
        from tqdm.auto import tqdm

        pbar = tqdm(total=steps, initial=step)
        running = torch.zeros(())
        logs: list[dict[str, float]] = []
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    while step < steps:
        sampler.set_epoch(epoch)
        for batch in loader:
            if before_first_step is not None:
                before_first_step(model, optimizer)
                before_first_step = None
            loss = model(**batch)["loss"]
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            clock.step(step)
            if after_step is not None:
                after_step(step, model, optimizer, scheduler)
            if extras:
                running += loss.detach()
                pbar.update(1)
                if step % extras["logging_steps"] == 0:
                    log = {
                        "loss": round(running.item() / extras["logging_steps"], 4),
                        "learning_rate": scheduler.get_last_lr()[0],
                        "step": step,
                    }
                    running.zero_()
                    logs.append(log)
                    pbar.write(str(log))
                if step % extras["save_steps"] == 0:
                    folder = os.path.join(extras["output_dir"], f"checkpoint-{step}")
                    W.raw_save(folder, model, optimizer, scheduler, {"step": step})
            if step >= steps:
                break
        epoch += 1
    if pbar is not None:
        pbar.close()


def _training(
    workload: str, cfg: dict[str, Any], ctx: dict[str, Any], extras: bool = False
) -> dict[str, Any]:
    model, ds = W.build(workload, cfg)
    steps, warm = cfg["steps"], cfg["warm"]
    clock = W.Clock([warm, steps])
    extra = None
    if extras:
        extra = {
            "logging_steps": cfg["logging_steps"],
            "save_steps": cfg["save_steps"],
            "output_dir": ctx["workdir"],
        }
    start = time.perf_counter()
    _train(model, ds, cfg, steps, clock, extras=extra)
    end = time.perf_counter()
    return W.training_result(clock, warm, steps, end - start, model, ds)


def mlp(cfg: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Tiny MLP, extras off."""
    return _training("mlp", cfg, ctx)


def mlp_default(cfg: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Tiny MLP with logging, progress bar and saves."""
    return _training("mlp_default", cfg, ctx, extras=True)


def transformer(cfg: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Small transformer, extras off."""
    return _training("transformer", cfg, ctx)


def _predict(workload: str, cfg: dict[str, Any]) -> dict[str, Any]:
    model, ds = W.build(workload, cfg)
    varlen = workload == "predict_varlen"
    loader = DataLoader(
        ds, batch_size=cfg["batch_size"], collate_fn=W.pad_collate if varlen else default_collate
    )

    def predict() -> Any:
        model.eval()
        outs = []
        with torch.no_grad():
            for batch in loader:
                outs.append(model(**batch)["logits"])
        preds = W.stack_predictions(outs, varlen)
        del outs
        return preds.numpy()

    return W.predict_rounds(predict, cfg.get("rounds", 1))


def predict_fixed(cfg: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Predictions of fixed size."""
    return _predict("predict_fixed", cfg)


def predict_varlen(cfg: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Predictions of variable length, padded with -100."""
    return _predict("predict_varlen", cfg)


def checkpoint(cfg: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Save after each of ``saves`` steps; load the first into a fresh model, up to the
    end of the next step."""
    model, ds = W.build("checkpoint", cfg)
    folder = os.path.join(ctx["workdir"], "checkpoint-1")
    saved: dict[str, Any] = {"times": []}

    def save(step: int, m: torch.nn.Module, optimizer: Any, scheduler: Any) -> None:
        if step == 1:
            saved["digest"] = W.state_digest(m, optimizer)
        start = time.perf_counter()
        W.raw_save(
            os.path.join(ctx["workdir"], f"checkpoint-{step}"), m, optimizer, scheduler, {"step": step}
        )
        saved["times"].append(time.perf_counter() - start)

    _train(model, ds, cfg, cfg["saves"], W.Clock(), after_step=save)
    model2, _ = W.build("checkpoint", cfg, seed=W.SEED + 7)
    loaded: dict[str, Any] = {}

    def check(m: torch.nn.Module, opt: Any) -> None:
        start = time.perf_counter()
        loaded["digest"] = W.state_digest(m, opt)
        loaded["spent"] = time.perf_counter() - start

    clock2 = W.Clock()
    _train(model2, ds, cfg, 2, clock2, resume_from=folder, before_first_step=check)
    return {
        "save_s": statistics.median(saved["times"]),
        "save_samples_s": saved["times"],
        "load_s": clock2.to_first_step() - loaded["spent"],
        "saved_digest": saved["digest"],
        "loaded_digest": loaded["digest"],
        "steps": clock2.last_step,
    }


def prepare(cfg: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Resume workload set-up: run to ``resume_at + 1`` uninterrupted, saving at ``resume_at``;
    return the checkpoint and the digest of the batch trained right after it."""
    model, ds = W.build("resume", cfg)
    at = cfg["resume_at"]
    model.record_call = at + 1
    folder = os.path.join(ctx["workdir"], f"checkpoint-{at}")

    def save(step: int, m: torch.nn.Module, optimizer: Any, scheduler: Any) -> None:
        if step == at:
            W.raw_save(folder, m, optimizer, scheduler, {"step": step})

    _train(model, ds, cfg, at + 1, W.Clock(), after_step=save)
    return {"checkpoint": folder, "expected_batch": model.recorded}


def resume(cfg: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Resume from the prepared checkpoint; time train() to the end of the first step."""
    model, ds = W.build("resume", cfg, seed=W.SEED + 7)
    model.record_call = 1
    clock = W.Clock()
    _train(model, ds, cfg, cfg["resume_at"] + 1, clock, resume_from=ctx["prepared"]["checkpoint"])
    return {"first_step_s": clock.to_first_step(), "first_batch": model.recorded, "steps": clock.last_step}


WORKLOADS = {
    "mlp": mlp,
    "mlp_default": mlp_default,
    "transformer": transformer,
    "predict_fixed": predict_fixed,
    "predict_varlen": predict_varlen,
    "checkpoint": checkpoint,
    "resume": resume,
}
