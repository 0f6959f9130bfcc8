"""`run_hyperparameter_search` (what `Trainer.hyperparameter_search` calls) and
`trial_scope` (what ``Trainer.train(trial=...)`` enters).

A `SearchSession` holds the choices of one search (backend, space, objective, run
names); the backend drives the trials, each through `SearchSession.run_trial`: apply
the trial, train, take the objective from the last evaluation (or evaluate once more).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from toolkit.checkpoint import FsspecCheckpointIO
from toolkit.search.base import SearchBackend
from toolkit.search.objective import default_compute_objective, normalize_directions
from toolkit.search.optuna_backend import OptunaBackend
from toolkit.search.registry import HPSearchBackend, get_backend
from toolkit.search.trial import TrialResult, TrialScope
from toolkit.types import BestRun

__all__ = ["SearchSession", "run_hyperparameter_search", "trial_scope", "in_trial"]

logger = logging.getLogger(__name__)


@dataclass
class SearchSession:
    """The settings of one search, shared by its trials.

    Attributes:
        trainer: the Trainer (duck-typed).
        backend: the `SearchBackend`, or None for plain dict trials outside a search.
        hp_space: trial -> hyperparameters.
        compute_objective: evaluation metrics -> objective.
        hp_name: trial -> run folder name (default ``run-<trial number>``).
        directions: one per objective.
    """

    trainer: Any
    backend: SearchBackend | None
    hp_space: Callable[[Any], Mapping[str, Any]] | None
    compute_objective: Callable[[dict[str, float]], Any]
    hp_name: Callable[[Any], str] | None = None
    directions: tuple[str, ...] = ("minimize",)

    def params(self, trial: Any) -> dict[str, Any]:
        """The trial's hyperparameters."""
        if self.backend is None:
            return dict(trial)
        return self.backend.params(trial, self.hp_space or self.backend.default_hp_space)

    def run_name(self, trial: Any) -> str:
        """``hp_name(trial)``, else ``run-<trial number>``, else the first free ``run-<n>``."""
        if self.hp_name is not None:
            return self.hp_name(trial)
        number = self.backend.trial_number(trial) if self.backend is not None else None
        if number is not None:
            return f"run-{number}"
        taken = set(FsspecCheckpointIO().list(self.trainer.args.output_dir))
        n = 0
        while f"run-{n}" in taken:
            n += 1
        return f"run-{n}"

    def scope(self, trial: Any) -> TrialScope:
        """The `TrialScope` applying ``trial`` to the trainer."""
        return TrialScope(
            self.trainer, trial, self.params(trial), self.run_name(trial), self.compute_objective,
            n_objectives=len(self.directions), report=self.backend.report if self.backend is not None else None,
        )

    def run_trial(self, trial: Any) -> TrialResult:
        """Train one trial in its run folder and return its objective."""
        with self.scope(trial) as scope:
            self.trainer.train(trial=trial)
            return scope.result()


def in_trial(trainer: Any, trial: Any) -> bool:
    """True when ``trial`` is already applied to ``trainer``."""
    scope = getattr(trainer, "_hp_trial_scope", None)
    return scope is not None and scope.trial is trial


def trial_scope(trainer: Any, trial: Any) -> TrialScope:
    """The scope that applies ``trial`` to ``trainer`` (for ``train(trial=...)``).

    Inside `run_hyperparameter_search` the running search decides; otherwise a dict
    trial sets its values by name, and an Optuna trial samples the default space.

    Raises:
        TypeError: ``trial`` is neither a dict nor an Optuna trial outside a search.
    """
    session = getattr(trainer, "_hp_search_session", None)
    if session is None:
        if isinstance(trial, Mapping):
            backend: SearchBackend | None = None
        elif hasattr(trial, "suggest_float"):
            backend = OptunaBackend()
        else:
            raise TypeError(
                "train(trial=...) takes an Optuna trial or a dict of TrainingArguments values, got "
                f"{type(trial).__name__}"
            )
        session = SearchSession(
            trainer, backend, None if backend is None else backend.default_hp_space, default_compute_objective
        )
    return session.scope(trial)


def run_hyperparameter_search(
    trainer: Any,
    hp_space: Callable[[Any], Mapping[str, Any]] | None = None,
    compute_objective: Callable[[dict[str, float]], Any] | None = None,
    n_trials: int = 20,
    direction: str | list[str] = "minimize",
    backend: str | HPSearchBackend | SearchBackend | None = None,
    hp_name: Callable[[Any], str] | None = None,
    **kwargs: Any,
) -> BestRun | list[BestRun]:
    """Search hyperparameters for ``trainer``; see `Trainer.hyperparameter_search`.

    Raises:
        RuntimeError: the trainer has no ``model_init``.
        ValueError: no evaluation dataset, a bad ``direction`` or ``n_trials``.
        ImportError: the backend's library is not installed.
    """
    if getattr(trainer, "model_init", None) is None:
        raise RuntimeError(
            "hyperparameter_search needs a model_init: pass Trainer(model_init=...) so that every trial starts "
            "from a freshly built model."
        )
    if getattr(trainer, "eval_dataset", None) is None:
        raise ValueError(
            "hyperparameter_search needs an eval_dataset: each trial's objective comes from its evaluation metrics."
        )
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"n_trials must be a positive int, got {n_trials!r}")
    directions = tuple(normalize_directions(direction))
    search_backend = get_backend(backend)
    session = SearchSession(
        trainer, search_backend, hp_space or search_backend.default_hp_space,
        compute_objective or default_compute_objective, hp_name, directions,
    )
    previous = getattr(trainer, "_hp_search_session", None)
    trainer._hp_search_session = session
    try:
        logger.info("Hyperparameter search: %d trial(s) with %s, %s", n_trials, search_backend.name, list(directions))
        return search_backend.run(session, n_trials, list(directions), **kwargs)
    finally:
        trainer._hp_search_session = previous
