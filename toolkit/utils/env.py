"""Where this process sits in a distributed job, read from the launcher's environment.

One small module owns this so that arguments, strategies and loggers agree. Supported
launchers: ``torchrun`` (and ``accelerate launch`` / ``deepspeed``, which set the same
variables), and SLURM's ``srun`` as a fallback. Reading the environment has no side
effects: nothing is initialised and nothing is written.
`destroy_process_group_at_exit` is the one exception, for the code that starts a group:
it shuts that group down before the interpreter finalizes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["DistributedEnv", "destroy_process_group_at_exit", "detect_distributed_env"]

_exit_hook_registered = False


def destroy_process_group_at_exit() -> None:
    """Shut the default process group down when the interpreter exits, if it still exists.

    Call it after starting a group. A collective's finished work is released by a gloo
    worker thread a moment after the caller saw it complete; when the work held the last
    reference to a tensor created in Python, that thread needs the GIL. If the
    interpreter is already finalizing by then, the thread is ended mid-destructor and
    the whole process aborts ("terminate called without an active exception") after the
    script finished. The hook runs before finalization: it collects unreachable objects
    (a trainer's DDP wrapper holds the group), destroys the group, whose worker threads
    are then joined without the GIL, and, when something still holds the group (a DDP
    model kept in a global), gives its threads a tenth of a second to finish. Registered
    once; does nothing when the group was already destroyed.
    """
    global _exit_hook_registered
    if _exit_hook_registered:
        return
    _exit_hook_registered = True
    import atexit

    atexit.register(_shut_down_default_group)


def _shut_down_default_group(grace: float = 0.1) -> None:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    import gc
    import time
    import weakref

    gc.collect()
    group = weakref.ref(dist.group.WORLD)
    dist.destroy_process_group()
    if group() is not None:
        time.sleep(grace)  # the GIL is free meanwhile: the group's threads can drop their work


@dataclass(frozen=True)
class DistributedEnv:
    """The position of one process in a job: global rank, local rank and node.

    Args:
        rank: Global rank of this process, in ``[0, world_size)``.
        world_size: Number of processes in the job.
        local_rank: Rank of this process on its node, in ``[0, local_world_size)``.
        local_world_size: Number of processes on this node.
        node_rank: Index of this node.

    Raises:
        ValueError: If a value is out of range (the message names it).

    Example:
        >>> env = DistributedEnv()
        >>> env.world_size, env.is_distributed
        (1, False)
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    node_rank: int = 0

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {self.world_size}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in [0, world_size={self.world_size}), got {self.rank}")
        if self.local_world_size < 1:
            raise ValueError(f"local_world_size must be >= 1, got {self.local_world_size}")
        if not 0 <= self.local_rank < self.local_world_size:
            raise ValueError(
                f"local_rank must be in [0, local_world_size={self.local_world_size}), got {self.local_rank}"
            )
        if self.node_rank < 0:
            raise ValueError(f"node_rank must be >= 0, got {self.node_rank}")

    @property
    def is_distributed(self) -> bool:
        """True when the job has more than one process."""
        return self.world_size > 1

    @property
    def is_global_zero(self) -> bool:
        """True on the process of global rank 0."""
        return self.rank == 0

    @property
    def is_local_zero(self) -> bool:
        """True on the first process of each node."""
        return self.local_rank == 0


def _read_int(environ: Mapping[str, str], *names: str) -> int | None:
    """Return the first of ``names`` present in ``environ`` as an int, or None."""
    for name in names:
        raw = environ.get(name)
        if raw is None or raw.strip() == "":
            continue
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None
    return None


def _slurm_tasks_on_this_node(environ: Mapping[str, str]) -> int | None:
    """Tasks per node from SLURM's compact forms such as ``"4"`` or ``"4(x2),3"``."""
    for name in ("SLURM_NTASKS_PER_NODE", "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
        raw = environ.get(name)
        if not raw:
            continue
        match = re.match(r"\s*(\d+)", raw)
        if match:
            return int(match.group(1))
    return None


def detect_distributed_env(environ: Mapping[str, str] | None = None) -> DistributedEnv:
    """Read rank, world size, local rank and node from a launcher's environment variables.

    Order of precedence:

    1. ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``LOCAL_WORLD_SIZE`` / ``GROUP_RANK``
       (set by ``torchrun``, ``accelerate launch`` and the ``deepspeed`` launcher; the
       DeepSpeed spellings ``LOCAL_SIZE`` and ``CROSS_RANK`` are read too).
    2. SLURM, only when ``RANK`` is absent and ``SLURM_NTASKS`` is set:
       ``SLURM_PROCID`` / ``SLURM_NTASKS`` / ``SLURM_LOCALID`` / ``SLURM_NODEID``.
    3. Otherwise a single process: ``DistributedEnv(0, 1, 0, 1, 0)``.

    Missing pieces are derived: the local world size defaults to the world size (one
    node), and the node rank to ``rank // local_world_size``.

    Args:
        environ: The mapping to read; defaults to ``os.environ``. It is never modified.

    Returns:
        The detected `DistributedEnv`.

    Raises:
        ValueError: If a variable is not an integer or the values are inconsistent.

    Example:
        >>> detect_distributed_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
        ...                         "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "1"}).node_rank
        1
    """
    env = os.environ if environ is None else environ
    if "RANK" in env:
        rank = _read_int(env, "RANK") or 0
        world_size = _read_int(env, "WORLD_SIZE")
        local_rank = _read_int(env, "LOCAL_RANK")
        local_world_size = _read_int(env, "LOCAL_WORLD_SIZE", "LOCAL_SIZE")
        node_rank = _read_int(env, "GROUP_RANK", "NODE_RANK", "CROSS_RANK")
    elif env.get("SLURM_NTASKS"):
        rank = _read_int(env, "SLURM_PROCID") or 0
        world_size = _read_int(env, "SLURM_NTASKS")
        local_rank = _read_int(env, "SLURM_LOCALID")
        local_world_size = _slurm_tasks_on_this_node(env)
        node_rank = _read_int(env, "SLURM_NODEID")
    else:
        return DistributedEnv()

    world_size = 1 if world_size is None else world_size
    if local_world_size is None:
        local_world_size = world_size
    if local_rank is None:
        local_rank = rank % local_world_size if local_world_size > 0 else 0
    if node_rank is None:
        node_rank = rank // local_world_size if local_world_size > 0 else 0
    return DistributedEnv(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        local_world_size=local_world_size,
        node_rank=node_rank,
    )
