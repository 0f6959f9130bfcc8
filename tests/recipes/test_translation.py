"""Tests of the translation recipe (recipes/translation.py) and its encoder-decoder model."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "recipes" / "translation.py"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from recipes import translation as tr  # noqa: E402
from recipes.seq2seq_model import Seq2SeqConfig, Seq2SeqTransformer  # noqa: E402
from toolkit.checkpoint import load_tensors  # noqa: E402
from toolkit.types import EvalPrediction  # noqa: E402

TINY = (
    "--num_train 400 --num_eval 40 --max_digits 3 --n_layer 1 --d_model 32 --d_ff 64 --max_steps 30 "
    "--per_device_train_batch_size 32 --learning_rate 3e-3 --logging_steps 10 --eval_steps 15 --disable_tqdm true"
).split()


@pytest.fixture(autouse=True)
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("number", "words"),
    [
        (0, "zero"),
        (7, "seven"),
        (40, "forty"),
        (21, "twenty-one"),
        (105, "one hundred and five"),
        (1005, "one thousand and five"),
        (1100, "one thousand one hundred"),
        (700_010, "seven hundred thousand and ten"),
        (312_005, "three hundred and twelve thousand and five"),
        (999_999, "nine hundred and ninety-nine thousand nine hundred and ninety-nine"),
    ],
)
def test_number_words(number, words):
    assert tr.number_to_words(number) == words
    ids = tr.encode_words(words)
    assert tr.UNK not in ids and [tr.VOCAB[i] for i in ids] == words.replace("-", " - ").split()
    assert tr.decode_digits([tr.START, *tr.encode_digits(number), tr.PAD]) == str(number)


def test_data_is_seeded_distinct_and_split():
    opts = tr.TranslationArguments(num_train=3000, num_eval=300)
    train, evals = tr.make_datasets(opts)
    assert (train, evals) == tr.make_datasets(opts)
    assert (len(train), len(evals)) == (3000, 300)
    as_number = [tr.decode_digits(ex["labels"]) for ex in train + evals]
    assert len(set(as_number)) == 3300  # distinct: no eval number is trained on
    lengths = {len(n) for n in as_number[:3000]}
    assert lengths == {1, 2, 3, 4, 5, 6}  # short numbers reach the training side too
    assert tr.make_datasets(tr.TranslationArguments(num_train=3000, num_eval=300, task_seed=1))[1] != evals
    with pytest.raises(ValueError, match="max_digits"):
        tr.TranslationArguments(num_train=90, num_eval=20, max_digits=2)  # 110 > 100 numbers exist
    with pytest.raises(ValueError, match="n must be"):
        tr.number_to_words(1_000_000)


def test_metrics_from_generated_ids():
    def row(text: str) -> list[int]:
        return [tr.START, *[tr.TOKEN_ID[c] for c in text], tr.EOS]

    preds = [row("312"), row("45"), row("1000")]
    width = max(map(len, preds))
    preds = np.array([p + [tr.PAD] * (width - len(p)) for p in preds])
    labels = np.full((3, 6), -100)
    for i, text in enumerate(["312", "450", "1000"]):
        labels[i, : len(text) + 1] = tr.encode_digits(int(text))
    metrics = tr.compute_metrics(EvalPrediction(predictions=preds, label_ids=labels))
    assert metrics["exact_match"] == pytest.approx(2 / 3)
    assert metrics["cer"] == pytest.approx(1 / 10)  # one deleted digit over 3 + 3 + 4 reference digits
    assert tr.edit_distance("kitten", "sitting") == 3 and tr.edit_distance("", "12") == 2


def test_model_contract_and_teacher_forcing():
    torch.manual_seed(0)
    config = Seq2SeqConfig(vocab_size=20, n_layer=1, d_model=32, d_ff=64)
    model = Seq2SeqTransformer(config).eval()
    assert model.head.weight is model.embed.weight
    src = torch.tensor([[5, 6, 7, 0], [8, 9, 10, 11]])
    mask = src.ne(0).long()
    labels = torch.tensor([[12, 13, 2], [14, 2, -100]])
    out = model(src, mask, labels=labels)
    expected = torch.nn.functional.cross_entropy(
        out["logits"].flatten(0, 1), labels.flatten(), ignore_index=-100
    )
    torch.testing.assert_close(out["loss"], expected)
    # padding is invisible: the first row with its pad column removed gives the same logits
    short = model(src[:1, :3], mask[:1, :3], labels=labels[:1])["logits"]
    torch.testing.assert_close(short, out["logits"][:1], rtol=1e-4, atol=1e-5)
    # the decoder is causal: changing a later label does not change earlier logits
    changed = labels.clone()
    changed[0, 1] = 15
    logits = model(src, mask, labels=changed)["logits"]
    torch.testing.assert_close(logits[0, :2], out["logits"][0, :2])
    assert not torch.allclose(logits[0, 2], out["logits"][0, 2])
    generated = model.generate(src, attention_mask=mask, max_length=6, num_beams=2)
    assert generated[:, 0].tolist() == [1, 1] and generated.shape[1] <= 6
    with pytest.raises(ValueError, match="max_positions"):
        model(torch.ones(1, 40, dtype=torch.long), labels=labels[:1])
    with pytest.raises(ValueError, match="d_model"):
        Seq2SeqConfig(d_model=30, n_head=4)


def test_tiny_end_to_end(tmp_path, capsys):
    out = tmp_path / "translation"
    metrics = tr.main(["--output_dir", str(out), *TINY, "--translate", "one hundred and five"])
    assert (out / "model.safetensors").is_file()
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["eval_exact_match"] == pytest.approx(metrics["eval_exact_match"])
    assert 0.0 <= metrics["eval_exact_match"] <= 1.0 and 0.0 <= metrics["eval_cer"]
    assert metrics["eval_cer"] < 1.0  # 30 steps already write some digits right
    printed = capsys.readouterr().out
    assert "exact_match = " in printed and f"Model saved to {out}" in printed
    assert re.search(r"'one hundred and five' -> [0-9?]*\n", printed)
    config = Seq2SeqConfig(**json.loads((out / "model_config.json").read_text()))
    Seq2SeqTransformer(config).load_state_dict(load_tensors(str(out / "model.safetensors")))  # strict


def test_t5_variant_few_steps(tmp_path):
    pytest.importorskip("transformers")
    out = tmp_path / "t5"
    metrics = tr.main(
        [
            "--output_dir",
            str(out),
            *TINY,
            "--model_type",
            "t5",
            "--max_steps",
            "4",
            "--eval_steps",
            "4",
            "--num_eval",
            "16",
        ]
    )
    assert {"eval_exact_match", "eval_cer", "eval_loss"} <= set(metrics)
    transformers = pytest.importorskip("transformers")
    model = transformers.T5ForConditionalGeneration.from_pretrained(out)  # saved with save_pretrained
    assert model.config.vocab_size == len(tr.VOCAB) and model.config.decoder_start_token_id == tr.START


def test_t5_without_transformers_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if not installed
    with pytest.raises(ImportError, match="transformers"):
        tr.build_model(tr.TranslationArguments(model_type="t5"))


def test_options_defaults_and_config_file(tmp_path):
    opts, args = tr.parse_args(["--output_dir", str(tmp_path)])
    assert args.predict_with_generate and args.generation_max_length == 8
    assert args.max_steps == tr.TRAINING_DEFAULTS["max_steps"] and opts.model_type == "transformer"
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"output_dir": str(tmp_path), "d_model": 32, "learning_rate": 0.01}))
    opts, args = tr.parse_args([str(path)])
    assert (opts.d_model, args.learning_rate, args.predict_with_generate) == (32, 0.01, True)
    with pytest.raises(ValueError, match="model_type"):
        tr.TranslationArguments(model_type="bart")


def test_help_lists_seq2seq_and_recipe_options(recipe_help):
    stdout = recipe_help(SCRIPT)
    for option in ("--predict_with_generate", "--generation_max_length", "--model_type", "--num_train"):
        assert option in stdout


@pytest.mark.slow
def test_default_run_reaches_documented_result(tmp_path):
    match = re.search(r"exact match >= ([\d.]+)", tr.__doc__)
    assert match, "the recipe docstring must state the default run's result"
    metrics = tr.main(["--output_dir", str(tmp_path / "translation"), "--disable_tqdm", "true"])
    assert metrics["eval_exact_match"] >= float(match.group(1))


@pytest.mark.distributed
def test_torchrun_two_processes(tmp_path, torchrun_recipe):
    out = tmp_path / "ddp"
    torchrun_recipe(SCRIPT, ["--output_dir", str(out), *TINY, "--max_steps", "6", "--eval_steps", "6"])
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["eval_samples_per_second"] > 0 and 0.0 <= saved["eval_exact_match"] <= 1.0
