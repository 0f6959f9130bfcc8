"""The ``lightning`` implementation: the Lightning Trainer (``lightning.pytorch``).

A `LightningModule` wraps the shared model: AdamW and the linear schedule stepped per
optimizer step, ``gradient_clip_val=1.0``, CPU, one device. Extras off: no logger,
progress bar, checkpointing or model summary. Default extras: Lightning's defaults
(CSV/TensorBoard logger, progress bar) with ``log_every_n_steps`` and a
``ModelCheckpoint(every_n_train_steps=...)`` matching the other implementations.
Checkpoints are ``Trainer.save_checkpoint`` (async: the ``AsyncCheckpointIO`` plugin);
loading is ``fit(ckpt_path=...)``. Predictions go through ``Trainer.predict``.
"""

from __future__ import annotations

import os
import statistics
import time
import warnings
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, default_collate

from benchmarks import workloads as W

__all__ = ["WORKLOADS", "prepare"]

warnings.filterwarnings("ignore")


class _Module(pl.LightningModule):
    def __init__(
        self, model: torch.nn.Module, steps: int, clock: W.Clock | None = None, log: bool = False
    ) -> None:
        super().__init__()
        self.model, self.steps, self.clock, self.log_loss = model, steps, clock, log
        self.hook_first: Any = None

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch)["loss"]
        if self.log_loss:
            self.log("loss", loss)
        return loss

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.model(**batch)["logits"]

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.hook_first is not None:
            self.hook_first(self)
            self.hook_first = None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.clock is not None:
            self.clock.step(self.trainer.global_step)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.model.parameters(), lr=W.LR, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, W.linear_lambda(self.steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _trainer(root: str, steps: int, extras: bool = False, **kw: Any) -> pl.Trainer:
    base: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_steps": steps,
        "gradient_clip_val": 1.0,
        "default_root_dir": root,
        "num_sanity_val_steps": 0,
    }
    if not extras:
        base.update(
            logger=False, enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False
        )
    base.update(kw)
    return pl.Trainer(**base)


def _loader(ds: Any, cfg: dict[str, Any], shuffle: bool = True, collate: Any = default_collate) -> DataLoader:
    g = torch.Generator().manual_seed(W.SEED)
    return DataLoader(
        ds,
        batch_size=cfg["batch_size"],
        shuffle=shuffle,
        generator=g if shuffle else None,
        collate_fn=collate,
    )


def _training(
    workload: str, cfg: dict[str, Any], ctx: dict[str, Any], extras: bool = False
) -> dict[str, Any]:
    model, ds = W.build(workload, cfg)
    steps, warm = cfg["steps"], cfg["warm"]
    clock = W.Clock([warm, steps])
    start = time.perf_counter()
    kw: dict[str, Any] = {}
    if extras:
        kw = {
            "log_every_n_steps": cfg["logging_steps"],
            "callbacks": [
                pl.callbacks.ModelCheckpoint(
                    dirpath=ctx["workdir"], every_n_train_steps=cfg["save_steps"], save_top_k=-1
                )
            ],
        }
    trainer = _trainer(ctx["workdir"], steps, extras, **kw)
    module = _Module(model, steps, clock, log=extras)
    loader = _loader(ds, cfg)
    clock.start()
    trainer.fit(module, loader)
    end = time.perf_counter()
    return W.training_result(clock, warm, steps, end - start, model, ds)


