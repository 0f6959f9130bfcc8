"""The evaluation loop shared by evaluate and predict, and the accumulator behind it.

`EvaluationLoop` drives a prediction step over a dataloader, keeps the loss as a running
device-side sum, accumulates predictions / labels / inputs with a
`PredictionAccumulator` (CPU outputs of a fixed shape copied into one array pre-sized
to the dataset; anything else a list of per-batch tensors per leaf, joined once at the
end), and computes metrics. It knows nothing about `TrainingArguments`: the facade passes
plain values, and a composer can build one directly.

Cost per batch: no host synchronisation and no concatenation, unless
``eval_accumulation_steps`` asks for an offload to CPU every k batches (which bounds
device memory at the price of one transfer per k batches).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from toolkit.callbacks.base import CallbackHandler
from toolkit.state import TrainerControl, TrainerState
from toolkit.strategies.base import Strategy
from toolkit.types import EvalLoopOutput, EvalPrediction
from toolkit.utils.nested import (
    find_batch_size,
    nested_numpify,
    nested_truncate,
    pad_and_concatenate,
    rebuild_container,
)

__all__ = ["PredictionAccumulator", "EvaluationLoop", "denumpify_detensorize"]

logger = logging.getLogger(__name__)

Tree = Any
PredictionStep = Callable[
    [nn.Module, Any, bool, "list[str] | None"],
    "tuple[torch.Tensor | None, Tree | None, Tree | None]",
]

_LEAF = "leaf"
_END = object()  # marks an exhausted dataloader


def _spec_of(tree: Tree) -> Any:
    """Describe the container structure of ``tree`` (leaves are `_LEAF`, ``None`` stays)."""
    if tree is None:
        return None
    if isinstance(tree, Mapping):
        return ("map", type(tree), tuple(tree.keys()), tuple(_spec_of(v) for v in tree.values()))
    if isinstance(tree, (tuple, list)):
        return ("seq", type(tree), len(tree), tuple(_spec_of(v) for v in tree))
    return _LEAF


def _flatten_like(tree: Tree, spec: Any, out: list, path: str = "") -> None:
    """Append the leaves of ``tree`` to ``out`` in the order ``spec`` describes."""
    where = path or "<root>"
    if spec is None:
        if tree is not None:
            raise ValueError(f"batch structure changed at {where}: expected None, got {type(tree).__name__}")
        return
    if spec is _LEAF:
        if tree is None or isinstance(tree, (Mapping, tuple, list)):
            raise ValueError(
                f"batch structure changed at {where}: expected a tensor, got {type(tree).__name__}"
            )
        out.append(tree)
        return
    kind, _, keys, subs = spec
    if kind == "map":
        if not isinstance(tree, Mapping) or set(tree.keys()) != set(keys):
            got = sorted(map(str, tree.keys())) if isinstance(tree, Mapping) else type(tree).__name__
            raise ValueError(f"batch structure changed at {where}: expected keys {list(keys)}, got {got}")
        for k, sub in zip(keys, subs):
            _flatten_like(tree[k], sub, out, f"{path}[{k!r}]")
    else:
        if not isinstance(tree, (tuple, list)) or len(tree) != keys:
            got = f"length {len(tree)}" if isinstance(tree, (tuple, list)) else type(tree).__name__
            raise ValueError(f"batch structure changed at {where}: expected a sequence of {keys}, got {got}")
        for i, (item, sub) in enumerate(zip(tree, subs)):
            _flatten_like(item, sub, out, f"{path}[{i}]")


def _unflatten(spec: Any, leaves: Iterable) -> Tree:
    """Rebuild a tree of structure ``spec`` from an iterator over its leaves."""
    if spec is None:
        return None
    if spec is _LEAF:
        return next(leaves)
    kind, cls, keys, subs = spec
    if kind == "map":
        return rebuild_container(cls, {k: _unflatten(sub, leaves) for k, sub in zip(keys, subs)})
    return rebuild_container(cls, [_unflatten(sub, leaves) for sub in subs])


class PredictionAccumulator:
    """Collects per-batch trees and joins them once, at the end.

    It owns, per leaf of the tree (the structure is taken from the first batch; tuples,
    namedtuples, lists and dicts are preserved), a Python list of the per-batch tensors
    still on their device (`device_chunks`) and a list of CPU numpy arrays
    (`host_chunks`). `add` only appends (no copy, no host synchronisation);
    `offload` moves what is held on the device to CPU numpy; `result` offloads the rest
    and concatenates each leaf once with `pad_and_concatenate`, padding differing
    trailing dimensions (e.g. sequence lengths) with ``padding_index``.

    When the number of rows is known (``capacity``, e.g. the dataset length), a leaf
    whose batches are CPU tensors of one trailing shape is written straight into one
    pre-sized array instead: each batch is copied into its rows as it arrives, and
    `result` returns the filled rows without any concatenation (half the peak memory of
    keeping the batches and joining them). The first batch of another trailing shape (or
    one past the capacity) ends that: the rows filled so far become the first chunk and
    the leaf goes on as above. Untouched rows of the array are never written, so they
    cost no memory.

    Args:
        padding_index: the fill value for padded positions.
        capacity: the expected total number of rows (first dimension) per leaf, or
            ``None`` when unknown.

    Example:
        >>> import torch
        >>> acc = PredictionAccumulator()
        >>> acc.add((torch.ones(2, 3), torch.zeros(2)))
        >>> acc.add((torch.ones(1, 5), torch.zeros(1)))
        >>> logits, other = acc.result()
        >>> logits.shape, logits[0, -1].item(), other.shape
        ((3, 5), -100.0, (3,))
    """

    def __init__(self, padding_index: int = -100, capacity: int | None = None) -> None:
        if capacity is not None and (isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0):
            raise ValueError(f"capacity must be None or an int >= 0, got {capacity!r}")
        self.padding_index = padding_index
        self.capacity = capacity
        self.spec: Any = None
        self.device_chunks: list[list[torch.Tensor]] = []
        self.host_chunks: list[list[np.ndarray]] = []
        #: Per leaf: the pre-sized array being filled (None when the leaf uses chunks).
        self.buffers: list[np.ndarray | None] = []
        self.filled: list[int] = []
        self.num_batches = 0

    @property
    def empty(self) -> bool:
        """True until a batch has been added."""
        return self.num_batches == 0

    def add(self, tree: Tree) -> None:
        """Append one batch (a tree of tensors or arrays); ``None`` is ignored.

        Raises:
            ValueError: if the tree's structure differs from the first batch's.
        """
        if tree is None:
            return
        if self.spec is None:
            self.spec = _spec_of(tree)
            leaves: list = []
            _flatten_like(tree, self.spec, leaves)
            self.device_chunks = [[] for _ in leaves]
            self.host_chunks = [[] for _ in leaves]
            self.buffers = [self._new_buffer(leaf) for leaf in leaves]
            self.filled = [0] * len(leaves)
        else:
            leaves = []
            _flatten_like(tree, self.spec, leaves)
        for i, (held, host, leaf) in enumerate(zip(self.device_chunks, self.host_chunks, leaves)):
            if self.buffers[i] is not None and self._fill(i, leaf):
                continue
            if isinstance(leaf, torch.Tensor):
                held.append(leaf.detach())
            else:
                host.append(np.asarray(leaf))
        self.num_batches += 1

    def _new_buffer(self, leaf: Any) -> np.ndarray | None:
        """A pre-sized array for a leaf whose first batch is a CPU tensor with a batch dimension."""
        if (
            self.capacity is None
            or not isinstance(leaf, torch.Tensor)
            or leaf.device.type != "cpu"
            or leaf.ndim == 0
            or leaf.shape[0] > self.capacity
        ):
            return None
        dtype = leaf.dtype
        try:
            torch.empty(0, dtype=dtype).numpy()
        except TypeError:  # bfloat16, float8: numpy has no such type; float32, as `nested_numpify` gives
            if not dtype.is_floating_point:
                return None
            dtype = torch.float32
        return np.empty((self.capacity, *leaf.shape[1:]), dtype=torch.empty(0, dtype=dtype).numpy().dtype)

    def _fill(self, i: int, leaf: Any) -> bool:
        """Copy one batch into leaf ``i``'s array; False (and the leaf goes back to chunks) when it does not fit."""
        buffer = self.buffers[i]
        start = self.filled[i]
        if (
            isinstance(leaf, torch.Tensor)
            and leaf.device.type == "cpu"
            and leaf.ndim == buffer.ndim
            and tuple(leaf.shape[1:]) == buffer.shape[1:]
            and start + leaf.shape[0] <= buffer.shape[0]
        ):
            torch.from_numpy(buffer[start : start + leaf.shape[0]]).copy_(leaf.detach())
            self.filled[i] = start + leaf.shape[0]
            return True
        self.host_chunks[i].append(buffer[:start])  # the rows so far stay the first chunk
        self.buffers[i] = None
        return False

    def offload(self) -> None:
        """Move every tensor held on a device to CPU numpy, and release the device copies.

        Batches that are not on the CPU and share shape and dtype are first joined on
        the device, so each leaf costs one transfer per offload rather than one per batch.
        """
        for held, host in zip(self.device_chunks, self.host_chunks):
            if not held:
                continue
            first = held[0]
            if (
                len(held) > 1
                and first.device.type != "cpu"
                and all(t.shape == first.shape and t.dtype == first.dtype for t in held)
            ):
                host.append(nested_numpify(torch.cat(held, dim=0) if first.ndim else torch.stack(held)))
            else:
                host.extend(nested_numpify(t) for t in held)
            held.clear()

    def result(self) -> Tree:
        """Return the joined tree of numpy arrays (``None`` if nothing was added).

        The joined arrays are kept, so calling `result` again costs nothing and later
        `add` calls extend them.
        """
        if self.spec is None:
            return None
        self.offload()
        joined = []
        for i, host in enumerate(self.host_chunks):
            if self.buffers[i] is not None:
                joined.append(self.buffers[i][: self.filled[i]])  # filled in place: nothing to join
                continue
            if not host:
                joined.append(None)
                continue
            arr = pad_and_concatenate(host, padding_index=self.padding_index)
            host[:] = [arr]
            joined.append(arr)
        return _unflatten(self.spec, iter(joined))


