"""Optimizers, weight-decay parameter groups and learning-rate schedules.

Everything takes plain keyword parameters, so it works without `TrainingArguments`:

- `create_optimizer` / `get_optimizer_cls_and_kwargs`: `OptimizerNames` -> optimizer.
- `param_groups_for_weight_decay`: no decay on biases and normalisation weights;
  `fit_param_groups` loads a state saved with another grouping of equal settings.
- `AdamW` (HF ``adamw_hf`` semantics) and `Adafactor`.
- `get_scheduler` and the individual schedule builders (all `SchedulerType` values).
"""

from toolkit.optim.adafactor import Adafactor
from toolkit.optim.adamw import AdamW
from toolkit.optim.optimizers import (
    NORM_LAYER_TYPES,
    create_optimizer,
    fit_param_groups,
    get_decay_parameter_names,
    get_optimizer_cls_and_kwargs,
    get_parameter_names,
    is_norm_module,
    optimizer_state_like,
    param_groups_for_weight_decay,
    parse_optim_args,
)
from toolkit.optim.schedulers import (
    TYPE_TO_SCHEDULER_FUNCTION,
    get_constant_schedule,
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_cosine_with_hard_restarts_schedule_with_warmup,
    get_inverse_sqrt_schedule,
    get_linear_schedule_with_warmup,
    get_polynomial_decay_schedule_with_warmup,
    get_reduce_on_plateau_schedule,
    get_scheduler,
)

__all__ = [
    "Adafactor",
    "AdamW",
    "NORM_LAYER_TYPES",
    "TYPE_TO_SCHEDULER_FUNCTION",
    "create_optimizer",
    "fit_param_groups",
    "get_constant_schedule",
    "get_constant_schedule_with_warmup",
    "get_cosine_schedule_with_warmup",
    "get_cosine_with_hard_restarts_schedule_with_warmup",
    "get_decay_parameter_names",
    "get_inverse_sqrt_schedule",
    "get_linear_schedule_with_warmup",
    "get_optimizer_cls_and_kwargs",
    "get_parameter_names",
    "get_polynomial_decay_schedule_with_warmup",
    "get_reduce_on_plateau_schedule",
    "get_scheduler",
    "is_norm_module",
    "optimizer_state_like",
    "param_groups_for_weight_decay",
    "parse_optim_args",
]
