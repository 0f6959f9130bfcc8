"""Tests of the image-classification recipe (recipes/image_classification.py) and its CNN."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "recipes" / "image_classification.py"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

pytest.importorskip("sklearn")

from recipes import image_classification as ic  # noqa: E402
from recipes.models import DigitsCNN, classification_metrics  # noqa: E402
from toolkit import EvalPrediction  # noqa: E402
from toolkit.checkpoint import load_tensors  # noqa: E402

TINY = "--max_steps 60 --logging_steps 20 --evaluation_strategy no --disable_tqdm true --learning_rate 5e-3".split()


def test_tiny_end_to_end(tmp_path, capsys):
    out = tmp_path / "digits"
    metrics = ic.main(["--output_dir", str(out), *TINY])
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["eval_accuracy"] == pytest.approx(metrics["eval_accuracy"])
    assert json.loads((out / "train_results.json").read_text())["train_loss"] > 0
    # 60 steps of 32 images: far above the 0.1 of a guess over ten classes
    assert metrics["eval_accuracy"] > 0.7 and 0.5 < metrics["eval_f1"] <= 1.0
    assert metrics["eval_loss"] < np.log(10) - 1.0
    printed = capsys.readouterr().out
    assert f"Model saved to {out}" in printed and "accuracy = " in printed
    DigitsCNN(10).load_state_dict(load_tensors(str(out / "model.safetensors")))  # strict


def test_split_is_fixed_stratified_and_disjoint():
    train_x, train_y, eval_x, eval_y = ic.load_digits_split(0.2, seed=0)
    assert (len(train_x), len(eval_x)) == (1437, 360)
    assert train_x.shape[1:] == (1, 8, 8) and train_x.dtype == np.float32
    assert 0.0 <= train_x.min() and train_x.max() <= 1.0
    assert np.bincount(eval_y, minlength=10).min() >= 35  # stratified: every digit about 36 times
    again = ic.load_digits_split(0.2, seed=0)
    np.testing.assert_array_equal(again[2], eval_x)
    train_rows = {row.tobytes() for row in train_x}
    assert sum(row.tobytes() in train_rows for row in eval_x) < 5  # (a few digits are pixel-identical)
    other = ic.load_digits_split(0.2, seed=1)
    assert not np.array_equal(other[2], eval_x)


def test_missing_scikit_learn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r'scikit-learn.*pip install -e "\.\[recipes\]"'):
        ic.load_digits_split(0.2, seed=0)


def test_classification_metrics_match_a_hand_count():
    logits = np.eye(3)[[0, 1, 2, 2, 1, 0]].astype(np.float32)  # predictions 0 1 2 2 1 0
    labels = np.array([0, 1, 2, 1, 1, 2])
    metrics = classification_metrics(3)(EvalPrediction(logits, labels))
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    # per class F1: class 0: p=1/2 r=1 -> 2/3; class 1: p=1 r=2/3 -> 4/5; class 2: p=1/2 r=1/2 -> 1/2
    assert metrics["f1"] == pytest.approx((2 / 3 + 4 / 5 + 1 / 2) / 3)


def test_cnn_shapes_and_loss():
    torch.manual_seed(0)
    model = DigitsCNN(10, channels=4, hidden_size=8)
    images, labels = torch.rand(5, 1, 8, 8), torch.arange(5)
    out = model(images, labels=labels)
    assert out["logits"].shape == (5, 10)
    torch.testing.assert_close(out["loss"], torch.nn.functional.cross_entropy(out["logits"], labels))
    assert set(model(images)) == {"logits"}
    with pytest.raises(ValueError, match="image_size"):
        DigitsCNN(10, image_size=7)


def test_parser_defaults_config_file_and_bad_options(tmp_path):
    opts, args = ic.parse_args(["--output_dir", str(tmp_path)])
    assert args.num_train_epochs == ic.TRAINING_DEFAULTS["num_train_epochs"]
    assert args.learning_rate == ic.TRAINING_DEFAULTS["learning_rate"] and opts.eval_fraction == 0.2
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"output_dir": str(tmp_path), "channels": 8, "learning_rate": 0.1}))
    opts, args = ic.parse_args([str(path)])
    assert (opts.channels, args.learning_rate) == (8, 0.1)
    assert args.per_device_train_batch_size == ic.TRAINING_DEFAULTS["per_device_train_batch_size"]
    with pytest.raises(ValueError, match="eval_fraction"):
        ic.parse_args(["--output_dir", str(tmp_path), "--eval_fraction", "1.5"])


def test_help_lists_training_and_recipe_options(recipe_help):
    stdout = recipe_help(SCRIPT)
    assert "--channels" in stdout and "--num_train_epochs" in stdout


@pytest.mark.slow
def test_default_run_reaches_documented_result(tmp_path):
    match = re.search(r"eval accuracy >= ([\d.]+) and macro\s+F1 >= ([\d.]+)", ic.__doc__)
    assert match, "the recipe docstring must state the default run's result"
    metrics = ic.main(["--output_dir", str(tmp_path / "digits"), "--disable_tqdm", "true"])
    assert metrics["eval_accuracy"] >= float(match.group(1))
    assert metrics["eval_f1"] >= float(match.group(2))


@pytest.mark.distributed
def test_torchrun_two_processes(tmp_path, torchrun_recipe):
    out = tmp_path / "ddp"
    torchrun_recipe(SCRIPT, ["--output_dir", str(out), *TINY, "--max_steps", "6"])
    saved = json.loads((out / "eval_results.json").read_text())
    assert 0.0 <= saved["eval_f1"] <= 1.0 and 0.0 <= saved["eval_accuracy"] <= 1.0
    # the two ranks' eval shards are gathered with the sampler's padding dropped: 360 examples counted
    hits = saved["eval_accuracy"] * 360
    assert hits == pytest.approx(round(hits), abs=1e-3)
