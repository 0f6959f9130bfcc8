"""The Optuna backend (the default): one study, trials run one after the other in this
process, intermediate evaluations reported for pruning.

Keyword arguments of ``hyperparameter_search`` go to ``optuna.create_study`` (``sampler``,
``pruner``, ``study_name``, ``storage``, ``load_if_exists``), except ``timeout``,
``catch``, ``callbacks``, ``gc_after_trial`` and ``show_progress_bar``, which go to
``study.optimize``. ``study=`` passes an existing study instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from toolkit.search.base import SearchBackend
from toolkit.types import BestRun

if TYPE_CHECKING:
    from toolkit.search.runner import SearchSession

__all__ = ["OptunaBackend", "default_hp_space_optuna"]

_OPTIMIZE_KWARGS = ("timeout", "catch", "callbacks", "gc_after_trial", "show_progress_bar", "n_jobs")


def default_hp_space_optuna(trial: Any) -> dict[str, Any]:
    """The default Optuna search space: ``learning_rate`` log-uniform in [1e-6, 1e-4],
    ``num_train_epochs`` in 1..5, ``seed`` in 1..40, ``per_device_train_batch_size`` in
    {4, 8, 16, 32, 64}."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-6, 1e-4, log=True),
        "num_train_epochs": trial.suggest_int("num_train_epochs", 1, 5),
        "seed": trial.suggest_int("seed", 1, 40),
        "per_device_train_batch_size": trial.suggest_categorical("per_device_train_batch_size", [4, 8, 16, 32, 64]),
    }


class OptunaBackend(SearchBackend):
    """Hyperparameter search with Optuna (``pip install "toolkit[optuna]"``).

    Pruning: every evaluation during a trial reports its objective with
    ``trial.report(objective, global_step)``; when the study's pruner says so the trial
    stops (state ``PRUNED``). Multi-objective studies are not pruned (Optuna does not
    support it). `BestRun.run_summary` holds the ``optuna.Study``.
    """

    name = "optuna"
    module = "optuna"
    install = 'pip install "toolkit[optuna]"'

    def default_hp_space(self, trial: Any) -> dict[str, Any]:
        """See `default_hp_space_optuna`."""
        return default_hp_space_optuna(trial)

    def report(self, trial: Any, objective: float, step: int) -> None:
        """``trial.report``; raises ``optuna.TrialPruned`` when the pruner stops the trial."""
        import optuna

        study = getattr(trial, "study", None)
        if study is not None and len(study.directions) > 1:
            return  # Optuna neither takes reports nor prunes in multi-objective studies
        trial.report(objective, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} (objective {objective})")

    def run(
        self, session: SearchSession, n_trials: int, directions: list[str], **kwargs: Any
    ) -> BestRun | list[BestRun]:
        """Create (or take) the study, optimize ``n_trials`` trials, return the best run(s)."""
        import optuna

        optimize = {k: kwargs.pop(k) for k in _OPTIMIZE_KWARGS if k in kwargs}
        if optimize.pop("n_jobs", 1) != 1:
            raise ValueError(
                "hyperparameter_search: n_jobs must be 1; the trials share one Trainer and run one after "
                "the other (run several processes on one Optuna storage to search in parallel)."
            )
        study = kwargs.pop("study", None)
        if study is None:
            if len(directions) == 1:
                study = optuna.create_study(direction=directions[0], **kwargs)
            else:
                study = optuna.create_study(directions=directions, **kwargs)
        elif kwargs:
            raise TypeError(f"hyperparameter_search: with study=, create_study arguments {sorted(kwargs)} are not used")

        def objective(trial: Any) -> float | list[float]:
            return session.run_trial(trial).objective

        study.optimize(objective, n_trials=n_trials, **optimize)
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            states = sorted({t.state.name for t in study.trials})
            raise RuntimeError(
                f"hyperparameter_search: no trial completed ({len(study.trials)} trial(s), states {states}); "
                "there is no best run."
            )
        if len(directions) == 1:
            best = study.best_trial
            return BestRun(str(best.number), best.value, dict(best.params), study)
        return [BestRun(str(t.number), list(t.values), dict(t.params), study) for t in study.best_trials]
