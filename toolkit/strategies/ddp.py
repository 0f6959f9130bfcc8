"""`DDPStrategy`: one process per device, gradients averaged with `DistributedDataParallel`.

The strategy owns the default process group (started from the launcher's environment
unless one already exists), the device of this process (``cuda:<local rank>`` or the
CPU), the `torch.nn.parallel.DistributedDataParallel` wrapper and the collectives. All
communication goes through `torch.distributed`; nothing here is hand-written.

Launchers that work unchanged: ``torchrun`` / ``python -m torch.distributed.run``,
``accelerate launch --multi_gpu``, the ``deepspeed`` launcher and SLURM's ``srun``
(the environment is read by `toolkit.utils.env.detect_distributed_env`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from toolkit.precision.base import Precision
from toolkit.strategies.base import Strategy
from toolkit.utils.env import DistributedEnv, destroy_process_group_at_exit, detect_distributed_env

__all__ = ["DDPStrategy", "default_backend"]

logger = logging.getLogger(__name__)

_REDUCE_OPS = ("sum", "mean", "max", "min")


def default_backend(device: torch.device) -> str:
    """The process-group backend for a device: ``"nccl"`` on CUDA, ``"gloo"`` otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def _default_device(env: DistributedEnv) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", env.local_rank % max(1, torch.cuda.device_count()))
    return torch.device("cpu")


