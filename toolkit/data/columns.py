"""Dropping dataset columns the model's ``forward`` does not take (``remove_unused_columns``).

Dropping columns is a "helpful default" that can surprise, so it is done loudly: the
dropped names are logged once, and when nothing the model takes is left the user gets
an error naming both the model's parameters and the dataset's keys, instead of a
confusing failure inside ``forward``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from toolkit.data.collators import default_data_collator

__all__ = ["signature_columns", "RemoveColumnsCollator", "remove_columns_from_hf_dataset"]

_log = logging.getLogger(__name__)

_LABEL_COLUMNS = ("label", "label_ids")


def _unwrap(model: Any) -> Any:
    """Follows wrapper attributes (``.module`` of DDP/DeepSpeed, ``_orig_mod`` of compile)."""
    seen: set[int] = set()
    while id(model) not in seen:
        seen.add(id(model))
        inner = getattr(model, "module", None)
        if inner is None:
            inner = getattr(model, "_orig_mod", None)
        if inner is None or not callable(getattr(inner, "forward", None)):
            break
        model = inner
    return model


def signature_columns(model: Any, label_names: Iterable[str] | None = None) -> list[str] | None:
    """Lists the dataset columns a model can take: its ``forward`` parameters plus labels.

    Args:
        model: The model (wrappers exposing ``.module`` are unwrapped).
        label_names: Extra label column names to keep.

    Returns:
        The parameter names of ``forward``, then ``"label"``, ``"label_ids"`` and
        ``label_names`` (no duplicates); or ``None`` when ``forward`` takes ``**kwargs``
        or cannot be inspected, meaning every column is kept.

    Example:
        >>> import torch
        >>> class M(torch.nn.Module):
        ...     def forward(self, input_ids, labels=None):
        ...         return input_ids
        >>> signature_columns(M())
        ['input_ids', 'labels', 'label', 'label_ids']
    """
    forward = getattr(_unwrap(model), "forward", None)
    if forward is None:
        return None
    try:
        params = inspect.signature(forward).parameters.values()
    except (TypeError, ValueError):
        return None
    names: list[str] = []
    for p in params:
        if p.kind == inspect.Parameter.VAR_KEYWORD:
            return None
        if p.kind == inspect.Parameter.VAR_POSITIONAL:
            continue
        names.append(p.name)
    for extra in (*_LABEL_COLUMNS, *(label_names or ())):
        if extra not in names:
            names.append(extra)
    return names


def _model_label(model_name: str | None) -> str:
    return f"`{model_name}.forward`" if model_name else "the model's `forward`"


def _describe(description: str | None) -> str:
    return f" of the {description} set" if description else ""


def _nothing_left_error(
    keys: Sequence[str], columns: Sequence[str], model_name: str | None, description: str | None
) -> ValueError:
    return ValueError(
        f"No column{_describe(description)} is taken by {_model_label(model_name)}: the data has "
        f"{sorted(keys)}, the model accepts {list(columns)}. Rename the columns to match the "
        "model's arguments, or set remove_unused_columns=False to pass every column through."
    )


def _log_dropped(
    logger: logging.Logger, dropped: Sequence[str], model_name: str | None, description: str | None
) -> None:
    logger.info(
        "Dropping column(s)%s not taken by %s: %s. Set remove_unused_columns=False to keep them.",
        _describe(description),
        _model_label(model_name),
        ", ".join(dropped),
    )


class RemoveColumnsCollator:
    """Wraps a collator, removing from each dict item the keys the model does not take.

    The dropped keys are logged once (at INFO). Items that are not mappings (tuples,
    tensors) pass through untouched, as does everything when ``signature_columns`` is
    ``None``.

    Args:
        data_collator: The collator to call on the filtered items.
        signature_columns: Keys to keep (see `signature_columns`); ``None`` keeps all.
        logger: Where to log; defaults to this module's logger.
        model_name: Model class name, for messages.
        description: Which data this is (``"training"``, ``"evaluation"``), for messages.

    Raises:
        ValueError: (When called) if no key of an item would be left.

    Example:
        >>> collate = RemoveColumnsCollator(lambda items: items, ["x"])
        >>> collate([{"x": 1, "text": "hi"}])
        [{'x': 1}]
    """

    def __init__(
        self,
        data_collator: Callable[[list[Any]], Any],
        signature_columns: Sequence[str] | None,
        logger: logging.Logger | None = None,
        model_name: str | None = None,
        description: str | None = None,
    ) -> None:
        self.data_collator = data_collator
        self.signature_columns = None if signature_columns is None else list(signature_columns)
        self._keep = None if signature_columns is None else frozenset(signature_columns)
        self.logger = logger if logger is not None else _log
        self.model_name = model_name
        self.description = description
        self._logged = False

    def _filter(self, feature: Mapping[str, Any]) -> dict[str, Any]:
        assert self._keep is not None and self.signature_columns is not None
        kept = {k: v for k, v in feature.items() if k in self._keep}
        if not kept and feature:
            raise _nothing_left_error(
                list(feature), self.signature_columns, self.model_name, self.description
            )
        if not self._logged:
            self._logged = True
            dropped = [k for k in feature if k not in self._keep]
            if dropped:
                _log_dropped(self.logger, dropped, self.model_name, self.description)
        return kept

    def __call__(self, features: Sequence[Any]) -> Any:
        """Filters the items' keys, then calls the wrapped collator.

        Args:
            features: The items of one batch.

        Returns:
            Whatever the wrapped collator returns.
        """
        if type(features) is not list:
            features = list(features)
        if self._keep is None or not features:
            return self.data_collator(features)
        first = features[0]
        if type(first) is not dict and not isinstance(first, Mapping):
            return self.data_collator(features)
        if self.data_collator is default_data_collator:
            # it leaves the items alone and takes the batch's keys from the first item only,
            # so that item's keys decide whether filtering would change the batch
            if first.keys() <= self._keep:
                return self.data_collator(features)
        elif set().union(*features) <= self._keep:  # every key of every item (one pass in C)
            # nothing to drop: no filtering key by key, but copies, as a collator other than
            # the default might change the items (which may be the dataset's own)
            return self.data_collator(list(map(dict, features)))
        return self.data_collator([self._filter(f) for f in features])


def remove_columns_from_hf_dataset(
    dataset: Any,
    columns: Sequence[str] | None,
    description: str | None = None,
    model_name: str | None = None,
    logger: logging.Logger | None = None,
) -> Any:
    """Removes a ``datasets.Dataset``'s columns that are not in ``columns``.

    Works on any object with ``column_names`` and ``remove_columns`` (duck typing, so
    the ``datasets`` package is not imported). Other datasets are returned unchanged:
    wrap their collator in `RemoveColumnsCollator` instead.

    Args:
        dataset: The dataset.
        columns: The columns to keep (see `signature_columns`); ``None`` keeps all.
        description: Which data this is, for messages.
        model_name: Model class name, for messages.
        logger: Where to log the removed columns; defaults to this module's logger.

    Returns:
        The dataset without the unused columns (a new object, as ``datasets`` returns).

    Raises:
        ValueError: If no column would be left.
    """
    if columns is None:
        return dataset
    names = getattr(dataset, "column_names", None)
    if not callable(getattr(dataset, "remove_columns", None)) or not isinstance(names, (list, tuple)):
        return dataset
    keep = set(columns)
    dropped = [c for c in names if c not in keep]
    if not dropped:
        return dataset
    if len(dropped) == len(names):
        raise _nothing_left_error(list(names), list(columns), model_name, description)
    _log_dropped(logger if logger is not None else _log, dropped, model_name, description)
    return dataset.remove_columns(dropped)
