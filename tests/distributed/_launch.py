"""Shared helpers of the multi-process tests: find the launchers, start a driver script
under one with a clean environment, and read its ``@@RESULT@@ <json>`` line.

Imported by path (``tests/distributed`` is not a package); each launch costs 7-11 s on
the CPU, mostly ``import torch``, so a driver runs several checks per launch.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
#: Variables of an enclosing launcher that must not leak into the one a test starts.
LAUNCH_ENV_VARS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "SLURM_NTASKS",
)
RESULT_PREFIX = "@@RESULT@@ "


def load_toys():
    """The shared toy models and data (``ddp_toys.py``), imported by path."""
    spec = importlib.util.spec_from_file_location("ddp_toys", HERE / "ddp_toys.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without launcher variables, one OpenMP thread per process."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV_VARS}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONFAULTHANDLER"] = "1"  # a crashing rank prints its threads' Python stacks
    # this checkout's toolkit, whatever is installed
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE.parents[1]), env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


def torchrun(nproc: int = 2) -> list[str]:
    """``torchrun --standalone --nproc_per_node N`` (skips the test when unavailable)."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this build")
    beside = Path(sys.executable).with_name("torchrun")
    exe = str(beside) if beside.exists() else shutil.which("torchrun")
    if exe is None:
        pytest.skip("torchrun is not available")
    return [exe, "--standalone", "--nproc_per_node", str(nproc)]


def accelerate(nproc: int = 2) -> list[str]:
    """``accelerate launch --multi_gpu --num_processes N`` on a free port (real gloo processes
    on the CPU; ``--cpu`` would silently start one process)."""
    if importlib.util.find_spec("accelerate") is None or not torch.distributed.is_available():
        pytest.skip("accelerate is not installed")
    beside = Path(sys.executable).with_name("accelerate")
    exe = str(beside) if beside.exists() else shutil.which("accelerate")
    if exe is None:
        pytest.skip("the accelerate command is not available")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [
        exe,
        "launch",
        "--multi_gpu",
        "--num_processes",
        str(nproc),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
    ]


def python() -> list[str]:
    """A plain single process, no launcher."""
    return [sys.executable]


def launch(
    command: Sequence[str],
    driver: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 180,
) -> dict:
    """Run ``command driver args`` in this folder and return the JSON of its one result line.

    Fails the test (with the tail of stdout and stderr) when the driver exits non-zero
    or does not print exactly one result line.
    """
    proc = subprocess.run(
        [*command, str(HERE / driver), *args],
        cwd=HERE,
        env=dict(env or clean_env()),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result_of(proc, driver)


def result_of(proc: subprocess.CompletedProcess, driver: str) -> dict:
    """The JSON of a finished driver's one result line; fails the test (with the tail of
    stdout and stderr) when it exited non-zero or printed not exactly one such line."""
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or len(lines) != 1:
        pytest.fail(
            f"{driver} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return json.loads(lines[0][len(RESULT_PREFIX) :])
