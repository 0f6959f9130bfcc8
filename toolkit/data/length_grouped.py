"""`LengthGroupedSampler`: batches of similar lengths, seeded, rank-aware and resumable.

Padding every sequence to the longest one of its batch wastes compute when lengths
vary. Grouping by length (``group_by_length=True`` in `TrainingArguments`) keeps the
order random at the large scale and sorted at the small scale:

1. a seeded permutation of the whole dataset (seed ``seed + epoch``);
2. cut into *mega-batches* of ``mega_batch_mult`` global batches each;
3. each mega-batch sorted by length, longest first;
4. the global batch holding the longest item of the epoch moved to the front, so that
   an out-of-memory error shows up on the first step rather than hours in.

Position, `set_epoch`, `state_dict` and `load_state_dict` work exactly as in
`ResumableRandomSampler` (this class is one): a mid-epoch resume slices the order at
the saved position, so skipped samples are never loaded.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from toolkit.data.samplers import ResumableRandomSampler

__all__ = ["LengthGroupedSampler", "lengths_from_dataset"]

logger = logging.getLogger(__name__)

_MAX_MEGA_BATCH_MULT = 50


def _is_hf_dataset_with(dataset: Any, column: str | None) -> bool:
    names = getattr(dataset, "column_names", None)
    return column is not None and isinstance(names, (list, tuple)) and column in names


def lengths_from_dataset(
    dataset: Any, length_column_name: str | None = "length", model_input_name: str = "input_ids"
) -> list[int]:
    """Return the length of every item of a map-style dataset.

    Looked up in this order:

    1. a `datasets.Dataset` with a ``length_column_name`` column: ``dataset[column]``
       (read from the Arrow table, no item is decoded);
    2. items that are mappings holding ``length_column_name``: that value;
    3. items that are mappings holding ``model_input_name``: ``len(item[model_input_name])``.

    Cases 2 and 3 read every item once, which may be slow (a warning says so).

    Args:
        dataset: A map-style dataset (``len`` and integer indexing).
        length_column_name: Column or key holding precomputed lengths (None: skip).
        model_input_name: Key of the sequence whose length counts.

    Returns:
        One non-negative int per item.

    Raises:
        ValueError: When the items are not mappings with either key.
    """
    if _is_hf_dataset_with(dataset, length_column_name):
        return [int(v) for v in dataset[length_column_name]]
    n = len(dataset)
    if n == 0:
        return []
    first = dataset[0]
    if not isinstance(first, Mapping):
        raise ValueError(
            "LengthGroupedSampler: cannot find item lengths: items are "
            f"{type(first).__name__}, not mappings with a {length_column_name!r} or {model_input_name!r} "
            "key; pass `lengths=` (one int per item)."
        )
    if length_column_name is not None and length_column_name in first:
        key, how = length_column_name, "reading its length column"
    elif model_input_name in first:
        key, how = None, f"measuring len(item[{model_input_name!r}])"
    else:
        raise ValueError(
            f"LengthGroupedSampler: items have neither a {length_column_name!r} key "
            f"(length_column_name) nor a {model_input_name!r} key (model_input_name); "
            f"found keys {sorted(first)}. Pass `lengths=` or name the right key."
        )
    logger.warning(
        "LengthGroupedSampler: no `lengths` given; iterating the dataset once (%d items), %s. "
        "Pass `lengths=` or add a dataset column to skip this.",
        n,
        how,
    )
    out = []
    for i in range(n):
        item = dataset[i]
        out.append(int(item[key]) if key is not None else len(item[model_input_name]))
    return out


def _check_lengths(lengths: Sequence[int] | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(lengths if isinstance(lengths, torch.Tensor) else list(lengths))
    if t.dim() != 1:
        raise ValueError(
            f"LengthGroupedSampler: `lengths` must be one number per item; got shape {tuple(t.shape)}"
        )
    if t.is_floating_point() and t.numel() and not torch.equal(t, t.round()):
        raise ValueError("LengthGroupedSampler: `lengths` must be whole numbers")
    t = t.to(torch.int64)
    if t.numel() and int(t.min()) < 0:
        raise ValueError(f"LengthGroupedSampler: `lengths` must be >= 0; got {int(t.min())}")
    return t


class LengthGroupedSampler(ResumableRandomSampler):
    """Random order with length-sorted mega-batches, longest batch first; resumable.

    The order is built on the *global* stream (all ranks together): the seeded
    permutation is padded by wrapping around (or cut, with ``drop_last``) to a multiple
    of ``num_replicas`` exactly like `torch.utils.data.DistributedSampler`, grouped in
    units of the global batch ``batch_size * num_replicas``, and only then split (rank
    ``r`` takes positions ``r, r + R, ...``). At any step the ranks therefore hold items
    of similar length, and no rank waits on a much longer batch.

    The mega-batch holds ``mega_batch_mult`` global batches; by default
    ``min(n // (4 * global_batch), 50)``, at least 1 (so a small dataset is still
    shuffled between mega-batches). Ties in length keep the permutation's order.

    Lengths come from ``lengths`` when given, else from the dataset (see
    `lengths_from_dataset`: a ``length_column_name`` column, or ``len`` of
    ``item[model_input_name]``).

    Args:
        batch_size: Items per batch on one rank, as the `DataLoader` will cut them
            (multiply by the gradient accumulation steps to group a whole update).
        dataset: A map-style dataset; needed only when ``lengths`` is None.
        lengths: One length per item.
        model_input_name: Item key whose ``len`` is the length.
        seed: Base seed; epoch ``e`` uses ``seed + e``.
        num_replicas: Number of ranks sharing the data.
        rank: This process's rank.
        drop_last: Cut the tail that does not divide across ranks instead of padding.
        length_column_name: Column or key of precomputed lengths.
        mega_batch_mult: Global batches per mega-batch (None: the rule above).

    Raises:
        ValueError: For ``batch_size < 1``, neither ``dataset`` nor ``lengths``, lengths
            that disagree with ``len(dataset)``, negative lengths, or bad ranks.

    Example:
        >>> s = LengthGroupedSampler(2, lengths=[1, 9, 3, 7, 2, 8], seed=0)
        >>> order = list(s)
        >>> order[0] == 1 or order[1] == 1  # the longest item is in the first batch
        True
        >>> sorted(order)
        [0, 1, 2, 3, 4, 5]
    """

    def __init__(
        self,
        batch_size: int,
        dataset: Any = None,
        lengths: Sequence[int] | torch.Tensor | None = None,
        model_input_name: str = "input_ids",
        seed: int = 42,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        length_column_name: str | None = "length",
        mega_batch_mult: int | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"LengthGroupedSampler: batch_size must be an int >= 1; got {batch_size!r}")
        if mega_batch_mult is not None and mega_batch_mult < 1:
            raise ValueError(
                f"LengthGroupedSampler: mega_batch_mult must be >= 1 or None; got {mega_batch_mult}"
            )
        if lengths is None:
            if dataset is None:
                raise ValueError("LengthGroupedSampler: pass `dataset` or `lengths`")
            lengths = lengths_from_dataset(dataset, length_column_name, model_input_name)
        self.lengths = _check_lengths(lengths)
        if dataset is not None and len(dataset) != len(self.lengths):
            raise ValueError(
                f"LengthGroupedSampler: {len(self.lengths)} lengths for a dataset of {len(dataset)} items"
            )
        super().__init__(
            len(self.lengths),
            seed=seed,
            shuffle=True,
            num_replicas=num_replicas,
            rank=rank,
            drop_last=drop_last,
        )
        self.batch_size = batch_size
        global_batch = batch_size * num_replicas
        if mega_batch_mult is None:
            mega_batch_mult = max(1, min(self.total_size // (4 * global_batch), _MAX_MEGA_BATCH_MULT))
        self.mega_batch_mult = mega_batch_mult
        self.mega_batch_size = mega_batch_mult * global_batch

    def global_indices(self) -> torch.Tensor:
        """Returns the grouped order of the current epoch over all ranks (int64 tensor).

        Its length is ``num_samples * num_replicas``; rank ``r`` takes ``[r::num_replicas]``.
        """
        n = self.dataset_len
        if n == 0:
            return torch.empty(0, dtype=torch.int64)
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(n, generator=g)
        if self.total_size > n:  # pad by wrapping around, as DistributedSampler does
            order = order.repeat(math.ceil(self.total_size / n))
        order = order[: self.total_size]
        if order.numel() == 0:
            return order
        # Sort within each mega-batch by length, longest first, in one stable argsort:
        # key = mega-batch number (major), then descending length (minor).
        lens = self.lengths[order]
        group = torch.arange(order.numel()) // self.mega_batch_size
        span = int(lens.max()) + 1
        key = group * span + (span - 1 - lens)
        order = order[torch.sort(key, stable=True).indices]
        self._longest_batch_first(order)
        return order

    def _longest_batch_first(self, order: torch.Tensor) -> None:
        """Swaps (in place) the first global batch with the one holding the longest item."""
        size = self.mega_batch_size
        heads = order[::size]  # the first item of each mega-batch is its longest
        k = int(torch.argmax(self.lengths[heads]))
        if k == 0:
            return
        start = k * size
        b = min(self.batch_size * self.num_replicas, size, order.numel() - start)
        first = order[:b].clone()
        order[:b] = order[start : start + b]
        order[start : start + b] = first

    def epoch_indices(self) -> torch.Tensor:
        """Returns this rank's full index order for the current epoch (an int64 tensor)."""
        return self.global_indices()[self.rank : self.total_size : self.num_replicas]
