"""`TrainingArguments`: every knob of a training run, as plain, validated data.

The fields, their order and their defaults follow the Hugging Face Trainer v4.34.0, so a
script written for it runs unchanged; the differences are listed in ``docs/arguments.md``.
Creating an instance has no side effects: no environment variable is set, no process
group is started, CUDA is not touched and no directory is created. Properties such as
`TrainingArguments.device` or `TrainingArguments.world_size` read the launcher's
environment each time they are asked.
"""

import contextlib
import dataclasses
import difflib
import inspect
import json
import logging
import math
import os
import socket
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any, Optional, Union

import torch

from toolkit.types import (
    DebugOption,
    FSDPOption,
    HubStrategy,
    IntervalStrategy,
    LossNormalization,
    OptimizerNames,
    SchedulerType,
    ShardedDDPOption,
)
from toolkit.utils.env import DistributedEnv, destroy_process_group_at_exit, detect_distributed_env

__all__ = [
    "TrainingArguments",
    "Seq2SeqTrainingArguments",
    "ARGUMENT_ALIASES",
    "PENDING_FEATURES",
    "LOG_LEVELS",
]

logger = logging.getLogger(__name__)

#: Other spellings accepted by the constructor, mapped to the field they set.
ARGUMENT_ALIASES: dict[str, str] = {
    "eval_strategy": "evaluation_strategy",
}

#: Fields whose feature toolkit does not implement yet: field name -> what it is.
#: Setting one of them to a non-default value raises `NotImplementedError`.
PENDING_FEATURES: dict[str, str] = {
    "sharded_ddp": "fairscale sharded DDP",
    "use_ipex": "Intel Extension for PyTorch",
}

# For pending fields where only some non-default values are unsupported.
_PENDING_WHEN: dict[str, Callable[[Any], bool]] = {}

#: Names accepted by ``log_level`` / ``log_level_replica`` and their `logging` levels
#: (``passive`` is -1: keep the level already set).
LOG_LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "passive": -1,
}

_HALF_PRECISION_BACKENDS = ("auto", "cuda_amp", "apex", "cpu_amp")
_DDP_BACKENDS = ("nccl", "gloo", "mpi", "ccl", "hccl")
_NAN_INF_POLICIES = ("warn", "skip", "raise")
_TOOLKIT_LOGGER = "toolkit"


