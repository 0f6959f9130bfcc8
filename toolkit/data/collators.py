"""Collators: turn a list of dataset items into one batch of tensors.

Two collators live here:

* `default_data_collator` stacks items that already have equal shapes. It accepts
  mapping items (dicts, dataclasses, plain objects) and returns a dict, or tuple/list
  items (as yielded by `torch.utils.data.TensorDataset`) and returns a tuple. The
  `Trainer` facade passes a dict batch to the model as keyword arguments and a tuple
  batch positionally.
* `DataCollatorWithPadding` pads variable-length token sequences to a common length
  first, by itself or through a ``transformers`` tokenizer's ``pad`` method.

Both rename ``label`` / ``label_ids`` to ``labels``, the name models take.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np
import torch
from torch import Tensor

from toolkit.types import PaddingStrategy

__all__ = ["default_data_collator", "DataCollatorWithPadding"]

_LABEL_KEYS = ("label", "label_ids")


def _as_mapping(feature: Any) -> Mapping[str, Any]:
    """Returns ``feature`` as a mapping (dicts as-is; dataclasses and objects via ``vars``)."""
    if isinstance(feature, Mapping):
        return feature
    if dataclasses.is_dataclass(feature) and not isinstance(feature, type):
        return {f.name: getattr(feature, f.name) for f in dataclasses.fields(feature)}
    if hasattr(feature, "__dict__"):
        return vars(feature)
    raise TypeError(
        "default_data_collator accepts items that are dicts, dataclasses, objects with "
        f"attributes, or tuples/lists of tensors; got {type(feature).__name__}"
    )


def _normalize_dtype(t: Tensor) -> Tensor:
    """Integers become int64, float64 becomes the default float dtype; others are kept."""
    if t.dtype == torch.bool:
        return t
    if not t.is_floating_point() and not t.is_complex():
        return t if t.dtype == torch.int64 else t.long()
    if t.dtype == torch.float64:
        return t.to(torch.get_default_dtype())
    return t


def _to_tensor(values: list[Any], key: str | int) -> Tensor:
    """Stacks one field of every item into a single tensor.

    Tensors are stacked as they are (dtype kept). Numpy arrays, numpy scalars, numbers
    and (nested) lists are converted: integers to int64, floats to float32 (the default
    float dtype), booleans to bool.
    """
    first = values[0]
    try:
        if isinstance(first, Tensor):
            return torch.stack(values)
        if isinstance(first, (np.ndarray, np.generic)):
            return _normalize_dtype(torch.from_numpy(np.ascontiguousarray(np.stack(values))))
        return _normalize_dtype(torch.tensor(values))
    except (RuntimeError, ValueError, TypeError) as err:
        raise ValueError(
            f"could not stack field {key!r} of the batch into one tensor ({err}). Items of "
            "different lengths need padding: use DataCollatorWithPadding, or pad them "
            "in the dataset."
        ) from err


def _label_tensor(values: list[Any], key: str) -> Tensor:
    """Builds the ``labels`` tensor: integer labels as int64, float labels as float32."""
    if isinstance(values[0], str):
        raise ValueError(
            f"field {key!r} holds strings ({values[0]!r}); encode labels as integers "
            "(class ids) or floats before training"
        )
    return _to_tensor(values, key)


def _skip(value: Any) -> bool:
    return value is None or isinstance(value, str)


def default_data_collator(features: Sequence[Any]) -> dict[str, Tensor] | tuple[Any, ...]:
    """Stacks dataset items of equal shapes into a batch.

    Mapping items (dicts; dataclasses and objects are read through their fields):

    * ``label`` (or, failing that, ``label_ids``) becomes ``labels``: int labels give an
      int64 tensor, float labels a float32 tensor, sequences a stacked tensor.
    * Every other key is stacked: tensors as they are; numpy arrays, lists and numbers
      converted (ints to int64, floats to float32, bools to bool).
    * Keys whose value is ``None`` or a string in the first item are left out.

    Tuple/list items (e.g. from `torch.utils.data.TensorDataset`) give a tuple with one
    stacked tensor per position, which the `Trainer` facade passes to the model
    positionally. Positions holding ``None`` give ``None``.

    Args:
        features: The items of one batch; all of the same kind.

    Returns:
        A dict of batched tensors, or a tuple for tuple/list items.

    Raises:
        ValueError: When ``features`` is empty, a field cannot be stacked (e.g. ragged
            sequences: use `DataCollatorWithPadding`), or a label is a string.
        TypeError: When the items are of an unsupported kind.

    Example:
        >>> batch = default_data_collator([{"x": [1.0, 2.0], "label": 1}, {"x": [3.0, 4.0], "label": 0}])
        >>> batch["labels"].tolist(), batch["x"].dtype
        ([1, 0], torch.float32)
    """
    features = list(features)
    if not features:
        raise ValueError("default_data_collator received an empty list of features")
    first_raw = features[0]
    if isinstance(first_raw, (tuple, list)):
        out: list[Any] = []
        for pos in range(len(first_raw)):
            column = [f[pos] for f in features]
            if column[0] is None:
                out.append(None)
            elif isinstance(column[0], str):
                out.append(column)
            else:
                out.append(_to_tensor(column, pos))
        return tuple(out)

    # dicts (the common case) skip the per-item Mapping check, an ABC look-up; the
    # per-item work below runs in C (map/itemgetter), not in a Python loop
    if all(map(isinstance, features, repeat(dict))):
        items = features
    else:
        items = [_as_mapping(f) for f in features]
    first = items[0]
    batch: dict[str, Tensor] = {}
    for key in _LABEL_KEYS:
        if first.get(key) is not None:
            batch["labels"] = _label_tensor(list(map(itemgetter(key), items)), key)
            break
    for key, value in first.items():
        if key in _LABEL_KEYS or _skip(value):
            continue
        batch[key] = _to_tensor(list(map(itemgetter(key), items)), key)
    return batch


def _is_sequence(value: Any) -> bool:
    """True for a 1-D sequence of scalars (list, tuple, 1-D tensor or array)."""
    if isinstance(value, (Tensor, np.ndarray)):
        return value.ndim == 1
    if isinstance(value, (list, tuple)):
        return len(value) == 0 or not isinstance(value[0], (list, tuple, Tensor, np.ndarray, str))
    return False


def _round_up(length: int, multiple: int | None) -> int:
    if multiple is None or length % multiple == 0:
        return length
    return (length // multiple + 1) * multiple


class DataCollatorWithPadding:
    """Pads variable-length sequences to one length per batch, then stacks them.

    Every key whose value is a 1-D sequence (list, tuple, 1-D tensor or array) is
    treated as token-aligned and padded, each key to the longest of its own values in
    the batch (``padding=True``/``"longest"``) or to ``max_length`` (``"max_length"``),
    rounded up to ``pad_to_multiple_of``. Pad values: ``input_ids`` the pad token id;
    ``attention_mask``, ``token_type_ids`` and unknown keys 0; ``special_tokens_mask``
    1; label sequences (``labels``/``label``/``label_ids``) ``label_pad_token_id``.
    When ``input_ids`` is present without ``attention_mask``, a mask is built (1 on
    real tokens, 0 on padding). Padding goes on the right, or on the left when the
    tokenizer's ``padding_side`` (or ``padding_side``) is ``"left"``. Scalars and other
    keys are stacked as in `default_data_collator`, and labels are renamed ``labels``.

    When the tokenizer has a callable ``pad`` method (a ``transformers`` tokenizer),
    padding of the model inputs is delegated to it; label sequences, which such
    tokenizers do not pad, are padded here to the same length.

    Args:
        tokenizer: Optional tokenizer; supplies ``pad_token_id``, ``padding_side`` and
            possibly ``pad``.
        padding: ``True``/``"longest"``, ``"max_length"``, or ``False``/``"do_not_pad"``.
        max_length: Target length for ``"max_length"``.
        pad_to_multiple_of: Round padded lengths up to a multiple of this.
        pad_token_id: Pad id for ``input_ids`` when the tokenizer gives none (default 0).
        label_pad_token_id: Pad value of label sequences (ignored by the loss).
        return_tensors: Only ``"pt"`` is supported.
        padding_side: ``"right"`` or ``"left"``; overrides the tokenizer's side.

    Raises:
        ValueError: For an unknown padding mode, a missing ``max_length`` with
            ``"max_length"``, a non-positive ``pad_to_multiple_of``, an unsupported
            ``return_tensors`` or ``padding_side``.

    Example:
        >>> collate = DataCollatorWithPadding(pad_token_id=0)
        >>> batch = collate([{"input_ids": [5, 6, 7]}, {"input_ids": [8]}])
        >>> batch["input_ids"].tolist(), batch["attention_mask"].tolist()
        ([[5, 6, 7], [8, 0, 0]], [[1, 1, 1], [1, 0, 0]])
    """

    def __init__(
        self,
        tokenizer: Any = None,
        padding: bool | str | PaddingStrategy = True,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        pad_token_id: int | None = None,
        label_pad_token_id: int = -100,
        return_tensors: str = "pt",
        padding_side: str | None = None,
    ) -> None:
        if padding is True:
            strategy = PaddingStrategy.LONGEST
        elif padding is False:
            strategy = PaddingStrategy.DO_NOT_PAD
        else:
            strategy = PaddingStrategy(padding)
        if strategy == PaddingStrategy.MAX_LENGTH and max_length is None:
            raise ValueError("padding='max_length' needs max_length to be set")
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be a positive integer; got {max_length}")
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be a positive integer; got {pad_to_multiple_of}")
        if return_tensors != "pt":
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; accepted values: 'pt'")
        side = padding_side if padding_side is not None else getattr(tokenizer, "padding_side", "right")
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right'; got {side!r}")
        self.tokenizer = tokenizer
        self.padding = padding
        self.strategy = strategy
        self.max_length = max_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.pad_token_id = pad_token_id
        self.label_pad_token_id = label_pad_token_id
        self.return_tensors = return_tensors
        self.padding_side = side

    @property
    def input_pad_id(self) -> int:
        """Pad id of ``input_ids``: the tokenizer's, else ``pad_token_id``, else 0."""
        tok_id = getattr(self.tokenizer, "pad_token_id", None)
        if tok_id is not None:
            return int(tok_id)
        return 0 if self.pad_token_id is None else int(self.pad_token_id)

    def _pad_value(self, key: str) -> int:
        if key == "input_ids":
            return self.input_pad_id
        if key in ("labels", *_LABEL_KEYS):
            return self.label_pad_token_id
        if key == "token_type_ids":
            return int(getattr(self.tokenizer, "pad_token_type_id", 0) or 0)
        if key == "special_tokens_mask":
            return 1
        return 0

    def _target_length(self, longest: int) -> int:
        if self.strategy == PaddingStrategy.MAX_LENGTH:
            assert self.max_length is not None
            if longest > self.max_length:
                raise ValueError(
                    f"a sequence of length {longest} is longer than max_length={self.max_length}; "
                    "truncate it in preprocessing"
                )
            longest = self.max_length
        return _round_up(longest, self.pad_to_multiple_of)

    def _pad(self, key: str, values: list[Any], length: int | None = None) -> Tensor:
        """Pads one key's 1-D sequences into a ``(batch, length)`` tensor."""
        rows = [
            _normalize_dtype(torch.as_tensor(np.asarray(v) if isinstance(v, (list, tuple)) else v))
            for v in values
        ]
        rows = [r.reshape(-1) for r in rows]
        if length is None:
            length = self._target_length(max(r.numel() for r in rows))
        dtype = torch.int64  # an all-empty key stays integer
        non_empty = [r for r in rows if r.numel()]
        if non_empty:
            dtype = non_empty[0].dtype
            for r in non_empty[1:]:
                dtype = torch.promote_types(dtype, r.dtype)
        out = torch.full((len(rows), length), self._pad_value(key), dtype=dtype)
        for i, r in enumerate(rows):
            n = r.numel()
            if self.padding_side == "left":
                out[i, length - n :] = r
            else:
                out[i, :n] = r
        return out

    def __call__(self, features: Sequence[Any]) -> dict[str, Tensor]:
        """Pads and collates one batch.

        Args:
            features: Mapping items (dicts, dataclasses or objects).

        Returns:
            A dict of batched tensors with labels under ``labels``.
        """
        items = [_as_mapping(f) for f in features]
        if not items:
            raise ValueError("DataCollatorWithPadding received an empty list of features")
        if self.strategy == PaddingStrategy.DO_NOT_PAD:
            batch = default_data_collator(items)
            assert isinstance(batch, dict)
            return batch
        first = items[0]
        seq_keys = [k for k, v in first.items() if _is_sequence(v)]
        for key in seq_keys:
            missing = sum(1 for f in items if key not in f)
            if missing:
                raise ValueError(
                    f"key {key!r} is missing from {missing} of the {len(items)} items of the batch"
                )
        label_seq_keys = [k for k in seq_keys if k in ("labels", *_LABEL_KEYS)]

        if callable(getattr(self.tokenizer, "pad", None)):
            return self._delegate(items, label_seq_keys)

        rest = [{k: v for k, v in f.items() if k not in seq_keys} for f in items]
        batch = default_data_collator(rest)
        assert isinstance(batch, dict)
        for key in seq_keys:
            name = "labels" if key in _LABEL_KEYS else key
            batch[name] = self._pad(key, [f[key] for f in items])
        if "input_ids" in seq_keys and "attention_mask" not in seq_keys:
            batch["attention_mask"] = self._pad("attention_mask", [[1] * len(f["input_ids"]) for f in items])
        return batch

    def _delegate(self, items: list[Mapping[str, Any]], label_seq_keys: list[str]) -> dict[str, Tensor]:
        """Lets a ``transformers`` tokenizer pad the model inputs; pads label sequences here."""
        inputs = [{k: v for k, v in f.items() if k not in label_seq_keys} for f in items]
        padded = self.tokenizer.pad(
            inputs,
            padding=self.strategy.value,
            max_length=self.max_length,
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_tensors=self.return_tensors,
        )
        batch = dict(padded)
        for key in _LABEL_KEYS:
            if key in batch:
                value = batch.pop(key)
                batch["labels"] = value if isinstance(value, Tensor) else _to_tensor(list(value), key)
        ids = batch.get("input_ids")
        for key in label_seq_keys:
            values = [f[key] for f in items]
            length = None
            if isinstance(ids, Tensor) and ids.ndim == 2:
                length = max(ids.shape[1], max(len(v) for v in values))
            batch["labels" if key in _LABEL_KEYS else key] = self._pad(key, values, length)
        return batch
