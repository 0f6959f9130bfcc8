"""Shared ways to run a recipe as a script for the recipe tests: ``--help`` and ``torchrun``.

The test files reach them through the ``recipe_help`` and ``torchrun_recipe`` fixtures,
so no helper package has to be on ``sys.path``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_help(script: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _run_torchrun(script: Path, args: Sequence[str]) -> str:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_port", str(_free_port()), str(script), *args]
    # a crash of a rank prints every thread's Python stack (faulthandler) into the failure message
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-6000:]
    assert result.stdout.count("Model saved to") == 1  # rank 0 only
    return result.stdout


@pytest.fixture
def recipe_help() -> Callable[[Path], str]:
    """``recipe_help(script)``: run ``python script --help`` from the repository root, assert it
    succeeds, return its stdout."""
    return _run_help


@pytest.fixture
def torchrun_recipe() -> Callable[[Path, Sequence[str]], str]:
    """``torchrun_recipe(script, args)``: launch ``script`` on 2 CPU processes with torchrun, assert
    it succeeds and that only rank 0 printed "Model saved to", return its stdout."""
    return _run_torchrun
