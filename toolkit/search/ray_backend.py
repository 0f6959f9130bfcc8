"""The Ray Tune backend (``backend="ray"``, ``pip install "toolkit[ray]"``).

Each trial is a Tune function trainable that receives a ``config`` dict (sampled from
``hp_space(None)``, a dict of ``ray.tune`` search domains), trains through the same
`SearchSession` as the other backends, and reports ``{"objective": ..., **metrics}``
after every evaluation (so Tune schedulers such as ASHA can stop it) and at its end.

Keyword arguments of ``hyperparameter_search`` go to ``ray.tune.TuneConfig``
(``scheduler``, ``search_alg``, ``max_concurrent_trials``, ...), except ``run_config``
(a ``ray.tune.RunConfig``) and ``resources_per_trial`` (passed to
``ray.tune.with_resources``). The best run is chosen with ``args.ray_scope``.

Ray runs trainables in worker processes, so the Trainer (model_init, datasets,
callbacks) must be picklable. Multi-objective search is Optuna-only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from toolkit.search.base import SearchBackend
from toolkit.types import BestRun

if TYPE_CHECKING:
    from toolkit.search.runner import SearchSession

__all__ = ["RayBackend", "default_hp_space_ray"]


def default_hp_space_ray(trial: Any = None) -> dict[str, Any]:
    """The default Ray Tune search space (the same ranges as the Optuna default)."""
    from ray import tune

    return {
        "learning_rate": tune.loguniform(1e-6, 1e-4),
        "num_train_epochs": tune.choice(list(range(1, 6))),
        "seed": tune.randint(1, 41),
        "per_device_train_batch_size": tune.choice([4, 8, 16, 32, 64]),
    }


def _tune_api() -> tuple[Any, Any]:
    """``(report, get_context)`` of the installed Ray (``ray.tune`` first, then ``ray.train``)."""
    from ray import tune

    if hasattr(tune, "report") and hasattr(tune, "get_context"):
        return tune.report, tune.get_context
    from ray import train

    return train.report, train.get_context


class RayBackend(SearchBackend):
    """Hyperparameter search with Ray Tune. `BestRun.run_summary` holds the ``ResultGrid``."""

    name = "ray"
    module = "ray.tune"
    install = 'pip install "toolkit[ray]"'

    @classmethod
    def is_available(cls) -> bool:
        """True when ``ray`` and its ``tune`` package can be imported."""
        import importlib.util

        try:
            return importlib.util.find_spec("ray") is not None and importlib.util.find_spec("ray.tune") is not None
        except (ImportError, ValueError):
            return False

    def default_hp_space(self, trial: Any) -> dict[str, Any]:
        """See `default_hp_space_ray`."""
        return default_hp_space_ray(trial)

    def params(self, trial: Any, hp_space: Any) -> dict[str, Any]:
        """A Tune trial is its sampled ``config`` dict."""
        if not isinstance(trial, Mapping):
            raise TypeError(f"a Ray Tune trial is its config dict, got {type(trial).__name__}")
        return dict(trial)

    def trial_number(self, trial: Any) -> int | str | None:
        """The Tune trial id."""
        try:
            return str(_tune_api()[1]().get_trial_id())
        except Exception:  # not inside a Tune trial
            return None

    def report(self, trial: Any, objective: float, step: int) -> None:
        """Report the objective to Tune (its scheduler may then stop the trial)."""
        report, _ = _tune_api()
        report({"objective": objective, "step": step})

    def run(
        self, session: SearchSession, n_trials: int, directions: list[str], **kwargs: Any
    ) -> BestRun | list[BestRun]:
        """Run a ``ray.tune.Tuner`` of ``n_trials`` samples and return the best run."""
        from ray import tune

        if len(directions) != 1:
            raise ValueError("hyperparameter_search(backend='ray') optimizes one objective; use Optuna for several.")
        mode = "min" if directions[0] == "minimize" else "max"
        run_config = kwargs.pop("run_config", None)
        resources = kwargs.pop("resources_per_trial", None)
        report, _ = _tune_api()

        def trainable(config: dict[str, Any]) -> None:
            result = session.run_trial(config)
            report({"objective": result.objective, **{k: v for k, v in result.metrics.items() if k != "objective"}})

        if resources is not None:
            trainable = tune.with_resources(trainable, resources)
        tuner = tune.Tuner(
            trainable,
            param_space=dict(session.hp_space(None)),
            tune_config=tune.TuneConfig(metric="objective", mode=mode, num_samples=n_trials, **kwargs),
            **({"run_config": run_config} if run_config is not None else {}),
        )
        results = tuner.fit()
        scope = getattr(session.trainer.args, "ray_scope", None) or "last"
        best = results.get_best_result(metric="objective", mode=mode, scope=scope)
        run_id = str(best.metrics.get("trial_id", "")) if isinstance(best.metrics, Mapping) else ""
        return BestRun(run_id, float(best.metrics["objective"]), dict(best.config), results)
