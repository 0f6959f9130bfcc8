"""`Trainer.hyperparameter_search` and ``train(trial=...)``: trials apply their values on a
copy of the arguments, run in ``run-<n>``, give an objective, prune, and leave the trainer
as it was."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from toolkit import BestRun, Trainer
from toolkit.search import (
    HPSearchBackend,
    default_compute_objective,
    default_hp_space_optuna,
    get_backend,
)

LR_BAD, LR_GOOD = 1e-5, 1e-1


def lr_space(trial):
    return {
        "learning_rate": trial.suggest_categorical("learning_rate", [LR_BAD, LR_GOOD]),
        "seed": trial.suggest_categorical("seed", [0, 1]),
    }


def grid(optuna):
    return optuna.samplers.GridSampler({"learning_rate": [LR_BAD, LR_GOOD], "seed": [0, 1]}, seed=0)


def test_search_finds_the_better_learning_rate_in_run_folders(hs, optuna, tmp_path):
    start = hs.make_trainer(tmp_path / "start")
    start.train()
    start_loss = start.evaluate()["eval_loss"]

    trainer = hs.make_trainer(tmp_path / "search", save_strategy="epoch")
    best = trainer.hyperparameter_search(hp_space=lr_space, n_trials=4, sampler=grid(optuna))

    assert isinstance(best, BestRun)
    study = best.run_summary
    assert len(study.trials) == 4 and {t.state.name for t in study.trials} == {"COMPLETE"}
    assert best.hyperparameters["learning_rate"] == LR_GOOD
    assert best.run_id == str(study.best_trial.number)
    assert best.objective == study.best_trial.value
    assert best.objective < 0.5 * start_loss
    # each trial wrote its checkpoints into its own run folder
    for n in range(4):
        run = tmp_path / "search" / f"run-{n}"
        assert sorted(os.listdir(run / "checkpoint-16")) and (run / "checkpoint-8").is_dir(), n
    assert not (tmp_path / "search" / "checkpoint-8").exists()
    # the trainer got its own arguments back; its state tells the last trial
    assert trainer.args.learning_rate == LR_BAD and trainer.args.output_dir == str(tmp_path / "search")
    assert trainer.checkpointer.manager.root == str(tmp_path / "search")
    assert trainer.state.is_hyper_param_search and trainer.state.trial_name == "run-3"
    assert trainer.state.trial_params == study.trials[3].params


def test_objective_of_a_trial_is_its_last_evaluation(hs, optuna, tmp_path):
    trainer = hs.make_trainer(tmp_path, evaluation_strategy="no")  # no evaluation during training
    seen = []

    def objective(metrics):
        seen.append(dict(metrics))
        return metrics["eval_loss"]

    best = trainer.hyperparameter_search(
        hp_space=lambda t: {"learning_rate": t.suggest_float("learning_rate", 0.05, 0.05)},
        compute_objective=objective, n_trials=1,
    )
    assert len(seen) == 1 and best.objective == seen[0]["eval_loss"]  # one final evaluate()
    assert best.objective == pytest.approx(trainer.evaluate()["eval_loss"])


def test_search_needs_model_init(hs, tmp_path):
    trainer = Trainer(hs.Regressor(), hs.make_trainer(tmp_path).args, train_dataset=hs.regression_data(8, 0),
                      eval_dataset=hs.regression_data(8, 1))
    with pytest.raises(RuntimeError, match="model_init"):
        trainer.hyperparameter_search(n_trials=1)


def test_search_needs_an_eval_dataset(hs, tmp_path):
    trainer = Trainer(args=hs.make_trainer(tmp_path).args, model_init=hs.model_init,
                      train_dataset=hs.regression_data(8, 0))
    with pytest.raises(ValueError, match="eval_dataset"):
        trainer.hyperparameter_search(n_trials=1)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"direction": "down"}, ValueError, "direction='down'"),
    ({"n_trials": 0}, ValueError, "n_trials"),
    ({"backend": "sigopt"}, ValueError, "backend='sigopt'"),
])
def test_bad_search_arguments(hs, tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        hs.make_trainer(tmp_path).hyperparameter_search(**kwargs)


def test_missing_backends_name_the_extra(hs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    monkeypatch.setitem(sys.modules, "ray", None)
    trainer = hs.make_trainer(tmp_path)
    with pytest.raises(ImportError, match=r'pip install "toolkit\[optuna\]"'):
        trainer.hyperparameter_search(n_trials=1)
    with pytest.raises(ImportError, match=r'pip install "toolkit\[ray\]"'):
        trainer.hyperparameter_search(n_trials=1, backend="ray")
    with pytest.raises(ImportError, match=r'pip install "toolkit\[optuna\]"'):
        get_backend(HPSearchBackend.OPTUNA)


def test_unknown_hyperparameter_is_a_clear_error(hs, optuna, tmp_path):
    trainer = hs.make_trainer(tmp_path)
    with pytest.raises(ValueError, match="'dropout' is not a TrainingArguments field.*model_init"):
        trainer.hyperparameter_search(hp_space=lambda t: {"dropout": t.suggest_float("dropout", 0, 0.5)}, n_trials=1)
    assert trainer.args.output_dir == str(tmp_path)


def test_multi_objective_returns_the_pareto_front(hs, optuna, tmp_path):
    trainer = hs.make_trainer(tmp_path)
    runs = trainer.hyperparameter_search(
        hp_space=lr_space, n_trials=4, sampler=grid(optuna), direction=["minimize", "maximize"],
        compute_objective=lambda m: (m["eval_loss"], m["epoch"]),
    )
    assert isinstance(runs, list) and runs and all(isinstance(r, BestRun) for r in runs)
    assert all(len(r.objective) == 2 and r.objective[1] == 2.0 for r in runs)
    assert {r.hyperparameters["learning_rate"] for r in runs} == {LR_GOOD}
    with pytest.raises(ValueError, match="2 objectives"):
        trainer.hyperparameter_search(hp_space=lr_space, n_trials=1, direction=["minimize", "maximize"])


def test_pruning_stops_trials_after_their_first_report(hs, optuna, tmp_path):
    class PruneAfterFirstReport(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return trial.number > 0 and len(trial.intermediate_values) >= 1

    trainer = hs.make_trainer(tmp_path, evaluation_strategy="steps", eval_steps=2)
    best = trainer.hyperparameter_search(
        hp_space=lr_space, n_trials=3, sampler=grid(optuna), pruner=PruneAfterFirstReport(),
    )
    trials = best.run_summary.trials
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED", "PRUNED"]
    assert sorted(trials[0].intermediate_values) == [2, 4, 6, 8, 10, 12, 14, 16]
    assert [sorted(t.intermediate_values) for t in trials[1:]] == [[2], [2]]
    assert best.run_id == "0"
    assert trainer.args.output_dir == str(tmp_path)  # restored after the pruned trials too


def test_all_trials_pruned_is_a_clear_error(hs, optuna, tmp_path):
    class PruneAll(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    study = optuna.create_study(pruner=PruneAll())
    trainer = hs.make_trainer(tmp_path)
    with pytest.raises(RuntimeError, match="no trial completed"):
        trainer.hyperparameter_search(hp_space=lr_space, n_trials=2, study=study)
    assert [t.state.name for t in study.trials] == ["PRUNED", "PRUNED"]
    assert all(list(t.intermediate_values) == [8] for t in study.trials)  # first evaluation: end of epoch 1


def test_evaluations_of_several_datasets_are_one_report(hs, optuna, tmp_path):
    eval_sets = {"a": hs.regression_data(16, 1), "b": hs.regression_data(16, 2)}
    trainer = hs.make_trainer(tmp_path, eval_dataset=eval_sets)
    best = trainer.hyperparameter_search(
        hp_space=lambda t: {"learning_rate": t.suggest_float("learning_rate", 0.1, 0.1)}, n_trials=1,
    )
    trial = best.run_summary.trials[0]
    assert sorted(trial.intermediate_values) == [8, 16]
    final = trainer.evaluate()
    assert best.objective == pytest.approx(final["eval_a_loss"] + final["eval_b_loss"], rel=1e-5)


def test_hp_name_names_the_run_folders(hs, optuna, tmp_path):
    trainer = hs.make_trainer(tmp_path, save_strategy="epoch", num_train_epochs=1)
    trainer.hyperparameter_search(
        hp_space=lr_space, n_trials=2, sampler=grid(optuna), hp_name=lambda t: f"trial_{t.number}_lr",
    )
    assert sorted(p for p in os.listdir(tmp_path) if p.startswith("trial_")) == ["trial_0_lr", "trial_1_lr"]
    assert (tmp_path / "trial_1_lr" / "checkpoint-8").is_dir()


def test_train_with_a_dict_trial(hs, tmp_path):
    trainer = hs.make_trainer(tmp_path, save_strategy="epoch", num_train_epochs=1)
    trainer.train(trial={"learning_rate": 0.1, "seed": 3.0, "num_train_epochs": 2})
    assert (tmp_path / "run-0" / "checkpoint-16").is_dir()
    assert trainer.state.trial_params == {"learning_rate": 0.1, "seed": 3.0, "num_train_epochs": 2}
    assert trainer.state.global_step == 16
    trainer.train(trial={"learning_rate": 0.1})
    assert (tmp_path / "run-1" / "checkpoint-8").is_dir()  # the next free run folder, not an overwrite
    assert trainer.args.learning_rate == 1e-5 and trainer.args.output_dir == str(tmp_path)
    with pytest.raises(TypeError, match="Optuna trial or a dict"):
        trainer.train(trial=42)


def test_default_objective_and_space(optuna):
    assert default_compute_objective({"eval_loss": 2.0, "epoch": 1.0, "eval_runtime": 3.0,
                                      "eval_samples_per_second": 9.0, "eval_steps_per_second": 1.0}) == 2.0
    assert default_compute_objective({"eval_loss": 2.0, "eval_acc": 0.5, "eval_f1": 0.25}) == 0.75
    with pytest.raises(ValueError, match="eval_loss"):
        default_compute_objective({"epoch": 1.0})
    space = default_hp_space_optuna(optuna.trial.FixedTrial(
        {"learning_rate": 3e-5, "num_train_epochs": 2, "seed": 7, "per_device_train_batch_size": 16}
    ))
    assert space == {"learning_rate": 3e-5, "num_train_epochs": 2, "seed": 7, "per_device_train_batch_size": 16}


def test_default_space_runs(hs, optuna, tmp_path):
    trainer = hs.make_trainer(tmp_path, evaluation_strategy="no")
    best = trainer.hyperparameter_search(n_trials=1, sampler=optuna.samplers.RandomSampler(seed=0))
    assert set(best.hyperparameters) == {"learning_rate", "num_train_epochs", "seed", "per_device_train_batch_size"}
    assert 1e-6 <= best.hyperparameters["learning_rate"] <= 1e-4
    assert trainer.state.train_batch_size == best.hyperparameters["per_device_train_batch_size"]


def test_model_init_receives_the_trial(hs, optuna, tmp_path):
    widths = []

    def model_init(trial):
        widths.append(trial.suggest_int("unused_width", 1, 1) if trial is not None else None)
        torch.manual_seed(0)
        return hs.Regressor()

    trainer = hs.make_trainer(tmp_path, model_init=model_init, evaluation_strategy="no")
    best = trainer.hyperparameter_search(hp_space=lambda t: {}, n_trials=2)
    assert widths == [None, 1, 1]  # the model built by __init__, then one per trial
    assert best.hyperparameters == {"unused_width": 1}
