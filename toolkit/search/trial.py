"""One trial of a hyperparameter search, applied to a Trainer for the length of its run.

`TrialScope` swaps in a copy of the arguments with the trial's hyperparameters and the
run folder ``<output_dir>/<run name>``, rebuilds the checkpointer for that folder, and
watches the evaluations: each one gives an objective, reported to the search backend
(which may stop the trial early). On exit the Trainer gets its own arguments and
checkpointer back, so trials never leak into one another.

The Trainer is reached by duck typing (``args``, ``checkpointer``, ``add_callback``,
``remove_callback``, ``evaluate``); this module does not import the facade.

Example:
    >>> from toolkit import TrainingArguments
    >>> args = TrainingArguments("out", learning_rate=1e-3, report_to="none")
    >>> trial_args = args_for_trial(args, {"learning_rate": 0.1, "seed": 3.0}, "out/run-0")
    >>> trial_args.learning_rate, trial_args.seed, trial_args.output_dir, args.learning_rate
    (0.1, 3, 'out/run-0', 0.001)
    >>> args_for_trial(args, {"dropout": 0.1}, "out/run-1")
    Traceback (most recent call last):
    ...
    ValueError: hyperparameter 'dropout' is not a TrainingArguments field. The search space may only name TrainingArguments fields (learning_rate, seed, ...); sample model hyperparameters inside model_init(trial) instead.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from toolkit.callbacks import TrainerCallback
from toolkit.checkpoint import files as storage
from toolkit.search.objective import objective_value

__all__ = ["TrialScope", "TrialResult", "args_for_trial", "CONSTRUCTION_TIME_FIELDS"]

logger = logging.getLogger(__name__)

#: Fields the Trainer reads when it is built (devices, precision, loggers, label
#: handling): a trial that changes them has no effect on them, so it is warned about.
CONSTRUCTION_TIME_FIELDS = frozenset({
    "fp16", "bf16", "fp16_opt_level", "half_precision_backend", "tf32", "use_cpu", "no_cuda", "local_rank",
    "ddp_backend", "label_smoothing_factor", "label_names", "report_to", "logging_dir", "run_name",
    "disable_tqdm", "skip_memory_metrics", "log_level", "log_level_replica",
})


def _coerce(name: str, value: Any, current: Any) -> Any:
    """``value`` in the type of the field's current value (search libraries give floats)."""
    if isinstance(current, bool):
        if isinstance(value, bool) or value in (0, 1):
            return bool(value)
        raise ValueError(f"hyperparameter {name!r}: {value!r} is not a boolean")
    if isinstance(current, int) and not isinstance(value, bool) and isinstance(value, (int, float)):
        return int(value)
    if isinstance(current, float) and not isinstance(value, bool) and isinstance(value, (int, float)):
        return float(value)
    return value


def _plain(value: Any) -> Any:
    """NumPy scalars (Ray Tune samples them) as Python numbers, so the state stays JSON-able."""
    item = getattr(value, "item", None)
    return item() if callable(item) and getattr(value, "shape", None) == () else value


def args_for_trial(args: Any, params: Mapping[str, Any], output_dir: str) -> Any:
    """A validated copy of ``args`` with ``params`` set by field name and ``output_dir``.

    Values take the type of the field they replace (``seed=3.0`` becomes ``3``).

    Raises:
        ValueError: a name is not a ``TrainingArguments`` field (or is ``output_dir``),
            or the values do not validate together.
    """
    fields = {f.name for f in dataclasses.fields(args) if f.init}
    for name in params:
        if name == "output_dir":
            raise ValueError("hyperparameter 'output_dir': each trial's folder is chosen by the search (run-<n>).")
        if name not in fields:
            raise ValueError(
                f"hyperparameter {name!r} is not a TrainingArguments field. The search space may only name "
                "TrainingArguments fields (learning_rate, seed, ...); sample model hyperparameters inside "
                "model_init(trial) instead."
            )
    ignored = sorted(CONSTRUCTION_TIME_FIELDS & set(params))
    if ignored:
        logger.warning(
            "hyperparameter search: %s are read when the Trainer is built; a trial's value does not change them.",
            ", ".join(ignored),
        )
    values = {name: _coerce(name, value, getattr(args, name)) for name, value in params.items()}
    return copy.copy(args)._update(output_dir=output_dir, **values)


@dataclass
class TrialResult:
    """What one trial gave: its objective, the metrics it came from, its run folder name
    and its hyperparameters."""

    objective: float | list[float]
    metrics: dict[str, float]
    run_name: str
    params: dict[str, Any] = field(default_factory=dict)