def denumpify_detensorize(metrics: Any) -> Any:
    """Turn numpy scalars and one-element tensors/arrays into Python numbers, recursively.

    Args:
        metrics: a metric value, or a dict / list / tuple of them.

    Returns:
        The same structure with plain Python numbers where numpy or torch scalars were.

    Example:
        >>> denumpify_detensorize({"acc": np.float32(0.5), "n": [np.int64(3)]})
        {'acc': 0.5, 'n': [3]}
    """
    if isinstance(metrics, Mapping):
        return {k: denumpify_detensorize(v) for k, v in metrics.items()}
    if isinstance(metrics, (list, tuple)) and not hasattr(metrics, "_fields"):
        return type(metrics)(denumpify_detensorize(v) for v in metrics)
    if isinstance(metrics, np.generic):
        return metrics.item()
    if isinstance(metrics, np.ndarray) and metrics.size == 1:
        return metrics.item()
    if isinstance(metrics, torch.Tensor) and metrics.numel() == 1:
        return metrics.item()
    return metrics


class EvaluationLoop:
    """Runs a prediction step over a dataloader and returns predictions and metrics.

    Owns the evaluation-time bookkeeping: the weighted loss sum, the accumulators, the
    offload schedule, truncation to the dataset size, metric computation and prefixing.
    The model math lives in ``prediction_step``; where tensors live is up to the model
    and the dataloader (the loop never moves them, except to CPU on offload).

    Args:
        prediction_step: ``(model, inputs, prediction_loss_only, ignore_keys) ->
            (loss, logits, labels)``; each may be ``None``, logits and labels may be
            trees. The loop calls it under `torch.no_grad`.
        compute_metrics: called with an `EvalPrediction` (numpy trees) and returning a
            dict of metrics; only when both predictions and labels exist.
        preprocess_logits_for_metrics: ``(logits, labels) -> logits``, applied to every
            batch before it is kept (e.g. an argmax, to keep less).
        prediction_loss_only: default for `run`: compute only the loss.
        include_inputs_for_metrics: also keep ``inputs[main_input_name]`` and pass it to
            ``compute_metrics`` as ``EvalPrediction.inputs``.
        eval_accumulation_steps: move what is kept to CPU every that many batches
            (``None``: keep it on its device until the end).
        padding_index: fill value when batches differ in trailing dimensions.
        main_input_name: the key of the model input kept by ``include_inputs_for_metrics``.
        callbacks: a handler whose ``on_prediction_step`` fires after every batch (only
            when some callback listens).
        args: passed to callbacks as ``args``.
        state: passed to callbacks (a fresh `TrainerState` when omitted).
        control: passed to callbacks and replaced by what they return.
        gather: a hook applied to each batch's ``(logits, labels, inputs)`` before they are
            kept (e.g. `toolkit.strategies.eval_gather.OrderedGather`, which gathers them from
            every process in dataset order); padding rows it adds past the end are dropped
            by truncating to ``len(dataset)``. The loss is never gathered (see ``strategy``).
        strategy: the processes sharing the evaluation. With more than one, the loss sums,
            item and sample counts are summed across processes once at the end (so the
            loss is averaged over every sample exactly), and the loop runs until every
            process is out of batches: one that runs out first calls ``gather(None)`` for
            the remaining steps, so the collective calls line up.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> def step(model, batch, loss_only, ignore_keys):
        ...     logits = model(batch["x"])
        ...     return nn.functional.mse_loss(logits, batch["y"]), logits, batch["y"]
        >>> data = [{"x": torch.ones(2, 1), "y": torch.ones(2, 1)}]
        >>> out = EvaluationLoop(prediction_step=step).run(nn.Identity(), data)
        >>> out.metrics, out.predictions.shape, out.num_samples
        ({'eval_loss': 0.0}, (2, 1), 2)
    """

    def __init__(
        self,
        *,
        prediction_step: PredictionStep,
        compute_metrics: Callable[[EvalPrediction], dict[str, Any]] | None = None,
        preprocess_logits_for_metrics: Callable[[Tree, Tree], Tree] | None = None,
        prediction_loss_only: bool = False,
        include_inputs_for_metrics: bool = False,
        eval_accumulation_steps: int | None = None,
        padding_index: int = -100,
        main_input_name: str = "input_ids",
        callbacks: CallbackHandler | None = None,
        args: Any = None,
        state: TrainerState | None = None,
        control: TrainerControl | None = None,
        gather: Callable[[Tree], Tree] | None = None,
        strategy: Strategy | None = None,
    ) -> None:
        if eval_accumulation_steps is not None and (
            not isinstance(eval_accumulation_steps, int) or eval_accumulation_steps < 1
        ):
            raise ValueError(
                f"eval_accumulation_steps must be None or a positive int, got {eval_accumulation_steps!r}"
            )
        if not callable(prediction_step):
            raise TypeError(f"prediction_step must be callable, got {type(prediction_step).__name__}")
        self.prediction_step = prediction_step
        self.compute_metrics = compute_metrics
        self.preprocess_logits_for_metrics = preprocess_logits_for_metrics
        self.prediction_loss_only = prediction_loss_only
        self.include_inputs_for_metrics = include_inputs_for_metrics
        self.eval_accumulation_steps = eval_accumulation_steps
        self.padding_index = padding_index
        self.main_input_name = main_input_name
        self.callbacks = callbacks
        self.args = args
        self.state = state if state is not None else TrainerState()
        self.control = control if control is not None else TrainerControl()
        self.gather = gather
        self.strategy = strategy

    def _main_input(self, inputs: Any) -> Any:
        if not isinstance(inputs, Mapping) or self.main_input_name not in inputs:
            keys = list(inputs.keys()) if isinstance(inputs, Mapping) else type(inputs).__name__
            raise KeyError(
                f"include_inputs_for_metrics=True needs batches that are mappings with the key "
                f"main_input_name={self.main_input_name!r}; got {keys}"
            )
        return inputs[self.main_input_name]

    @staticmethod
    def _keep(kept: Tree, preds: PredictionAccumulator, labels: PredictionAccumulator,
              inputs: PredictionAccumulator) -> None:
        logits, label_ids, main_inputs = kept
        preds.add(logits)
        labels.add(label_ids)
        inputs.add(main_inputs)

    def _agreed_steps(self, dataloader: Iterable) -> int | None:
        """The most batches any process has (one collective), or None when a dataloader has no length."""
        try:
            n = len(dataloader)  # type: ignore[arg-type]
        except TypeError:
            n = -1
        counts = self.strategy.all_gather(torch.tensor(n))
        return None if int(counts.min()) < 0 else int(counts.max())

    def _anyone_has(self, has_batch: bool) -> bool:
        """Whether any process still has a batch (one collective per step)."""
        return bool(self.strategy.reduce(torch.tensor(float(has_batch)), "sum").item() > 0)

    def run(
        self,
        model: nn.Module,
        dataloader: Iterable,
        description: str = "Evaluation",
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> EvalLoopOutput:
        """Evaluate ``model`` on every batch of ``dataloader``.

        Args:
            model: the model, put in eval mode for the run (its previous mode is restored).
            dataloader: any iterable of batches; ``len(dataloader.dataset)``, when it
                exists, is the number of samples (longer outputs are truncated to it).
            description: a name for the log line ("Evaluation", "Prediction").
            prediction_loss_only: overrides the constructor's value when not ``None``.
            ignore_keys: passed to ``prediction_step``.
            metric_key_prefix: prefix of every metric key (``"eval"`` -> ``"eval_loss"``).

        Returns:
            `EvalLoopOutput` with numpy predictions and label ids (``None`` when not kept),
            the metrics (without runtime figures) and the number of samples.
        """
        loss_only = self.prediction_loss_only if prediction_loss_only is None else prediction_loss_only
        rows = _dataset_length(dataloader)  # outputs are cut to it at the end: pre-size to it
        preds_acc = PredictionAccumulator(self.padding_index, capacity=rows)
        labels_acc = PredictionAccumulator(self.padding_index, capacity=rows)
        inputs_acc = PredictionAccumulator(self.padding_index, capacity=rows)
        fire_step = self.callbacks is not None and self.callbacks.has_listeners("on_prediction_step")
        k = self.eval_accumulation_steps

        loss_sum: torch.Tensor | None = None
        loss_count = 0
        observed = 0
        logger.info("***** Running %s *****", description)
        start = time.perf_counter()
        was_training = model.training
        model.eval()
        collective = self.strategy is not None and self.strategy.world_size > 1
        steps = self._agreed_steps(dataloader) if collective else None
        iterator = iter(dataloader)
        step = 0
        try:
            while True:
                inputs = next(iterator, _END)
                if not collective:
                    more = inputs is not _END
                else:
                    more = step < steps if steps is not None else self._anyone_has(inputs is not _END)
                if not more:
                    break
                if inputs is _END:  # out of batches while other processes still gather
                    if self.gather is not None and not loss_only:
                        self._keep(self.gather(None), preds_acc, labels_acc, inputs_acc)
                    step += 1
                    continue
                batch_size = find_batch_size(inputs)
                with torch.no_grad():
                    loss, logits, labels = self.prediction_step(model, inputs, loss_only, ignore_keys)
                kept_inputs = None
                if self.include_inputs_for_metrics and not loss_only:
                    kept_inputs = self._main_input(inputs)
                if logits is not None and not loss_only and self.preprocess_logits_for_metrics is not None:
                    logits = self.preprocess_logits_for_metrics(logits, labels)
                observed += batch_size or 0
                weight = 1 if batch_size is None else batch_size

                if loss is not None:
                    flat = torch.as_tensor(loss).detach().reshape(-1)
                    flat = flat.to(torch.float32 if flat.device.type in ("mps", "xla") else torch.float64)
                    part = flat.sum() * weight
                    loss_sum = part if loss_sum is None else loss_sum + part
                    loss_count += flat.numel() * weight
                if not loss_only:
                    kept = (logits, labels, kept_inputs)
                    self._keep(self.gather(kept) if self.gather is not None else kept, preds_acc, labels_acc, inputs_acc)

                if fire_step:
                    self.control = self.callbacks.on_prediction_step(self.args, self.state, self.control)
                if k is not None and (step + 1) % k == 0:
                    preds_acc.offload()
                    labels_acc.offload()
                    inputs_acc.offload()
                step += 1
        finally:
            model.train(was_training)
        if collective:  # one collective: loss sum, loss items and samples of every process
            local = [0.0 if loss_sum is None else float(loss_sum), float(loss_count), float(observed)]
            total_loss, total_count, total_observed = self.strategy.reduce(
                torch.tensor(local, dtype=torch.float64), "sum"
            ).tolist()
            loss_sum = torch.tensor(total_loss, dtype=torch.float64) if total_count > 0 else None
            loss_count, observed = round(total_count), round(total_observed)

        predictions = preds_acc.result()
        label_ids = labels_acc.result()
        all_inputs = inputs_acc.result()

        num_samples = _dataset_length(dataloader)
        if num_samples is None:
            num_samples = observed
        predictions = nested_truncate(predictions, num_samples)
        label_ids = nested_truncate(label_ids, num_samples)
        all_inputs = nested_truncate(all_inputs, num_samples)

        metrics: dict[str, Any] = {}
        if self.compute_metrics is not None and predictions is not None and label_ids is not None:
            if self.include_inputs_for_metrics:
                eval_pred = EvalPrediction(predictions=predictions, label_ids=label_ids, inputs=all_inputs)
            else:
                eval_pred = EvalPrediction(predictions=predictions, label_ids=label_ids)
            metrics = dict(self.compute_metrics(eval_pred) or {})
        metrics = denumpify_detensorize(metrics)
        if loss_sum is not None and loss_count > 0:
            metrics[f"{metric_key_prefix}_loss"] = float((loss_sum / loss_count).item())
        prefix = f"{metric_key_prefix}_"
        metrics = {(key if key.startswith(prefix) else prefix + key): v for key, v in metrics.items()}
        logger.info("%s done: %d samples in %.2fs", description, num_samples, time.perf_counter() - start)
        return EvalLoopOutput(
            predictions=predictions, label_ids=label_ids, metrics=metrics, num_samples=num_samples
        )


def _dataset_length(dataloader: Any) -> int | None:
    """``len(dataloader.dataset)`` when the dataset has a length, else ``None``."""
    dataset = getattr(dataloader, "dataset", None)
    if dataset is None or not hasattr(dataset, "__len__"):
        return None
    try:
        n = len(dataset)
    except (TypeError, NotImplementedError):
        return None
    return n if isinstance(n, int) and not math.isinf(n) else None
