"""Measurements in a fresh process: ``python -m benchmarks.worker '<json spec>'``.

The spec names the implementation, the torch thread count, the file the results go to
(a JSON list) and the jobs: each a workload, its sizes, a working folder and a phase
(``measure``, or ``prepare`` for the set-up of the resume workload). `benchmarks.run`
starts one worker per (implementation, workload, repeat), or one per implementation
for the ``--quick`` smoke run; the ``import`` workload is measured before anything
else is imported.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from typing import Any

__all__ = ["IMPLS", "IMPORTS", "measure_import", "main"]

#: Implementation name -> module holding its ``WORKLOADS`` (and ``prepare``).
IMPLS: dict[str, str] = {
    "raw": "benchmarks.impl_raw",
    "toolkit": "benchmarks.impl_toolkit",
    "toolkit-parts": "benchmarks.impl_parts",
    "hf": "benchmarks.impl_hf",
    "lightning": "benchmarks.impl_lightning",
}

#: What each implementation imports to train, timed after ``import torch``.
IMPORTS: dict[str, str] = {
    "raw": "",
    "toolkit": "from toolkit import Trainer, TrainingArguments",
    "toolkit-parts": (
        "from toolkit.loops import TrainLoop\nfrom toolkit.strategies import SingleDeviceStrategy\n"
        "from toolkit.optim import create_optimizer, get_scheduler\nfrom toolkit.checkpoint import CheckpointManager"
    ),
    "hf": "from transformers import Trainer, TrainingArguments",
    "lightning": "import lightning.pytorch",
}


def measure_import(impl: str) -> dict[str, Any]:
    """Seconds of ``import torch``, then of the implementation's own imports after it."""
    start = time.perf_counter()
    import torch  # noqa: F401

    mid = time.perf_counter()
    exec(IMPORTS[impl], {})  # noqa: S102 - a fixed string from IMPORTS
    end = time.perf_counter()
    return {"torch_import_s": mid - start, "import_s": end - mid}


def _warm_torch() -> None:
    """One throw-away step of everything the loops use, so that torch's lazy one-time
    set-up (imports on the first optimizer step, for instance) is in no measurement."""
    import torch
    from torch.utils.data import DataLoader

    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    for batch in DataLoader([{"x": torch.ones(4)}] * 2, batch_size=2):
        model(batch["x"]).sum().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)


def _run_job(impl: str, job: dict[str, Any], prepared: dict[str, Any] | None) -> dict[str, Any]:
    if job["workload"] == "import":
        return measure_import(impl)
    module = importlib.import_module(IMPLS[impl])
    ctx = {"workdir": job["workdir"], "prepared": job.get("prepared") or prepared}
    if job.get("phase") == "prepare":
        return module.prepare(job["cfg"], ctx)
    return module.WORKLOADS[job["workload"]](job["cfg"], ctx)


def _baton(spec: dict[str, Any], job: dict[str, Any]) -> Any:
    """With ``spec["baton"] = [read_fd, write_fd, block]`` (an interleaved group), install
    the baton for the measuring job and wait for the first turn; else None."""
    if not spec.get("baton") or job["workload"] == "import" or job.get("phase") == "prepare":
        return None
    from benchmarks import workloads

    read_fd, write_fd, block = spec["baton"]
    baton = workloads.Baton(read_fd, write_fd, block)
    workloads.use_baton(baton)
    baton.wait_turn()
    return baton


def main(argv: list[str] | None = None) -> int:
    """Run the jobs of the spec given as the only argument, in order (an ``import`` job
    first, before torch is imported); write their results as a JSON list to ``spec["out"]``.

    A resume job without ``prepared`` uses what this process's last prepare job returned.
    With ``spec["baton"]`` the measuring job takes turns with the other workers of its
    group (see `benchmarks.workloads.Baton`); with ``spec["cpus"]`` the process runs on
    those CPUs only.
    """
    spec = json.loads((argv if argv is not None else sys.argv[1:])[0])
    if spec.get("cpus"):  # before torch starts its threads
        os.sched_setaffinity(0, spec["cpus"])
    jobs = sorted(spec["jobs"], key=lambda j: j["workload"] != "import")
    results: list[dict[str, Any]] = []
    prepared = None
    warm = False
    pending_close: list[Any] = []
    for job in jobs:
        try:
            if job["workload"] != "import" and not warm:
                import torch

                torch.set_num_threads(spec["threads"])
                _warm_torch()
                warm = True
            baton = _baton(spec, job)
            try:
                result = _run_job(spec["impl"], job, prepared)
            finally:
                if baton is not None:
                    from benchmarks import workloads

                    workloads.use_baton(None)
                    pending_close.append(baton)
            if job.get("phase") == "prepare":
                prepared = result
            result["ok"] = True
        except Exception as exc:  # reported by the harness, which decides how bad it is
            traceback.print_exc()
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        if hasattr(os, "sched_getaffinity"):
            result["cpus"] = sorted(os.sched_getaffinity(0))
        results.append({"workload": job["workload"], "phase": job.get("phase", "measure"), **result})
    with open(spec["out"], "w", encoding="utf-8") as f:
        json.dump(results, f)
    for baton in pending_close:  # the harness reads the closed pipe as "finished"
        baton.close()
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
