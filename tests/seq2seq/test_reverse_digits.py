"""End to end: a tiny transformer encoder-decoder learns to reverse digit strings with
`Seq2SeqTrainer`, then generates the right answers for strings it never saw.

Sizes were chosen so that learning is reliable: over seeds 0-7 the held-out exact match
was 0.99-1.00 (the test asks for 0.9); training takes under 10 s of CPU time.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from toolkit import Seq2SeqTrainer, Seq2SeqTrainingArguments
from toolkit.data import DataCollatorWithPadding
from toolkit.generation import Seq2SeqGenerationMixin, shift_tokens_right
from toolkit.types import EvalPrediction

PAD, START, EOS = 0, 1, 2
VOCAB = 12  # digits 1..9 are tokens 3..11


class ReverseModel(Seq2SeqGenerationMixin, nn.Module):
    """One-layer transformer encoder-decoder with learned positions."""

    pad_token_id, decoder_start_token_id, eos_token_id = PAD, START, EOS

    def __init__(self, d: int = 64, heads: int = 4, max_len: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d)
        self.pos = nn.Embedding(max_len, d)
        enc = nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.0, batch_first=True)
        dec = nn.TransformerDecoderLayer(d, heads, 2 * d, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(enc, 1, enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(dec, 1)
        self.head = nn.Linear(d, VOCAB)

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))

    def encode(self, input_ids, attention_mask):
        return self.encoder(self._embed(input_ids), src_key_padding_mask=attention_mask == 0)

    def decode(self, decoder_input_ids, memory, memory_mask):
        n = decoder_input_ids.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(n, device=decoder_input_ids.device)
        h = self.decoder(
            self._embed(decoder_input_ids), memory, tgt_mask=causal, tgt_is_causal=True,
            memory_key_padding_mask=memory_mask == 0,
        )
        return self.head(h)

    def forward(self, input_ids, attention_mask=None, labels=None):
        if attention_mask is None:
            attention_mask = input_ids.ne(PAD).long()
        logits = self.decode(shift_tokens_right(labels, PAD, START), self.encode(input_ids, attention_mask), attention_mask)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        return {"loss": loss, "logits": logits}


def make_examples(n: int, rng: random.Random, exclude: set = frozenset()) -> tuple[list[dict], set]:
    """``n`` distinct strings of 2-6 digits, none in ``exclude``; labels are reversed + EOS."""
    out, seen = [], set(exclude)
    while len(out) < n:
        digits = tuple(rng.randint(1, 9) for _ in range(rng.randint(2, 6)))
        if digits in seen:
            continue
        seen.add(digits)
        tokens = [d + 2 for d in digits]
        out.append({"input_ids": tokens, "labels": tokens[::-1] + [EOS]})
    return out, seen


def decoded(tokens: np.ndarray) -> list[list[int]]:
    """Generated rows -> token lists: drop the start token, stop at EOS (kept)."""
    rows = []
    for row in np.where(tokens == -100, PAD, tokens).tolist():
        row = row[1:]
        rows.append(row[: row.index(EOS) + 1] if EOS in row else row)
    return rows


def label_rows(labels: np.ndarray) -> list[list[int]]:
    return [[t for t in row if t not in (-100, PAD)] for row in labels.tolist()]


def exact_match(pred: EvalPrediction) -> dict[str, float]:
    hits = [p == t for p, t in zip(decoded(pred.predictions), label_rows(pred.label_ids))]
    return {"exact_match": float(np.mean(hits)), "width": float(pred.predictions.shape[1])}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    rng = random.Random(0)
    train, seen = make_examples(2000, rng)
    held_out, _ = make_examples(100, rng, exclude=seen)
    args = Seq2SeqTrainingArguments(
        str(tmp_path_factory.mktemp("reverse")), per_device_train_batch_size=32, per_device_eval_batch_size=32,
        learning_rate=3e-3, warmup_ratio=0.05, num_train_epochs=5, seed=0, report_to="none",
        disable_tqdm=True, save_strategy="no", logging_steps=100, predict_with_generate=True,
        generation_max_length=8, log_level="warning",
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small runs fastest on one thread (and on a busy machine)
    torch.manual_seed(0)
    trainer = Seq2SeqTrainer(
        ReverseModel(), args, train_dataset=train, data_collator=DataCollatorWithPadding(pad_token_id=PAD),
        compute_metrics=exact_match,
    )
    try:
        trainer.train()
        yield trainer, held_out
    finally:
        torch.set_num_threads(threads)


def test_learns_to_reverse_unseen_strings(trained):
    trainer, held_out = trained
    out = trainer.predict(held_out)
    want = [ex["labels"] for ex in held_out]
    got = decoded(out.predictions)
    accuracy = np.mean([g == w for g, w in zip(got, want)])
    assert accuracy >= 0.9, accuracy
    assert out.metrics["test_exact_match"] == pytest.approx(accuracy)
    assert "test_loss" in out.metrics and out.metrics["test_loss"] < 0.5
    # generate output: start token first, padded with the pad id to generation_max_length
    assert out.predictions.shape == (100, 8)
    assert (out.predictions[:, 0] == START).all()
    assert (out.predictions != -100).all()  # every batch was padded to the same width


def test_evaluate_with_beams_and_call_settings(trained):
    trainer, held_out = trained
    seen = []
    trainer.compute_metrics = lambda pred: seen.append(pred) or exact_match(pred)
    metrics = trainer.evaluate(held_out, max_length=9, num_beams=2)
    assert metrics["eval_exact_match"] >= 0.9
    assert metrics["eval_width"] == 9.0  # compute_metrics got generated ids, width max_length
    assert set(np.unique(seen[0].predictions[:, 0])) == {START}
    assert "eval_loss" in metrics
    # without predict_with_generate the predictions are the logits of teacher forcing
    trainer.args.predict_with_generate = False
    try:
        logits = trainer.predict(held_out[:5]).predictions
    finally:
        trainer.args.predict_with_generate = True
    assert logits.ndim == 3 and logits.shape[-1] == VOCAB


def test_max_new_tokens_and_labels_padded_with_minus_100_across_batches(trained):
    """max_new_tokens=2: every batch's outputs are padded (pad id) to 3 tokens. Labels
    keep their own width per batch (4 and 7 here), so the evaluation loop pads the
    narrower batch with -100."""
    trainer, held_out = trained
    short = [ex for ex in held_out if len(ex["input_ids"]) <= 3][:4]
    long = [ex for ex in held_out if len(ex["input_ids"]) == 6][:4]
    trainer.args.per_device_eval_batch_size = 4
    try:
        out = trainer.predict(short + long, max_new_tokens=2)
    finally:
        trainer.args.per_device_eval_batch_size = 32
    assert out.predictions.shape == (8, 3)  # max_new_tokens + 1: both batches padded to it
    assert out.label_ids.shape == (8, 7)
    assert (out.label_ids[:4, 4:] == -100).all()
    assert (out.label_ids[4:] != -100).all()
