"""Seedable samplers whose position can be saved and restored mid-epoch.

`ResumableRandomSampler` is the training sampler: a seeded permutation per epoch,
split across ranks like `torch.utils.data.DistributedSampler`, with a position that is
part of the checkpoint. Resuming at position ``k`` slices the permutation at ``k``;
the skipped samples are never produced, loaded or collated.

`ShardedEvalSampler` is the evaluation sampler: every sample exactly once across all
ranks, no padding, in order.

`seed_worker` seeds ``random`` and ``numpy`` inside `DataLoader` worker processes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sized
from itertools import chain
from operator import length_hint
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["ResumableRandomSampler", "ShardedEvalSampler", "seed_worker"]


def _length_of(data_source_len_or_dataset: int | Sized) -> int:
    if isinstance(data_source_len_or_dataset, int):
        n = data_source_len_or_dataset
    else:
        n = len(data_source_len_or_dataset)
    if n < 0:
        raise ValueError(f"the data source length must be >= 0; got {n}")
    return n


def _check_replicas(num_replicas: int, rank: int) -> None:
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be >= 1; got {num_replicas}")
    if not 0 <= rank < num_replicas:
        raise ValueError(
            f"rank must be in [0, {num_replicas - 1}] for num_replicas={num_replicas}; got {rank}"
        )


class ResumableRandomSampler(Sampler[int]):
    """A seeded, rank-aware sampler that can resume in the middle of an epoch.

    The order of epoch ``e`` is a permutation from a `torch.Generator` seeded with
    ``seed + e`` (or ``0..n-1`` when ``shuffle=False``), identical on every rank. As in
    `torch.utils.data.DistributedSampler`, it is padded by wrapping around to a multiple
    of ``num_replicas`` (or cut when ``drop_last``), and rank ``r`` takes every
    ``num_replicas``-th index from ``r``.

    The position is the number of this rank's samples already consumed in the current
    pass. Iteration starts there and, after a complete pass, it goes back to 0. Because
    a `DataLoader` fetches ahead of the training loop, the sampler's own count runs
    ahead of what was trained on: the loop should pass the number it really consumed to
    `state_dict` (``consumed=``). Call `set_epoch` at the start of every epoch, as with
    `DistributedSampler`; setting the same epoch again keeps the position (so a restored
    state survives the loop's ``set_epoch`` call), a different epoch resets it to 0.

    ``len(sampler)`` is the full per-rank length of an epoch (what `DataLoader` length
    arithmetic expects); `remaining` is what the next iteration will yield.

    Args:
        data_source_len_or_dataset: A dataset (anything with ``len``) or its length.
        seed: Base seed; the permutation of epoch ``e`` uses ``seed + e``.
        shuffle: Shuffle (True) or keep dataset order (False).
        num_replicas: Number of ranks sharing the data.
        rank: This process's rank, in ``[0, num_replicas)``.
        drop_last: Drop the tail that does not divide evenly across ranks instead of
            padding it by wrapping around.

    Raises:
        ValueError: For a negative length or an invalid ``num_replicas`` / ``rank``.

    Example:
        >>> s = ResumableRandomSampler(10, seed=0)
        >>> full = list(s)
        >>> s.load_state_dict({"epoch": 0, "seed": 0, "position": 7})
        >>> list(s) == full[7:]
        True
    """

    def __init__(
        self,
        data_source_len_or_dataset: int | Sized,
        seed: int = 42,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ) -> None:
        _check_replicas(num_replicas, rank)
        self.dataset_len = _length_of(data_source_len_or_dataset)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        if drop_last:
            self.num_samples = self.dataset_len // num_replicas
        else:
            self.num_samples = math.ceil(self.dataset_len / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.epoch = 0
        self._position = 0
        # the list iterator of the current pass and the position at its end: the
        # position is read from the iterator's remaining length, so producing an index
        # costs no Python code
        self._tail: Iterator[int] | None = None
        self._tail_end = 0

    @property
    def position(self) -> int:
        """Samples of this rank produced so far in the current pass (0 after a full one)."""
        if self._tail is not None:
            return self._tail_end - length_hint(self._tail)
        return self._position

    @position.setter
    def position(self, value: int) -> None:
        self._tail = None  # an iteration still running no longer moves the position
        self._position = value

    def __len__(self) -> int:
        """Returns the full number of samples this rank sees per epoch."""
        return self.num_samples

    def remaining(self) -> int:
        """Returns how many samples the next iteration will yield."""
        return self.num_samples - self.position

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch (and so the permutation); a new epoch starts at position 0.

        Args:
            epoch: The epoch number.
        """
        epoch = int(epoch)
        if epoch != self.epoch:
            self.position = 0
        self.epoch = epoch

    def skip(self, n: int) -> None:
        """Moves the position forward by ``n`` samples without producing them.

        Args:
            n: Number of samples of this rank to skip.

        Raises:
            ValueError: If ``n`` is negative or would move past the end of the epoch.
        """
        if n < 0:
            raise ValueError(f"skip needs n >= 0; got {n}")
        if self.position + n > self.num_samples:
            raise ValueError(
                f"cannot skip {n} samples at position {self.position}: only {self.remaining()} "
                f"remain in this epoch of {self.num_samples}"
            )
        self.position += n

    def epoch_indices(self) -> torch.Tensor:
        """Returns this rank's full index order for the current epoch (an int64 tensor).

        Built once per iteration: one generator call, then tensor slicing.
        """
        n = self.dataset_len
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        if self.total_size > n:  # pad by wrapping around (possibly several times)
            repeats = math.ceil(self.total_size / n) if n else 0
            order = order.repeat(repeats)[: self.total_size] if n else order
        else:
            order = order[: self.total_size]
        return order[self.rank : self.total_size : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        """Yields this rank's indices from the current position to the end of the epoch."""
        start = self.position
        tail = self.epoch_indices()[start:].tolist()
        self._tail = it = iter(tail)
        self._tail_end = start + len(tail)
        return chain(it, self._end_of_pass(it))

    def _end_of_pass(self, it: Iterator[int]) -> Iterator[int]:
        """Runs once, when the pass ``it`` is exhausted: the next pass starts at 0."""
        if self._tail is it:
            self.position = 0
        return
        yield

    def state_dict(self, consumed: int | None = None) -> dict[str, int]:
        """Returns ``{"epoch", "seed", "position"}``.

        Args:
            consumed: Samples of this rank the training loop really consumed in the
                current epoch; overrides the sampler's own count, which runs ahead
                because of `DataLoader` prefetching.

        Raises:
            ValueError: If ``consumed`` is outside ``[0, len(self)]``.
        """
        position = self.position if consumed is None else int(consumed)
        if not 0 <= position <= self.num_samples:
            raise ValueError(f"consumed must be in [0, {self.num_samples}]; got {consumed}")
        return {"epoch": self.epoch, "seed": self.seed, "position": position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores epoch, seed and position; the next iteration starts at the position.

        Args:
            state: A dict from `state_dict`.

        Raises:
            ValueError: If the position does not fit this sampler's epoch length (for
                example after a change of world size or dataset).
        """
        position = int(state.get("position", 0))
        if not 0 <= position <= self.num_samples:
            raise ValueError(
                f"sampler position {position} does not fit an epoch of {self.num_samples} samples "
                "per rank; was the dataset or the number of processes changed?"
            )
        self.epoch = int(state.get("epoch", 0))
        self.seed = int(state.get("seed", self.seed))
        self.position = position


class ShardedEvalSampler(Sampler[int]):
    """An in-order evaluation sampler that gives every sample to exactly one rank.

    Unlike `DistributedSampler` it never pads, so no sample is seen twice and metrics
    need no de-duplication; in exchange, ranks may get counts differing by one. Code
    gathering results across ranks must allow for that (pad before ``all_gather``, then
    cut), and every rank must take part in the same number of collective calls.

    Args:
        data_source_len_or_dataset: A dataset (anything with ``len``) or its length.
        num_replicas: Number of ranks.
        rank: This process's rank.
        contiguous: True: rank ``r`` gets one contiguous block (the first ``n %
            num_replicas`` ranks one sample more); False: strided ``r, r + R, ...``.

    Example:
        >>> [list(ShardedEvalSampler(5, num_replicas=2, rank=r)) for r in range(2)]
        [[0, 1, 2], [3, 4]]
    """

    def __init__(
        self,
        data_source_len_or_dataset: int | Sized,
        num_replicas: int = 1,
        rank: int = 0,
        contiguous: bool = True,
    ) -> None:
        _check_replicas(num_replicas, rank)
        self.dataset_len = _length_of(data_source_len_or_dataset)
        self.num_replicas = num_replicas
        self.rank = rank
        self.contiguous = contiguous
        base, extra = divmod(self.dataset_len, num_replicas)
        if contiguous:
            self.start = rank * base + min(rank, extra)
            self.num_samples = base + (1 if rank < extra else 0)
        else:
            self.start = rank
            self.num_samples = len(range(rank, self.dataset_len, num_replicas))
        self.total_size = self.dataset_len

    def __len__(self) -> int:
        """Returns this rank's number of samples."""
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        """Yields this rank's indices in dataset order."""
        if self.contiguous:
            return iter(range(self.start, self.start + self.num_samples))
        return iter(range(self.rank, self.dataset_len, self.num_replicas))


def seed_worker(worker_id: int) -> None:
    """Seeds ``random`` and ``numpy`` in a `DataLoader` worker from torch's worker seed.

    Pass as ``DataLoader(worker_init_fn=seed_worker)``. Torch already gives each worker
    a distinct seed (base seed + worker id); this extends it to the other generators.

    Args:
        worker_id: The worker's id (unused; the seed already includes it).
    """
    del worker_id
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)
