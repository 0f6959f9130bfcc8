"""MLflowLogger against a SQLite tracking store, read back with MlflowClient."""

from __future__ import annotations

import pytest

from toolkit.loggers import LoggerCollection, MLflowLogger
from toolkit.loggers.mlflow_logger import sanitize_mlflow_name

pytest.importorskip("mlflow")
pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")

# MLflow's SQLite store uses SQLAlchemy features SQLAlchemy itself deprecates: not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*")


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    # creating the SQLite schema takes seconds: one database for the whole module
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may land in ./mlruns or ./mlflow.db of the repo
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(var, raising=False)


def client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def history(uri, run_id, key):
    return [
        (m.step, m.value) for m in sorted(client(uri).get_metric_history(run_id, key), key=lambda m: m.step)
    ]


def test_metrics_params_and_status(tracking_uri) -> None:
    lg = MLflowLogger(tracking_uri=tracking_uri, experiment_name="toolkit-test", run_name="run-a")
    coll = LoggerCollection([lg])
    coll.log_hyperparams({"learning_rate": 0.1, "model_config": {"hidden": 8}, "note": None})
    coll.log_metrics({"loss": 1.0, "learning_rate": 0.1}, step=1)
    coll.log_metrics({"loss": 0.5, "text": "dropped"}, step=2)
    coll.log_metrics({"eval_loss": 0.75}, step=2)
    run_id = lg.run_id
    coll.finalize()
    assert lg.run_id is None
    run = client(tracking_uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run-a"
    assert client(tracking_uri).get_experiment(run.info.experiment_id).name == "toolkit-test"
    assert history(tracking_uri, run_id, "loss") == [(1, 1.0), (2, 0.5)]
    assert history(tracking_uri, run_id, "eval_loss") == [(2, 0.75)]
    assert "text" not in run.data.metrics
    assert run.data.params == {"learning_rate": "0.1", "model_config/hidden": "8", "note": "None"}


def test_long_params_truncated_names_sanitised_and_params_immutable(tracking_uri, caplog) -> None:
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    lg = MLflowLogger(tracking_uri=tracking_uri, experiment_name="toolkit-test")
    lg.log_hyperparams({"long": "x" * (MAX_PARAM_VAL_LENGTH + 50), "bad key@1": 1})
    lg.log_hyperparams({"bad key@1": 2})  # a changed value is skipped with a warning, not an error
    lg.log_metrics({"eval/acc@1 (top)": 0.5, "//odd//": 1.0}, step=3)
    run_id = lg.run_id
    lg.finalize("failed")
    run = client(tracking_uri).get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.params["long"] == "x" * MAX_PARAM_VAL_LENGTH
    assert run.data.params["bad key_1"] == "1"
    assert history(tracking_uri, run_id, "eval/acc_1 _top_") == [(3, 0.5)]
    assert history(tracking_uri, run_id, "odd") == [(3, 1.0)]
    assert any("cannot change" in r.getMessage() for r in caplog.records)
    assert any("Truncated" in r.getMessage() for r in caplog.records)


def test_tracking_uri_and_experiment_from_environment(tracking_uri, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    lg = MLflowLogger()
    lg.log_metrics({"loss": 2.0}, step=5)
    run_id = lg.run_id
    lg.finalize()
    run = client(tracking_uri).get_run(run_id)
    assert client(tracking_uri).get_experiment(run.info.experiment_id).name == "from-env"
    assert history(tracking_uri, run_id, "loss") == [(5, 2.0)]


def test_finalize_then_use_starts_a_new_run(tracking_uri) -> None:
    lg = MLflowLogger(tracking_uri=tracking_uri, experiment_name="toolkit-test")
    lg.log_metrics({"loss": 1.0}, step=1)
    first = lg.run_id
    lg.finalize()
    lg.log_metrics({"loss": 2.0}, step=1)
    second = lg.run_id
    lg.finalize("interrupted")
    assert first != second
    assert client(tracking_uri).get_run(second).info.status == "KILLED"


def test_sanitize_names() -> None:
    assert sanitize_mlflow_name("train/loss") == "train/loss"
    assert sanitize_mlflow_name("a:b") == "a_b"
    assert sanitize_mlflow_name("./a/./b/") == "a/b"
    assert sanitize_mlflow_name("") == "_"
    assert len(sanitize_mlflow_name("k" * 400)) == 250
