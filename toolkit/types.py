"""Small value types shared across the package: result tuples and string enums.

Every enum here is a ``str`` subclass, so ``IntervalStrategy.STEPS == "steps"`` and
either form is accepted wherever one is expected.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, NamedTuple

__all__ = [
    "EvalPrediction",
    "TrainOutput",
    "PredictionOutput",
    "EvalLoopOutput",
    "BestRun",
    "ExplicitEnum",
    "IntervalStrategy",
    "EvaluationStrategy",
    "SchedulerType",
    "OptimizerNames",
    "HubStrategy",
    "ShardedDDPOption",
    "FSDPOption",
    "DebugOption",
    "PaddingStrategy",
    "LossNormalization",
    "PREFIX_CHECKPOINT_DIR",
]

PREFIX_CHECKPOINT_DIR = "checkpoint"

ArrayTree = Any  # np.ndarray, or nested tuples/lists/dicts of them


class EvalPrediction:
    """What `compute_metrics` receives: predictions, label ids and (optionally) inputs.

    It unpacks like a tuple: ``preds, labels = eval_pred`` (or three items when
    ``include_inputs_for_metrics`` is set).

    Example:
        >>> p = EvalPrediction([1, 0], [1, 1])
        >>> preds, labels = p
        >>> preds
        [1, 0]
    """

    def __init__(
        self,
        predictions: ArrayTree,
        label_ids: ArrayTree,
        inputs: ArrayTree | None = None,
    ) -> None:
        self.predictions = predictions
        self.label_ids = label_ids
        self.inputs = inputs

    def _items(self) -> tuple:
        if self.inputs is not None:
            return (self.predictions, self.label_ids, self.inputs)
        return (self.predictions, self.label_ids)

    def __iter__(self):
        return iter(self._items())

    def __getitem__(self, idx: int) -> ArrayTree:
        return self._items()[idx]

    def __len__(self) -> int:
        return len(self._items())


class TrainOutput(NamedTuple):
    """Returned by `Trainer.train`."""

    global_step: int
    training_loss: float
    metrics: dict[str, float]


class PredictionOutput(NamedTuple):
    """Returned by `Trainer.predict`: numpy predictions, label ids and metrics."""

    predictions: ArrayTree
    label_ids: ArrayTree | None
    metrics: dict[str, float] | None


class EvalLoopOutput(NamedTuple):
    """Returned by the evaluation loop (shared by evaluate and predict)."""

    predictions: ArrayTree | None
    label_ids: ArrayTree | None
    metrics: dict[str, float] | None
    num_samples: int | None


class BestRun(NamedTuple):
    """The best trial of a hyperparameter search."""

    run_id: str
    objective: float | list[float]
    hyperparameters: dict[str, Any]
    run_summary: Any | None = None


class ExplicitEnum(str, Enum):
    """A string enum whose unknown values raise a `ValueError` listing the accepted ones."""

    @classmethod
    def _missing_(cls, value: object):
        accepted = ", ".join(repr(m.value) for m in cls)
        raise ValueError(f"{value!r} is not a valid {cls.__name__}; accepted values: {accepted}")

    def __str__(self) -> str:
        return str(self.value)


class IntervalStrategy(ExplicitEnum):
    """When an action (log, evaluate, save) happens during training."""

    NO = "no"
    STEPS = "steps"
    EPOCH = "epoch"


EvaluationStrategy = IntervalStrategy


class SchedulerType(ExplicitEnum):
    """Learning-rate schedule names."""

    LINEAR = "linear"
    COSINE = "cosine"
    COSINE_WITH_RESTARTS = "cosine_with_restarts"
    POLYNOMIAL = "polynomial"
    CONSTANT = "constant"
    CONSTANT_WITH_WARMUP = "constant_with_warmup"
    INVERSE_SQRT = "inverse_sqrt"
    REDUCE_ON_PLATEAU = "reduce_lr_on_plateau"


class OptimizerNames(ExplicitEnum):
    """Optimizer names accepted by ``TrainingArguments.optim``."""

    ADAMW_HF = "adamw_hf"
    ADAMW_TORCH = "adamw_torch"
    ADAMW_TORCH_FUSED = "adamw_torch_fused"
    ADAMW_TORCH_XLA = "adamw_torch_xla"
    ADAMW_TORCH_NPU_FUSED = "adamw_torch_npu_fused"
    ADAMW_APEX_FUSED = "adamw_apex_fused"
    ADAFACTOR = "adafactor"
    ADAMW_ANYPRECISION = "adamw_anyprecision"
    SGD = "sgd"
    ADAGRAD = "adagrad"
    ADAMW_BNB = "adamw_bnb_8bit"
    ADAMW_8BIT = "adamw_8bit"
    LION_8BIT = "lion_8bit"
    LION = "lion_32bit"
    PAGED_ADAMW = "paged_adamw_32bit"
    PAGED_ADAMW_8BIT = "paged_adamw_8bit"
    PAGED_LION = "paged_lion_32bit"
    PAGED_LION_8BIT = "paged_lion_8bit"
    RMSPROP = "rmsprop"


class HubStrategy(ExplicitEnum):
    """What is pushed to a model store, and when."""

    END = "end"
    EVERY_SAVE = "every_save"
    CHECKPOINT = "checkpoint"
    ALL_CHECKPOINTS = "all_checkpoints"


class ShardedDDPOption(ExplicitEnum):
    """Legacy fairscale sharding options (accepted for compatibility only)."""

    SIMPLE = "simple"
    ZERO_DP_2 = "zero_dp_2"
    ZERO_DP_3 = "zero_dp_3"
    OFFLOAD = "offload"
    AUTO_WRAP = "auto_wrap"


class FSDPOption(ExplicitEnum):
    """Options of the ``fsdp`` argument."""

    FULL_SHARD = "full_shard"
    SHARD_GRAD_OP = "shard_grad_op"
    NO_SHARD = "no_shard"
    HYBRID_SHARD = "hybrid_shard"
    HYBRID_SHARD_ZERO2 = "hybrid_shard_zero2"
    OFFLOAD = "offload"
    AUTO_WRAP = "auto_wrap"


class DebugOption(ExplicitEnum):
    """Options of the ``debug`` argument."""

    UNDERFLOW_OVERFLOW = "underflow_overflow"
    TPU_METRICS_DEBUG = "tpu_metrics_debug"


class PaddingStrategy(ExplicitEnum):
    """Padding modes of the collators."""

    LONGEST = "longest"
    MAX_LENGTH = "max_length"
    DO_NOT_PAD = "do_not_pad"


class LossNormalization(ExplicitEnum):
    """How the loop turns per-micro-batch losses into one update.

    ``ITEMS`` (default): each micro-batch's mean loss is weighted by its number of items
    (examples, or label tokens not equal to -100) over the whole accumulation window, so
    accumulation equals one large batch even with padding. ``MICRO_BATCH``: each
    micro-batch's mean is divided by ``gradient_accumulation_steps`` (HF 4.34 behaviour).
    """

    ITEMS = "items"
    MICRO_BATCH = "micro_batch"
