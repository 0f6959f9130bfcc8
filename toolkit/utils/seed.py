"""Seeding and random-number-generator state.

`set_seed` seeds Python's ``random``, numpy's global generator and torch (CPU and every
CUDA device). `enable_full_determinism` additionally makes torch pick deterministic
kernels; it changes one environment variable (``CUBLAS_WORKSPACE_CONFIG``), so call it
when training starts, never when building arguments.

`get_rng_state` / `set_rng_state` capture and restore all generators, for checkpoints.
The state holds only plain Python values and tensors, so it survives ``torch.save`` and
``torch.load(..., weights_only=True)``. States written by the Hugging Face Trainer
(``rng_state.pth``: numpy state with an array, ``cuda`` as one tensor) load as well.
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import numpy as np
import torch

__all__ = ["set_seed", "enable_full_determinism", "get_rng_state", "set_rng_state"]

_log = logging.getLogger(__name__)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device (lazily if not initialised)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seeds ``random``, ``numpy`` and ``torch`` (CPU and all CUDA devices).

    Args:
        seed: The seed.
        deterministic: Also call `enable_full_determinism` (slower kernels, and sets
            ``CUBLAS_WORKSPACE_CONFIG``).

    Example:
        >>> set_seed(0); a = torch.rand(1)
        >>> set_seed(0); bool(torch.equal(a, torch.rand(1)))
        True
    """
    if deterministic:
        enable_full_determinism(seed)
    else:
        _seed_all(seed)


def enable_full_determinism(seed: int, warn_only: bool = False) -> None:
    """Seeds everything and makes torch use deterministic algorithms only.

    Sets ``CUBLAS_WORKSPACE_CONFIG=":4096:8"`` (needed by deterministic cuBLAS), calls
    ``torch.use_deterministic_algorithms(True, warn_only=warn_only)`` and turns cuDNN
    ``deterministic`` on and ``benchmark`` off. These are process-wide settings: call
    this once, at the start of training.

    Args:
        seed: The seed.
        warn_only: Warn instead of raising when an operation has no deterministic
            implementation.
    """
    _seed_all(seed)
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def _numpy_state() -> tuple[Any, ...]:
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return (str(name), [int(k) for k in keys], int(pos), int(has_gauss), float(cached))


def get_rng_state() -> dict[str, Any]:
    """Captures the state of every random generator.

    Returns:
        ``{"python": ..., "numpy": ..., "cpu": Tensor}`` plus ``"cuda"`` (one tensor per
        device) when CUDA has been initialised. Numpy's key array is stored as a list of
        ints so that ``torch.load(weights_only=True)`` can read the state back.
    """
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": (version, tuple(internal), gauss),
        "numpy": _numpy_state(),
        "cpu": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_numpy_state(value: Any) -> None:
    if isinstance(value, dict):  # numpy's non-legacy form
        np.random.set_state(value)
        return
    name, keys, pos, has_gauss, cached = value
    keys_arr = keys.cpu().numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((str(name), keys_arr.astype(np.uint32), int(pos), int(has_gauss), float(cached)))


def _set_cuda_state(value: Any) -> None:
    if not torch.cuda.is_available():
        _log.warning("The saved RNG state has CUDA generators but CUDA is not available; skipping them.")
        return
    states = [value] if isinstance(value, torch.Tensor) else list(value)
    count = torch.cuda.device_count()
    if len(states) == 1 and count >= 1:
        # One saved generator (a single-device run, or the HF single-GPU format):
        # restore it on the current device.
        torch.cuda.set_rng_state(states[0])
        return
    if len(states) != count:
        _log.warning(
            "The saved RNG state has %d CUDA generators but %d devices are visible; restoring the first %d.",
            len(states),
            count,
            min(len(states), count),
        )
    for device, s in enumerate(states[:count]):
        torch.cuda.set_rng_state(s, device)


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores generator states captured by `get_rng_state` (missing keys are left alone).

    Args:
        state: The dict from `get_rng_state` (possibly after ``torch.save``/``torch.load``),
            or one written by the Hugging Face Trainer.
    """
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    if "numpy" in state:
        _set_numpy_state(state["numpy"])
    if "cpu" in state:
        torch.set_rng_state(torch.as_tensor(state["cpu"], dtype=torch.uint8).cpu())
    if state.get("cuda") is not None:
        _set_cuda_state(state["cuda"])
