"""Learning-rate schedules against closed-form formulas, errors, and (de)serialisation."""

from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch

from toolkit.optim import (
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
from toolkit.types import SchedulerType

LR = 0.5
W = 4  # warmup steps
T = 20  # training steps
RUN = 25  # run past the end to check the tails


def _optimizer(lr: float = LR) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def _observed(scheduler, steps: int = RUN) -> list[float]:
    lrs = []
    for _ in range(steps):
        lrs.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return lrs


# Closed forms written independently of the implementation: lr(s) for s = 0, 1, ...
def warm(s: int) -> float:
    return LR * s / W


def expected_linear(s: int) -> float:
    return warm(s) if s < W else LR * max(0.0, (T - s) / (T - W))


def expected_cosine(s: int, cycles: float = 0.5) -> float:
    if s < W:
        return warm(s)
    frac = (s - W) / (T - W)
    return LR * max(0.0, 0.5 + 0.5 * math.cos(2 * math.pi * cycles * frac))


def expected_hard_restarts(s: int, cycles: int = 1) -> float:
    if s < W:
        return warm(s)
    frac = (s - W) / (T - W)
    if frac >= 1:
        return 0.0
    return LR * 0.5 * (1 + math.cos(math.pi * math.modf(cycles * frac)[0]))


def expected_polynomial(s: int, lr_end: float = 1e-7, power: float = 1.0) -> float:
    if s < W:
        return warm(s)
    if s > T:
        return lr_end
    return lr_end + (LR - lr_end) * ((T - s) / (T - W)) ** power


def expected_inverse_sqrt(s: int, timescale: int | None = None) -> float:
    tau = timescale if timescale is not None else (W or 10_000)
    if s < W:
        return warm(s)
    return LR * math.sqrt(tau / (s - W + tau))


CASES = {
    "constant": (lambda opt: get_constant_schedule(opt), lambda s: LR),
    "constant_with_warmup": (
        lambda opt: get_constant_schedule_with_warmup(opt, W),
        lambda s: warm(s) if s < W else LR,
    ),
    "linear": (lambda opt: get_linear_schedule_with_warmup(opt, W, T), expected_linear),
    "cosine": (lambda opt: get_cosine_schedule_with_warmup(opt, W, T), expected_cosine),
    "cosine_1.5_cycles": (
        lambda opt: get_cosine_schedule_with_warmup(opt, W, T, num_cycles=1.5),
        lambda s: expected_cosine(s, 1.5),
    ),
    "hard_restarts": (
        lambda opt: get_cosine_with_hard_restarts_schedule_with_warmup(opt, W, T),
        expected_hard_restarts,
    ),
    "hard_restarts_3": (
        lambda opt: get_cosine_with_hard_restarts_schedule_with_warmup(opt, W, T, num_cycles=3),
        lambda s: expected_hard_restarts(s, 3),
    ),
    "polynomial": (lambda opt: get_polynomial_decay_schedule_with_warmup(opt, W, T), expected_polynomial),
    "polynomial_pow2": (
        lambda opt: get_polynomial_decay_schedule_with_warmup(opt, W, T, lr_end=0.1, power=2.0),
        lambda s: expected_polynomial(s, 0.1, 2.0),
    ),
    "inverse_sqrt": (lambda opt: get_inverse_sqrt_schedule(opt, W), expected_inverse_sqrt),
    "inverse_sqrt_ts": (
        lambda opt: get_inverse_sqrt_schedule(opt, W, timescale=10),
        lambda s: expected_inverse_sqrt(s, 10),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_lr_at_every_step(case: str) -> None:
    build, formula = CASES[case]
    observed = _observed(build(_optimizer()))
    expected = [formula(s) for s in range(RUN)]
    assert observed == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_warmup_starts_at_zero_and_reaches_peak() -> None:
    for name in (
        "linear",
        "cosine",
        "cosine_with_restarts",
        "polynomial",
        "constant_with_warmup",
        "inverse_sqrt",
    ):
        lrs = _observed(get_scheduler(name, _optimizer(), num_warmup_steps=W, num_training_steps=T), W + 1)
        assert lrs[0] == 0.0, name
        assert lrs[1 : W + 1] == pytest.approx([LR * s / W for s in range(1, W + 1)]), name


def test_inverse_sqrt_without_warmup_uses_10000_timescale() -> None:
    lrs = _observed(get_inverse_sqrt_schedule(_optimizer(), 0), 5)
    assert lrs == pytest.approx([LR * math.sqrt(10_000 / (10_000 + s)) for s in range(5)])


def test_get_scheduler_dispatches_with_specific_kwargs() -> None:
    sched = get_scheduler(
        "polynomial",
        _optimizer(),
        num_warmup_steps=W,
        num_training_steps=T,
        scheduler_specific_kwargs={"lr_end": 0.1, "power": 2.0},
    )
    assert _observed(sched) == pytest.approx([expected_polynomial(s, 0.1, 2.0) for s in range(RUN)])
    sched = get_scheduler(SchedulerType.COSINE_WITH_RESTARTS, _optimizer(), W, T, {"num_cycles": 3})
    assert _observed(sched) == pytest.approx([expected_hard_restarts(s, 3) for s in range(RUN)])
    sched = get_scheduler(
        "inverse_sqrt", _optimizer(), num_warmup_steps=W, scheduler_specific_kwargs={"timescale": 10}
    )
    assert _observed(sched) == pytest.approx([expected_inverse_sqrt(s, 10) for s in range(RUN)])
    # The step counts a schedule does not use are ignored.
    assert _observed(get_scheduler("constant", _optimizer(), 3, 7), 3) == [LR] * 3


def test_reduce_on_plateau() -> None:
    opt = _optimizer()
    sched = get_scheduler(
        "reduce_lr_on_plateau", opt, scheduler_specific_kwargs={"patience": 1, "factor": 0.5}
    )
    assert isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
    for _ in range(3):
        sched.step(1.0)  # no improvement after the first value
    assert opt.param_groups[0]["lr"] == pytest.approx(LR * 0.5)
    assert isinstance(
        get_reduce_on_plateau_schedule(_optimizer()), torch.optim.lr_scheduler.ReduceLROnPlateau
    )


@pytest.mark.parametrize(
    "name", ["linear", "cosine", "cosine_with_restarts", "polynomial", "constant_with_warmup", "inverse_sqrt"]
)
def test_missing_warmup_named(name: str) -> None:
    with pytest.raises(ValueError, match="num_warmup_steps"):
        get_scheduler(name, _optimizer(), num_training_steps=T)


@pytest.mark.parametrize("name", ["linear", "cosine", "cosine_with_restarts", "polynomial"])
def test_missing_training_steps_named(name: str) -> None:
    with pytest.raises(ValueError, match="num_training_steps"):
        get_scheduler(name, _optimizer(), num_warmup_steps=W)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"accepted values.*'linear'.*'reduce_lr_on_plateau'"):
        get_scheduler("linearr", _optimizer(), W, T)
    with pytest.raises(ValueError, match=r"lr_end.*must be smaller"):
        get_polynomial_decay_schedule_with_warmup(_optimizer(lr=1e-3), W, T, lr_end=1e-2)
    with pytest.raises(ValueError, match="lr_end"):
        get_scheduler("polynomial", _optimizer(lr=1e-3), W, T, {"lr_end": 1e-3})
    with pytest.raises(ValueError, match="num_warmup_steps"):
        get_linear_schedule_with_warmup(_optimizer(), -1, T)
    with pytest.raises(ValueError, match="num_training_steps"):
        get_cosine_schedule_with_warmup(_optimizer(), W, 2.5)
    with pytest.raises(ValueError, match="scheduler_specific_kwargs"):
        get_scheduler("linear", _optimizer(), W, T, {"num_cycles": 2})


@pytest.mark.parametrize("name", [t.value for t in SchedulerType if t is not SchedulerType.REDUCE_ON_PLATEAU])
def test_pickle_deepcopy_and_state_dict(name: str) -> None:
    sched = get_scheduler(name, _optimizer(), num_warmup_steps=W, num_training_steps=T)
    _observed(sched, 7)
    expected_tail = _observed(copy.deepcopy(sched), 5)
    assert _observed(pickle.loads(pickle.dumps(sched)), 5) == expected_tail

    state = sched.state_dict()
    fresh = get_scheduler(name, _optimizer(), num_warmup_steps=W, num_training_steps=T)
    fresh.load_state_dict(pickle.loads(pickle.dumps(state)))
    assert fresh.get_last_lr() == sched.get_last_lr()
    assert _observed(fresh, 5) == expected_tail


def test_resume_with_last_epoch() -> None:
    opt = _optimizer()
    for group in opt.param_groups:
        group["initial_lr"] = LR
    sched = get_linear_schedule_with_warmup(opt, W, T, last_epoch=9)
    assert sched.get_last_lr()[0] == pytest.approx(expected_linear(10))
