"""Hyperparameter search: `Trainer.hyperparameter_search` over Optuna or Ray Tune.

* `run_hyperparameter_search`: the search (the Trainer method is a thin call to it).
* `trial_scope` / `TrialScope`: one trial applied to a Trainer (arguments copy with the
  trial's values, run folder ``<output_dir>/run-<n>``, objective and pruning reports).
* `SearchBackend` and the registry (`BACKENDS`, `get_backend`): one module per library.
* `default_compute_objective`, `default_hp_space_optuna`, `default_hp_space_ray`.

See ``docs/search.md``.
"""

from toolkit.search.base import SearchBackend
from toolkit.search.objective import default_compute_objective, normalize_directions
from toolkit.search.optuna_backend import OptunaBackend, default_hp_space_optuna
from toolkit.search.ray_backend import RayBackend, default_hp_space_ray
from toolkit.search.registry import (
    BACKENDS,
    HPSearchBackend,
    available_backends,
    default_backend,
    get_backend,
)
from toolkit.search.runner import SearchSession, in_trial, run_hyperparameter_search, trial_scope
from toolkit.search.trial import CONSTRUCTION_TIME_FIELDS, TrialResult, TrialScope, args_for_trial

__all__ = [
    "run_hyperparameter_search",
    "trial_scope",
    "in_trial",
    "SearchSession",
    "TrialScope",
    "TrialResult",
    "args_for_trial",
    "CONSTRUCTION_TIME_FIELDS",
    "SearchBackend",
    "OptunaBackend",
    "RayBackend",
    "BACKENDS",
    "HPSearchBackend",
    "get_backend",
    "default_backend",
    "available_backends",
    "default_compute_objective",
    "normalize_directions",
    "default_hp_space_optuna",
    "default_hp_space_ray",
]