def _arg(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field with a default and a help text (shown by the argument parser)."""
    return field(default=default, metadata={"help": help, **metadata})


class _ArgumentsMeta(type):
    """Metaclass that lets every arguments dataclass (and its subclasses) accept aliases.

    The dataclass-generated ``__init__`` is left alone; the keyword arguments are mapped
    before it runs, and unknown names get a "did you mean" suggestion.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if dataclasses.is_dataclass(cls):
            kwargs = _resolve_keywords(cls, kwargs)
        return super().__call__(*args, **kwargs)

    @property
    def __signature__(cls) -> inspect.Signature:
        """The signature of the generated ``__init__`` without ``self`` (for `inspect`)."""
        sig = inspect.signature(cls.__init__)
        return sig.replace(parameters=list(sig.parameters.values())[1:])


def _resolve_keywords(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Map alias keywords to field names; reject unknown keywords with a suggestion."""
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    known = set(names)
    resolved = dict(kwargs)
    for alias, target in ARGUMENT_ALIASES.items():
        if alias not in resolved or alias in known:
            continue
        value = resolved.pop(alias)
        if target in resolved and resolved[target] != value:
            raise ValueError(
                f"{cls.__name__} got both {alias}={value!r} and {target}={resolved[target]!r}; "
                f"{alias!r} is another name for {target!r}, pass only one of them"
            )
        resolved[target] = value
    for key in resolved:
        if key not in known:
            candidates = names + [a for a in ARGUMENT_ALIASES if a not in known]
            close = difflib.get_close_matches(key, candidates, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"{cls.__name__} got an unexpected argument {key!r}{hint}")
    return resolved


def _caller_stacklevel() -> int:
    """Stack level of the first frame outside this module and generated dataclass code."""
    frame = inspect.currentframe()
    level = 1
    while frame is not None:
        name = frame.f_code.co_filename
        if name not in (__file__, "<string>"):
            return max(level - 1, 1)
        frame = frame.f_back
        level += 1
    return 1


def _coerce_enum(name: str, value: Any, enum_cls: type[Enum]) -> Enum:
    """Turn a str (or enum) into ``enum_cls``, with an error naming the field."""
    if isinstance(value, enum_cls):
        return value
    try:
        return enum_cls(value)
    except ValueError:
        accepted = ", ".join(repr(m.value) for m in enum_cls)
        raise ValueError(f"{name}={value!r} is not valid; accepted: {accepted}") from None


def _coerce_option_list(name: str, value: Any, enum_cls: type[Enum]) -> list:
    """Parse a space-separated str (or list) of options into a list of ``enum_cls``."""
    if value is None or value is False:
        return []
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{name} must be a space-separated str or a list of str, got {value!r}")
    return [_coerce_enum(name, v, enum_cls) for v in value]


def _is_unset(value: Any, default: Any) -> bool:
    """True when ``value`` means "feature off": the default, or an empty value."""
    empty = (None, "", False, 0)
    if isinstance(value, (list, tuple, dict)):
        return len(value) == 0 and (default in empty or default == value)
    return value == default or (value in empty and default in empty)


def _check_steps(name: str, value: Any, required: bool) -> Any:
    """Validate a logging/save/eval interval: > 0 (when required), an integer when > 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if value < 0 or (required and value == 0):
        raise ValueError(f"{name} must be > 0 (a step count, or a ratio of total steps below 1), got {value}")
    if value > 1:
        if value != int(value):
            raise ValueError(f"{name} must be an integer when > 1, got {value}")
        return int(value)
    return value


@dataclass
class TrainingArguments(metaclass=_ArgumentsMeta):
    """Every argument of a training run, with the names and defaults of HF Trainer v4.34.0.

    Values are checked and normalised when the object is created: strategy and scheduler
    names become enums, ``report_to`` becomes a list, and inconsistent combinations raise
    a `ValueError` naming the field. Features toolkit does not implement yet (see
    `PENDING_FEATURES`) raise `NotImplementedError` when turned on. Newer spellings in
    `ARGUMENT_ALIASES` (e.g. ``eval_strategy``) are accepted by the constructor.

    Args:
        output_dir: Where checkpoints and the final model are written (required).
        **kwargs: Any other field; see each field's ``help`` metadata or docs/arguments.md.

    Raises:
        TypeError: For an unknown keyword (the message suggests the nearest name).
        ValueError: For an invalid value or combination (the message names the field).
        NotImplementedError: For a feature listed in `PENDING_FEATURES`.

    Example:
        >>> args = TrainingArguments("out", evaluation_strategy="steps", eval_steps=50)
        >>> args.do_eval, args.evaluation_strategy.value
        (True, 'steps')
    """

    output_dir: str = field(
        metadata={"help": "Directory (or fsspec URI) where checkpoints and the final model are written."}
    )
    overwrite_output_dir: bool = _arg(
        False, "Allow writing into an output_dir that already holds checkpoints (scripts read this flag)."
    )
    do_train: bool = _arg(False, "Whether the script should train (read by scripts, not by the Trainer).")
    do_eval: bool = _arg(
        False, "Whether the script should evaluate; turned on when evaluation_strategy is not 'no'."
    )
    do_predict: bool = _arg(False, "Whether the script should predict on a test set (read by scripts).")
    evaluation_strategy: Union[IntervalStrategy, str] = _arg(
        "no", "When to evaluate during training: 'no', 'steps' (every eval_steps) or 'epoch'."
    )
    prediction_loss_only: bool = _arg(
        False, "During evaluation and prediction, keep only the loss (no logits, no labels)."
    )
    per_device_train_batch_size: int = _arg(8, "Training batch size on each device (each process).")
    per_device_eval_batch_size: int = _arg(8, "Evaluation batch size on each device (each process).")
    per_gpu_train_batch_size: Optional[int] = _arg(
        None, "Deprecated spelling of per_device_train_batch_size; when set, it takes precedence."
    )
    per_gpu_eval_batch_size: Optional[int] = _arg(
        None, "Deprecated spelling of per_device_eval_batch_size; when set, it takes precedence."
    )
    gradient_accumulation_steps: int = _arg(
        1, "Number of micro-batches whose gradients are summed before each optimizer step."
    )
    eval_accumulation_steps: Optional[int] = _arg(
        None, "Move accumulated predictions to the CPU every this many evaluation steps (None: at the end)."
    )
    eval_delay: Optional[float] = _arg(
        0, "Epochs or steps (following evaluation_strategy) to wait before the first evaluation."
    )
    learning_rate: float = _arg(5e-5, "Peak learning rate of the optimizer.")
    weight_decay: float = _arg(0.0, "Decoupled weight decay, applied to all weights except biases and norms.")
    adam_beta1: float = _arg(0.9, "First-moment coefficient (beta1) of Adam-style optimizers.")
    adam_beta2: float = _arg(0.999, "Second-moment coefficient (beta2) of Adam-style optimizers.")
    adam_epsilon: float = _arg(1e-8, "Term added to the denominator of Adam-style optimizers.")
    max_grad_norm: float = _arg(1.0, "Clip the global gradient norm to this value (0 or None: no clipping).")
    num_train_epochs: float = _arg(
        3.0, "Number of passes over the training data; a fraction trains part of the last epoch."
    )
    max_steps: int = _arg(-1, "Total optimizer steps; a positive value overrides num_train_epochs.")
    lr_scheduler_type: Union[SchedulerType, str] = _arg("linear", "Learning-rate schedule name.")
    warmup_ratio: float = _arg(0.0, "Fraction of the total steps used to warm the learning rate up from 0.")
    warmup_steps: int = _arg(0, "Number of warmup steps; when > 0 it overrides warmup_ratio.")
    log_level: Optional[str] = _arg(
        "passive",
        "Log level of the main process: debug, info, warning, error, critical, or passive (leave as is).",
        choices=tuple(LOG_LEVELS),
    )
    log_level_replica: Optional[str] = _arg(
        "warning", "Log level of the other processes (same names as log_level).", choices=tuple(LOG_LEVELS)
    )
    log_on_each_node: bool = _arg(
        True, "In multi-node runs, log from the first process of every node rather than only the first node."
    )
    logging_dir: Optional[str] = _arg(
        None, "Directory for logger output; defaults to output_dir/runs/<date>_<host>."
    )
    logging_strategy: Union[IntervalStrategy, str] = _arg(
        "steps", "When to log metrics: 'no', 'steps' (every logging_steps) or 'epoch'."
    )
    logging_first_step: bool = _arg(False, "Also log after the very first optimizer step.")
    logging_steps: float = _arg(500, "Log every this many steps; a value below 1 is a ratio of total steps.")
    logging_nan_inf_filter: bool = _arg(
        True, "Leave NaN/inf losses out of the logged running loss (training itself is unaffected)."
    )
    save_strategy: Union[IntervalStrategy, str] = _arg(
        "steps", "When to save checkpoints: 'no', 'steps' (every save_steps) or 'epoch'."
    )
    save_steps: float = _arg(500, "Save every this many steps; a value below 1 is a ratio of total steps.")
    save_total_limit: Optional[int] = _arg(
        None, "Keep at most this many checkpoints (the best and the newest are never deleted)."
    )
    save_safetensors: Optional[bool] = _arg(
        True, "Write model weights as safetensors instead of torch pickles (toolkit default: True)."
    )
    save_on_each_node: bool = _arg(
        False, "In multi-node runs, save on every node (only for nodes that do not share storage)."
    )
    no_cuda: bool = _arg(False, "Deprecated: same as use_cpu=True.")
    use_cpu: bool = _arg(False, "Run on the CPU even when an accelerator is available.")
    use_mps_device: bool = _arg(
        False, "Deprecated: Apple MPS is used automatically when available and CUDA is not."
    )
    seed: int = _arg(42, "Random seed set at the start of training (before the model is built, if possible).")
    data_seed: Optional[int] = _arg(None, "Separate seed for data sampling; defaults to seed.")
    jit_mode_eval: bool = _arg(False, "Trace the model with TorchScript for inference.")
    use_ipex: bool = _arg(False, "Use Intel Extension for PyTorch.")
    bf16: bool = _arg(False, "Train with bfloat16 mixed precision.")
    fp16: bool = _arg(False, "Train with float16 mixed precision (with a gradient scaler).")
    fp16_opt_level: str = _arg("O1", "Apex AMP optimisation level (O0 to O3), used only with apex.")
    half_precision_backend: str = _arg(
        "auto", "Mixed-precision implementation.", choices=_HALF_PRECISION_BACKENDS
    )
    bf16_full_eval: bool = _arg(False, "Evaluate with the whole model cast to bfloat16.")
    fp16_full_eval: bool = _arg(False, "Evaluate with the whole model cast to float16.")
    tf32: Optional[bool] = _arg(
        None, "Enable (True) or disable (False) TF32 matmuls on Ampere+ GPUs; None leaves PyTorch's setting."
    )
    local_rank: int = _arg(-1, "Local rank of this process; -1 reads it from the launcher's environment.")
    ddp_backend: Optional[str] = _arg(
        None, "Process-group backend; None picks nccl on CUDA and gloo otherwise.", choices=_DDP_BACKENDS
    )
    tpu_num_cores: Optional[int] = _arg(None, "Number of TPU cores (set by the TPU launcher).")
    tpu_metrics_debug: bool = _arg(False, "Deprecated: use debug='tpu_metrics_debug'.")
    debug: Union[str, list[DebugOption]] = _arg(
        "", "Space-separated debug options: underflow_overflow, tpu_metrics_debug."
    )
    dataloader_drop_last: bool = _arg(False, "Drop the last incomplete batch of each data loader.")
    eval_steps: Optional[float] = _arg(
        None, "Evaluate every this many steps (below 1: a ratio of total steps); defaults to logging_steps."
    )
    dataloader_num_workers: int = _arg(0, "Worker processes for data loading (0: load in the main process).")
    past_index: int = _arg(-1, "Index of the model output that holds past memory states (-1: none).")
    run_name: Optional[str] = _arg(None, "Name of the run for loggers; defaults to output_dir.")
    disable_tqdm: Optional[bool] = _arg(
        None, "Hide progress bars; defaults to True when the toolkit logger is quieter than WARNING."
    )
    remove_unused_columns: Optional[bool] = _arg(
        True, "Drop dataset columns the model's forward does not accept (logged once)."
    )
    label_names: Optional[list[str]] = _arg(
        None, "Keys of the input dict that hold labels; defaults to the model's label keys."
    )
    load_best_model_at_end: Optional[bool] = _arg(
        False, "Reload the best checkpoint at the end (needs matching save and evaluation strategies)."
    )
    metric_for_best_model: Optional[str] = _arg(
        None, "Metric that ranks checkpoints; defaults to 'loss' when load_best_model_at_end is set."
    )
    greater_is_better: Optional[bool] = _arg(
        None, "Whether a larger metric_for_best_model is better; defaults by whether its name ends in 'loss'."
    )
    ignore_data_skip: bool = _arg(
        False, "On resume, do not fast-forward the data to where the checkpoint stopped."
    )
    sharded_ddp: Union[list[ShardedDDPOption], str, None] = _arg(
        "", "Legacy fairscale sharding options (space-separated)."
    )
    fsdp: Union[list[FSDPOption], str, None] = _arg(
        "", "Fully sharded data parallel options (space-separated), e.g. 'full_shard auto_wrap'."
    )
    fsdp_min_num_params: int = _arg(
        0, "Deprecated FSDP option: auto-wrap modules with at least this many parameters."
    )
    fsdp_config: Optional[str] = _arg(None, "FSDP configuration: a path to a JSON file or a dict.")
    fsdp_transformer_layer_cls_to_wrap: Optional[str] = _arg(
        None, "Deprecated FSDP option: class name of the layers to wrap."
    )
    deepspeed: Optional[str] = _arg(None, "DeepSpeed configuration: a path to a JSON file or a dict.")
    label_smoothing_factor: float = _arg(0.0, "Label smoothing epsilon (0: none).")
    optim: Union[OptimizerNames, str] = _arg("adamw_torch", "Optimizer name.")
    optim_args: Optional[str] = _arg(None, "Extra optimizer arguments as 'key=value,key=value'.")
    adafactor: bool = _arg(False, "Deprecated: same as optim='adafactor'.")
    group_by_length: bool = _arg(False, "Batch training samples of similar length together.")
    length_column_name: Optional[str] = _arg(
        "length", "Dataset column holding precomputed lengths (for group_by_length)."
    )
    report_to: Optional[list[str]] = _arg(
        None, "Logger integrations to report to: a list of names, 'all' or 'none' (default: 'all')."
    )
    ddp_find_unused_parameters: Optional[bool] = _arg(
        None, "DDP find_unused_parameters; None lets the strategy decide."
    )
    ddp_bucket_cap_mb: Optional[int] = _arg(None, "DDP gradient bucket size in MiB; None keeps PyTorch's.")
    ddp_broadcast_buffers: Optional[bool] = _arg(None, "DDP broadcast_buffers; None keeps PyTorch's.")
    dataloader_pin_memory: bool = _arg(True, "Pin host memory in data loaders.")
    skip_memory_metrics: bool = _arg(True, "Do not collect the *_mem_* memory metrics (cheaper).")
    use_legacy_prediction_loop: bool = _arg(False, "Use the older prediction loop (kept for compatibility).")
    push_to_hub: bool = _arg(False, "Push the model to a model hub after saving.")
    resume_from_checkpoint: Optional[str] = _arg(
        None, "Checkpoint folder to resume from (read by scripts; pass it to train())."
    )
    hub_model_id: Optional[str] = _arg(
        None, "Where to push: a store URL (file://, s3://, memory://, absolute path) or a Hub repository id."
    )
    hub_strategy: Union[HubStrategy, str] = _arg("every_save", "What is pushed to the hub, and when.")
    hub_token: Optional[str] = _arg(None, "Access token for the model hub (masked in to_dict).")
    hub_private_repo: bool = _arg(False, "Create the hub repository as private.")
    hub_always_push: bool = _arg(False, "Push even when the previous push has not finished.")
    gradient_checkpointing: bool = _arg(False, "Recompute activations in backward to save memory.")
    include_inputs_for_metrics: bool = _arg(False, "Also pass the inputs to compute_metrics.")
    fp16_backend: str = _arg(
        "auto", "Deprecated: use half_precision_backend.", choices=_HALF_PRECISION_BACKENDS
    )
    push_to_hub_model_id: Optional[str] = _arg(None, "Deprecated: use hub_model_id.")
    push_to_hub_organization: Optional[str] = _arg(None, "Deprecated: put the organisation in hub_model_id.")
    push_to_hub_token: Optional[str] = _arg(None, "Deprecated: use hub_token.")
    mp_parameters: str = _arg("", "Model-parallel parameters of SageMaker launchers (ignored by toolkit).")
    auto_find_batch_size: bool = _arg(False, "Halve the batch size and retry after out-of-memory errors.")
    full_determinism: bool = _arg(False, "Make training reproducible (deterministic algorithms; slower).")
    torchdynamo: Optional[str] = _arg(None, "Deprecated: use torch_compile_backend.")
    ray_scope: Optional[str] = _arg("last", "Which trial results Ray Tune compares ('last', 'all', ...).")
    ddp_timeout: Optional[int] = _arg(1800, "Timeout in seconds for process-group operations.")
    torch_compile: bool = _arg(False, "Compile the model with torch.compile.")
    torch_compile_backend: Optional[str] = _arg(
        None, "torch.compile backend; setting it turns torch_compile on."
    )
    torch_compile_mode: Optional[str] = _arg(None, "torch.compile mode; setting it turns torch_compile on.")
    dispatch_batches: Optional[bool] = _arg(
        None, "With iterable datasets, let the main process load batches and send them to the others."
    )
    include_tokens_per_second: Optional[bool] = _arg(
        False, "Report train_tokens_per_second (counts tokens before training; slower start)."
    )
    # --- toolkit additions ---
    loss_normalization: Union[LossNormalization, str] = _arg(
        "items",
        "How accumulated losses are normalised: 'items' (weight each micro-batch by its item count over "
        "the accumulation window) or 'micro_batch' (divide each by gradient_accumulation_steps, as HF 4.34).",
    )
    save_only_model: bool = _arg(
        False, "Save only the model weights in checkpoints (no optimizer, scheduler or RNG state; no resume)."
    )
    nan_inf_policy: str = _arg(
        "warn",
        "What to do with a NaN/inf training loss: 'warn' (log and continue), 'skip' (drop the update), "
        "'raise' (stop with an error).",
        choices=_NAN_INF_POLICIES,
    )
    preemption_checkpoint: bool = _arg(
        True, "On SIGTERM, save a checkpoint at the next step boundary and stop."
    )
    save_async: bool = _arg(
        False,
        "Write checkpoints in a background thread from a snapshot taken at the save step, so training "
        "continues while bytes are written; write errors surface at the next save and at the end.",
    )

    # ------------------------------------------------------------------ validation

    def __post_init__(self) -> None:
        """Normalise and validate every field (idempotent; the ``set_*`` helpers re-run it)."""
        self._apply_deprecations()
        self.debug = _coerce_option_list("debug", self.debug, DebugOption)
        if isinstance(self.fsdp, bool):
            self.fsdp = "full_shard" if self.fsdp else ""
        self.fsdp = _coerce_option_list("fsdp", self.fsdp, FSDPOption)
        if isinstance(self.sharded_ddp, bool):
            self.sharded_ddp = "simple" if self.sharded_ddp else ""
        self.sharded_ddp = _coerce_option_list("sharded_ddp", self.sharded_ddp, ShardedDDPOption)
        self._check_pending_features()
        self._normalise_enums()
        self._validate_numbers()
        self._validate_combinations()
        self._fill_defaults()

    def _warn(self, message: str) -> None:
        """Emit a deprecation warning, except while a ``set_*`` helper re-validates."""
        if not self.__dict__.get("_revalidating", False):
            warnings.warn(message, FutureWarning, stacklevel=_caller_stacklevel())

    def _apply_deprecations(self) -> None:
        if isinstance(self.output_dir, os.PathLike):
            self.output_dir = os.fspath(self.output_dir)
        if not isinstance(self.output_dir, str) or not self.output_dir:
            raise ValueError(f"output_dir must be a non-empty str, got {self.output_dir!r}")
        self.output_dir = os.path.expanduser(self.output_dir)
        if isinstance(self.logging_dir, os.PathLike):
            self.logging_dir = os.fspath(self.logging_dir)
        if self.logging_dir is not None:
            self.logging_dir = os.path.expanduser(self.logging_dir)
        if self.no_cuda:
            self._warn("`no_cuda` is deprecated; use `use_cpu=True` instead")
            self.use_cpu = True
        if self.use_mps_device:
            self._warn("`use_mps_device` is deprecated; MPS is used automatically when available")
        for name in ("per_gpu_train_batch_size", "per_gpu_eval_batch_size"):
            if getattr(self, name) is not None:
                self._warn(f"`{name}` is deprecated; use `{name.replace('per_gpu', 'per_device')}` instead")
        if self.adafactor:
            self._warn("`adafactor` is deprecated; use `optim='adafactor'` instead")
            self.optim = OptimizerNames.ADAFACTOR
        if self.fp16_backend != "auto":
            self._warn("`fp16_backend` is deprecated; use `half_precision_backend` instead")
            self.half_precision_backend = self.fp16_backend
        if self.push_to_hub_token is not None:
            self._warn("`push_to_hub_token` is deprecated; use `hub_token` instead")
            self.hub_token = self.push_to_hub_token
        if self.push_to_hub_model_id is not None:
            self._warn("`push_to_hub_model_id` is deprecated; use `hub_model_id` instead")
            org = self.push_to_hub_organization
            self.hub_model_id = f"{org}/{self.push_to_hub_model_id}" if org else self.push_to_hub_model_id
        if self.tpu_metrics_debug:
            self._warn("`tpu_metrics_debug` is deprecated; use `debug='tpu_metrics_debug'` instead")
            options = _coerce_option_list("debug", self.debug, DebugOption)
            if DebugOption.TPU_METRICS_DEBUG not in options:
                options.append(DebugOption.TPU_METRICS_DEBUG)
            self.debug = options
        if self.torchdynamo is not None:
            self._warn("`torchdynamo` is deprecated; use `torch_compile_backend` instead")
            self.torch_compile_backend = self.torchdynamo
        if self.torch_compile_backend is not None or self.torch_compile_mode is not None:
            self.torch_compile = True

    def _check_pending_features(self) -> None:
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, description in PENDING_FEATURES.items():
            if name not in defaults:
                continue
            value = getattr(self, name)
            when = _PENDING_WHEN.get(name)
            in_use = when(value) if when is not None else not _is_unset(value, defaults[name])
            if in_use:
                raise NotImplementedError(f"`{name}` ({description}) is not supported by toolkit yet")

    def _normalise_enums(self) -> None:
        for name in ("evaluation_strategy", "logging_strategy", "save_strategy"):
            setattr(self, name, _coerce_enum(name, getattr(self, name), IntervalStrategy))
        self.lr_scheduler_type = _coerce_enum("lr_scheduler_type", self.lr_scheduler_type, SchedulerType)
        self.optim = _coerce_enum("optim", self.optim, OptimizerNames)
        self.hub_strategy = _coerce_enum("hub_strategy", self.hub_strategy, HubStrategy)
        self.loss_normalization = _coerce_enum(
            "loss_normalization", self.loss_normalization, LossNormalization
        )
        by_number = {v: k for k, v in LOG_LEVELS.items()}
        for name in ("log_level", "log_level_replica"):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool) and value in by_number:
                value = by_number[value]
            if value not in LOG_LEVELS:
                raise ValueError(
                    f"{name}={value!r} is not valid; accepted: {', '.join(map(repr, LOG_LEVELS))}"
                )
            setattr(self, name, value)
        for name, choices in (
            ("half_precision_backend", _HALF_PRECISION_BACKENDS),
            ("nan_inf_policy", _NAN_INF_POLICIES),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"{name}={getattr(self, name)!r} is not valid; accepted: {', '.join(map(repr, choices))}"
                )
        if self.ddp_backend is not None and self.ddp_backend not in _DDP_BACKENDS:
            raise ValueError(
                f"ddp_backend={self.ddp_backend!r} is not valid; accepted: None, "
                + ", ".join(map(repr, _DDP_BACKENDS))
            )

    def _validate_numbers(self) -> None:
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"{name} {rule}, got {getattr(self, name)!r}")

        def is_int(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        def is_number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        for name in (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
        ):
            need(is_int(getattr(self, name)) and getattr(self, name) >= 1, name, "must be an integer >= 1")
        for name in ("per_gpu_train_batch_size", "per_gpu_eval_batch_size", "eval_accumulation_steps"):
            value = getattr(self, name)
            need(value is None or (is_int(value) and value >= 1), name, "must be None or an integer >= 1")
        need(is_number(self.learning_rate) and self.learning_rate >= 0, "learning_rate", "must be >= 0")
        need(is_int(self.max_steps) and self.max_steps >= -1, "max_steps", "must be an integer >= -1")
        need(is_int(self.local_rank) and self.local_rank >= -1, "local_rank", "must be an integer >= -1")
        need(
            is_number(self.num_train_epochs) and self.num_train_epochs >= 0,
            "num_train_epochs",
            "must be >= 0",
        )
        need(
            is_number(self.warmup_ratio) and 0 <= self.warmup_ratio <= 1, "warmup_ratio", "must be in [0, 1]"
        )
        need(is_int(self.warmup_steps) and self.warmup_steps >= 0, "warmup_steps", "must be an integer >= 0")
        need(
            self.eval_delay is None or (is_number(self.eval_delay) and self.eval_delay >= 0),
            "eval_delay",
            "must be None or >= 0",
        )
        need(
            self.save_total_limit is None or (is_int(self.save_total_limit) and self.save_total_limit >= 0),
            "save_total_limit",
            "must be None or an integer >= 0",
        )
        need(
            is_int(self.dataloader_num_workers) and self.dataloader_num_workers >= 0,
            "dataloader_num_workers",
            "must be an integer >= 0",
        )
        need(
            self.ddp_timeout is None or (is_number(self.ddp_timeout) and self.ddp_timeout > 0),
            "ddp_timeout",
            "must be None or > 0 (seconds)",
        )
        self.logging_steps = _check_steps(
            "logging_steps", self.logging_steps, self.logging_strategy == IntervalStrategy.STEPS
        )
        self.save_steps = _check_steps(
            "save_steps", self.save_steps, self.save_strategy == IntervalStrategy.STEPS
        )
        self.eval_steps = _check_steps(
            "eval_steps", self.eval_steps, self.evaluation_strategy == IntervalStrategy.STEPS
        )

    def _validate_combinations(self) -> None:
        if self.fp16 and self.bf16:
            raise ValueError("fp16 and bf16 cannot both be True; choose one mixed-precision format")
        if self.fp16_full_eval and self.bf16_full_eval:
            raise ValueError("fp16_full_eval and bf16_full_eval cannot both be True; choose one")
        if self.evaluation_strategy == IntervalStrategy.STEPS and self.eval_steps is None:
            if not self.logging_steps:
                raise ValueError(
                    "eval_steps must be set when evaluation_strategy='steps' "
                    "(it defaults to logging_steps, which is 0)"
                )
            logger.info("eval_steps is not set; using logging_steps=%s", self.logging_steps)
            self.eval_steps = self.logging_steps
        if self.load_best_model_at_end:
            if self.evaluation_strategy != self.save_strategy:
                raise ValueError(
                    "load_best_model_at_end requires save_strategy to match evaluation_strategy; got "
                    f"evaluation_strategy={self.evaluation_strategy.value!r}, "
                    f"save_strategy={self.save_strategy.value!r}"
                )
            if self.evaluation_strategy == IntervalStrategy.STEPS:
                self._check_save_is_multiple_of_eval()
        if self.lr_scheduler_type == SchedulerType.REDUCE_ON_PLATEAU and (
            self.evaluation_strategy == IntervalStrategy.NO
        ):
            raise ValueError(
                "lr_scheduler_type='reduce_lr_on_plateau' needs evaluation: set evaluation_strategy "
                "to 'steps' or 'epoch'"
            )

    def _check_save_is_multiple_of_eval(self) -> None:
        save, every = self.save_steps, self.eval_steps
        if (save < 1) != (every < 1):
            raise ValueError(
                "load_best_model_at_end with 'steps' strategies needs save_steps and eval_steps both as "
                f"step counts or both as ratios; got save_steps={save}, eval_steps={every}"
            )
        ratio = save / every
        if round(ratio) < 1 or not math.isclose(ratio, round(ratio), rel_tol=1e-9, abs_tol=1e-9):
            raise ValueError(
                "load_best_model_at_end needs save_steps to be a round multiple of eval_steps; "
                f"got save_steps={save}, eval_steps={every}"
            )

    def _fill_defaults(self) -> None:
        if self.evaluation_strategy != IntervalStrategy.NO:
            self.do_eval = True
        if self.load_best_model_at_end and self.metric_for_best_model is None:
            self.metric_for_best_model = "loss"
        if self.greater_is_better is None and self.metric_for_best_model is not None:
            self.greater_is_better = not self.metric_for_best_model.endswith("loss")
        if self.disable_tqdm is None:
            self.disable_tqdm = logging.getLogger(_TOOLKIT_LOGGER).getEffectiveLevel() > logging.WARNING
        self.report_to = self._normalise_report_to(self.report_to)
        if self.logging_dir is None:
            stamp = datetime.now().strftime("%b%d_%H-%M-%S")
            self.logging_dir = os.path.join(self.output_dir, "runs", f"{stamp}_{socket.gethostname()}")
        if self.run_name is None:
            self.run_name = self.output_dir
        if self.label_names is not None:
            names = [self.label_names] if isinstance(self.label_names, str) else self.label_names
            if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"label_names must be None or a list of str, got {self.label_names!r}")
            self.label_names = list(names)

    @staticmethod
    def _normalise_report_to(value: Any) -> list[str]:
        if value is None:
            return ["all"]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"report_to must be a str or a list of str, got {value!r}")
        names = list(value)
        if "none" in names:
            if len(names) > 1:
                raise ValueError(f"report_to cannot combine 'none' with other integrations, got {names!r}")
            return []
        return names

    # ------------------------------------------------------------------ environment

    @property
    def distributed_env(self) -> DistributedEnv:
        """The launcher environment of this process (``local_rank`` overrides its local rank)."""
        env = detect_distributed_env()
        if self.local_rank != -1 and self.local_rank != env.local_rank:
            local_world_size = max(env.local_world_size, self.local_rank + 1)
            env = dataclasses.replace(env, local_rank=self.local_rank, local_world_size=local_world_size)
        return env

    @property
    def world_size(self) -> int:
        """Number of processes (from the process group when initialised, else the launcher)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size()
        return self.distributed_env.world_size

    @property
    def process_index(self) -> int:
        """Global rank of this process."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank()
        return self.distributed_env.rank

    @property
    def local_process_index(self) -> int:
        """Rank of this process on its node."""
        return self.distributed_env.local_rank

    @property
    def parallel_mode(self) -> str:
        """``"distributed"`` when more than one process runs, else ``"not_parallel"``."""
        return "distributed" if self.world_size > 1 else "not_parallel"

    @property
    def device(self) -> torch.device:
        """The device this process trains on: cpu, ``cuda:<local rank>`` or mps.

        CUDA is preferred when available (the index is the local rank, modulo the number
        of visible devices), then MPS; ``use_cpu`` (or the deprecated ``no_cuda``) forces
        the CPU. Asking does not create a CUDA context.
        """
        if self.use_cpu or self.no_cuda:
            return torch.device("cpu")
        if torch.cuda.is_available():
            count = max(1, torch.cuda.device_count())
            return torch.device("cuda", self.local_process_index % count)
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")

    @property
    def n_gpu(self) -> int:
        """Accelerators used by this process: 0 on the CPU, else 1 (no DataParallel)."""
        return 0 if self.device.type == "cpu" else 1

    @property
    def train_batch_size(self) -> int:
        """Training batch size of one process (``per_gpu_train_batch_size`` wins when set)."""
        return self.per_gpu_train_batch_size or self.per_device_train_batch_size

    @property
    def eval_batch_size(self) -> int:
        """Evaluation batch size of one process (``per_gpu_eval_batch_size`` wins when set)."""
        return self.per_gpu_eval_batch_size or self.per_device_eval_batch_size

    @property
    def should_log(self) -> bool:
        """Whether this process logs: the main process, or each node's first with log_on_each_node."""
        if self.log_on_each_node:
            return self.local_process_index == 0
        return self.process_index == 0

    @property
    def should_save(self) -> bool:
        """Whether this process saves: the main process, or each node's first with save_on_each_node."""
        if self.save_on_each_node:
            return self.local_process_index == 0
        return self.process_index == 0

    @property
    def place_model_on_device(self) -> bool:
        """Whether the facade moves the model to `device` itself (always True in toolkit)."""
        return True

    @property
    def ddp_timeout_delta(self) -> timedelta:
        """``ddp_timeout`` as a `datetime.timedelta` (for process-group creation)."""
        return timedelta(seconds=self.ddp_timeout if self.ddp_timeout is not None else 1800)

    def get_process_log_level(self) -> int:
        """The `logging` level this process should use.

        The main process (see `should_log`) uses ``log_level``; ``"passive"`` means the
        current effective level of the ``toolkit`` logger. Other processes use
        ``log_level_replica``; ``"passive"`` there means ``logging.WARNING``.

        Returns:
            A `logging` level number.
        """
        if self.should_log:
            level = LOG_LEVELS[self.log_level]
            return logging.getLogger(_TOOLKIT_LOGGER).getEffectiveLevel() if level == -1 else level
        level = LOG_LEVELS[self.log_level_replica]
        return logging.WARNING if level == -1 else level

    def get_warmup_steps(self, num_training_steps: int) -> int:
        """Number of warmup steps: ``warmup_steps`` if > 0, else ``ceil(total * warmup_ratio)``.

        Args:
            num_training_steps: Total number of optimizer steps of the run.

        Returns:
            The number of linear warmup steps.
        """
        if self.warmup_steps > 0:
            return self.warmup_steps
        return math.ceil(num_training_steps * self.warmup_ratio)

    @contextlib.contextmanager
    def main_process_first(self, local: bool = True, desc: str = "work") -> Iterator[None]:
        """Run the block on the main process first, then on the others (e.g. dataset caching).

        Under a multi-process launch (``WORLD_SIZE > 1``) it works before any `Trainer`
        exists: when no process group is running yet, it starts the default one the way
        the strategy would (``ddp_backend``, default nccl on CUDA and gloo otherwise;
        ``ddp_timeout``; ``MASTER_ADDR`` / ``MASTER_PORT`` from the launcher), and the
        strategy later uses that group. In a single process it does nothing.

        Args:
            local: If True, "main" is the first process of each node; else global rank 0.
            desc: What is being done, for debug logs.
        """
        dist = torch.distributed
        if dist.is_available() and not dist.is_initialized() and self.distributed_env.world_size > 1:
            self._start_process_group()
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            yield
            return
        is_main = (self.local_process_index if local else self.process_index) == 0
        if not is_main:
            logger.debug("process %d waits for the main process to finish %s", self.process_index, desc)
            dist.barrier()
        yield
        if is_main:
            logger.debug("main process finished %s; releasing the others", desc)
            dist.barrier()

    def _start_process_group(self) -> None:
        """Start the default process group from the launcher's environment (see
        `main_process_first`); without ``MASTER_ADDR`` / ``MASTER_PORT`` nothing is started."""
        env = self.distributed_env
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
        if missing:
            logger.warning(
                "main_process_first: %s not set, so no process group can be started; the block runs "
                "on every process at once",
                " and ".join(missing),
            )
            return
        use_cuda = torch.cuda.is_available() and not (self.use_cpu or self.no_cuda)
        backend = self.ddp_backend or ("nccl" if use_cuda else "gloo")
        if use_cuda:
            torch.cuda.set_device(env.local_rank % max(1, torch.cuda.device_count()))
        torch.distributed.init_process_group(
            backend=backend,
            init_method="env://",
            rank=env.rank,
            world_size=env.world_size,
            timeout=self.ddp_timeout_delta,
        )
        destroy_process_group_at_exit()
        logger.info(
            "main_process_first: started the %s process group (rank %d of %d)",
            backend,
            env.rank,
            env.world_size,
        )

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """All fields as a dict: enums become their values, set ``*_token`` fields are masked.

        A token field that holds a value is replaced by ``"<FIELD_NAME>"`` (e.g.
        ``"<HUB_TOKEN>"``); an unset one stays None.
        """
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if not f.init:
                continue
            value = getattr(self, f.name)
            if isinstance(value, Enum):
                value = value.value
            elif isinstance(value, (list, tuple)):
                value = [v.value if isinstance(v, Enum) else v for v in value]
            elif isinstance(value, os.PathLike):
                value = os.fspath(value)
            if f.name.endswith("_token") and value is not None:
                value = f"<{f.name.upper()}>"
            out[f.name] = value
        return out

    def to_json_string(self) -> str:
        """`to_dict` as an indented JSON string (tokens masked)."""
        return json.dumps(self.to_dict(), indent=2, default=str)

    def to_sanitized_dict(self) -> dict[str, Any]:
        """`to_dict` plus the batch sizes, with every value a bool, int, float, str or tensor.

        Meant for hyper-parameter panels (e.g. TensorBoard hparams), which accept only
        those types; anything else (None, lists, dicts) is turned into its ``str``.
        """
        d = self.to_dict()
        d["train_batch_size"] = self.train_batch_size
        d["eval_batch_size"] = self.eval_batch_size
        valid = (bool, int, float, str, torch.Tensor)
        return {k: v if type(v) in valid else str(v) for k, v in d.items()}

    def __str__(self) -> str:
        body = ",\n".join(f"{k}={v!r}" for k, v in sorted(self.to_dict().items()))
        return f"{type(self).__name__}(\n{body}\n)"

    __repr__ = __str__

    # ------------------------------------------------------------------ set_* helpers

    def _update(self, **values: Any) -> "TrainingArguments":
        """Set fields and re-validate; on error the object is left exactly as it was."""
        snapshot = dict(self.__dict__)
        try:
            for name, value in values.items():
                setattr(self, name, value)
            self.__dict__["_revalidating"] = True
            self.__post_init__()
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(snapshot)
            raise
        finally:
            self.__dict__.pop("_revalidating", None)
        return self

    def set_training(
        self,
        learning_rate: float = 5e-5,
        batch_size: int = 8,
        weight_decay: float = 0,
        num_epochs: float = 3,
        max_steps: int = -1,
        gradient_accumulation_steps: int = 1,
        seed: int = 42,
        gradient_checkpointing: bool = False,
    ) -> "TrainingArguments":
        """Set the basic training arguments and turn ``do_train`` on.

        Args:
            learning_rate: Peak learning rate.
            batch_size: ``per_device_train_batch_size``.
            weight_decay: Weight decay.
            num_epochs: ``num_train_epochs``.
            max_steps: Total optimizer steps (overrides epochs when > 0).
            gradient_accumulation_steps: Micro-batches per optimizer step.
            seed: Random seed.
            gradient_checkpointing: Recompute activations in backward.

        Returns:
            self, re-validated.

        Example:
            >>> TrainingArguments("out").set_training(learning_rate=1e-4, batch_size=32).learning_rate
            0.0001
        """
        return self._update(
            do_train=True,
            learning_rate=learning_rate,
            per_device_train_batch_size=batch_size,
            weight_decay=weight_decay,
            num_train_epochs=num_epochs,
            max_steps=max_steps,
            gradient_accumulation_steps=gradient_accumulation_steps,
            seed=seed,
            gradient_checkpointing=gradient_checkpointing,
        )

    def set_evaluate(
        self,
        strategy: Union[str, IntervalStrategy] = "no",
        steps: int = 500,
        batch_size: int = 8,
        accumulation_steps: Optional[int] = None,
        delay: Optional[float] = None,
        loss_only: bool = False,
        jit_mode: bool = False,
    ) -> "TrainingArguments":
        """Set the evaluation arguments; ``do_eval`` follows the strategy.

        Args:
            strategy: ``evaluation_strategy``: "no", "steps" or "epoch".
            steps: ``eval_steps`` (used with "steps").
            batch_size: ``per_device_eval_batch_size``.
            accumulation_steps: ``eval_accumulation_steps``.
            delay: ``eval_delay``.
            loss_only: ``prediction_loss_only``.
            jit_mode: ``jit_mode_eval``.

        Returns:
            self, re-validated.
        """
        return self._update(
            evaluation_strategy=strategy,
            eval_steps=steps,
            do_eval=_coerce_enum("strategy", strategy, IntervalStrategy) != IntervalStrategy.NO,
            per_device_eval_batch_size=batch_size,
            eval_accumulation_steps=accumulation_steps,
            eval_delay=delay,
            prediction_loss_only=loss_only,
            jit_mode_eval=jit_mode,
        )

    def set_testing(
        self, batch_size: int = 8, loss_only: bool = False, jit_mode: bool = False
    ) -> "TrainingArguments":
        """Set the test (predict) arguments and turn ``do_predict`` on.

        Args:
            batch_size: ``per_device_eval_batch_size``.
            loss_only: ``prediction_loss_only``.
            jit_mode: ``jit_mode_eval``.

        Returns:
            self, re-validated.
        """
        return self._update(
            do_predict=True,
            per_device_eval_batch_size=batch_size,
            prediction_loss_only=loss_only,
            jit_mode_eval=jit_mode,
        )

    def set_save(
        self,
        strategy: Union[str, IntervalStrategy] = "steps",
        steps: int = 500,
        total_limit: Optional[int] = None,
        on_each_node: bool = False,
    ) -> "TrainingArguments":
        """Set the checkpoint-saving arguments.

        Args:
            strategy: ``save_strategy``: "no", "steps" or "epoch".
            steps: ``save_steps``.
            total_limit: ``save_total_limit``.
            on_each_node: ``save_on_each_node``.

        Returns:
            self, re-validated.
        """
        return self._update(
            save_strategy=strategy,
            save_steps=steps,
            save_total_limit=total_limit,
            save_on_each_node=on_each_node,
        )

    def set_logging(
        self,
        strategy: Union[str, IntervalStrategy] = "steps",
        steps: int = 500,
        report_to: Union[str, list[str]] = "none",
        level: str = "passive",
        first_step: bool = False,
        nan_inf_filter: bool = False,
        on_each_node: bool = False,
        replica_level: str = "passive",
    ) -> "TrainingArguments":
        """Set the logging arguments.

        Args:
            strategy: ``logging_strategy``.
            steps: ``logging_steps``.
            report_to: ``report_to`` (a name, a list of names, "all" or "none").
            level: ``log_level``.
            first_step: ``logging_first_step``.
            nan_inf_filter: ``logging_nan_inf_filter``.
            on_each_node: ``log_on_each_node``.
            replica_level: ``log_level_replica``.

        Returns:
            self, re-validated.
        """
        return self._update(
            logging_strategy=strategy,
            logging_steps=steps,
            report_to=report_to,
            log_level=level,
            logging_first_step=first_step,
            logging_nan_inf_filter=nan_inf_filter,
            log_on_each_node=on_each_node,
            log_level_replica=replica_level,
        )

    def set_push_to_hub(
        self,
        model_id: str,
        strategy: Union[str, HubStrategy] = "every_save",
        token: Optional[str] = None,
        private_repo: bool = False,
        always_push: bool = False,
    ) -> "TrainingArguments":
        """Set the model-hub arguments and turn ``push_to_hub`` on (see docs/hub.md).

        Args:
            model_id: ``hub_model_id``: a store URL (``file://``, ``s3://``, ``memory://``,
                an absolute path) or a Hugging Face Hub repository id.
            strategy: ``hub_strategy``.
            token: ``hub_token``.
            private_repo: ``hub_private_repo``.
            always_push: ``hub_always_push``.

        Returns:
            self, re-validated.
        """
        return self._update(
            push_to_hub=True,
            hub_model_id=model_id,
            hub_strategy=strategy,
            hub_token=token,
            hub_private_repo=private_repo,
            hub_always_push=always_push,
        )

    def set_optimizer(
        self,
        name: Union[str, OptimizerNames] = "adamw_torch",
        learning_rate: float = 5e-5,
        weight_decay: float = 0,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        args: Optional[str] = None,
    ) -> "TrainingArguments":
        """Set the optimizer and its hyper-parameters.

        Args:
            name: ``optim``.
            learning_rate: ``learning_rate``.
            weight_decay: ``weight_decay``.
            beta1: ``adam_beta1``.
            beta2: ``adam_beta2``.
            epsilon: ``adam_epsilon``.
            args: ``optim_args``.

        Returns:
            self, re-validated.
        """
        return self._update(
            optim=name,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            adam_beta1=beta1,
            adam_beta2=beta2,
            adam_epsilon=epsilon,
            optim_args=args,
        )

    def set_lr_scheduler(
        self,
        name: Union[str, SchedulerType] = "linear",
        num_epochs: float = 3.0,
        max_steps: int = -1,
        warmup_ratio: float = 0,
        warmup_steps: int = 0,
    ) -> "TrainingArguments":
        """Set the learning-rate schedule and the run length.

        Args:
            name: ``lr_scheduler_type``.
            num_epochs: ``num_train_epochs``.
            max_steps: ``max_steps``.
            warmup_ratio: ``warmup_ratio``.
            warmup_steps: ``warmup_steps``.

        Returns:
            self, re-validated.
        """
        return self._update(
            lr_scheduler_type=name,
            num_train_epochs=num_epochs,
            max_steps=max_steps,
            warmup_ratio=warmup_ratio,
            warmup_steps=warmup_steps,
        )

    def set_dataloader(
        self,
        train_batch_size: int = 8,
        eval_batch_size: int = 8,
        drop_last: bool = False,
        num_workers: int = 0,
        pin_memory: bool = True,
        auto_find_batch_size: bool = False,
        ignore_data_skip: bool = False,
        sampler_seed: Optional[int] = None,
    ) -> "TrainingArguments":
        """Set the data-loader arguments.

        Args:
            train_batch_size: ``per_device_train_batch_size``.
            eval_batch_size: ``per_device_eval_batch_size``.
            drop_last: ``dataloader_drop_last``.
            num_workers: ``dataloader_num_workers``.
            pin_memory: ``dataloader_pin_memory``.
            auto_find_batch_size: ``auto_find_batch_size``.
            ignore_data_skip: ``ignore_data_skip``.
            sampler_seed: ``data_seed``.

        Returns:
            self, re-validated.
        """
        return self._update(
            per_device_train_batch_size=train_batch_size,
            per_device_eval_batch_size=eval_batch_size,
            dataloader_drop_last=drop_last,
            dataloader_num_workers=num_workers,
            dataloader_pin_memory=pin_memory,
            auto_find_batch_size=auto_find_batch_size,
            ignore_data_skip=ignore_data_skip,
            data_seed=sampler_seed,
        )


