"""The Ray Tune backend's plumbing, against a stand-in ``ray.tune`` that runs the trials in
this process (Ray itself is a large optional install and is not used by the test suite):
configs reach the arguments, each trial trains in ``run-<trial id>``, evaluations are
reported, and the best result comes back as a `BestRun`."""

from __future__ import annotations

import importlib.machinery
import sys
import types

import pytest

from toolkit.search import RayBackend


class _Context:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id

    def get_trial_id(self) -> str:
        return self.trial_id


class _Result:
    def __init__(self, metrics: dict, config: dict) -> None:
        self.metrics, self.config = metrics, config


class _ResultGrid:
    def __init__(self, results: list[_Result]) -> None:
        self.results = results
        self.asked = None

    def get_best_result(self, metric: str, mode: str, scope: str) -> _Result:
        self.asked = (metric, mode, scope)
        pick = min if mode == "min" else max
        return pick(self.results, key=lambda r: r.metrics[metric])


def fake_ray() -> tuple[types.ModuleType, dict]:
    """A ``ray`` package whose ``tune.Tuner`` samples choice() domains in order."""
    ray, tune = types.ModuleType("ray"), types.ModuleType("ray.tune")
    ray.__spec__ = importlib.machinery.ModuleSpec("ray", None, is_package=True)
    tune.__spec__ = importlib.machinery.ModuleSpec("ray.tune", None)
    ray.tune = tune
    log: dict = {"context": None, "reports": {}}

    def report(metrics: dict) -> None:
        log["reports"].setdefault(log["context"].trial_id, []).append(dict(metrics))

    tune.report = report
    tune.get_context = lambda: log["context"]
    tune.choice = lambda values: ("choice", list(values))
    tune.loguniform = lambda low, high: ("choice", [low])
    tune.randint = lambda low, high: ("choice", [low])
    tune.TuneConfig = lambda **kwargs: kwargs

    class Tuner:
        def __init__(self, trainable, param_space, tune_config):
            self.trainable, self.space, self.config = trainable, param_space, tune_config
            log["tune_config"] = tune_config

        def fit(self):
            results = []
            for i in range(self.config["num_samples"]):
                config = {k: v[1][i % len(v[1])] for k, v in self.space.items()}
                log["context"] = _Context(f"t{i}")
                self.trainable(config)
                last = log["reports"][f"t{i}"][-1]
                results.append(_Result({**last, "trial_id": f"t{i}"}, config))
            log["grid"] = _ResultGrid(results)
            return log["grid"]

    tune.Tuner = Tuner
    return ray, log


def test_ray_backend_runs_trials_and_returns_the_best(hs, tmp_path, monkeypatch):
    ray, log = fake_ray()
    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.setitem(sys.modules, "ray.tune", ray.tune)
    assert RayBackend.is_available()
    trainer = hs.make_trainer(tmp_path, save_strategy="epoch", num_train_epochs=1)
    best = trainer.hyperparameter_search(
        hp_space=lambda _: {"learning_rate": ray.tune.choice([1e-5, 0.1])}, n_trials=2, backend="ray",
        max_concurrent_trials=1,
    )
    assert best.run_id == "t1" and best.hyperparameters == {"learning_rate": 0.1}
    assert best.run_summary is log["grid"] and log["grid"].asked == ("objective", "min", "last")
    assert log["tune_config"]["max_concurrent_trials"] == 1
    for trial_id in ("t0", "t1"):
        assert (tmp_path / f"run-{trial_id}" / "checkpoint-8").is_dir()
        reports = log["reports"][trial_id]
        assert reports[0] == {"objective": reports[0]["objective"], "step": 8}  # the evaluation of epoch 1
        assert reports[-1]["objective"] == reports[-1]["eval_loss"]  # the final report carries the metrics
    assert best.objective < log["reports"]["t0"][-1]["objective"]
    assert trainer.args.learning_rate == 1e-5


def test_ray_backend_is_single_objective(hs, tmp_path, monkeypatch):
    ray, _ = fake_ray()
    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.setitem(sys.modules, "ray.tune", ray.tune)
    with pytest.raises(ValueError, match="one objective"):
        hs.make_trainer(tmp_path).hyperparameter_search(backend="ray", direction=["minimize", "maximize"])