class _TrialCallback(TrainerCallback):
    """Feeds evaluations to the scope; reports them at the next training event, so that
    the metrics of several evaluation datasets at one step count as one evaluation."""

    def __init__(self, scope: TrialScope) -> None:
        self.scope = scope

    def on_train_begin(self, args, state, control, **kwargs):
        state.is_hyper_param_search = True
        state.trial_name = self.scope.run_name
        state.trial_params = dict(self.scope.params)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.scope.add_metrics(state.global_step, metrics or {})

    def _flush(self, state) -> None:
        self.scope.flush(report=True)

    def on_step_begin(self, args, state, control, **kwargs):
        self._flush(state)

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._flush(state)

    def on_save(self, args, state, control, **kwargs):
        self._flush(state)

    def on_train_end(self, args, state, control, **kwargs):
        self._flush(state)


class TrialScope:
    """Applies one trial to a Trainer while the ``with`` block runs.

    Args:
        trainer: the Trainer (duck-typed).
        trial: the backend's trial object (an ``optuna.Trial``, a Tune config dict...).
        params: the trial's hyperparameters (TrainingArguments field -> value).
        run_name: the run folder's name under ``output_dir``.
        compute_objective: metrics -> objective.
        n_objectives: how many values the objective has.
        report: ``(trial, objective, step)`` -> None, called for each evaluation during
            training of a single-objective search; may raise to stop the trial.
    """

    def __init__(
        self, trainer: Any, trial: Any, params: Mapping[str, Any], run_name: str,
        compute_objective: Callable[[dict[str, float]], Any], n_objectives: int = 1,
        report: Callable[[Any, float, int], None] | None = None,
    ) -> None:
        if not isinstance(run_name, str) or not run_name.strip() or run_name in (".", ".."):
            raise ValueError(f"hp_name must return a non-empty folder name, got {run_name!r}")
        self.trainer = trainer
        self.trial = trial
        self.params = {k: _plain(v) for k, v in params.items()}
        self.run_name = run_name
        self.compute_objective = compute_objective
        self.n_objectives = n_objectives
        self._report = report
        self.objective: float | list[float] | None = None
        self.metrics: dict[str, float] = {}
        self._pending: dict[str, float] = {}
        self._pending_step: int | None = None
        self._saved: tuple[Any, Any] | None = None
        self._callback = _TrialCallback(self)

    # ----------------------------------------------------------------- objective
    def add_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        """Collect an evaluation's metrics (merged with others of the same step)."""
        if self._pending and self._pending_step != step:
            self.flush(report=True)
        self._pending.update(metrics)
        self._pending_step = step

    def flush(self, report: bool) -> None:
        """Turn the collected metrics into the objective; report it when asked."""
        if not self._pending:
            return
        metrics, step = self._pending, self._pending_step
        self._pending, self._pending_step = {}, None
        self.metrics = dict(metrics)
        self.objective = objective_value(self.compute_objective(dict(metrics)), self.n_objectives)
        if report and self._report is not None and not isinstance(self.objective, list):
            self._report(self.trial, self.objective, int(step or 0))

    def result(self) -> TrialResult:
        """The trial's objective: from the last evaluation, else from a final one."""
        self.flush(report=False)
        if self.objective is None:
            self.trainer.evaluate()
            self.flush(report=False)
        if self.objective is None:
            raise RuntimeError("hyperparameter search: the evaluation gave no metrics to compute an objective from")
        return TrialResult(self.objective, self.metrics, self.run_name, self.params)

    # ----------------------------------------------------------------- swap
    def __enter__(self) -> TrialScope:
        t = self.trainer
        args = args_for_trial(t.args, self.params, storage.join(t.args.output_dir, self.run_name))
        self._saved = (t.args, t.checkpointer)
        t.args = args
        try:
            t.checkpointer = type(self._saved[1])(t)
            t.add_callback(self._callback)
        except BaseException:
            t.args, t.checkpointer = self._saved
            raise
        t._hp_trial_scope = self
        logger.info("Trial %s: %s", self.run_name, self.params)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        t = self.trainer
        t.remove_callback(self._callback)
        if exc_type is not None:
            try:  # a stopped trial may leave background checkpoint writes behind
                t.checkpointer.wait()
            except Exception as error:
                logger.error("trial %s: a background checkpoint save failed: %s", self.run_name, error)
        assert self._saved is not None
        t.args, t.checkpointer = self._saved
        t._hp_trial_scope = None