@dataclass(repr=False)
class Seq2SeqTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus the generation options of sequence-to-sequence training.

    Example:
        >>> args = Seq2SeqTrainingArguments("out", predict_with_generate=True, generation_num_beams=4)
        >>> args.generation_num_beams
        4
    """

    sortish_sampler: bool = _arg(False, "Sample training batches of roughly similar lengths (legacy).")
    predict_with_generate: bool = _arg(
        False, "Compute predictions with generate() during evaluation and prediction (for BLEU, ROUGE...)."
    )
    generation_max_length: Optional[int] = _arg(
        None, "max_length for generate() in evaluation; defaults to the model's generation config."
    )
    generation_num_beams: Optional[int] = _arg(
        None, "num_beams for generate() in evaluation; defaults to the model's generation config."
    )
    generation_config: Optional[Union[str, Path, dict, object]] = _arg(
        None, "A generation config: a path or model id to load it from, a dict, or a config object."
    )

    def __post_init__(self) -> None:
        """Validate the base fields, then the generation options."""
        super().__post_init__()
        for name in ("generation_max_length", "generation_num_beams"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be None or an integer >= 1, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """Like `TrainingArguments.to_dict`; a generation config object becomes its dict."""
        out = super().to_dict()
        config = out.get("generation_config")
        if config is not None and not isinstance(config, (str, dict)):
            to_dict = getattr(config, "to_dict", None)
            out["generation_config"] = to_dict() if callable(to_dict) else str(config)
        return out
