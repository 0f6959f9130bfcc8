"""Operations over nested "trees" of tensors and arrays.

A tree is a leaf (a `torch.Tensor`, an `np.ndarray`, or any other value), ``None``, or a
tuple / list / `Mapping` whose items are trees. Containers keep their type when rebuilt
(namedtuples and `OrderedDict` included; a mapping type that cannot be rebuilt from a
plain dictionary comes back as a `dict`). None of these functions copies data unless
the operation needs to: detaching, moving to the device a tensor already lives on,
and numpifying a CPU tensor all share memory with the input.

Example:
    >>> import torch
    >>> tree = {"logits": torch.ones(2, 3), "extra": (torch.zeros(2), None)}
    >>> find_batch_size(tree)
    2
    >>> nested_numpify(nested_truncate(tree, 1))["logits"].shape
    (1, 3)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "nested_map",
    "nested_detach",
    "nested_to",
    "nested_numpify",
    "find_batch_size",
    "pad_and_concatenate",
    "nested_truncate",
    "rebuild_container",
]

Tree = Any

# Floating dtypes numpy cannot represent; they are widened to float32 before `.numpy()`.
_NON_NUMPY_FLOATS = frozenset(
    dt
    for dt in (
        torch.bfloat16,
        getattr(torch, "float8_e4m3fn", None),
        getattr(torch, "float8_e4m3fnuz", None),
        getattr(torch, "float8_e5m2", None),
        getattr(torch, "float8_e5m2fnuz", None),
    )
    if dt is not None
)


def rebuild_container(cls: type, items: Any) -> Any:
    """Build a container of type ``cls`` (a tuple, list or mapping type) from new items.

    Args:
        cls: the container type to rebuild (namedtuples are built field by field).
        items: for a sequence type, an iterable of items; for a mapping type, a `dict`.

    Returns:
        The new container (a `dict` when the mapping type rejects a plain dict).
    """
    if issubclass(cls, Mapping):
        try:
            return cls(items)
        except TypeError:
            return dict(items)
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):  # namedtuple
        return cls(*items)
    return cls(items)


def nested_map(fn: Callable[[Any], Any], tree: Tree) -> Tree:
    """Apply ``fn`` to every leaf of ``tree``, keeping the container structure.

    ``None`` is kept as ``None`` and never passed to ``fn``.

    Args:
        fn: function applied to each leaf.
        tree: the tree to map over.

    Returns:
        A tree of the same shape holding ``fn(leaf)`` for each leaf.
    """
    if tree is None:
        return None
    if isinstance(tree, Mapping):
        return rebuild_container(type(tree), {k: nested_map(fn, v) for k, v in tree.items()})
    if isinstance(tree, (tuple, list)):
        return rebuild_container(type(tree), [nested_map(fn, v) for v in tree])
    return fn(tree)


def nested_detach(tree: Tree) -> Tree:
    """Detach every tensor of ``tree`` from the autograd graph (no data copy).

    Args:
        tree: a tree of tensors; non-tensor leaves are returned unchanged.

    Returns:
        The same tree with detached tensors.
    """
    return nested_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, tree)


def nested_to(tree: Tree, device: torch.device | str, non_blocking: bool = False) -> Tree:
    """Move every tensor of ``tree`` to ``device``.

    Tensors already on ``device`` are returned as they are (no copy).

    Args:
        tree: a tree of tensors; non-tensor leaves are returned unchanged.
        device: the target device.
        non_blocking: passed to `torch.Tensor.to` (asynchronous copies from pinned memory).

    Returns:
        The same tree with its tensors on ``device``.
    """
    if type(device) is not torch.device:
        device = torch.device(device)
    kind = type(tree)
    if kind is dict or kind is tuple or kind is list:
        # The common training batch (a flat dict or tuple of tensors already on the device,
        # e.g. CPU training): a shallow copy, no per-tensor call.
        values = tree.values() if kind is dict else tree
        if _all_on(values, device):
            return tree if kind is tuple else kind(tree)
    return nested_map(
        lambda t: t.to(device, non_blocking=non_blocking) if isinstance(t, torch.Tensor) else t, tree
    )


_CPU = torch.device("cpu")
_PLAIN = (int, float, str, bool)


def _all_on(values: Any, device: torch.device) -> bool:
    """True when every value is a tensor on ``device`` (or a scalar, string or None)."""
    cpu = device == _CPU  # then a flag read per tensor instead of a device object built
    for v in values:
        if type(v) is Tensor or isinstance(v, Tensor):  # exact type first: no metaclass check
            if not v.is_cpu if cpu else v.device != device:
                return False
        elif v is not None and not isinstance(v, _PLAIN):
            return False  # a nested container or another object: take the general path
    return True


def _to_numpy(t: Any) -> Any:
    if not isinstance(t, torch.Tensor):
        return t
    t = t.detach().cpu()
    if t.dtype in _NON_NUMPY_FLOATS:
        t = t.to(torch.float32)
    return t.numpy()


def nested_numpify(tree: Tree) -> Tree:
    """Convert every tensor of ``tree`` to a CPU `np.ndarray`.

    bfloat16 (and float8) tensors become float32 arrays, since numpy has no such type.
    A CPU tensor of another dtype shares its memory with the returned array.

    Args:
        tree: a tree of tensors; non-tensor leaves are returned unchanged.

    Returns:
        The same tree holding numpy arrays.
    """
    return nested_map(_to_numpy, tree)


def find_batch_size(tree: Tree) -> int | None:
    """Return the size of the first dimension of the first tensor or array in ``tree``.

    Args:
        tree: a batch (tensor, array, or nested containers of them).

    Returns:
        The batch size, or ``None`` when ``tree`` holds no tensor or array with at least
        one dimension.
    """
    if isinstance(tree, (torch.Tensor, np.ndarray)):
        return int(tree.shape[0]) if tree.ndim > 0 else None
    if isinstance(tree, Mapping):
        tree = tree.values()
    elif not isinstance(tree, (tuple, list)):
        return None
    for item in tree:
        size = find_batch_size(item)
        if size is not None:
            return size
    return None


def pad_and_concatenate(arrays: list[np.ndarray], padding_index: int = -100) -> np.ndarray:
    """Concatenate arrays along the first dimension, padding the others where they differ.

    When every array has the same trailing shape, this is a single `np.concatenate`.
    Otherwise the output is allocated once with the largest size of each trailing
    dimension, filled with ``padding_index``, and each array is copied into its block
    (so padding sits at the end of each dimension, "on the right"). 0-d arrays count as
    arrays of one element. A single array is returned as it is, without a copy.

    Args:
        arrays: the arrays to join; all must have the same number of dimensions.
        padding_index: the fill value of padded positions.

    Returns:
        The joined array. When padding is needed its dtype is wide enough for
        ``padding_index`` too (an unsigned array padded with -100 becomes signed).

    Raises:
        ValueError: if ``arrays`` is empty or the arrays differ in number of dimensions.

    Example:
        >>> pad_and_concatenate([np.ones((1, 2)), np.ones((1, 3))]).tolist()
        [[1.0, 1.0, -100.0], [1.0, 1.0, 1.0]]
    """
    if len(arrays) == 0:
        raise ValueError("pad_and_concatenate needs at least one array, got an empty list")
    arrays = [a.reshape(1) if a.ndim == 0 else a for a in (np.asarray(a) for a in arrays)]
    ndims = {a.ndim for a in arrays}
    if len(ndims) != 1:
        shapes = sorted({a.shape for a in arrays})
        raise ValueError(f"pad_and_concatenate needs arrays with the same number of dimensions, got {shapes}")
    if len(arrays) == 1:
        return arrays[0]
    trailing = {a.shape[1:] for a in arrays}
    if len(trailing) == 1:
        return np.concatenate(arrays, axis=0)
    max_trailing = tuple(max(dims) for dims in zip(*trailing))
    total = sum(a.shape[0] for a in arrays)
    dtype = np.result_type(*(a.dtype for a in arrays), np.min_scalar_type(padding_index))
    out = np.full((total, *max_trailing), padding_index, dtype=dtype)
    offset = 0
    for a in arrays:
        n = a.shape[0]
        out[(slice(offset, offset + n), *(slice(0, d) for d in a.shape[1:]))] = a
        offset += n
    return out


def nested_truncate(tree: Tree, n: int) -> Tree:
    """Keep the first ``n`` rows of every tensor or array in ``tree`` (views, no copy).

    Leaves without a first dimension, and non-array leaves, are returned unchanged.

    Args:
        tree: a tree of tensors or arrays.
        n: the number of rows to keep.

    Returns:
        The truncated tree.
    """

    def _truncate(t: Any) -> Any:
        if isinstance(t, (torch.Tensor, np.ndarray)) and t.ndim > 0:
            return t[:n]
        return t

    return nested_map(_truncate, tree)
