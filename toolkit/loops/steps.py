"""The default step functions: calling a model on a batch, getting its loss, counting the
items a loss averages over, and the evaluation step.

These are plain functions so that a custom loop can use them without the facade; the
`Trainer` methods `compute_loss` and `prediction_step` are thin wrappers around them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from toolkit.utils.nested import nested_detach

__all__ = [
    "call_model",
    "outputs_to_container",
    "loss_from_outputs",
    "LabelSmoother",
    "compute_loss",
    "count_items",
    "prediction_step",
]

IGNORE_INDEX = -100


def call_model(model: nn.Module, inputs: Any) -> Any:
    """Call ``model`` on a batch: a mapping as keyword arguments, a tuple/list positionally,
    anything else as the single argument."""
    if type(inputs) is dict or isinstance(inputs, Mapping):  # dict first: no ABC look-up
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def outputs_to_container(outputs: Any) -> Any:
    """Normalise model outputs: a dataclass becomes a dict (None fields dropped, as
    ``ModelOutput`` does), a namedtuple a tuple; dicts, tuples and tensors are kept."""
    if type(outputs) is dict or isinstance(outputs, (torch.Tensor, Mapping)):
        return outputs
    if dataclasses.is_dataclass(outputs) and not isinstance(outputs, type):
        return {
            f.name: getattr(outputs, f.name)
            for f in dataclasses.fields(outputs)
            if getattr(outputs, f.name) is not None
        }
    if isinstance(outputs, tuple) and hasattr(outputs, "_fields"):
        return tuple(outputs)
    return outputs


def loss_from_outputs(outputs: Any) -> torch.Tensor:
    """The loss of model outputs: key ``"loss"`` of a mapping, attribute ``loss``, or the
    first element of a tuple/list; a bare scalar tensor is itself the loss.

    Raises:
        ValueError: when the outputs hold no loss (names what they hold instead).
    """
    if type(outputs) is dict or isinstance(outputs, Mapping):
        if "loss" not in outputs or outputs["loss"] is None:
            raise ValueError(
                "The model did not return a loss from the inputs; it returned the keys "
                f"{sorted(outputs.keys())}. Pass labels the model uses to compute a loss, "
                "or override compute_loss."
            )
        return outputs["loss"]
    if isinstance(outputs, torch.Tensor):
        if outputs.dim() != 0:
            raise ValueError(
                f"The model returned a tensor of shape {tuple(outputs.shape)}, not a scalar loss. "
                "Return (loss, logits), a dict with 'loss', or override compute_loss."
            )
        return outputs
    loss = getattr(outputs, "loss", None)
    if loss is not None:
        return loss
    if isinstance(outputs, Sequence) and len(outputs) > 0 and isinstance(outputs[0], torch.Tensor):
        if outputs[0].numel() != 1:
            # e.g. a model that returns (logits,) when it computes no loss: never train on logits
            raise ValueError(
                f"The model returned a tuple whose first element has shape {tuple(outputs[0].shape)}, "
                "not a scalar loss. Return (loss, ...) when given labels, or override compute_loss."
            )
        return outputs[0]
    raise ValueError(
        f"The model returned {type(outputs).__name__}, which holds no loss. Return a scalar loss, "
        "(loss, ...), a dict with 'loss', or override compute_loss."
    )


class LabelSmoother:
    """Cross entropy with label smoothing over the last dimension, ignoring label -100.

    ``loss = (1 - epsilon) * nll + epsilon * mean over classes of -log p``, each averaged
    over the positions whose label is not ``ignore_index``.

    Args:
        epsilon: the smoothing factor, in [0, 1).
        ignore_index: the label value that marks positions without a target.
    """

    def __init__(self, epsilon: float = 0.1, ignore_index: int = IGNORE_INDEX) -> None:
        if not 0 <= epsilon < 1:
            raise ValueError(f"label_smoothing_factor={epsilon} must be in [0, 1)")
        self.epsilon = epsilon
        self.ignore_index = ignore_index

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, shift_labels: bool = False) -> torch.Tensor:
        if shift_labels:
            logits = logits[..., :-1, :].contiguous()
            labels = labels[..., 1:].contiguous()
        log_probs = -torch.log_softmax(logits.float(), dim=-1)
        if labels.dim() == log_probs.dim() - 1:
            labels = labels.unsqueeze(-1)
        padding_mask = labels.eq(self.ignore_index)
        safe_labels = labels.clamp(min=0)
        nll = log_probs.gather(dim=-1, index=safe_labels).masked_fill(padding_mask, 0.0)
        smoothed = log_probs.sum(dim=-1, keepdim=True).masked_fill(padding_mask, 0.0)
        num_active = padding_mask.numel() - padding_mask.long().sum()
        nll_loss = nll.sum() / num_active
        smoothed_loss = smoothed.sum() / (num_active * log_probs.shape[-1])
        return (1 - self.epsilon) * nll_loss + self.epsilon * smoothed_loss


def _logits_of(outputs: Any) -> torch.Tensor:
    if isinstance(outputs, Mapping):
        return outputs["logits"]
    logits = getattr(outputs, "logits", None)
    if logits is not None:
        return logits
    if isinstance(outputs, (tuple, list)):
        return outputs[0]
    return outputs


def compute_loss(
    model: nn.Module,
    inputs: Any,
    *,
    label_smoother: LabelSmoother | None = None,
    return_outputs: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, Any]:
    """Run the model and return its loss (and outputs when ``return_outputs``).

    With a ``label_smoother`` and a ``labels`` key, the labels are taken out of the
    inputs and the smoothed loss is computed from the logits instead of the model's loss.
    """
    labels = None
    if label_smoother is not None and isinstance(inputs, Mapping) and "labels" in inputs:
        inputs = dict(inputs)
        labels = inputs.pop("labels")
    # a dict batch and dict outputs (the common case) skip the helpers' type dispatch
    outputs = model(**inputs) if type(inputs) is dict else call_model(model, inputs)
    if type(outputs) is not dict:
        outputs = outputs_to_container(outputs)
    if labels is not None:
        loss = label_smoother(_logits_of(outputs), labels)
    elif type(outputs) is dict and outputs.get("loss") is not None:
        loss = outputs["loss"]
    else:
        loss = loss_from_outputs(outputs)  # also the errors naming what the outputs hold
    return (loss, outputs) if return_outputs else loss


def count_items(inputs: Any, label_names: Sequence[str] = ("labels",)) -> int:
    """How many items a mean loss over this batch averages over.

    The number of label entries not equal to -100 (tokens for sequence labels, examples
    for class labels) of the first label present; without labels, the batch size.
    """
    if type(inputs) is dict or isinstance(inputs, Mapping):  # dict first: no ABC look-up
        for name in label_names:
            labels = inputs.get(name)
            if isinstance(labels, torch.Tensor):
                if labels.is_floating_point():
                    return int(labels.shape[0]) if labels.dim() else 1
                return int(labels.ne(IGNORE_INDEX).sum())
        values = inputs.values()
    elif isinstance(inputs, (tuple, list)):
        values = inputs
    else:
        values = (inputs,)
    for v in values:
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            return int(v.shape[0])
    return 1


def prediction_step(
    model: nn.Module,
    inputs: Any,
    prediction_loss_only: bool,
    ignore_keys: Sequence[str] | None = None,
    *,
    label_names: Sequence[str] = ("labels",),
    label_smoother: LabelSmoother | None = None,
) -> tuple[torch.Tensor | None, Any, Any]:
    """One evaluation batch: ``(loss, logits, labels)``, each detached (or None).

    ``logits`` are the model outputs other than the loss and ``ignore_keys``: a single
    tensor when only one remains, else a tuple (in output order). ``labels`` likewise.
    """
    has_labels = isinstance(inputs, Mapping) and all(inputs.get(n) is not None for n in label_names)
    ignore = set(ignore_keys or ())
    loss = None
    with torch.no_grad():
        if has_labels or not isinstance(inputs, Mapping):
            try:
                loss, outputs = compute_loss(
                    model, inputs, label_smoother=label_smoother, return_outputs=True
                )
                loss = loss.mean().detach()
            except ValueError:
                if has_labels:
                    raise
                outputs = outputs_to_container(call_model(model, inputs))
            skip_first = loss is not None
        else:
            outputs = outputs_to_container(call_model(model, inputs))
            skip_first = False
    if prediction_loss_only:
        return loss, None, None
    if isinstance(outputs, Mapping):
        logits = tuple(v for k, v in outputs.items() if k not in ignore and k != "loss")
    elif isinstance(outputs, (tuple, list)):
        logits = tuple(outputs[1:] if skip_first else outputs)
    elif isinstance(outputs, torch.Tensor) and not (skip_first and outputs.dim() == 0):
        logits = (outputs,)
    else:
        logits = ()
    logits = nested_detach(logits)
    logits = None if len(logits) == 0 else (logits[0] if len(logits) == 1 else logits)
    labels = None
    if has_labels:
        labels = tuple(inputs[n].detach() for n in label_names)
        labels = labels[0] if len(labels) == 1 else labels
    return loss, logits, labels
