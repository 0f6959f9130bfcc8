"""WandbLogger in offline mode: no network, the run folder and its files exist."""

from __future__ import annotations

import pytest

from toolkit.loggers import LoggerCollection, WandbLogger

wandb = pytest.importorskip("wandb")


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("WANDB_API_KEY", "WANDB_PROJECT", "WANDB_DIR", "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.setenv("WANDB_DISABLE_CODE", "true")
    yield
    wandb.teardown()  # W&B reads the environment once per process setup: start the next test fresh


def test_offline_run_writes_its_files(tmp_path) -> None:
    lg = WandbLogger(project="toolkit-test", run_name="offline-a", save_dir=tmp_path / "out", mode="offline")
    coll = LoggerCollection([lg])
    coll.log_hyperparams({"learning_rate": 0.125, "model_config": {"hidden_size": 8}})
    coll.log_metrics({"train_loss_marker": 1.0, "dropped_text_marker": "text"}, step=1)
    coll.log_metrics({"train_loss_marker": 0.5}, step=2)
    assert lg.run.config["learning_rate"] == 0.125
    assert lg.run.config["model_config"] == {"hidden_size": 8}
    coll.finalize()
    # run.finish() returns before W&B's service has flushed the offline file; shutting the
    # service down (what happens at interpreter exit) completes it
    wandb.teardown()
    run_dir = lg.run_dir
    assert run_dir is not None and run_dir.startswith(str(tmp_path / "out" / "wandb" / "offline-run-"))
    (data,) = (tmp_path / "out" / "wandb").glob("offline-run-*/run-*.wandb")
    assert str(data.parent) == run_dir
    blob = data.read_bytes()
    # W&B has no public reader for this file; its records hold the keys as plain bytes
    assert b"train_loss_marker" in blob and b"learning_rate" in blob and b"offline-a" in blob
    assert b"dropped_text_marker" not in blob


def test_mode_from_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    lg = WandbLogger(save_dir=tmp_path)
    lg.log_metrics({"loss": 1.0}, step=1)
    lg.finalize()
    wandb.teardown()
    (data,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    assert b"loss" in data.read_bytes()


def test_bad_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode must be"):
        WandbLogger(mode="cloud")
