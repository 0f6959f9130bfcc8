"""Find a batch size that fits: retry with half the batch after an out-of-memory error.

`find_executable_batch_size` is the decorator behind ``auto_find_batch_size``: it calls
``function(batch_size, *args, **kwargs)`` and, when that raises an out-of-memory error
(see `is_oom_error`), frees what it can and calls again with half the batch size, down
to 1. `rebalance` is the matching arithmetic for a caller that wants to keep the
effective batch (per-device batch x accumulation steps) while the batch shrinks.
"""

from __future__ import annotations

import functools
import gc
import logging
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["find_executable_batch_size", "is_oom_error", "rebalance", "release_memory"]

logger = logging.getLogger(__name__)

# Messages of RuntimeErrors that mean "this batch does not fit". The cuDNN one is what
# cuDNN reports for some too-large convolutions; accelerate treats it the same way.
_OOM_MESSAGES = (
    "out of memory",  # CUDA ("CUDA out of memory.", "CUDA error: out of memory"), MPS, XPU
    "DefaultCPUAllocator: can't allocate memory",  # CPU
    "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED.",
)


def is_oom_error(exc: BaseException) -> bool:
    """True when ``exc`` means a batch did not fit in memory.

    That is a ``torch.OutOfMemoryError`` (``torch.cuda.OutOfMemoryError``), a
    ``MemoryError``, or a ``RuntimeError`` whose message contains ``out of memory``,
    ``DefaultCPUAllocator: can't allocate memory`` or the cuDNN ``NOT_SUPPORTED`` error.

    Example:
        >>> is_oom_error(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
        True
        >>> is_oom_error(RuntimeError("shape mismatch"))
        False
    """
    oom_type = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(exc, (oom_type, MemoryError)):
        return True
    if isinstance(exc, RuntimeError):
        message = str(exc)
        return any(text in message for text in _OOM_MESSAGES)
    return False


def release_memory() -> None:
    """Collect garbage and, when CUDA is in use, return cached blocks to the driver."""
    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def find_executable_batch_size(
    function: Callable[..., Any] | None = None,
    starting_batch_size: int = 128,
    auto_find_batch_size: bool = True,
) -> Callable[..., Any]:
    """Decorate ``function(batch_size, ...)`` so it is retried with half the batch on OOM.

    The decorated function is called without the batch size: ``train(x)`` runs
    ``function(batch_size, x)``. On an out-of-memory error the exception and its frames
    are dropped, `release_memory` runs, the batch size is halved (one warning line per
    halving) and the call repeats. The size that worked is kept for later calls and is
    readable as ``decorated.batch_size``. Any other exception propagates unchanged.

    Args:
        function: The function; omit it to use ``@find_executable_batch_size(...)``.
        starting_batch_size: The first batch size tried.
        auto_find_batch_size: False calls ``function(starting_batch_size, ...)`` once,
            with no retry (the Trainer's behaviour when ``auto_find_batch_size`` is off).

    Returns:
        The decorated function.

    Raises:
        RuntimeError: ``No executable batch size found, reached zero.`` when even a
            batch of 1 runs out of memory.

    Example:
        >>> tried = []
        >>> @find_executable_batch_size(starting_batch_size=64)
        ... def run(batch_size, label):
        ...     tried.append(batch_size)
        ...     if batch_size > 16:
        ...         raise RuntimeError("CUDA out of memory.")
        ...     return f"{label}: {batch_size}"
        >>> run("fits")
        'fits: 16'
        >>> tried, run.batch_size
        ([64, 32, 16], 16)
    """
    if function is None:
        return functools.partial(
            find_executable_batch_size,
            starting_batch_size=starting_batch_size,
            auto_find_batch_size=auto_find_batch_size,
        )
    if starting_batch_size < 1:
        raise ValueError(f"starting_batch_size must be >= 1, got {starting_batch_size}")

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not auto_find_batch_size:
            return function(wrapper.batch_size, *args, **kwargs)
        release_memory()
        while True:
            if wrapper.batch_size == 0:
                raise RuntimeError("No executable batch size found, reached zero.")
            try:
                return function(wrapper.batch_size, *args, **kwargs)
            except Exception as exc:
                if not is_oom_error(exc):
                    raise
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            # Outside the except block: the exception, its traceback and the frames
            # holding the failed batch's tensors are gone before memory is released.
            release_memory()
            wrapper.batch_size //= 2
            if wrapper.batch_size:
                logger.warning(
                    "Out of memory (%s); retrying with batch size %d", message[:200], wrapper.batch_size
                )

    wrapper.batch_size = starting_batch_size
    return wrapper


def rebalance(batch_size: int, accumulation: int, factor: int = 2) -> tuple[int, int]:
    """Divide the per-device batch by ``factor`` and multiply accumulation steps by it.

    The effective batch ``batch_size * accumulation`` is kept exactly when ``factor``
    divides ``batch_size``; otherwise the new batch is rounded down and the effective
    batch shrinks (a warning says so).

    Returns:
        ``(new_batch_size, new_accumulation)``.

    Raises:
        ValueError: ``factor < 2``, ``accumulation < 1``, or ``batch_size < factor``
            (no smaller batch exists).

    Example:
        >>> rebalance(32, 1)
        (16, 2)
        >>> rebalance(12, 2, factor=3)
        (4, 6)
    """
    if factor < 2:
        raise ValueError(f"factor must be >= 2, got {factor}")
    if accumulation < 1:
        raise ValueError(f"accumulation must be >= 1, got {accumulation}")
    if batch_size < factor:
        raise ValueError(f"batch size {batch_size} cannot be divided by {factor}")
    new_batch, new_accumulation = batch_size // factor, accumulation * factor
    if batch_size % factor:
        logger.warning(
            "Effective batch changes from %d to %d (batch %d is not divisible by %d)",
            batch_size * accumulation,
            new_batch * new_accumulation,
            batch_size,
            factor,
        )
    return new_batch, new_accumulation
