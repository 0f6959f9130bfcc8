"""`toolkit.generation`: greedy and beam search against hand computations, EOS and
padding, settings and their priority, and the model contract."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from toolkit.generation import (
    GenerationConfig,
    Seq2SeqGenerationMixin,
    beam_search,
    generate,
    greedy_search,
    resolve_generation_config,
    shift_tokens_right,
)

PAD, START, EOS = 0, 1, 2
VOCAB = 9


class RandomSeq2Seq(Seq2SeqGenerationMixin, nn.Module):
    """A fixed random encoder-decoder whose EOS logit grows with the decoded length, so
    sequences end at different steps."""

    pad_token_id, decoder_start_token_id, eos_token_id = PAD, START, EOS

    def __init__(self, seed: int = 0, eos_slope: float = 1.0, eos_bias: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(VOCAB, 8)
        self.rnn = nn.GRU(8, 8, batch_first=True)
        self.out = nn.Linear(8, VOCAB)
        self.eos_slope, self.eos_bias = eos_slope, eos_bias
        self.encode_calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def encode(self, input_ids, attention_mask):
        self.encode_calls.append((input_ids, attention_mask))
        h = self.emb(input_ids) * attention_mask[..., None]
        return h.sum(1) / attention_mask.sum(1, keepdim=True)

    def decode(self, decoder_input_ids, memory, memory_mask):
        h, _ = self.rnn(self.emb(decoder_input_ids), memory[None].contiguous())
        logits = self.out(h)
        logits[..., [PAD, START]] = -1e4  # never generated
        # the EOS logit grows with the decoded length, faster for shorter inputs
        steps = torch.arange(decoder_input_ids.shape[1], dtype=logits.dtype)
        lateness = steps[None, :] - memory_mask.sum(1, keepdim=True) / 2
        logits[..., EOS] += self.eos_slope * lateness + self.eos_bias
        return logits


class TableModel(Seq2SeqGenerationMixin, nn.Module):
    """Next-token probabilities from a table keyed by the decoded prefix (the encoder
    input is ignored); prefixes not in the table get a uniform distribution."""

    pad_token_id, decoder_start_token_id, eos_token_id = PAD, START, EOS

    def __init__(self, table: dict[tuple[int, ...], dict[int, float]], vocab: int = 5) -> None:
        super().__init__()
        self.table = table
        self.vocab = vocab

    def encode(self, input_ids, attention_mask):
        return input_ids.float()

    def logprobs(self, prefix: tuple[int, ...]) -> torch.Tensor:
        probs = torch.full((self.vocab,), 1e-6)
        for token, p in self.table.get(prefix, {t: 1 / self.vocab for t in range(self.vocab)}).items():
            probs[token] = p
        return (probs / probs.sum()).log()

    def decode(self, decoder_input_ids, memory, memory_mask):
        return torch.stack([self.logprobs(tuple(row.tolist())) for row in decoder_input_ids])

    def score(self, tokens: list[int]) -> float:
        """Sum of log-probabilities of a generated sequence (start token excluded)."""
        return sum(float(self.logprobs(tuple(tokens[:i]))[tokens[i]]) for i in range(1, len(tokens)))


def _inputs(batch: int = 4, length: int = 5, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    for i in range(batch):  # inputs of different lengths (at least 2 tokens)
        mask[i, 2 + i % (length - 1) :] = 0
    ids = ids.masked_fill(mask == 0, PAD)
    return ids, mask


def _manual_greedy(model, ids, mask, max_length):
    """Row by row: argmax of the last position until EOS or max_length."""
    rows = []
    with torch.no_grad():
        for i in range(ids.shape[0]):
            row_ids, row_mask = ids[i : i + 1], mask[i : i + 1]
            memory = model.encode(row_ids, row_mask)
            seq = [START]
            while len(seq) < max_length:
                logits = model.decode(torch.tensor([seq]), memory, row_mask)[0, -1]
                seq.append(int(logits.argmax()))
                if seq[-1] == EOS:
                    break
            rows.append(seq)
    return rows


# ----------------------------------------------------------------------------- greedy


@pytest.mark.parametrize("max_length", [3, 8, 20])
def test_greedy_equals_step_by_step_argmax(max_length):
    model = RandomSeq2Seq()
    ids, mask = _inputs()
    out = generate(model, ids, mask, max_length=max_length)
    expected = _manual_greedy(model, ids, mask, max_length)
    assert out.dtype == torch.long
    assert out.shape == (ids.shape[0], max(len(r) for r in expected))
    for row, want in zip(out.tolist(), expected):
        assert row[: len(want)] == want
        assert row[len(want) :] == [PAD] * (len(row) - len(want))


def test_greedy_rows_end_at_different_steps_and_are_padded_after_eos():
    model = RandomSeq2Seq()
    ids, mask = _inputs(batch=6, seed=3)
    out = generate(model, ids, mask, max_length=20)
    lengths = []
    for row in out.tolist():
        assert row[0] == START
        end = row.index(EOS)  # every row ended (the EOS logit grows with length)
        assert all(t == PAD for t in row[end + 1 :])
        assert EOS not in row[1:end] and PAD not in row[1:end]
        lengths.append(end + 1)
    assert len(set(lengths)) > 1, "the case should have rows of different lengths"
    assert out.shape[1] == max(lengths)


def test_max_length_cuts_rows_without_eos_and_max_new_tokens_wins():
    model = RandomSeq2Seq(eos_bias=-1e3)  # EOS never wins
    ids, mask = _inputs()
    assert generate(model, ids, mask, max_length=6).shape == (4, 6)
    assert generate(model, ids, mask, max_length=6, max_new_tokens=3).shape == (4, 4)
    assert generate(model, ids, mask, max_length=6, num_beams=3).shape == (4, 6)
    assert generate(model, ids, mask, max_length=1).tolist() == [[START]] * 4


def test_min_length_forbids_eos_before_it():
    model = RandomSeq2Seq(eos_bias=1e3)  # EOS wins as soon as it may
    ids, mask = _inputs()
    assert generate(model, ids, mask, max_length=10).tolist() == [[START, EOS]] * 4
    # EOS may come once the output holds min_length tokens (start token counted)
    for beams in (1, 2):
        out = generate(model, ids, mask, max_length=10, min_length=4, num_beams=beams)
        assert out.shape == (4, 5)
        assert out[:, 4].tolist() == [EOS] * 4 and not (out[:, :4] == EOS).any()


def test_several_eos_ids_each_end_a_sequence():
    model = RandomSeq2Seq()
    ids, mask = _inputs(batch=6, seed=3)
    plain = generate(model, ids, mask, max_length=20)
    second = int(plain[0, 1])  # make the first generated token of row 0 an EOS id too
    both = generate(model, ids, mask, max_length=20, eos_token_id=[EOS, second])
    assert both[0, :2].tolist() == [START, second]
    assert both[0, 2:].tolist() == [PAD] * (both.shape[1] - 2)


def test_synced_gpus_runs_every_step_and_changes_nothing_else():
    model = RandomSeq2Seq()
    ids, mask = _inputs()
    calls = []
    decode = model.decode
    model.decode = lambda *a: calls.append(1) or decode(*a)
    short = generate(model, ids, mask, max_length=20)
    n_short = len(calls)
    synced = generate(model, ids, mask, max_length=20, synced_gpus=True)
    assert len(calls) - n_short == 19 > n_short
    assert torch.equal(synced[:, : short.shape[1]], short)
    assert (synced[:, short.shape[1] :] == PAD).all()


# ----------------------------------------------------------------------------- beam search


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_search_with_one_beam_equals_greedy(seed):
    model = RandomSeq2Seq(seed=seed)
    ids, mask = _inputs(batch=5, seed=seed + 10)
    config = resolve_generation_config(model, max_length=12, num_beams=1)
    assert torch.equal(beam_search(model, ids, mask, config), greedy_search(model, ids, mask, config))


def test_beam_search_finds_a_better_sequence_than_greedy():
    # greedy takes A (0.6) but then ends with probability 0.3: 0.18 in all;
    # B (0.4) then EOS (0.99) scores 0.396, which beam search finds
    A, B = 3, 4
    model = TableModel(
        {
            (START,): {A: 0.6, B: 0.4},
            (START, A): {EOS: 0.3, A: 0.25, B: 0.25, PAD: 0.2},
            (START, B): {EOS: 0.99, A: 0.01},
        }
    )
    ids = torch.tensor([[5, 6]])
    greedy = generate(model, ids, max_length=3).tolist()[0]
    beam = generate(model, ids, max_length=3, num_beams=2).tolist()[0]
    assert greedy == [START, A, EOS]
    assert beam == [START, B, EOS]
    assert model.score(beam) > model.score(greedy)
    assert model.score(beam) == pytest.approx(math.log(0.4 * 0.99), abs=1e-4)


def test_eos_outside_the_best_beams_does_not_finish_a_sequence():
    # with one beam, EOS ranked second at step 1 must not become a finished sequence
    # (it would win: log 0.45 / 1 > log(0.55 * 0.3) / 2); beam search then equals greedy
    A = 3
    model = TableModel({(START,): {A: 0.55, EOS: 0.45}, (START, A): {EOS: 0.3, 4: 0.25, A: 0.25, PAD: 0.2}})
    ids = torch.tensor([[5]])
    config = resolve_generation_config(model, max_length=3, num_beams=1)
    assert beam_search(model, ids, None, config).tolist() == [[START, A, EOS]]
    assert greedy_search(model, ids, None, config).tolist() == [[START, A, EOS]]
    # two beams, step 2 ranks: [X, EOS] .25, [X, A] .2, [Y, EOS] .18 (third: not finished),
    # [Y, C] .14. With early_stopping=True, counting [Y, EOS] would stop the search
    # before [X, A, EOS] (log .198 / 3 beats log .25 / 2) is found
    X, Y, A, C, D = 3, 4, 5, 6, 7
    table = {
        (START,): {X: 0.5, Y: 0.4, D: 0.1},
        (START, X): {EOS: 0.5, A: 0.4, D: 0.1},
        (START, Y): {EOS: 0.45, C: 0.35, D: 0.2},
        (START, X, A): {EOS: 0.99, D: 0.01},
    }
    model = TableModel(table, vocab=8)
    out = generate(model, ids, max_length=6, num_beams=2, length_penalty=1.0, early_stopping=True)
    assert out.tolist() == [[START, X, A, EOS]]


def test_early_stopping_true_stops_at_the_first_finished_beams():
    # two sequences finish by step 2 ([EOS]: 0.3, [B, EOS]: 0.18) while [A, C] (0.45) runs;
    # early_stopping=True stops there, False/"never" go on and find [A, C, EOS] (0.405)
    A, B, C = 3, 4, 5
    table = {
        (START,): {A: 0.5, EOS: 0.3, B: 0.2},
        (START, A): {C: 0.9, EOS: 0.1},
        (START, B): {EOS: 0.9, C: 0.1},
        (START, A, C): {EOS: 0.9, C: 0.1},
    }
    model = TableModel(table, vocab=6)
    ids = torch.tensor([[5]])
    run = lambda stop: generate(model, ids, max_length=5, num_beams=2, length_penalty=0.0, early_stopping=stop)  # noqa: E731
    assert run(True).tolist() == [[START, EOS]]
    assert run(False).tolist() == [[START, A, C, EOS]]
    assert run("never").tolist() == [[START, A, C, EOS]]


def test_early_stopping_never_bounds_with_the_longest_possible_length():
    # [EOS] (0.6) finishes first; with length_penalty=2 the estimate of False
    # (log .4 / 1**2) says [A ...] cannot beat it, the exact bound of "never"
    # (log .4 / 4**2) says it might, and [A, EOS] (log .396 / 2**2) does
    A = 3
    model = TableModel({(START,): {EOS: 0.6, A: 0.4}, (START, A): {EOS: 0.99, 4: 0.01}})
    ids = torch.tensor([[5]])
    results = {}
    for stop in (False, "never"):
        config = resolve_generation_config(model, max_length=4, num_beams=1, length_penalty=2.0, early_stopping=stop)
        results[stop] = beam_search(model, ids, None, config).tolist()
    assert results == {False: [[START, EOS]], "never": [[START, A, EOS]]}


def test_length_penalty_trades_length_for_probability():
    # finishing at once: 0.5; one token more then EOS: 0.4 * 0.9 = 0.36
    A = 3
    model = TableModel({(START,): {EOS: 0.5, A: 0.4, 4: 0.1}, (START, A): {EOS: 0.9, 4: 0.1}})
    ids = torch.tensor([[5]])
    short = generate(model, ids, max_length=4, num_beams=2, length_penalty=0.0).tolist()[0]
    long = generate(model, ids, max_length=4, num_beams=2, length_penalty=2.0).tolist()[0]
    assert short == [START, EOS]
    assert long == [START, A, EOS]


def test_beam_search_rows_are_independent_of_their_batch():
    model = RandomSeq2Seq(seed=4)
    ids, mask = _inputs(batch=4, seed=7)
    batched = generate(model, ids, mask, max_length=15, num_beams=3)
    for i in range(ids.shape[0]):
        alone = generate(model, ids[i : i + 1], mask[i : i + 1], max_length=15, num_beams=3)[0]
        width = alone.shape[0]
        assert batched[i, :width].tolist() == alone.tolist()
        assert (batched[i, width:] == PAD).all()


@pytest.mark.parametrize("early_stopping", [True, False, "never"])
def test_beam_search_output_shape_and_padding(early_stopping):
    model = RandomSeq2Seq(seed=5)
    ids, mask = _inputs(batch=6, seed=3)
    out = generate(model, ids, mask, max_length=20, num_beams=4, early_stopping=early_stopping)
    assert out.dtype == torch.long and out.shape[0] == 6 and out.shape[1] <= 20
    for row in out.tolist():
        assert row[0] == START
        if EOS in row:
            assert all(t == PAD for t in row[row.index(EOS) + 1 :])


def test_beam_search_score_is_at_least_greedy_on_random_models():
    for seed in range(4):
        model = RandomSeq2Seq(seed=seed)
        ids, mask = _inputs(batch=3, seed=seed)

        def seq_score(tokens, i, model=model, ids=ids, mask=mask):
            memory = model.encode(ids[i : i + 1], mask[i : i + 1])
            end = tokens.index(EOS) + 1 if EOS in tokens else len(tokens)
            logits = model.decode(torch.tensor([tokens[: end - 1]]), memory, mask[i : i + 1])[0]
            logp = torch.log_softmax(logits, -1)
            return float(sum(logp[t - 1, tokens[t]] for t in range(1, end)))

        with torch.no_grad():
            greedy = generate(model, ids, mask, max_length=12)
            beam = generate(model, ids, mask, max_length=12, num_beams=4, length_penalty=0.0, early_stopping="never")
            for i in range(3):
                assert seq_score(beam[i].tolist(), i) >= seq_score(greedy[i].tolist(), i) - 1e-5


# ----------------------------------------------------------------------------- inputs and settings


def test_attention_mask_is_built_from_the_pad_id_when_omitted():
    model = RandomSeq2Seq()
    ids, mask = _inputs()
    with_mask = generate(model, ids, mask, max_length=10)
    without = generate(model, ids, max_length=10)
    assert torch.equal(with_mask, without)
    assert torch.equal(model.encode_calls[-1][1], mask)
    generate(model, torch.tensor([[3, 4]]), max_length=3)
    assert model.encode_calls[-1][1].tolist() == [[1, 1]]


def test_settings_priority_call_then_config_then_attributes_then_model_config():
    class Config:
        decoder_start_token_id, eos_token_id, pad_token_id = 7, 8, 6

    class Model:
        config = Config()
        eos_token_id = 5

    cfg = resolve_generation_config(Model())
    assert (cfg.decoder_start_token_id, cfg.eos_token_id, cfg.pad_token_id, cfg.max_length) == (7, 5, 6, 20)
    model = Model()
    model.generation_config = GenerationConfig(max_length=9, eos_token_id=4, num_beams=2)
    cfg = resolve_generation_config(model, num_beams=None, max_length=11)
    assert (cfg.max_length, cfg.num_beams, cfg.eos_token_id) == (11, 2, 4)
    assert model.generation_config.max_length == 9  # the model's config is not changed
    cfg = resolve_generation_config(model, {"num_beams": 3})  # a passed config replaces the model's
    assert (cfg.max_length, cfg.num_beams, cfg.eos_token_id) == (20, 3, 5)


def test_pad_defaults_to_eos_and_start_defaults_to_bos():
    class Model:
        bos_token_id, eos_token_id = 1, 2

    cfg = resolve_generation_config(Model())
    assert (cfg.decoder_start_token_id, cfg.pad_token_id) == (1, 2)


def test_bad_settings_and_models_raise_clear_errors():
    model = RandomSeq2Seq()
    ids, mask = _inputs()
    with pytest.raises(ValueError, match="num_beams"):
        generate(model, ids, num_beams=0)
    with pytest.raises(ValueError, match="early_stopping"):
        generate(model, ids, early_stopping="sometimes")
    with pytest.raises(ValueError, match="2-D"):
        generate(model, ids[0])
    with pytest.raises(TypeError, match="unexpected arguments.*token_type_ids"):
        model.generate(ids, mask, token_type_ids=mask)
    with pytest.raises(TypeError, match="encode"):
        generate(nn.Linear(2, 2), ids, decoder_start_token_id=1)
    with pytest.raises(ValueError, match="decoder start token"):
        generate(nn.Linear(2, 2), ids)
    with pytest.raises(NotImplementedError, match="do_sample"):
        model.generate(ids, generation_config={"do_sample": True})


def test_generation_config_dict_and_json_round_trip(tmp_path):
    cfg = GenerationConfig.from_dict(
        {"max_length": 7, "num_beams": 3, "eos_token_id": [2, 5], "transformers_version": "4.34.0"}, num_beams=4
    )
    assert (cfg.max_length, cfg.num_beams, cfg.eos_token_id) == (7, 4, [2, 5])
    assert cfg.extra == {"transformers_version": "4.34.0"}
    assert cfg.to_dict()["transformers_version"] == "4.34.0"
    assert GenerationConfig.from_dict(cfg.to_dict()) == cfg
    path = cfg.save_pretrained(tmp_path)
    assert json.loads(open(path).read())["num_beams"] == 4
    assert GenerationConfig.from_pretrained(tmp_path) == cfg
    assert GenerationConfig.from_pretrained(path, max_length=3).max_length == 3
    with pytest.raises(FileNotFoundError):
        GenerationConfig.from_pretrained(tmp_path / "missing")
    with pytest.raises(ValueError, match="max_length"):
        GenerationConfig(max_length=0)
    assert cfg.update(num_beams=1, foo=2) == {"foo": 2} and cfg.num_beams == 1
    with pytest.raises(ValueError, match="min_length"):
        cfg.update(min_length=-1)
    assert cfg.min_length == 0


def test_shift_tokens_right_builds_teacher_forcing_inputs():
    labels = torch.tensor([[5, 6, EOS], [7, EOS, -100]])
    assert shift_tokens_right(labels, PAD, START).tolist() == [[START, 5, 6], [START, 7, EOS]]