class DDPStrategy(Strategy):
    """Data parallel training over processes: each holds a full model replica and a shard
    of every batch; `DistributedDataParallel` averages the gradients in backward.

    Owns: the default process group (and destroys it in `teardown` only if it created
    it), this process's device, the DDP wrapper of the model and the collectives
    (`reduce`, `all_gather`, `all_gather_object`, `broadcast`, `barrier`).

    Args:
        device: the device; None picks ``cuda:<local rank>`` when CUDA is available, else
            the CPU.
        precision: the numeric format (defaults to fp32).
        backend: the process-group backend; None picks nccl on CUDA and gloo otherwise.
        timeout: timeout of collective operations (seconds or a `timedelta`; None: 30 min).
        find_unused_parameters: DDP's flag; None decides per model when it is wrapped:
            ``not model.is_gradient_checkpointing`` for models that have that attribute
            (transformers models), else True.
        bucket_cap_mb: DDP gradient bucket size in MiB (None keeps PyTorch's).
        broadcast_buffers: DDP's flag (None keeps PyTorch's, True).
        init_method: where the processes meet (``"tcp://host:port"``, ``"file:///path"``);
            None reads ``MASTER_ADDR`` / ``MASTER_PORT`` from the environment (``env://``).
        env: the position of this process; read from the launcher's variables by default.
        **ddp_kwargs: further keyword arguments of `DistributedDataParallel`.

    Raises:
        ValueError: for an unknown backend or reduce operation, or when the environment
            lacks the rendezvous address.

    Example:
        >>> import tempfile, os
        >>> strategy = DDPStrategy("cpu", init_method="file://" + os.path.join(tempfile.mkdtemp(), "pg"))
        >>> strategy.setup_environment()  # a one-process gloo group
        >>> model, _ = strategy.setup(nn.Linear(2, 1))
        >>> type(model).__name__, strategy.world_size, strategy.reduce(torch.tensor(3.0), "sum").item()
        ('DistributedDataParallel', 1, 3.0)
        >>> strategy.teardown()
    """

    is_distributed = True

    def __init__(
        self,
        device: str | torch.device | None = None,
        precision: Precision | None = None,
        *,
        backend: str | None = None,
        timeout: float | timedelta | None = None,
        find_unused_parameters: bool | None = None,
        bucket_cap_mb: float | None = None,
        broadcast_buffers: bool | None = None,
        init_method: str | None = None,
        env: DistributedEnv | None = None,
        **ddp_kwargs: Any,
    ) -> None:
        self.env = env if env is not None else detect_distributed_env()
        super().__init__(device if device is not None else _default_device(self.env), precision)
        if self.device.type == "mps":
            raise ValueError("DDPStrategy: the gloo and nccl backends do not support the 'mps' device; use the CPU")
        if backend is not None and not isinstance(backend, str):
            raise ValueError(f"backend={backend!r} must be a backend name such as 'nccl' or 'gloo'")
        self.backend = backend
        if timeout is not None and not isinstance(timeout, timedelta):
            timeout = timedelta(seconds=float(timeout))
        self.timeout = timeout
        self.find_unused_parameters = find_unused_parameters
        self.bucket_cap_mb = bucket_cap_mb
        self.broadcast_buffers = broadcast_buffers
        self.init_method = init_method
        self.ddp_kwargs = ddp_kwargs
        self._owns_group = False
        self._wrapped: tuple[nn.Module, DistributedDataParallel] | None = None

    # topology -------------------------------------------------------------
    @staticmethod
    def _group_ready() -> bool:
        return dist.is_available() and dist.is_initialized()

    @property
    def world_size(self) -> int:
        """Number of processes (the process group's, else the launcher's)."""
        return dist.get_world_size() if self._group_ready() else self.env.world_size

    @property
    def global_rank(self) -> int:
        """This process's rank in the process group (else the launcher's)."""
        return dist.get_rank() if self._group_ready() else self.env.rank

    @property
    def local_rank(self) -> int:
        """This process's rank on its node."""
        return self.env.local_rank

    @property
    def node_rank(self) -> int:
        """Index of this process's node."""
        return self.env.node_rank

    # set-up ---------------------------------------------------------------
    def setup_environment(self) -> None:
        """Start the default process group, unless one is already running.

        The backend is ``backend`` (default: nccl on CUDA, gloo on the CPU), the timeout
        ``timeout``, the rendezvous ``init_method`` or ``MASTER_ADDR`` / ``MASTER_PORT``.
        On CUDA the current device is set to this process's GPU.

        Raises:
            ValueError: when no rendezvous is given (no ``init_method`` and no
                ``MASTER_ADDR`` / ``MASTER_PORT`` in the environment).
            RuntimeError: when `torch.distributed` is not available in this build.
        """
        if not dist.is_available():
            raise RuntimeError("DDPStrategy needs torch.distributed, which this PyTorch build does not provide")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if dist.is_initialized():
            if dist.get_world_size() != self.env.world_size:
                logger.warning(
                    "A process group of %d processes already exists; the launcher reported %d. Using the "
                    "existing group.", dist.get_world_size(), self.env.world_size,
                )
            return
        init_method = self.init_method
        if init_method is None:
            missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
            if missing:
                raise ValueError(
                    f"DDPStrategy: cannot start the process group: {' and '.join(missing)} not set. Launch with "
                    "torchrun / accelerate launch (they set them), export them (under SLURM: MASTER_ADDR=the "
                    "first host of $SLURM_JOB_NODELIST, MASTER_PORT=a free port), or pass init_method="
                )
            init_method = "env://"
        backend = self.backend or default_backend(self.device)
        kwargs: dict[str, Any] = {
            "backend": backend,
            "init_method": init_method,
            "rank": self.env.rank,
            "world_size": self.env.world_size,
        }
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        dist.init_process_group(**kwargs)
        destroy_process_group_at_exit()
        self._owns_group = True
        logger.info(
            "Started the %s process group: rank %d of %d (local rank %d, node %d) on %s",
            backend, self.global_rank, self.world_size, self.local_rank, self.node_rank, self.device,
        )

    def _find_unused(self, model: nn.Module) -> bool:
        if self.find_unused_parameters is not None:
            return bool(self.find_unused_parameters)
        if hasattr(model, "is_gradient_checkpointing"):
            return not bool(model.is_gradient_checkpointing)
        return True

    def setup_module(self, model: nn.Module) -> nn.Module:
        """Move the model to the device, apply the precision, wrap it in DDP.

        Setting up the module this strategy wrapped last returns the same wrapper (a
        second wrapper would register a second set of gradient hooks); a module that is
        already a `DistributedDataParallel` is returned as it is.

        Raises:
            RuntimeError: when the process group has not been started (`setup_environment`).
        """
        if isinstance(model, DistributedDataParallel):
            return model
        if self._wrapped is not None and self._wrapped[0] is model:
            return self._wrapped[1]
        if not self._group_ready():
            raise RuntimeError("DDPStrategy: call setup_environment() before setting up a model")
        module = self.precision.convert_module(model.to(self.device))
        kwargs: dict[str, Any] = {"find_unused_parameters": self._find_unused(module)}
        if self.bucket_cap_mb is not None:
            kwargs["bucket_cap_mb"] = self.bucket_cap_mb
        if self.broadcast_buffers is not None:
            kwargs["broadcast_buffers"] = self.broadcast_buffers
        kwargs.update(self.ddp_kwargs)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        wrapped = DistributedDataParallel(module, device_ids=device_ids, **kwargs)
        self._wrapped = (model, wrapped)
        return wrapped

    def setup_dataloader(self, dataloader: Iterable) -> Iterable:
        """Give each process its shard of a map-style `DataLoader`'s data.

        A loader whose sampler already knows the ranks (``num_replicas``), an iterable
        dataset, or a custom batch sampler is returned unchanged. Otherwise the loader is
        rebuilt with a `toolkit.data.ResumableRandomSampler` (shuffled when the original
        sampler was a `RandomSampler`, seed 0 on every rank), split across the ranks.
        """
        from torch.utils.data import DataLoader, IterableDataset, RandomSampler

        if not isinstance(dataloader, DataLoader) or self.world_size == 1:
            return dataloader
        sampler = dataloader.sampler
        if isinstance(dataloader.dataset, IterableDataset) or hasattr(sampler, "num_replicas"):
            return dataloader
        if dataloader.batch_size is None:
            logger.warning("DDPStrategy.setup_dataloader: a custom batch_sampler is kept as it is (not sharded).")
            return dataloader
        from toolkit.data.samplers import ResumableRandomSampler

        sharded = ResumableRandomSampler(
            len(dataloader.dataset), seed=0, shuffle=isinstance(sampler, RandomSampler),
            num_replicas=self.world_size, rank=self.global_rank, drop_last=dataloader.drop_last,
        )
        kwargs: dict[str, Any] = {
            "batch_size": dataloader.batch_size, "sampler": sharded, "num_workers": dataloader.num_workers,
            "collate_fn": dataloader.collate_fn, "pin_memory": dataloader.pin_memory,
            "drop_last": dataloader.drop_last, "timeout": dataloader.timeout,
            "worker_init_fn": dataloader.worker_init_fn, "generator": dataloader.generator,
            "persistent_workers": dataloader.persistent_workers,
        }
        if dataloader.num_workers > 0:
            kwargs["prefetch_factor"] = dataloader.prefetch_factor
        return DataLoader(dataloader.dataset, **kwargs)

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The user's module inside the DDP wrapper."""
        return model.module if isinstance(model, DistributedDataParallel) else model

    def no_backward_sync(self, model: nn.Module) -> contextlib.AbstractContextManager:
        """``model.no_sync()``: gradients accumulate locally, the next backward outside
        the context averages them all."""
        if isinstance(model, DistributedDataParallel):
            return model.no_sync()
        return contextlib.nullcontext()

    # collectives ---------------------------------------------------------
    def _comm_device(self) -> torch.device:
        backend = dist.get_backend() if self._group_ready() else (self.backend or default_backend(self.device))
        return self.device if str(backend) == "nccl" else torch.device("cpu")

    def reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
        """Reduce a tensor across processes with ``op`` (``"sum"``, ``"mean"``, ``"max"``,
        ``"min"``); returns a new tensor on the input's device (floating for ``"mean"``).

        Raises:
            ValueError: for another ``op``.
        """
        if op not in _REDUCE_OPS:
            raise ValueError(f"op={op!r} is not supported; accepted: {', '.join(map(repr, _REDUCE_OPS))}")
        out = tensor.detach().to(self._comm_device(), copy=True)
        if op == "mean" and not out.is_floating_point():
            out = out.double()
        if self.world_size > 1:
            reduce_op = {"sum": dist.ReduceOp.SUM, "mean": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX,
                         "min": dist.ReduceOp.MIN}[op]
            dist.all_reduce(out, op=reduce_op)
            if op == "mean":
                out = out / self.world_size
        return out.to(tensor.device)

    def all_gather(self, tensor: torch.Tensor, padding_value: float = 0) -> torch.Tensor:
        """Gather a tensor from every process, stacked along a new first dimension.

        When the shapes differ between processes (e.g. the last batch, or sequence
        lengths), every tensor is first padded with ``padding_value`` to the largest size
        in each dimension. A 0-dimensional tensor gives a ``(world_size,)`` result.

        Raises:
            ValueError: when the processes' tensors differ in number of dimensions.
        """
        local = tensor.detach()
        origin = local.device
        local = local.to(self._comm_device())
        if self.world_size == 1:
            return local.unsqueeze(0).to(origin)
        shapes = self.all_gather_object(tuple(local.shape))
        if len({len(s) for s in shapes}) > 1:
            raise ValueError(f"all_gather: the processes hold tensors of different ranks: shapes {shapes}")
        target = tuple(max(dims) for dims in zip(*shapes)) if local.ndim else ()
        if tuple(local.shape) != target:
            padded = local.new_full(target, padding_value)
            padded[tuple(slice(0, n) for n in local.shape)] = local
            local = padded
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(parts, local.contiguous())
        return torch.stack(parts).to(origin)

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Gather a picklable object from every process: a list in rank order."""
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Send a picklable object from rank ``src`` to every process."""
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def barrier(self, name: str | None = None) -> None:
        """Wait until every process reaches this point (a no-op without a process group)."""
        if not self._group_ready() or dist.get_world_size() == 1:
            return
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    # state -----------------------------------------------------------------
    def teardown(self) -> None:
        """Destroy the process group if this strategy started it; forget the wrapper."""
        self._wrapped = None
        if self._owns_group and self._group_ready():
            dist.destroy_process_group()
        self._owns_group = False

    def __repr__(self) -> str:
        return (
            f"DDPStrategy(device={str(self.device)!r}, precision={self.precision!r}, "
            f"rank={self.global_rank}, world_size={self.world_size})"
        )