def _predict(workload: str, cfg: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    model, ds = W.build(workload, cfg)
    varlen = workload == "predict_varlen"
    trainer = _trainer(ctx["workdir"], 1, inference_mode=True)
    loader = _loader(ds, cfg, shuffle=False, collate=W.pad_collate if varlen else default_collate)
    module = _Module(model, 1)

    def predict() -> Any:
        outs = trainer.predict(module, loader)
        preds = W.stack_predictions(outs, varlen)  # Lightning returns the list of batch outputs
        del outs
        return preds.numpy()

    return W.predict_rounds(predict, cfg.get("rounds", 1))


def _checkpoint(cfg: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    from lightning.pytorch.plugins.io import AsyncCheckpointIO

    out: dict[str, Any] = {}
    model, ds = W.build("checkpoint", cfg)
    path = os.path.join(ctx["workdir"], "sync.ckpt")
    for key, plugins in (("save_s", None), ("async_stall_s", [AsyncCheckpointIO()])):
        trainer = _trainer(ctx["workdir"], 1, plugins=plugins)
        module = _Module(model if key == "save_s" else W.build("checkpoint", cfg)[0], 1)
        trainer.fit(module, _loader(ds, cfg))
        if key == "save_s":
            out["saved_digest"] = W.state_digest(model, trainer.optimizers[0])
            times = []
            for n in range(cfg["saves"]):  # the state after step 1, saved ``saves`` times
                start = time.perf_counter()
                trainer.save_checkpoint(path if n == 0 else os.path.join(ctx["workdir"], f"sync-{n}.ckpt"))
                times.append(time.perf_counter() - start)
            out["save_samples_s"] = times
            out["save_s"] = statistics.median(times)
        else:
            start = time.perf_counter()
            trainer.save_checkpoint(os.path.join(ctx["workdir"], "async.ckpt"))
            out[key] = time.perf_counter() - start
        trainer.strategy.checkpoint_io.teardown()
    model2, _ = W.build("checkpoint", cfg, seed=W.SEED + 7)

    def check(module: _Module) -> None:
        start = time.perf_counter()
        out["loaded_digest"] = W.state_digest(module.model, module.trainer.optimizers[0])
        out["spent"] = time.perf_counter() - start

    clock = W.Clock()
    module = _Module(model2, 2, clock)
    module.hook_first = check
    trainer = _trainer(ctx["workdir"], 2)
    loader = _loader(ds, cfg)
    clock.start()
    trainer.fit(module, loader, ckpt_path=path)
    out["load_s"] = clock.to_first_step() - out.pop("spent")
    out["steps"] = clock.last_step
    return out


def prepare(cfg: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Resume set-up: run to ``resume_at + 1`` uninterrupted, saving at ``resume_at``."""
    model, ds = W.build("resume", cfg)
    at = cfg["resume_at"]
    model.record_call = at + 1
    ckpt = pl.callbacks.ModelCheckpoint(
        dirpath=ctx["workdir"], filename="checkpoint", every_n_train_steps=at, save_top_k=-1
    )
    trainer = _trainer(ctx["workdir"], at + 1, callbacks=[ckpt], enable_checkpointing=True)
    trainer.fit(_Module(model, at + 1), _loader(ds, cfg))
    return {"checkpoint": os.path.join(ctx["workdir"], "checkpoint.ckpt"), "expected_batch": model.recorded}


def resume(cfg: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Resume with ``fit(ckpt_path=...)``; time the call to the end of the first step."""
    model, ds = W.build("resume", cfg, seed=W.SEED + 7)
    model.record_call = 1
    clock = W.Clock()
    trainer = _trainer(ctx["workdir"], cfg["resume_at"] + 1)
    module = _Module(model, cfg["resume_at"] + 1, clock)
    loader = _loader(ds, cfg)
    clock.start()
    trainer.fit(module, loader, ckpt_path=ctx["prepared"]["checkpoint"])
    return {"first_step_s": clock.to_first_step(), "first_batch": model.recorded, "steps": clock.last_step}


WORKLOADS = {
    "mlp": lambda cfg, ctx: _training("mlp", cfg, ctx),
    "mlp_default": lambda cfg, ctx: _training("mlp_default", cfg, ctx, extras=True),
    "transformer": lambda cfg, ctx: _training("transformer", cfg, ctx),
    "predict_fixed": lambda cfg, ctx: _predict("predict_fixed", cfg, ctx),
    "predict_varlen": lambda cfg, ctx: _predict("predict_varlen", cfg, ctx),
    "checkpoint": _checkpoint,
    "resume": resume,
}
