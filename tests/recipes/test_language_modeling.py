"""Tests of the language-modeling recipe (recipes/language_modeling.py) and its model."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "recipes" / "language_modeling.py"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from recipes import language_modeling as lm  # noqa: E402
from recipes.models import DecoderConfig, DecoderLM  # noqa: E402
from toolkit.checkpoint import load_tensors  # noqa: E402

TINY = (
    "--data_bytes 120000 --block_size 64 --n_layer 1 --n_head 2 --d_model 32 --max_steps 40 "
    "--per_device_train_batch_size 16 --learning_rate 1e-2 --logging_steps 20 --eval_steps 20 --disable_tqdm true"
).split()


def test_tiny_end_to_end(tmp_path, capsys):
    out = tmp_path / "lm"
    metrics = lm.main(["--output_dir", str(out), *TINY, "--generate", "--generate_tokens", "16"])
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "eval_results.json").read_text())["eval_loss"] == pytest.approx(
        metrics["eval_loss"]
    )
    loss = metrics["eval_loss"]
    assert isinstance(loss, float) and math.isfinite(loss)
    assert loss < math.log(256) - 1.0  # clearly better than a uniform guess over bytes
    assert metrics["perplexity"] == pytest.approx(math.exp(loss))
    printed = capsys.readouterr().out
    assert f"Model saved to {out}" in printed
    assert "perplexity = " in printed and "***** eval metrics *****" in printed
    assert "----- sample (greedy) -----\ndef " in printed
    # the saved weights (tied head stored once) load back into a model built from the saved config
    config = DecoderConfig(**json.loads((out / "model_config.json").read_text()))
    state = load_tensors(str(out / "model.safetensors"))
    DecoderLM(config).load_state_dict(state)  # strict


def test_help_lists_training_and_recipe_options(recipe_help):
    stdout = recipe_help(SCRIPT)
    assert "--learning_rate" in stdout and "--block_size" in stdout
    assert "--evaluation_strategy" in stdout and "--generate" in stdout


def test_recipe_defaults_come_from_the_parser(tmp_path):
    opts, args = lm.parse_args(["--output_dir", str(tmp_path)])
    assert args.learning_rate == lm.TRAINING_DEFAULTS["learning_rate"]
    assert args.max_steps == lm.TRAINING_DEFAULTS["max_steps"]
    assert args.report_to == [] and str(args.save_strategy.value) == "no"
    assert opts.block_size == 128
    _, args = lm.parse_args(["--output_dir", str(tmp_path), "--learning_rate", "0.5", "--max_steps", "3"])
    assert (args.learning_rate, args.max_steps) == (0.5, 3)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_config_file(tmp_path, suffix):
    config = {"output_dir": str(tmp_path), "learning_rate": 0.25, "block_size": 32}
    path = tmp_path / f"config{suffix}"
    if suffix == ".yaml":
        yaml = pytest.importorskip("yaml")
        path.write_text(yaml.safe_dump(config))
    else:
        path.write_text(json.dumps(config))
    opts, args = lm.parse_args([str(path)])
    assert (args.learning_rate, opts.block_size) == (0.25, 32)
    assert args.max_steps == lm.TRAINING_DEFAULTS["max_steps"]  # recipe defaults apply to files too
    path.write_text(json.dumps({**config, "learnig_rate": 1}) if suffix == ".json" else "learnig_rate: 1\n")
    with pytest.raises((ValueError, TypeError)):
        lm.parse_args([str(path)])


def test_corpus_split_is_deterministic_and_by_file():
    train, evals = lm.read_corpus(300_000, 0.05)
    assert (train, evals) == lm.read_corpus(300_000, 0.05)
    assert len(train) + len(evals) == 300_000
    assert 0.02 < len(evals) / 300_000 < 0.1
    sources = {p.read_bytes() for p in lm.stdlib_sources()[:40]}
    eval_files = [s for s in sources if len(s) > 2000 and s in evals]
    assert eval_files and not any(s in train for s in eval_files)
    blocks = lm.ByteBlocks(train, 64)
    assert len(blocks) == len(train) // 64
    item = blocks[1]
    assert item["input_ids"].dtype == torch.long and bytes(item["input_ids"].tolist()) == train[64:128]


def test_model_is_causal_tied_and_ignores_minus_100():
    torch.manual_seed(0)
    model = DecoderLM(DecoderConfig(block_size=16, n_layer=2, n_head=2, d_model=16)).eval()
    assert model.lm_head.weight is model.tok_emb.weight
    ids = torch.randint(0, 256, (2, 16))
    changed = ids.clone()
    changed[:, 10] = (changed[:, 10] + 1) % 256
    a, b = model(ids)["logits"], model(changed)["logits"]
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])
    labels = ids.clone()
    labels[:, 8:] = -100
    expected = torch.nn.functional.cross_entropy(a[:, :7].reshape(-1, 256), ids[:, 1:8].reshape(-1))
    torch.testing.assert_close(model(ids, labels=labels)["loss"], expected)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.slow
def test_default_run_reaches_documented_result(tmp_path):
    match = re.search(r"eval loss <= ([\d.]+) nats/byte", lm.__doc__)
    assert match, "the recipe docstring must state the default run's result"
    metrics = lm.main(["--output_dir", str(tmp_path / "lm"), "--disable_tqdm", "true"])
    assert metrics["eval_loss"] <= float(match.group(1))


def test_generate_text_greedy_and_seeded_top_k():
    torch.manual_seed(0)
    model = DecoderLM(DecoderConfig(block_size=8, n_layer=1, n_head=2, d_model=16))
    opts = lm.ModelDataArguments(generate=True, generate_tokens=12, prompt="def ", top_k=5)
    sample = lm.generate_text(model, opts, seed=3)
    assert sample.startswith("def ") and model.training  # the prompt is kept; the mode is restored
    assert sample == lm.generate_text(model, opts, seed=3)
    greedy = lm.ModelDataArguments(generate_tokens=12, prompt="def ")
    assert lm.generate_text(model, greedy, seed=0) == lm.generate_text(model, greedy, seed=1)
