"""Tests of toolkit.report: the PNG, the command line, missing state, missing matplotlib."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def history(steps: int = 20) -> list[dict]:
    out = []
    for s in range(1, steps + 1):
        out.append({"loss": 2.0 / s, "learning_rate": 1e-3 * (1 - s / steps), "epoch": s / steps, "step": s})
        if s % 5 == 0:
            out.append({"eval_loss": 2.5 / s, "eval_accuracy": 1 - 1 / s, "eval_runtime": 0.1, "step": s})
    out.append({"train_runtime": 1.0, "train_loss": 0.4, "total_flos": 0.0, "step": steps})
    return out


def write_state(folder: Path, log_history: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {"global_step": 20, "log_history": log_history}
    (folder / "trainer_state.json").write_text(json.dumps(state), encoding="utf-8")


def test_panels_pick_losses_metrics_and_learning_rate():
    titles = [title for title, _ in report._panels(history())]
    assert titles == ["training loss", "evaluation loss", "eval_accuracy", "learning rate"]
    assert report._panels([{"train_runtime": 1.0, "step": 3}, {"loss": 1.0}]) == []  # no step, no point


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    written = report.plot_training_curves(history(), str(tmp_path / "run"))
    assert written == str(tmp_path / "run" / "training_curves.png")
    data = Path(written).read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000
    named = report.plot_training_curves(history(), str(tmp_path / "curves.png"))
    assert Path(named).read_bytes()[:8] == PNG_MAGIC


def test_plot_does_not_touch_pyplot_state(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    backend = matplotlib.get_backend()
    report.plot_training_curves(history(), str(tmp_path))
    assert matplotlib.get_backend() == backend
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def test_nothing_to_draw_returns_none(tmp_path, caplog):
    pytest.importorskip("matplotlib")
    with caplog.at_level(logging.WARNING, logger="toolkit.report"):
        assert report.plot_training_curves([], str(tmp_path)) is None
    assert "no loss, metric or learning rate" in caplog.text
    assert len(caplog.records) == 1 and not (tmp_path / "training_curves.png").exists()


def test_without_matplotlib_logs_one_line_and_returns_none(tmp_path, caplog, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib...` fail
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with caplog.at_level(logging.WARNING, logger="toolkit.report"):
        assert report.plot_training_curves(history(), str(tmp_path)) is None
    assert len(caplog.records) == 1 and "matplotlib is not installed" in caplog.records[0].getMessage()
    assert not (tmp_path / "training_curves.png").exists()


def test_cli_on_a_run_folder(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    write_state(tmp_path, history())
    assert report.main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "training_curves.png")
    assert (tmp_path / "training_curves.png").read_bytes()[:8] == PNG_MAGIC
    assert report.main([str(tmp_path), "--output", str(tmp_path / "x" / "c.png")]) == 0
    assert (tmp_path / "x" / "c.png").exists()


def test_falls_back_to_the_newest_checkpoint(tmp_path):
    write_state(tmp_path / "checkpoint-5", history(5))
    write_state(tmp_path / "checkpoint-10", history(10))
    (tmp_path / "checkpoint-20").mkdir()
    (tmp_path / "checkpoint-20" / "model.safetensors").write_bytes(b"x")  # no state file
    assert report.find_trainer_state(str(tmp_path)) == f"{tmp_path}/checkpoint-10/trainer_state.json"
    assert report.load_log_history(str(tmp_path)) == history(10)
    write_state(tmp_path, history(3))  # the top-level file wins
    assert report.load_log_history(str(tmp_path)) == history(3)


def test_missing_state_names_the_folder(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
        report.find_trainer_state(str(tmp_path))
    assert report.main([str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "trainer_state.json" in err and str(tmp_path / "nowhere") in err


def test_python_dash_m_entry_point(tmp_path):
    pytest.importorskip("matplotlib")
    write_state(tmp_path, history())
    done = subprocess.run(
        [sys.executable, "-m", "toolkit.report", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "training_curves.png").exists()
    missing = subprocess.run(
        [sys.executable, "-m", "toolkit.report", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and "trainer_state.json" in missing.stderr
