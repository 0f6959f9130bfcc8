"""report_to -> loggers: names, 'all', 'none', errors."""

from __future__ import annotations

import importlib.util
import os

import pytest

from toolkit.loggers import (
    LOGGER_REGISTRY,
    CSVLogger,
    JSONLinesLogger,
    MLflowLogger,
    TensorBoardLogger,
    WandbLogger,
    get_available_reporting_integrations,
    loggers_from_report_to,
    resolve_report_to,
)

THIRD_PARTY = ("tensorboard", "mlflow", "wandb")


def build(report_to, tmp_path):
    return loggers_from_report_to(
        report_to, logging_dir=str(tmp_path / "logs"), run_name="run-x", output_dir=str(tmp_path / "out")
    )


@pytest.fixture
def missing(monkeypatch):
    """Make the given top-level packages look uninstalled."""
    real = importlib.util.find_spec
    gone: set[str] = set()

    def find_spec(name, *args, **kwargs):
        return None if name.split(".")[0] in gone else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    return gone


def test_registry_names_classes_and_descriptions() -> None:
    assert list(LOGGER_REGISTRY) == ["csv", "jsonl", "tensorboard", "mlflow", "wandb"]
    classes = {n: s.cls for n, s in LOGGER_REGISTRY.items()}
    assert classes == {
        "csv": CSVLogger,
        "jsonl": JSONLinesLogger,
        "tensorboard": TensorBoardLogger,
        "mlflow": MLflowLogger,
        "wandb": WandbLogger,
    }
    assert all(s.description for s in LOGGER_REGISTRY.values())
    assert [n for n, s in LOGGER_REGISTRY.items() if s.third_party] == list(THIRD_PARTY)


def test_csv_and_jsonl_write_into_logging_dir(tmp_path) -> None:
    csv_logger, jsonl_logger = build(["csv", "jsonl"], tmp_path)
    assert csv_logger.path == os.path.join(str(tmp_path / "logs"), "metrics.csv")
    assert jsonl_logger.path == os.path.join(str(tmp_path / "logs"), "metrics.jsonl")
    assert not (tmp_path / "logs").exists()  # building opens nothing


def test_none_and_empty(tmp_path) -> None:
    assert build("none", tmp_path) == [] and build([], tmp_path) == [] and build(None, tmp_path) == []
    with pytest.raises(ValueError, match="'none' cannot be combined"):
        resolve_report_to(["none", "csv"])


def test_unknown_name_lists_the_accepted_ones(tmp_path) -> None:
    with pytest.raises(ValueError) as info:
        build(["csv", "comet_ml"], tmp_path)
    message = str(info.value)
    assert "'comet_ml'" in message
    for name in ("csv", "jsonl", "tensorboard", "mlflow", "wandb", "all", "none"):
        assert repr(name) in message
    with pytest.raises(ValueError, match="unknown integration"):
        resolve_report_to([3])


def test_all_selects_installed_third_party_only(missing, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///unused.db")  # configured: only installation matters
    missing.update(THIRD_PARTY)
    assert resolve_report_to("all") == []
    assert get_available_reporting_integrations() == ["csv", "jsonl"]
    missing.discard("mlflow")
    if importlib.util.find_spec("mlflow") is None:
        pytest.skip("mlflow is not installed")
    assert resolve_report_to(["all"]) == ["mlflow"]
    assert resolve_report_to(["csv", "all", "mlflow"]) == ["csv", "mlflow"]  # duplicates removed
    assert get_available_reporting_integrations() == ["csv", "jsonl", "mlflow"]


def test_all_builds_loggers_without_starting_them(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/unused.db")
    monkeypatch.setenv("WANDB_MODE", "offline")
    loggers = build("all", tmp_path)
    expected = [n for n in THIRD_PARTY if importlib.util.find_spec(n) is not None]
    assert [lg.name for lg in loggers] == expected
    for lg in loggers:  # nothing opened, imported runs or written yet
        assert getattr(lg, "_writer", None) is None and getattr(lg, "_run", None) is None
        assert getattr(lg, "_run_id", None) is None
    assert not (tmp_path / "logs").exists() and not (tmp_path / "out").exists()
    by_name = {lg.name: lg for lg in loggers}
    if "wandb" in by_name:
        assert by_name["wandb"].run_name == "run-x" and by_name["wandb"].save_dir == str(tmp_path / "out")
    if "mlflow" in by_name:
        assert by_name["mlflow"].run_name == "run-x"
    if "tensorboard" in by_name:
        assert by_name["tensorboard"].log_dir == str(tmp_path / "logs")


@pytest.mark.parametrize("name", THIRD_PARTY)
def test_named_but_missing_package_names_the_extra(name, missing, tmp_path) -> None:
    missing.add(name)
    with pytest.raises(ImportError, match=rf'pip install "toolkit\[{name}\]"'):
        build([name], tmp_path)


@pytest.mark.parametrize(
    "cls,extra", [(TensorBoardLogger, "tensorboard"), (MLflowLogger, "mlflow"), (WandbLogger, "wandb")]
)
def test_constructing_without_the_package_raises(cls, extra, missing, tmp_path) -> None:
    missing.add(extra)
    with pytest.raises(ImportError, match=rf'{cls.__name__} needs .* pip install "toolkit\[{extra}\]"'):
        cls(tmp_path) if cls is TensorBoardLogger else cls()
