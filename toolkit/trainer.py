"""`Trainer`: the facade with the API of the Hugging Face Trainer (v4.34.0).

It translates `TrainingArguments` into parts (strategy, precision, optimizer, scheduler,
dataloaders, callbacks, checkpoint manager) and delegates the work to the loops. The
documented overridable methods are kept; each is a thin call into a part.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, SequentialSampler

from toolkit.args import TrainingArguments
from toolkit.callbacks import (
    CallbackHandler,
    DefaultFlowCallback,
    PrinterCallback,
    ProgressCallback,
    TrainerCallback,
)
from toolkit.checkpoint import files as storage
from toolkit.connector import build_parts
from toolkit.data import (
    DataCollatorWithPadding,
    LengthGroupedSampler,
    RemoveColumnsCollator,
    ResumableRandomSampler,
    ShardedEvalSampler,
    default_data_collator,
    remove_columns_from_hf_dataset,
    seed_worker,
    signature_columns,
)
from toolkit.debug import DebugUnderflowOverflow
from toolkit.hub import HubSync
from toolkit.loggers import LoggerCallback, LoggerCollection, loggers_from_report_to
from toolkit.loops import LabelSmoother, TrainLoop
from toolkit.loops import steps as default_steps
from toolkit.loops.evaluation import EvaluationLoop
from toolkit.memory import (
    MemoryTracker,
    device_peak_flops,
    find_executable_batch_size,
    model_flops_utilization,
)
from toolkit.metrics import format_metrics_table, metrics_format, speed_metrics, write_metrics_json
from toolkit.modelcard import create_trainer_model_card
from toolkit.optim import (
    get_decay_parameter_names,
    get_optimizer_cls_and_kwargs,
    get_scheduler,
    param_groups_for_weight_decay,
)
from toolkit.precision.model_prep import compile_module, enable_gradient_checkpointing, inference_model
from toolkit.report import plot_training_curves
from toolkit.run_checkpoint import RunCheckpointer
from toolkit.search import in_trial, run_hyperparameter_search, trial_scope
from toolkit.state import TrainerControl, TrainerState
from toolkit.strategies.eval_gather import OrderedGather
from toolkit.types import DebugOption, EvalLoopOutput, PredictionOutput, TrainOutput
from toolkit.utils.intervals import resolve_steps
from toolkit.utils.seed import enable_full_determinism, set_seed

__all__ = ["Trainer"]

logger = logging.getLogger(__name__)


def _label_names_of(model: nn.Module) -> list[str]:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return ["labels"]
    if "start_positions" in params and "end_positions" in params:
        return ["start_positions", "end_positions"]
    names = [p for p in params if "label" in p]
    return names or ["labels"]


class Trainer:
    """Train, evaluate and predict with any `torch.nn.Module`, HF-Trainer style.

    Args:
        model: the model; its forward returns a loss (first tuple element, ``"loss"``
            key or ``loss`` attribute) when given labels.
        args: the `TrainingArguments` (``TrainingArguments("tmp_trainer")`` if omitted).
        data_collator: builds a batch from a list of dataset items; defaults to
            `DataCollatorWithPadding` with a tokenizer, else `default_data_collator`.
        train_dataset: training data (map-style or iterable).
        eval_dataset: evaluation data, or a dict of named datasets.
        tokenizer: saved with the model and used for padding by the default collator.
        model_init: builds a fresh model (used by ``train`` and searches).
        compute_metrics: ``EvalPrediction -> dict`` of metrics.
        callbacks: extra `TrainerCallback` instances or classes.
        optimizers: ``(optimizer, lr_scheduler)`` to use instead of creating them.
        preprocess_logits_for_metrics: ``(logits, labels) -> logits`` applied per batch.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> class Reg(nn.Module):
        ...     def __init__(self):
        ...         super().__init__(); self.lin = nn.Linear(3, 1)
        ...     def forward(self, x, labels=None):
        ...         out = self.lin(x).squeeze(-1)
        ...         return {"loss": nn.functional.mse_loss(out, labels), "logits": out}
        >>> data = [{"x": torch.randn(3), "labels": torch.tensor(1.0)} for _ in range(16)]
        >>> args = TrainingArguments("out", max_steps=4, report_to="none", disable_tqdm=True,
        ...                          save_strategy="no", logging_steps=2)
        >>> out = Trainer(Reg(), args, train_dataset=data).train()  # doctest: +ELLIPSIS
        {'loss': ..., 'learning_rate': ..., 'epoch': ...}
        {'loss': ..., 'learning_rate': ..., 'epoch': ...}
        {'train_runtime': ..., 'train_loss': ..., 'epoch': ...}
        >>> out.global_step
        4
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        args: TrainingArguments | None = None,
        data_collator: Callable | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        tokenizer: Any = None,
        model_init: Callable[..., nn.Module] | None = None,
        compute_metrics: Callable | None = None,
        callbacks: list[TrainerCallback | type] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, Any] = (None, None),
        preprocess_logits_for_metrics: Callable | None = None,
        processing_class: Any = None,
    ) -> None:
        if args is None:
            logger.info("No `TrainingArguments` passed, using output_dir='tmp_trainer'.")
            args = TrainingArguments(output_dir="tmp_trainer")
        self.args = args
        self._memory_tracker = MemoryTracker(
            enabled=not args.skip_memory_metrics, device="cpu" if args.use_cpu or args.no_cuda else None
        )
        self._memory_tracker.start("init")
        logging.getLogger("toolkit").setLevel(args.get_process_log_level())
        (enable_full_determinism if args.full_determinism else set_seed)(args.seed)
        if tokenizer is not None and processing_class is not None and tokenizer is not processing_class:
            raise ValueError("Pass either `tokenizer` or its newer name `processing_class`, not both.")
        self.tokenizer = tokenizer if tokenizer is not None else processing_class
        self.model_init = model_init
        if model is None:
            if model_init is None:
                raise RuntimeError("`Trainer` requires either a `model` or a `model_init` argument.")
            model = self.call_model_init()
        elif model_init is not None:
            logger.warning("Both `model` and `model_init` were passed; `model_init` will rebuild the model in train().")
        self.optimizer, self.lr_scheduler = optimizers
        self._optimizer_given = self.optimizer is not None
        if model_init is not None and (self.optimizer is not None or self.lr_scheduler is not None):
            raise RuntimeError(
                "Passing `optimizers` is not allowed with `model_init`: the model is rebuilt, so the "
                "optimizer would hold stale parameters. Subclass and override create_optimizer_and_scheduler."
            )
        parts = build_parts(args)
        self.strategy, self.precision = parts.strategy, parts.precision
        self.strategy.setup_environment()  # e.g. the process group of a distributed launch
        self.is_model_parallel = bool(getattr(model, "is_parallelizable", False) and getattr(model, "model_parallel", False))
        self.place_model_on_device = bool(args.place_model_on_device) and not self.is_model_parallel
        if self.place_model_on_device:
            model = model.to(self.strategy.device)
        self.model = model
        self.model_wrapped = model
        if data_collator is None:
            data_collator = DataCollatorWithPadding(self.tokenizer) if self.tokenizer is not None else default_data_collator
        self.data_collator = data_collator
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.compute_metrics = compute_metrics
        self.preprocess_logits_for_metrics = preprocess_logits_for_metrics
        self.label_names = list(args.label_names) if args.label_names is not None else _label_names_of(model)
        self.label_smoother = LabelSmoother(args.label_smoothing_factor) if args.label_smoothing_factor else None
        self._train_batch_size = args.train_batch_size
        self.is_in_train = False
        self.current_flos = 0.0
        self._loss_scale = 1.0
        self._num_params: int | None = None
        self._flops_model: nn.Module | None = None
        self._model_flops: Callable[[Any], int] | None = None
        self._count_tokens = bool(args.include_tokens_per_second)
        self._tokens_seen = 0
        self._grad_accum = args.gradient_accumulation_steps
        self._batch_size_search: _BatchSizeSearch | None = None
        self._label_check_step = -1  # the step whose first batch is checked for label_names
        self._step_context: bool | None = None  # enter compute_loss_context_manager per step (None: yes)
        self._flos_per_token: float | None = None  # set per train() call (None: ask floating_point_ops)
        progress = PrinterCallback if args.disable_tqdm else ProgressCallback
        self.callback_handler = CallbackHandler(
            [DefaultFlowCallback, *_logger_callbacks(args, self.strategy.is_global_zero), *(callbacks or []), progress],
            model=self.model, tokenizer=self.tokenizer, optimizer=self.optimizer, lr_scheduler=self.lr_scheduler,
        )
        self.state = TrainerState(
            is_local_process_zero=self.is_local_process_zero(), is_world_process_zero=self.is_world_process_zero()
        )
        self.control = TrainerControl()
        self.checkpointer = RunCheckpointer(self)
        self.hub_sync: HubSync | None = HubSync(self) if args.push_to_hub else None
        self.control = self.callback_handler.on_init_end(self.args, self.state, self.control)
        self._memory_tracker.stop_and_update_metrics()

    # ----------------------------------------------------------------- callbacks
    def add_callback(self, callback: TrainerCallback | type) -> None:
        """Add a callback (instance or class)."""
        self.callback_handler.add_callback(callback)

    def pop_callback(self, callback: TrainerCallback | type) -> TrainerCallback | None:
        """Remove a callback and return it (None when absent)."""
        return self.callback_handler.pop_callback(callback)

    def remove_callback(self, callback: TrainerCallback | type) -> None:
        """Remove a callback (instance or class)."""
        self.callback_handler.remove_callback(callback)

    # ----------------------------------------------------------------- processes
    def is_world_process_zero(self) -> bool:
        """True on the process that writes shared files."""
        return self.strategy.is_global_zero

    def is_local_process_zero(self) -> bool:
        """True on the first process of this node."""
        return self.strategy.is_local_zero

    # ----------------------------------------------------------------- data
    def _columns_removed(self, dataset: Any, collator: Callable, description: str) -> tuple[Any, Callable]:
        if not self.args.remove_unused_columns or dataset is None:
            return dataset, collator
        columns = signature_columns(self.model, self.label_names)
        name = type(self.model).__name__
        if hasattr(dataset, "remove_columns") and hasattr(dataset, "column_names"):
            return remove_columns_from_hf_dataset(dataset, columns, description=description, model_name=name), collator
        return dataset, RemoveColumnsCollator(collator, columns, model_name=name, description=description)

    def _loader_kwargs(self, batch_size: int) -> dict[str, Any]:
        args = self.args
        return {
            "batch_size": batch_size,
            "num_workers": args.dataloader_num_workers,
            "pin_memory": bool(args.dataloader_pin_memory) and self.strategy.device.type == "cuda",
            "worker_init_fn": seed_worker if args.dataloader_num_workers else None,
        }

    def _get_train_sampler(self, dataset: Any = None) -> Any:
        """The training sampler: seeded (``data_seed`` or ``seed``) and resumable; grouped by
        length when ``group_by_length`` (batches of similar lengths, longest first)."""
        dataset = self.train_dataset if dataset is None else dataset
        args = self.args
        if args.group_by_length:
            names = getattr(self.tokenizer, "model_input_names", None) or ["input_ids"]
            return LengthGroupedSampler(
                self._train_batch_size * self._grad_accum, dataset=dataset,
                length_column_name=args.length_column_name, model_input_name=names[0], seed=self._data_seed(),
                num_replicas=self.strategy.world_size, rank=self.strategy.global_rank,
                drop_last=args.dataloader_drop_last,
            )
        return ResumableRandomSampler(
            len(dataset), seed=self._data_seed(), num_replicas=self.strategy.world_size,
            rank=self.strategy.global_rank, drop_last=args.dataloader_drop_last,
        )

    def _data_seed(self) -> int:
        return self.args.data_seed if self.args.data_seed is not None else self.args.seed

    def get_train_dataloader(self) -> DataLoader:
        """The training `DataLoader` (shuffled by a resumable, seeded sampler)."""
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a `train_dataset`.")
        sampler = None if isinstance(self.train_dataset, IterableDataset) else self._get_train_sampler()
        dataset, collator = self._columns_removed(self.train_dataset, self.data_collator, "training")
        kwargs = self._loader_kwargs(self._train_batch_size)
        if sampler is not None:
            kwargs["sampler"] = sampler
            kwargs["drop_last"] = self.args.dataloader_drop_last
        return DataLoader(dataset, collate_fn=collator, **kwargs)

    def _eval_loader(self, dataset: Any, description: str) -> DataLoader:
        dataset, collator = self._columns_removed(dataset, self.data_collator, description)
        kwargs = self._loader_kwargs(self.args.eval_batch_size)
        if not isinstance(dataset, IterableDataset):
            kwargs["sampler"] = self._get_eval_sampler(dataset)
            kwargs["drop_last"] = self.args.dataloader_drop_last and self.strategy.world_size == 1
        return DataLoader(dataset, collate_fn=collator, **kwargs)

    def _get_eval_sampler(self, eval_dataset: Any) -> Any:
        """Sequential; with several processes, a strided shard per process (the evaluation
        loop gathers the shards back into dataset order, each sample exactly once)."""
        world = self.strategy.world_size
        if world == 1:
            return SequentialSampler(eval_dataset)
        if self.args.dataloader_drop_last:
            logger.warning("dataloader_drop_last is not applied to evaluation over %d processes: every sample "
                           "is evaluated exactly once.", world)
        return ShardedEvalSampler(len(eval_dataset), num_replicas=world, rank=self.strategy.global_rank,
                                  contiguous=False)

    def get_eval_dataloader(self, eval_dataset: Dataset | None = None) -> DataLoader:
        """The evaluation `DataLoader` (sequential) for ``eval_dataset`` or the trainer's."""
        if eval_dataset is None and self.eval_dataset is None:
            raise ValueError("Trainer: evaluation requires an `eval_dataset`.")
        return self._eval_loader(eval_dataset if eval_dataset is not None else self.eval_dataset, "evaluation")

    def get_test_dataloader(self, test_dataset: Dataset) -> DataLoader:
        """The prediction `DataLoader` (sequential) for ``test_dataset``."""
        return self._eval_loader(test_dataset, "test")

    def num_examples(self, dataloader: DataLoader) -> int:
        """Number of samples behind a dataloader (batches x batch size when the dataset has no length)."""
        try:
            return len(dataloader.dataset)
        except (TypeError, AttributeError):
            return len(dataloader) * (dataloader.batch_size or 1)

    def num_tokens(self, train_dl: DataLoader, max_steps: int | None = None) -> int:
        """Tokens (elements of ``input_ids``) in a dataloader, over at most ``max_steps`` batches."""
        total = 0
        for step, batch in enumerate(train_dl):
            if max_steps is not None and step >= max_steps:
                break
            if isinstance(batch, Mapping) and isinstance(batch.get("input_ids"), torch.Tensor):
                total += batch["input_ids"].numel()
        return total

    def floating_point_ops(self, inputs: Any) -> int:
        """FLOPs of a forward and backward pass: the model's own count when it has one,
        else 6 x parameters x tokens (batch elements of ``input_ids``, or samples)."""
        model = self.model
        if model is not self._flops_model:  # looked up once per model, not per step
            self._flops_model = model
            self._model_flops = getattr(model, "floating_point_ops", None)
            self._num_params = None
        if self._model_flops is not None:
            return self._model_flops(inputs)
        if self._num_params is None:
            self._num_params = _trainable_parameters(model)
        return 6 * self._num_params * _batch_tokens(inputs)

    # ----------------------------------------------------------------- optimizer
    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        """Parameters that get weight decay: all but biases and normalisation weights."""
        return get_decay_parameter_names(model)

    @staticmethod
    def get_optimizer_cls_and_kwargs(args: TrainingArguments) -> tuple[type, dict[str, Any]]:
        """The optimizer class and its keyword arguments for ``args.optim``."""
        return get_optimizer_cls_and_kwargs(
            args.optim, learning_rate=args.learning_rate, adam_beta1=args.adam_beta1,
            adam_beta2=args.adam_beta2, adam_epsilon=args.adam_epsilon, optim_args=args.optim_args,
        )

    def create_optimizer(self) -> torch.optim.Optimizer:
        """Create the optimizer (unless one was passed), without decay on biases and norms."""
        if self.optimizer is None:
            groups = param_groups_for_weight_decay(
                self.model, self.args.weight_decay, decay_names=self.get_decay_parameter_names(self.model)
            )
            cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args)
            self.optimizer = cls(groups, **kwargs)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        """Create the learning-rate scheduler (unless one was passed)."""
        if self.lr_scheduler is None:
            self.lr_scheduler = get_scheduler(
                self.args.lr_scheduler_type, optimizer if optimizer is not None else self.optimizer,
                num_warmup_steps=self.args.get_warmup_steps(num_training_steps),
                num_training_steps=num_training_steps,
            )
        return self.lr_scheduler

    def create_optimizer_and_scheduler(self, num_training_steps: int) -> None:
        """Create the optimizer and the scheduler."""
        self.create_optimizer()
        self.create_scheduler(num_training_steps, optimizer=self.optimizer)

    # ----------------------------------------------------------------- steps
    def autocast_smart_context_manager(self, cache_enabled: bool | None = True) -> contextlib.AbstractContextManager:
        """The autocast context of the precision in use (a no-op in fp32)."""
        return self.strategy.autocast()

    def compute_loss_context_manager(self) -> contextlib.AbstractContextManager:
        """Context around `compute_loss` (autocast)."""
        return self.autocast_smart_context_manager()

    def _prepare_inputs(self, inputs: Any) -> Any:
        if inputs is None:
            raise TypeError("The batch received was None: data_collator must return the model inputs (a dict, "
                            "a tuple/list of tensors, or a tensor).")
        if (type(inputs) is dict or isinstance(inputs, Mapping)) and len(inputs) == 0:
            raise ValueError(
                "The batch received was empty: the dataset items hold no key the model takes. "
                f"The model's forward takes: {signature_columns(self.model, self.label_names)}."
            )
        return self.strategy.batch_to_device(inputs)

    def compute_loss(self, model: nn.Module, inputs: Any, return_outputs: bool = False) -> Any:
        """The loss of a batch (and the model outputs when ``return_outputs``)."""
        return default_steps.compute_loss(
            model, inputs, label_smoother=self.label_smoother, return_outputs=return_outputs
        )

    def training_step(self, model: nn.Module, inputs: Any) -> torch.Tensor:
        """Forward and backward on one micro-batch; returns the detached weighted loss.

        The loss from `compute_loss` is multiplied by the loop's weight for this
        micro-batch (``self.loss_scale``: its share of the accumulation window's items).
        """
        # evaluation puts the unwrapped module in eval mode: two flag reads per step instead of
        # a model.train() call that walks every submodule
        if not (model.training and self.model.training):
            model.train()
        inputs = self._prepare_inputs(inputs)
        if self._step_context is False:  # known to be a no-op context (see _inner_training_loop)
            loss = self.compute_loss(model, inputs)
        else:
            with self.compute_loss_context_manager():
                loss = self.compute_loss(model, inputs)
        if type(loss) is not torch.Tensor and not isinstance(loss, torch.Tensor):
            raise TypeError(f"The training loss must be a torch.Tensor, got {type(loss).__name__} {loss!r}: return "
                            "the loss as a tensor from the model (or from compute_loss).")
        if loss.dim():
            loss = loss.mean()
        if self._loss_scale != 1.0:
            loss = loss * self._loss_scale
        self.strategy.backward(loss)
        return loss.detach()

    @property
    def loss_scale(self) -> float:
        """Weight of the current micro-batch's mean loss in its accumulation window."""
        return self._loss_scale

    def _loop_step(self, model: nn.Module, inputs: Any, loss_scale: float) -> torch.Tensor:
        self._loss_scale = loss_scale
        if self.state.global_step == self._label_check_step:  # the first batch of this train() call
            self._label_check_step = -1
            _check_label_names(self.args.label_names, inputs)
        if self._flos_per_token is None:
            self.current_flos += float(self.floating_point_ops(inputs))
            tokens = _batch_tokens(inputs) if self._count_tokens else 0
        else:
            tokens = _batch_tokens(inputs)
            self.current_flos += self._flos_per_token * tokens
        if self._count_tokens:
            self._tokens_seen += tokens
        return self.training_step(model, inputs)

    def prediction_step(
        self, model: nn.Module, inputs: Any, prediction_loss_only: bool, ignore_keys: list[str] | None = None
    ) -> tuple[torch.Tensor | None, Any, Any]:
        """``(loss, logits, labels)`` for one evaluation batch."""
        inputs = self._prepare_inputs(inputs)
        if ignore_keys is None:
            ignore_keys = list(getattr(getattr(model, "config", None), "keys_to_ignore_at_inference", []) or [])
        with self.autocast_smart_context_manager():
            return default_steps.prediction_step(
                model, inputs, prediction_loss_only, ignore_keys,
                label_names=self.label_names, label_smoother=self.label_smoother,
            )

    # ----------------------------------------------------------------- training
    def call_model_init(self, trial: Any = None) -> nn.Module:
        """Build a model with ``model_init`` (passing ``trial`` when it takes one argument)."""
        n_args = len(inspect.signature(self.model_init).parameters)
        model = self.model_init() if n_args == 0 else self.model_init(trial)
        if model is None:
            raise RuntimeError("model_init should not return None.")
        return model

    def _training_length(self, dataloader: DataLoader) -> tuple[int, int, int | None]:
        """``(max_steps, num_epochs, steps_per_epoch)`` from the arguments and the data."""
        args = self.args
        ga = self._grad_accum
        try:
            n_batches = len(dataloader)
        except TypeError:
            n_batches = None
        if n_batches is None:
            if args.max_steps <= 0:
                raise ValueError(
                    "max_steps: the training dataset has no length, so `max_steps` must be set to a "
                    "positive number of optimizer steps."
                )
            return args.max_steps, 2**31 - 1, None
        if n_batches == 0:
            raise ValueError("train_dataset: the training dataloader is empty (check the dataset size and batch size).")
        steps_per_epoch = math.ceil(n_batches / ga)
        if args.max_steps > 0:
            return args.max_steps, math.ceil(args.max_steps / steps_per_epoch), steps_per_epoch
        max_steps = math.ceil(args.num_train_epochs * steps_per_epoch)
        if max_steps <= 0:
            raise ValueError(f"num_train_epochs={args.num_train_epochs} gives no training step.")
        return max_steps, math.ceil(args.num_train_epochs), steps_per_epoch

    def _new_state(self, max_steps: int, num_epochs: int, trial: Any) -> TrainerState:
        args = self.args
        return TrainerState(
            max_steps=max_steps, num_train_epochs=num_epochs, train_batch_size=self._train_batch_size,
            logging_steps=resolve_steps(args.logging_steps, max_steps),
            eval_steps=resolve_steps(args.eval_steps if args.eval_steps is not None else args.logging_steps, max_steps),
            save_steps=resolve_steps(args.save_steps, max_steps),
            is_local_process_zero=self.is_local_process_zero(), is_world_process_zero=self.is_world_process_zero(),
            is_hyper_param_search=trial is not None, epoch=0.0,
        )

    def train(
        self, resume_from_checkpoint: str | bool | None = None, trial: Any = None,
        ignore_keys_for_eval: list[str] | None = None, **kwargs: Any,
    ) -> TrainOutput:
        """Run training; returns `TrainOutput(global_step, training_loss, metrics)`.

        Args:
            resume_from_checkpoint: a checkpoint folder, or True for the newest valid one
                in ``output_dir``.
            trial: a hyperparameter-search trial (an Optuna trial or a dict of argument
                values): trains with its values in ``output_dir/run-<n>`` (see docs/search.md).
            ignore_keys_for_eval: output keys left out of predictions during evaluation.
        """
        if kwargs:
            raise TypeError(f"train() got unexpected keyword arguments: {', '.join(sorted(kwargs))}")
        if trial is not None and not in_trial(self, trial):
            with trial_scope(self, trial):
                return self.train(resume_from_checkpoint, trial, ignore_keys_for_eval)
        args = self.args
        customised = any(getattr(type(self), name).__module__.split(".")[0] != "toolkit"
                         for name in ("evaluate", "get_eval_dataloader", "_evaluate_during_training"))
        if args.evaluation_strategy != "no" and self.eval_dataset is None and not customised:
            raise ValueError(
                f"evaluation_strategy={args.evaluation_strategy.value!r} evaluates during training, but the "
                "Trainer has no eval_dataset: pass eval_dataset=... or set evaluation_strategy='no'."
            )
        checkpoint = self.checkpointer.resolve_resume(resume_from_checkpoint)
        self.checkpointer.begin_run(checkpoint)
        self._memory_tracker.start("train")
        try:
            if self.model_init is not None:
                (enable_full_determinism if args.full_determinism else set_seed)(args.seed)
                self.model = self.call_model_init(trial).to(self.strategy.device)
                self.model_wrapped = self.model
                self.optimizer, self.lr_scheduler = None, None
            self._batch_size_search = _BatchSizeSearch(self) if args.auto_find_batch_size else None
            inner = find_executable_batch_size(
                self._inner_training_loop, starting_batch_size=args.train_batch_size,
                auto_find_batch_size=args.auto_find_batch_size,
            )
            return inner(checkpoint=checkpoint, trial=trial, ignore_keys_for_eval=ignore_keys_for_eval)
        finally:
            self._memory_tracker.stop("train")
            self.is_in_train = False

    def _inner_training_loop(
        self, batch_size: int, checkpoint: str | None, trial: Any, ignore_keys_for_eval: list[str] | None
    ) -> TrainOutput:
        args = self.args
        ga = args.gradient_accumulation_steps
        if self._batch_size_search is not None:
            ga = self._batch_size_search.prepare(batch_size)
        self._train_batch_size = batch_size
        self._grad_accum = ga
        self.is_in_train = True
        train_dataloader = self.strategy.setup_dataloader(self.get_train_dataloader())  # e.g. XLA's MpDeviceLoader
        max_steps, num_epochs, steps_per_epoch = self._training_length(train_dataloader)
        self.state = self._new_state(max_steps, num_epochs, trial)
        if args.gradient_checkpointing:
            enable_gradient_checkpointing(self.model)
        if args.torch_compile:
            compile_module(self.model, args.torch_compile_backend, args.torch_compile_mode)
        self.model_wrapped = self.strategy.setup_module(self.model)
        self.create_optimizer_and_scheduler(num_training_steps=max_steps)
        if getattr(self.strategy, "wraps_optimizer", False):  # DeepSpeed: one engine for model, optimizer, scheduler
            scheduler = self.lr_scheduler
            if getattr(self.strategy, "builds_optimizer", False):  # the config's optimizer: schedule that one
                self.lr_scheduler = None
                scheduler = lambda opt: self.create_scheduler(max_steps, optimizer=opt)  # noqa: E731
            self.model_wrapped, self.optimizer = self.strategy.setup(
                self.model, self.optimizer, lr_scheduler=scheduler, total_steps=max_steps)
            self.lr_scheduler = self.strategy.lr_scheduler
        else:
            self.strategy.setup(self.model, self.optimizer)
        self.model_wrapped, self.optimizer = self.precision.setup(self.model_wrapped, self.optimizer)
        loop = TrainLoop(
            self.model_wrapped, self.optimizer, train_dataloader, step_fn=self._loop_step,
            lr_scheduler=self.lr_scheduler, strategy=self.strategy, max_steps=max_steps, num_epochs=num_epochs,
            steps_per_epoch=steps_per_epoch, gradient_accumulation_steps=ga,
            max_grad_norm=args.max_grad_norm, loss_normalization=args.loss_normalization,
            label_names=self.label_names, callbacks=self.callback_handler, args=args, state=self.state,
            control=self.control, log_fn=self._log_training, save_fn=self._save_checkpoint,
            evaluate_fn=lambda: self._evaluate_during_training(ignore_keys_for_eval),
            plateau_metric=_prefixed(args.metric_for_best_model or "loss"),
            logging_nan_inf_filter=args.logging_nan_inf_filter, nan_inf_policy=args.nan_inf_policy,
        )
        self._loop = loop
        if checkpoint is not None:
            self.checkpointer.load_for_resume(checkpoint, loop)
        self.checkpointer.prepare_buffers()
        self._label_check_step = self.state.global_step
        self.callback_handler.set_objects(
            model=self.model, optimizer=self.optimizer, lr_scheduler=self.lr_scheduler,
            train_dataloader=train_dataloader,
        )
        logger.info(
            "***** Running training *****  examples=%s epochs=%s batch size=%s accumulation=%s steps=%s",
            self.num_examples(train_dataloader) if steps_per_epoch is not None else "unknown", num_epochs,
            batch_size, ga, max_steps,
        )
        start_time, start_step = time.time(), self.state.global_step
        self._count_tokens = bool(args.include_tokens_per_second)
        self._tokens_seen = 0
        self.current_flos = 0.0
        cls = type(self)
        self._step_context = (
            cls.compute_loss_context_manager is not Trainer.compute_loss_context_manager
            or cls.autocast_smart_context_manager is not Trainer.autocast_smart_context_manager
            or self.strategy.autocasts
        )
        # the default FLOPs estimate (6 x trainable parameters x tokens) as one multiply per step,
        # unless a subclass or the model counts FLOPs itself
        self._flos_per_token = None
        if cls.floating_point_ops is Trainer.floating_point_ops and getattr(self.model, "floating_point_ops", None) is None:
            self._flos_per_token = float(6 * _trainable_parameters(self.model))
        debugger = DebugUnderflowOverflow(self.model) if DebugOption.UNDERFLOW_OVERFLOW in args.debug else None
        try:
            with self.checkpointer.preemption_guard(loop):
                train_loss = loop.run()
        except KeyboardInterrupt:  # Ctrl-C stops at once, without a save (see docs/reliability.md)
            self.checkpointer.interrupted()
            raise
        finally:
            if debugger is not None:
                debugger.remove()
        self.control = loop.control
        flos_this_run = self.current_flos
        self.store_flos()
        steps_run = self.state.global_step - start_step
        metrics = speed_metrics(
            "train", start_time, num_samples=steps_run * batch_size * ga,
            num_steps=steps_run, num_tokens=self._tokens_seen if args.include_tokens_per_second else None,
        )
        metrics["total_flos"] = self.state.total_flos
        metrics["train_loss"] = train_loss
        peak = device_peak_flops(self.strategy.device, self.precision_dtype())
        if peak:
            mfu = model_flops_utilization(flos_this_run, metrics["train_runtime"], peak * self.strategy.world_size)
            if mfu is not None:
                metrics["train_mfu"] = round(mfu, 4)
        self.is_in_train = False
        if args.load_best_model_at_end:
            self.checkpointer.load_best_model()
        self._memory_tracker.stop_and_update_metrics(metrics)
        self.log(metrics)
        self.checkpointer.finish()
        if self.is_world_process_zero() and args.should_save:
            plot_training_curves(self.state.log_history, args.output_dir)
        self.control = self.callback_handler.on_train_end(args, self.state, self.control)
        return TrainOutput(self.state.global_step, train_loss, metrics)

    def precision_dtype(self) -> Any:
        """The compute dtype of the forward pass (for peak-FLOPs look-ups)."""
        return getattr(self.precision, "dtype", "tf32")

    def store_flos(self) -> None:
        """Add the FLOPs counted since the last call to ``state.total_flos``."""
        self.state.total_flos += self.current_flos
        self.current_flos = 0.0

    def _log_training(self, logs: dict[str, float]) -> None:
        self.store_flos()
        self.log(logs)

    def _evaluate_during_training(self, ignore_keys: list[str] | None) -> dict[str, float]:
        if isinstance(self.eval_dataset, dict):
            metrics: dict[str, float] = {}
            for name, dataset in self.eval_dataset.items():
                metrics.update(self.evaluate(dataset, ignore_keys=ignore_keys, metric_key_prefix=f"eval_{name}"))
            return metrics
        return self.evaluate(ignore_keys=ignore_keys)

    def _save_checkpoint(self, metrics: dict[str, float] | None) -> None:
        self.checkpointer.save_checkpoint(metrics)

    # ----------------------------------------------------------------- evaluation
    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """Evaluate and return ``{prefix}_*`` metrics (loss, compute_metrics, speed).

        With a dict of datasets (passed or set on the trainer), each is evaluated with
        the prefix ``{prefix}_{name}`` and the metrics are merged.
        """
        datasets = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(datasets, dict):
            metrics: dict[str, float] = {}
            for name, dataset in datasets.items():
                metrics.update(self.evaluate(dataset, ignore_keys, f"{metric_key_prefix}_{name}"))
            return metrics
        self._memory_tracker.start("eval")
        dataloader = self.get_eval_dataloader(eval_dataset)
        start = time.time()
        output = self.evaluation_loop(
            dataloader, description="Evaluation",
            prediction_loss_only=True if self.compute_metrics is None else None,
            ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix,
        )
        output.metrics.update(self._eval_speed(metric_key_prefix, start, output.num_samples))
        self.log(output.metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, output.metrics)
        self._memory_tracker.stop_and_update_metrics(output.metrics)
        return output.metrics

    def _eval_speed(self, prefix: str, start: float, num_samples: int | None) -> dict[str, float]:
        n = num_samples or 0
        return speed_metrics(prefix, start, num_samples=n, num_steps=math.ceil(n / self.args.eval_batch_size))

    def predict(
        self, test_dataset: Any, ignore_keys: list[str] | None = None, metric_key_prefix: str = "test"
    ) -> PredictionOutput:
        """Predict on ``test_dataset``: numpy predictions, label ids (when present), metrics."""
        self._memory_tracker.start("test")
        dataloader = self.get_test_dataloader(test_dataset)
        start = time.time()
        output = self.evaluation_loop(
            dataloader, description="Prediction", ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix
        )
        output.metrics.update(self._eval_speed(metric_key_prefix, start, output.num_samples))
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, output.metrics)
        self._memory_tracker.stop_and_update_metrics(output.metrics)
        return PredictionOutput(output.predictions, output.label_ids, output.metrics)

    def evaluation_loop(
        self, dataloader: DataLoader, description: str, prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval",
    ) -> EvalLoopOutput:
        """Run the `EvaluationLoop` (shared by evaluate and predict)."""
        args = self.args
        # the unwrapped module: a DDP forward is a collective, and processes may hold one batch less
        model = self.strategy.unwrap(self.model_wrapped) if self.is_in_train else self.model.to(self.strategy.device)
        half = None if self.is_in_train else "fp16" if args.fp16_full_eval else "bf16" if args.bf16_full_eval else None
        example = (lambda: self._prepare_inputs(next(iter(dataloader)))) if args.jit_mode_eval else None
        model, jit_seconds = inference_model(model, half=half, jit_example=example)
        self.callback_handler.set_objects(eval_dataloader=dataloader)
        dataloader = self.strategy.setup_dataloader(dataloader)  # e.g. XLA's MpDeviceLoader
        loop = EvaluationLoop(
            prediction_step=self.prediction_step, compute_metrics=self.compute_metrics,
            preprocess_logits_for_metrics=self.preprocess_logits_for_metrics,
            prediction_loss_only=args.prediction_loss_only, include_inputs_for_metrics=args.include_inputs_for_metrics,
            eval_accumulation_steps=args.eval_accumulation_steps, callbacks=self.callback_handler,
            args=args, state=self.state, control=self.control, strategy=self.strategy,
            gather=OrderedGather(self.strategy) if self.strategy.world_size > 1 else None,
        )
        output = loop.run(
            model, dataloader, description=description, prediction_loss_only=prediction_loss_only,
            ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix,
        )
        if jit_seconds is not None:
            output.metrics[f"{metric_key_prefix}_jit_compilation_time"] = jit_seconds
        self.control = loop.control
        return output

    # ----------------------------------------------------------------- logging
    def log(self, logs: dict[str, float]) -> None:
        """Record ``logs`` in ``state.log_history`` (with epoch and step) and fire ``on_log``."""
        if self.state.epoch is not None:
            logs["epoch"] = round(self.state.epoch, 2)
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self.control = self.callback_handler.on_log(self.args, self.state, self.control, logs)

    def metrics_format(self, metrics: dict[str, float]) -> dict[str, Any]:
        """Metrics made readable (runtimes as h:mm:ss, memory in MB, FLOPs in GF)."""
        return metrics_format(metrics)

    def log_metrics(self, split: str, metrics: dict[str, float]) -> None:
        """Print a metrics block for ``split`` (main process only)."""
        if self.is_world_process_zero():
            print(format_metrics_table(split, metrics))

    def save_metrics(self, split: str, metrics: dict[str, float], combined: bool = True) -> None:
        """Write ``{split}_results.json`` (and merge into ``all_results.json``) in ``output_dir``."""
        if self.is_world_process_zero():
            write_metrics_json(self.args.output_dir, split, metrics, combined=combined)

    # ----------------------------------------------------------------- saving
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the weights (``model.safetensors`` by default), tokenizer and arguments;
        with ``push_to_hub=True`` also push them (`push_to_hub`, "Model save")."""
        self.checkpointer.save_model(output_dir or self.args.output_dir)
        if self.args.push_to_hub and not _internal_call:
            self.push_to_hub(commit_message="Model save")

    def save_state(self) -> None:
        """Write ``trainer_state.json`` to ``output_dir`` (main process only)."""
        if self.is_world_process_zero():
            storage.makedirs(self.args.output_dir)
            path = storage.join(self.args.output_dir, "trainer_state.json")
            storage.write_bytes(path, self.state.to_json_string().encode("utf-8"))

    # ----------------------------------------------------------------- search, model card, hub
    def hyperparameter_search(
        self, hp_space: Callable[[Any], dict[str, Any]] | None = None,
        compute_objective: Callable[[dict[str, float]], Any] | None = None, n_trials: int = 20,
        direction: str | list[str] = "minimize", backend: Any = None, hp_name: Callable[[Any], str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Search hyperparameters with Optuna (default) or Ray Tune; needs ``model_init``.

        Each trial trains from a fresh ``model_init`` model with its values set on a copy
        of the arguments, in ``output_dir/run-<n>`` (or ``hp_name(trial)``). The objective
        (``compute_objective(metrics)``; default: the eval loss, or the sum of the other
        metrics) is taken after each evaluation, which also lets the backend prune.

        Returns:
            `BestRun` (run_id, objective, hyperparameters, run_summary), or a list of them
            when ``direction`` is a list (multi-objective). See docs/search.md.
        """
        return run_hyperparameter_search(
            self, hp_space=hp_space, compute_objective=compute_objective, n_trials=n_trials,
            direction=direction, backend=backend, hp_name=hp_name, **kwargs,
        )

    def create_model_card(
        self, language: str | None = None, license: str | None = None, tags: str | list[str] | None = None,
        model_name: str | None = None, finetuned_from: str | None = None, tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None, dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> str | None:
        """Write ``output_dir/README.md``: metadata header, hyperparameters, evaluation
        results per evaluation, framework versions. Returns its path (main process)."""
        return create_trainer_model_card(
            self, language=language, license=license, tags=tags, model_name=model_name,
            finetuned_from=finetuned_from, tasks=tasks, dataset_tags=dataset_tags, dataset=dataset,
            dataset_args=dataset_args,
        )

    def push_to_hub(self, commit_message: str | None = "End of training", blocking: bool = True, **kwargs: Any) -> Any:
        """Save the model and its card into ``output_dir`` and push them to ``hub_model_id``
        (a store URL or a Hub repository; see docs/hub.md). ``kwargs`` go to
        `create_model_card`. Returns the store URL, or a `Future` of it when not blocking."""
        if self.hub_sync is None:
            self.hub_sync = HubSync(self)
        return self.hub_sync.push_to_hub(commit_message, blocking=blocking, **kwargs)


def _trainable_parameters(model: nn.Module) -> int:
    """Elements of the parameters that require gradients (the FLOPs estimate's count)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _batch_tokens(inputs: Any) -> int:
    """Tokens in a batch: elements of ``input_ids``, else the number of samples."""
    if type(inputs) is dict or isinstance(inputs, Mapping):
        ids = inputs.get("input_ids")
        if isinstance(ids, torch.Tensor):
            return ids.numel()
    return default_steps.count_items(inputs, ())


def _check_label_names(label_names: list[str] | None, inputs: Any) -> None:
    """Explicit ``label_names`` must be keys of the training batches."""
    if label_names and isinstance(inputs, Mapping) and not any(name in inputs for name in label_names):
        raise ValueError(
            f"label_names={label_names!r}: none of them is in the training batch, whose keys are "
            f"{sorted(map(str, inputs))}. Set label_names to the batch keys that hold the labels."
        )


def _prefixed(metric: str) -> str:
    return metric if metric.startswith("eval_") else f"eval_{metric}"


def _logger_callbacks(args: TrainingArguments, is_global_zero: bool) -> list[TrainerCallback]:
    """One `LoggerCallback` feeding the ``report_to`` integrations (none when there are none)."""
    loggers = loggers_from_report_to(
        args.report_to, logging_dir=args.logging_dir, run_name=args.run_name, output_dir=args.output_dir
    )
    return [LoggerCallback(LoggerCollection(loggers, is_global_zero=is_global_zero))] if loggers else []


class _BatchSizeSearch:
    """``auto_find_batch_size``: each retry restarts from the weights training began with,
    and doubles gradient accumulation whenever the batch halves, so the effective batch
    (and with it the result) stays the same."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.start_batch_size = trainer.args.train_batch_size
        self.initial_weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        self.attempts = 0

    def prepare(self, batch_size: int) -> int:
        """Reset for an attempt at ``batch_size``; return the accumulation steps to use."""
        t = self.trainer
        self.attempts += 1
        if self.attempts > 1:
            t.model.load_state_dict(self.initial_weights)
            if t._optimizer_given:
                t.optimizer.state.clear()  # the user's optimizer: keep it, drop its moments
            else:
                t.optimizer, t.lr_scheduler = None, None
            t.control = TrainerControl()
        factor = max(1, self.start_batch_size // batch_size)
        accumulation = t.args.gradient_accumulation_steps * factor
        if factor > 1:
            logger.warning(
                "auto_find_batch_size: training with per-device batch %d and gradient accumulation %d (effective "
                "batch unchanged: %d).", batch_size, accumulation, batch_size * accumulation,
            )
        return accumulation
