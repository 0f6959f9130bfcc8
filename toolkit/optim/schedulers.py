"""The learning-rate schedules of the HF Trainer, as torch schedulers.

Each schedule is a `torch.optim.lr_scheduler.LambdaLR` whose multiplier is a
`functools.partial` over a module-level function, so a scheduler can be pickled,
deep-copied and checkpointed through ``state_dict()``. With ``s`` the number of
``scheduler.step()`` calls so far, ``w`` the warmup steps and ``T`` the training steps,
the multiplier of the initial learning rate is:

========================  ===================================================================
name                      multiplier for ``s >= w`` (``s / max(1, w)`` while ``s < w``)
========================  ===================================================================
constant                  1 (no warmup)
constant_with_warmup      1
linear                    ``max(0, (T - s) / max(1, T - w))``
cosine                    ``max(0, (1 + cos(pi * 2 * num_cycles * p)) / 2)``, ``p = (s - w) / max(1, T - w)``
cosine_with_restarts      0 if ``p >= 1`` else ``max(0, (1 + cos(pi * ((num_cycles * p) % 1))) / 2)``
polynomial                ``lr_end / lr`` if ``s > T`` else ``((lr - lr_end) * (1 - (s - w) / (T - w)) ** power + lr_end) / lr``
inverse_sqrt              ``1 / sqrt((s + timescale - w) / timescale)``, ``timescale`` defaults to ``w or 10000``
reduce_lr_on_plateau      `torch.optim.lr_scheduler.ReduceLROnPlateau` (steps on a metric)
========================  ===================================================================
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

from toolkit.types import SchedulerType

__all__ = [
    "get_scheduler",
    "get_constant_schedule",
    "get_constant_schedule_with_warmup",
    "get_linear_schedule_with_warmup",
    "get_cosine_schedule_with_warmup",
    "get_cosine_with_hard_restarts_schedule_with_warmup",
    "get_polynomial_decay_schedule_with_warmup",
    "get_inverse_sqrt_schedule",
    "get_reduce_on_plateau_schedule",
    "TYPE_TO_SCHEDULER_FUNCTION",
]


# --- multipliers (module level, so that partials over them pickle) ---------------------


def _constant(step: int) -> float:
    return 1.0


def _warmup(step: int, num_warmup_steps: int) -> float:
    return float(step) / float(max(1, num_warmup_steps))


def _constant_with_warmup(step: int, *, num_warmup_steps: int) -> float:
    if step < num_warmup_steps:
        return _warmup(step, num_warmup_steps)
    return 1.0


def _linear_with_warmup(step: int, *, num_warmup_steps: int, num_training_steps: int) -> float:
    if step < num_warmup_steps:
        return _warmup(step, num_warmup_steps)
    remaining = float(num_training_steps - step) / float(max(1, num_training_steps - num_warmup_steps))
    return max(0.0, remaining)


def _progress(step: int, num_warmup_steps: int, num_training_steps: int) -> float:
    return float(step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))


def _cosine_with_warmup(
    step: int, *, num_warmup_steps: int, num_training_steps: int, num_cycles: float
) -> float:
    if step < num_warmup_steps:
        return _warmup(step, num_warmup_steps)
    progress = _progress(step, num_warmup_steps, num_training_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 2.0 * float(num_cycles) * progress)))


def _cosine_with_hard_restarts(
    step: int, *, num_warmup_steps: int, num_training_steps: int, num_cycles: int
) -> float:
    if step < num_warmup_steps:
        return _warmup(step, num_warmup_steps)
    progress = _progress(step, num_warmup_steps, num_training_steps)
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((float(num_cycles) * progress) % 1.0))))


def _polynomial_decay_with_warmup(
    step: int,
    *,
    num_warmup_steps: int,
    num_training_steps: int,
    lr_init: float,
    lr_end: float,
    power: float,
) -> float:
    if step < num_warmup_steps:
        return _warmup(step, num_warmup_steps)
    if step > num_training_steps:
        return lr_end / lr_init
    decay_steps = max(1, num_training_steps - num_warmup_steps)
    remaining = 1.0 - (step - num_warmup_steps) / decay_steps
    return ((lr_init - lr_end) * remaining**power + lr_end) / lr_init


def _inverse_sqrt(step: int, *, num_warmup_steps: int, timescale: int) -> float:
    if step < num_warmup_steps:
        return _warmup(step, num_warmup_steps)
    shift = timescale - num_warmup_steps
    return 1.0 / math.sqrt((step + shift) / timescale)


# --- validation --------------------------------------------------------------------------


def _check_steps(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}.")
    return value


# --- builders ----------------------------------------------------------------------------


def get_constant_schedule(optimizer: Optimizer, last_epoch: int = -1) -> LambdaLR:
    """Keep the optimizer's learning rate unchanged.

    Args:
        optimizer: The optimizer whose learning rate to schedule.
        last_epoch: Index of the last step when resuming (-1 to start fresh).

    Returns:
        The scheduler.
    """
    return LambdaLR(optimizer, _constant, last_epoch=last_epoch)


def get_constant_schedule_with_warmup(
    optimizer: Optimizer, num_warmup_steps: int, last_epoch: int = -1
) -> LambdaLR:
    """Warm up linearly from 0 over ``num_warmup_steps``, then hold the learning rate.

    Args:
        optimizer: The optimizer whose learning rate to schedule.
        num_warmup_steps: Steps of the linear warmup.
        last_epoch: Index of the last step when resuming (-1 to start fresh).

    Returns:
        The scheduler.

    Raises:
        ValueError: If ``num_warmup_steps`` is not a non-negative int.
    """
    _check_steps("num_warmup_steps", num_warmup_steps)
    multiplier = partial(_constant_with_warmup, num_warmup_steps=num_warmup_steps)
    return LambdaLR(optimizer, multiplier, last_epoch=last_epoch)


def get_linear_schedule_with_warmup(
    optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int, last_epoch: int = -1
) -> LambdaLR:
    """Warm up linearly, then decay linearly to 0 at ``num_training_steps``.

    Args:
        optimizer: The optimizer whose learning rate to schedule.
        num_warmup_steps: Steps of the linear warmup.
        num_training_steps: Total number of training steps.
        last_epoch: Index of the last step when resuming (-1 to start fresh).

    Returns:
        The scheduler.

    Raises:
        ValueError: If a step count is not a non-negative int.
    """
    _check_steps("num_warmup_steps", num_warmup_steps)
    _check_steps("num_training_steps", num_training_steps)
    multiplier = partial(
        _linear_with_warmup, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps
    )
    return LambdaLR(optimizer, multiplier, last_epoch=last_epoch)


def get_cosine_schedule_with_warmup(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    last_epoch: int = -1,
) -> LambdaLR:
    """Warm up linearly, then follow a cosine from the initial learning rate.

    Args:
        optimizer: The optimizer whose learning rate to schedule.
        num_warmup_steps: Steps of the linear warmup.
        num_training_steps: Total number of training steps.
        num_cycles: Number of cosine periods after warmup (0.5: one half-cosine down to 0).
        last_epoch: Index of the last step when resuming (-1 to start fresh).

    Returns:
        The scheduler.

    Raises:
        ValueError: If a step count is not a non-negative int.
    """
    _check_steps("num_warmup_steps", num_warmup_steps)
    _check_steps("num_training_steps", num_training_steps)
    multiplier = partial(
        _cosine_with_warmup,
        num_warmup_steps=num_warmup_steps,
        num_training_steps=num_training_steps,
        num_cycles=num_cycles,
    )
    return LambdaLR(optimizer, multiplier, last_epoch=last_epoch)


def get_cosine_with_hard_restarts_schedule_with_warmup(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: int = 1,
    last_epoch: int = -1,
) -> LambdaLR:
    """Warm up linearly, then ``num_cycles`` half-cosines each restarting at the initial lr.

    Args:
        optimizer: The optimizer whose learning rate to schedule.
        num_warmup_steps: Steps of the linear warmup.
        num_training_steps: Total number of training steps.
        num_cycles: Number of hard restarts.
        last_epoch: Index of the last step when resuming (-1 to start fresh).

    Returns:
        The scheduler.

    Raises:
        ValueError: If a step count is not a non-negative int.
    """
    _check_steps("num_warmup_steps", num_warmup_steps)
    _check_steps("num_training_steps", num_training_steps)
    multiplier = partial(
        _cosine_with_hard_restarts,
        num_warmup_steps=num_warmup_steps,
        num_training_steps=num_training_steps,
        num_cycles=num_cycles,
    )
    return LambdaLR(optimizer, multiplier, last_epoch=last_epoch)


def get_polynomial_decay_schedule_with_warmup(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    lr_end: float = 1e-7,
    power: float = 1.0,
    last_epoch: int = -1,
) -> LambdaLR:
    """Warm up linearly, then decay polynomially from the optimizer's lr to ``lr_end``.

    The initial learning rate is ``optimizer.defaults["lr"]``; past ``num_training_steps``
    the learning rate stays at ``lr_end``.

    Args:
        optimizer: The optimizer whose learning rate to schedule.
        num_warmup_steps: Steps of the linear warmup.
        num_training_steps: Total number of training steps.
        lr_end: The final learning rate.
        power: Power of the decay (1.0 is linear decay to ``lr_end``).
        last_epoch: Index of the last step when resuming (-1 to start fresh).

    Returns:
        The scheduler.

    Raises:
        ValueError: If ``lr_end`` is not smaller than the initial learning rate, or a step
            count is not a non-negative int.
    """
    _check_steps("num_warmup_steps", num_warmup_steps)
    _check_steps("num_training_steps", num_training_steps)
    lr_init = optimizer.defaults["lr"]
    if not lr_init > lr_end:
        raise ValueError(f"lr_end ({lr_end}) must be smaller than the initial lr ({lr_init}).")
    multiplier = partial(
        _polynomial_decay_with_warmup,
        num_warmup_steps=num_warmup_steps,
        num_training_steps=num_training_steps,
        lr_init=lr_init,
        lr_end=lr_end,
        power=power,
    )
    return LambdaLR(optimizer, multiplier, last_epoch=last_epoch)


def get_inverse_sqrt_schedule(
    optimizer: Optimizer,
    num_warmup_steps: int,
    timescale: int | None = None,
    last_epoch: int = -1,
) -> LambdaLR:
    """Warm up linearly, then decay as the inverse square root of the step.

    Args:
        optimizer: The optimizer whose learning rate to schedule.
        num_warmup_steps: Steps of the linear warmup.
        timescale: Steps over which the decay is measured; defaults to
            ``num_warmup_steps``, or 10,000 when that is 0.
        last_epoch: Index of the last step when resuming (-1 to start fresh).

    Returns:
        The scheduler.

    Raises:
        ValueError: If ``num_warmup_steps`` is not a non-negative int or ``timescale`` is
            not a positive number.
    """
    _check_steps("num_warmup_steps", num_warmup_steps)
    if timescale is None:
        timescale = num_warmup_steps or 10_000
    if timescale <= 0:
        raise ValueError(f"timescale must be > 0, got {timescale!r}.")
    multiplier = partial(_inverse_sqrt, num_warmup_steps=num_warmup_steps, timescale=timescale)
    return LambdaLR(optimizer, multiplier, last_epoch=last_epoch)


def get_reduce_on_plateau_schedule(optimizer: Optimizer, **kwargs: Any) -> ReduceLROnPlateau:
    """Reduce the learning rate when a metric stops improving.

    Call ``scheduler.step(metric)`` after each evaluation.

    Args:
        optimizer: The optimizer whose learning rate to schedule.
        **kwargs: Passed to `torch.optim.lr_scheduler.ReduceLROnPlateau` (``mode``,
            ``factor``, ``patience``, ...).

    Returns:
        The scheduler.
    """
    return ReduceLROnPlateau(optimizer, **kwargs)


TYPE_TO_SCHEDULER_FUNCTION: dict[SchedulerType, Any] = {
    SchedulerType.LINEAR: get_linear_schedule_with_warmup,
    SchedulerType.COSINE: get_cosine_schedule_with_warmup,
    SchedulerType.COSINE_WITH_RESTARTS: get_cosine_with_hard_restarts_schedule_with_warmup,
    SchedulerType.POLYNOMIAL: get_polynomial_decay_schedule_with_warmup,
    SchedulerType.CONSTANT: get_constant_schedule,
    SchedulerType.CONSTANT_WITH_WARMUP: get_constant_schedule_with_warmup,
    SchedulerType.INVERSE_SQRT: get_inverse_sqrt_schedule,
    SchedulerType.REDUCE_ON_PLATEAU: get_reduce_on_plateau_schedule,
}
"""Schedule name -> builder."""


def get_scheduler(
    name: str | SchedulerType,
    optimizer: Optimizer,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    scheduler_specific_kwargs: dict[str, Any] | None = None,
) -> LRScheduler | ReduceLROnPlateau:
    """Build a learning-rate scheduler by name.

    ``constant`` and ``reduce_lr_on_plateau`` need neither step count;
    ``constant_with_warmup`` and ``inverse_sqrt`` need ``num_warmup_steps``; the others
    need both. A step count a schedule does not use is ignored.

    Args:
        name: A `SchedulerType` value, e.g. ``"linear"``.
        optimizer: The optimizer whose learning rate to schedule.
        num_warmup_steps: Steps of the linear warmup.
        num_training_steps: Total number of training steps.
        scheduler_specific_kwargs: Extra keyword arguments of the builder, e.g.
            ``{"num_cycles": 2}``, ``{"lr_end": 1e-6, "power": 2.0}``, ``{"timescale": 100}``
            or ReduceLROnPlateau's ``{"patience": 3}``.

    Returns:
        The scheduler.

    Raises:
        ValueError: For an unknown name (listing accepted names), a missing step count
            (naming it), or a keyword argument the schedule does not take.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> sched = get_scheduler("linear", opt, num_warmup_steps=2, num_training_steps=10)
        >>> sched.get_last_lr()
        [0.0]
    """
    try:
        kind = SchedulerType(name)
    except ValueError:
        accepted = ", ".join(repr(member.value) for member in SchedulerType)
        raise ValueError(f"name={name!r} is not a scheduler type; accepted values: {accepted}.") from None
    builder = TYPE_TO_SCHEDULER_FUNCTION[kind]
    extra = dict(scheduler_specific_kwargs or {})

    try:
        if kind in (SchedulerType.CONSTANT, SchedulerType.REDUCE_ON_PLATEAU):
            return builder(optimizer, **extra)
        if num_warmup_steps is None:
            raise ValueError(f"The {kind.value!r} scheduler requires num_warmup_steps; please provide it.")
        if kind in (SchedulerType.CONSTANT_WITH_WARMUP, SchedulerType.INVERSE_SQRT):
            return builder(optimizer, num_warmup_steps=num_warmup_steps, **extra)
        if num_training_steps is None:
            raise ValueError(f"The {kind.value!r} scheduler requires num_training_steps; please provide it.")
        return builder(
            optimizer, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps, **extra
        )
    except TypeError as err:
        if extra and "unexpected keyword argument" in str(err):
            raise ValueError(
                f"scheduler_specific_kwargs={extra!r} has a key the {kind.value!r} scheduler does not "
                f"accept ({err})."
            ) from err
        raise
