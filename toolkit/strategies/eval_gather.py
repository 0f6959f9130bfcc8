"""`OrderedGather`: the per-batch gather hook of a distributed evaluation.

With a strided split (`toolkit.data.ShardedEvalSampler` with ``contiguous=False``), rank
``r`` of ``R`` holds the samples ``r, r + R, r + 2R, ...``, so row ``j`` of its batch
``k`` (batch size ``B``) is sample ``(k*B + j)*R + r``. Gathering a batch from every rank
and interleaving the rows (row ``j`` of rank 0, of rank 1, ..., then row ``j + 1``) puts
the samples back in dataset order. Ranks may hold one sample fewer than rank 0; their
missing rows are filled with the padding index and land at positions ``>= len(dataset)``,
so truncating the joined result to the dataset length leaves each sample exactly once,
in order. A rank that has run out of batches while others still have one takes part
with ``None`` (its rows are all padding).

Only collectives of the strategy are used (`Strategy.all_gather_object`,
`Strategy.all_gather`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from toolkit.strategies.base import Strategy
from toolkit.utils.nested import rebuild_container

__all__ = ["OrderedGather"]

Tree = Any


def _flatten(tree: Tree, out: list[torch.Tensor]) -> Any:
    """Append the leaves of ``tree`` to ``out``; return a picklable description of its shape."""
    if tree is None:
        return None
    if isinstance(tree, Mapping):
        return ("map", tuple(tree.keys()), tuple(_flatten(v, out) for v in tree.values()))
    if isinstance(tree, (tuple, list)):
        return ("seq", len(tree), tuple(_flatten(v, out) for v in tree))
    out.append(tree if isinstance(tree, torch.Tensor) else torch.as_tensor(np.asarray(tree)))
    return "leaf"


def _build(spec: Any, leaves: Any, template: Tree) -> Tree:
    """Rebuild a tree from ``spec`` and an iterator of leaves, with ``template``'s container
    types when there is one (plain dicts and tuples otherwise)."""
    if spec is None:
        return None
    if spec == "leaf":
        return next(leaves)
    kind, keys, subs = spec
    if kind == "map":
        items = {k: _build(sub, leaves, None if template is None else template[k]) for k, sub in zip(keys, subs)}
        return dict(items) if template is None else rebuild_container(type(template), items)
    items = [_build(sub, leaves, None if template is None else template[i]) for i, sub in enumerate(subs)]
    return tuple(items) if template is None else rebuild_container(type(template), items)


class OrderedGather:
    """Gathers one evaluation batch from every process, in dataset order.

    Pass it as ``EvaluationLoop(gather=OrderedGather(strategy), strategy=strategy)``, with
    a dataloader sharded by ``ShardedEvalSampler(n, num_replicas, rank, contiguous=False)``.

    Args:
        strategy: the distributed strategy whose collectives are used.
        padding_index: fill value for the rows of ranks that hold fewer samples and for
            trailing dimensions that differ between ranks (e.g. sequence lengths).

    Raises:
        ValueError: (when called) if the processes return differently structured outputs.

    Example:
        >>> from toolkit.strategies import SingleDeviceStrategy
        >>> gather = OrderedGather(SingleDeviceStrategy("cpu"))
        >>> gather((torch.ones(2, 3), None))[0].shape
        torch.Size([2, 3])
    """

    def __init__(self, strategy: Strategy, padding_index: int = -100) -> None:
        self.strategy = strategy
        self.padding_index = padding_index

    def __call__(self, tree: Tree | None) -> Tree | None:
        """Gather ``tree`` (every tensor leaf has the batch in its first dimension; 0-dim
        leaves count as one row) from all processes; ``None`` when every process passed ``None``."""
        leaves: list[torch.Tensor] = []
        spec = _flatten(tree, leaves) if tree is not None else None
        meta = None if tree is None else (spec, [(tuple(t.shape), t.dtype) for t in leaves])
        metas = self.strategy.all_gather_object(meta)
        present = [m for m in metas if m is not None]
        if not present:
            return None
        ref_spec, ref_leaves = present[0]
        if any(m[0] != ref_spec for m in present):
            raise ValueError(
                "evaluation outputs differ in structure between processes; every process must return "
                "the same keys and nesting from prediction_step"
            )
        world = len(metas)
        gathered = []
        for i, (_, dtype) in enumerate(ref_leaves):
            shapes = [(m[1][i][0] or (1,)) if m is not None else None for m in metas]
            known = [s for s in shapes if s is not None]
            if len({len(s) for s in known}) > 1:
                raise ValueError(f"evaluation output {i} has different numbers of dimensions across processes: {known}")
            target = tuple(max(dims) for dims in zip(*known))
            if tree is None:
                local = torch.full(target, self.padding_index, dtype=dtype)
            else:
                leaf = leaves[i].detach()
                leaf = leaf.reshape(1) if leaf.ndim == 0 else leaf
                local = leaf
                if tuple(leaf.shape) != target:
                    local = leaf.new_full(target, self.padding_index)
                    local[tuple(slice(0, n) for n in leaf.shape)] = leaf
            stacked = self.strategy.all_gather(local)  # (world, rows, *rest)
            rows = stacked.shape[1]
            gathered.append(stacked.transpose(0, 1).reshape(rows * world, *stacked.shape[2:]))
        return _build(ref_spec, iter(gathered), tree)
