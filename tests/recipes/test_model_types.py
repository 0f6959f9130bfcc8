"""``--model_type``: small transformers models (recipes/hf_models.py) trained through the recipes."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from recipes import hf_models  # noqa: E402
from recipes import language_modeling as lm  # noqa: E402
from recipes import text_classification as tc  # noqa: E402


def test_missing_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r'--model_type gpt2 .*pip install -e "\.\[transformers\]"'):
        hf_models.build_gpt2_lm(256, 16)
    with pytest.raises(ImportError, match="--model_type bert"):
        hf_models.build_bert_classifier(100, 3)


def test_builders_make_small_models_of_the_asked_shape():
    pytest.importorskip("transformers")
    gpt2 = hf_models.build_gpt2_lm(256, 32, n_layer=2, n_head=2, d_model=32)
    assert (gpt2.config.n_positions, gpt2.config.n_layer, gpt2.config.n_embd) == (32, 2, 32)
    assert gpt2.lm_head.weight is gpt2.transformer.wte.weight
    ids = torch.randint(0, 256, (2, 32))
    assert gpt2(input_ids=ids, labels=ids).loss.item() == pytest.approx(math.log(256), abs=0.3)
    bert = hf_models.build_bert_classifier(100, 4, max_length=24, hidden_size=32, num_layers=1, num_heads=2)
    out = bert(input_ids=torch.randint(0, 100, (3, 24)), labels=torch.tensor([0, 1, 3]))
    assert out.logits.shape == (3, 4) and out.loss.ndim == 0
    with pytest.raises(ValueError, match="divisible"):
        hf_models.build_bert_classifier(100, 4, hidden_size=30, num_heads=4)


def test_language_modeling_gpt2_trains_and_generates(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "lm-gpt2"
    metrics = lm.main(
        [
            "--output_dir", str(out), "--model_type", "gpt2", "--data_bytes", "120000", "--block_size", "64",
            "--n_layer", "1", "--n_head", "2", "--d_model", "32", "--max_steps", "40", "--learning_rate", "1e-2",
            "--per_device_train_batch_size", "16", "--logging_steps", "20", "--eval_steps", "20",
            "--disable_tqdm", "true", "--generate", "--generate_tokens", "12",
        ]
    )  # fmt: skip
    assert metrics["eval_loss"] < math.log(256) - 1.0  # learnt bytes, not a uniform guess
    assert json.loads((out / "config.json").read_text())["model_type"] == "gpt2"
    assert not (out / "model_config.json").exists()  # that file describes the recipe's own model
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    _, eval_text = lm.read_corpus(120000, 0.05)
    batch = torch.stack([item["input_ids"] for item in lm.ByteBlocks(eval_text, 64)])
    with torch.no_grad():  # the saved weights give back the final eval loss
        loss = reloaded(input_ids=batch, labels=batch).loss.item()
    assert loss == pytest.approx(metrics["eval_loss"], abs=1e-3)
    assert "----- sample (greedy) -----\ndef " in capsys.readouterr().out


def test_language_modeling_gpt2_generate_must_fit_the_context(tmp_path):
    with pytest.raises(ValueError, match="block_size"):
        lm.parse_args(
            ["--output_dir", str(tmp_path), "--model_type", "gpt2", "--block_size", "32", "--generate"]
        )
    with pytest.raises(ValueError, match="model_type must be one of decoder, gpt2"):
        lm.parse_args(["--output_dir", str(tmp_path), "--model_type", "llama"])


def test_text_classification_bert_trains_and_saves_tokenizer(tmp_path):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "bert"
    metrics = tc.main(
        [
            "--output_dir", str(out), "--model_type", "bert", "--max_steps", "20", "--learning_rate", "2e-3",
            "--max_train_samples", "400", "--max_eval_samples", "100", "--max_length", "32",
            "--embed_dim", "32", "--num_layers", "1", "--evaluation_strategy", "no", "--disable_tqdm", "true",
        ]
    )  # fmt: skip
    assert (
        math.isfinite(metrics["eval_loss"]) and 0.0 <= metrics["eval_f1"] <= metrics["eval_accuracy"] <= 1.0
    )
    assert metrics["eval_loss"] < math.log(len(tc.PACKAGES)) + 0.5
    model = transformers.BertForSequenceClassification.from_pretrained(out)
    tokenizer = tc.WordTokenizer.from_pretrained(out)
    assert model.config.vocab_size == len(tokenizer) and model.config.num_labels == len(tc.PACKAGES)
