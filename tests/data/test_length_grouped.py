"""Tests of LengthGroupedSampler: grouping, longest-first, seeding, resume, ranks, lengths."""

from __future__ import annotations

import logging

import pytest
import torch
from torch.utils.data import DataLoader

from toolkit.data.length_grouped import LengthGroupedSampler, lengths_from_dataset
from toolkit.data.samplers import ResumableRandomSampler


def random_lengths(n: int, seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 500, (n,), generator=g).tolist()


def mean_spread(order: list[int], lengths: list[int], batch_size: int) -> float:
    """Average (max - min) length inside consecutive batches of ``order``."""
    spreads = []
    for i in range(0, len(order), batch_size):
        batch = [lengths[j] for j in order[i : i + batch_size]]
        spreads.append(max(batch) - min(batch))
    return sum(spreads) / len(spreads)


def test_batches_are_length_homogeneous_compared_to_random_order():
    lengths = random_lengths(2000)
    grouped = list(LengthGroupedSampler(8, lengths=lengths, seed=1))
    shuffled = list(ResumableRandomSampler(len(lengths), seed=1))
    assert sorted(grouped) == list(range(2000))
    # random batches of 8 from U(1, 500) spread ~390; sorted mega-batches of 400 spread ~10
    assert mean_spread(grouped, lengths, 8) < 0.1 * mean_spread(shuffled, lengths, 8)


def test_order_is_still_random_at_the_large_scale():
    lengths = random_lengths(2000)
    order = list(LengthGroupedSampler(8, lengths=lengths, seed=1))
    # not a global sort: some later batch is longer than an earlier one
    firsts = [lengths[order[i]] for i in range(8, len(order), 8)]
    assert firsts != sorted(firsts, reverse=True)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_first_batch_holds_the_longest_item(seed):
    lengths = random_lengths(1000, seed=seed)
    lengths[777] = 10_000
    sampler = LengthGroupedSampler(4, lengths=lengths, seed=seed)
    loader = DataLoader(range(len(lengths)), batch_size=4, sampler=sampler)
    first = next(iter(loader)).tolist()
    assert 777 in first


def test_same_seed_same_order_and_set_epoch_changes_it():
    lengths = random_lengths(300)
    a, b = LengthGroupedSampler(4, lengths=lengths, seed=5), LengthGroupedSampler(4, lengths=lengths, seed=5)
    first = list(a)
    assert first == list(b)
    assert first != list(LengthGroupedSampler(4, lengths=lengths, seed=6))
    a.set_epoch(1)
    second = list(a)
    assert second != first and sorted(second) == sorted(first) == list(range(300))


def test_resume_at_position_k_yields_the_tail():
    lengths = random_lengths(203)
    full = list(LengthGroupedSampler(4, lengths=lengths, seed=7, num_replicas=2, rank=1))
    for k in (0, 1, 40, 101, 102):
        s = LengthGroupedSampler(4, lengths=lengths, seed=7, num_replicas=2, rank=1)
        s.load_state_dict({"epoch": 0, "seed": 7, "position": k})
        assert s.remaining() == 102 - k and len(s) == 102
        assert list(s) == full[k:]
        assert s.position == 0
    # state_dict round trip mid-epoch, with the loop's consumed count
    s = LengthGroupedSampler(4, lengths=lengths, seed=7, num_replicas=2, rank=1)
    s.set_epoch(3)
    epoch3 = list(s)
    state = s.state_dict(consumed=10)
    t = LengthGroupedSampler(4, lengths=lengths, seed=0, num_replicas=2, rank=1)
    t.load_state_dict(state)
    t.set_epoch(3)  # the loop's call keeps the restored position
    assert list(t) == epoch3[10:]


@pytest.mark.parametrize("n,replicas", [(101, 2), (100, 4), (7, 3), (2, 4)])
def test_ranks_cover_everything_padded_by_wrap(n, replicas):
    lengths = random_lengths(n)
    parts = [
        list(LengthGroupedSampler(3, lengths=lengths, seed=2, num_replicas=replicas, rank=r))
        for r in range(replicas)
    ]
    per_rank = -(-n // replicas)
    assert all(len(p) == per_rank for p in parts)
    flat = [i for p in parts for i in p]
    assert set(flat) == set(range(n))
    # exactly once each, except the wrap-around padding (total - n extra items)
    assert len(flat) - len(set(flat)) == per_rank * replicas - n


def test_drop_last_ranks_never_repeat():
    lengths = random_lengths(103)
    parts = [
        list(LengthGroupedSampler(4, lengths=lengths, num_replicas=4, rank=r, drop_last=True))
        for r in range(4)
    ]
    flat = [i for p in parts for i in p]
    assert all(len(p) == 25 for p in parts) and len(set(flat)) == len(flat) == 100


def test_ranks_see_similar_lengths_at_each_step():
    lengths = random_lengths(4000)
    lengths[1234] = 10_000
    samplers = [LengthGroupedSampler(8, lengths=lengths, seed=3, num_replicas=4, rank=r) for r in range(4)]
    parts = [list(s) for s in samplers]
    assert 1234 in parts[0][:8]  # the longest global batch comes first, on every rank
    step_spreads, rank_spreads = [], []
    for step in range(0, 1000, 8):
        maxima = [max(lengths[i] for i in p[step : step + 8]) for p in parts]
        step_spreads.append(max(maxima) - min(maxima))
    shuffled = [list(ResumableRandomSampler(4000, seed=3, num_replicas=4, rank=r)) for r in range(4)]
    for step in range(0, 1000, 8):
        maxima = [max(lengths[i] for i in p[step : step + 8]) for p in shuffled]
        rank_spreads.append(max(maxima) - min(maxima))
    assert sum(step_spreads[1:]) < 0.2 * sum(rank_spreads[1:])


def test_lengths_from_a_length_column_of_dict_items(caplog):
    data = [{"input_ids": [0] * 3, "length": 100 + i} for i in range(20)]
    with caplog.at_level(logging.WARNING, logger="toolkit.data.length_grouped"):
        sampler = LengthGroupedSampler(2, dataset=data)
    assert sampler.lengths.tolist() == [100 + i for i in range(20)]  # the column, not len(input_ids)
    assert "iterating the dataset once" in caplog.text


def test_lengths_from_a_datasets_like_column_read_without_iterating():
    class Columnar:  # the part of `datasets.Dataset` the sampler uses
        column_names = ["input_ids", "n_tokens"]

        def __len__(self):
            return 4

        def __getitem__(self, key):
            if key == "n_tokens":
                return [5, 1, 9, 2]
            raise AssertionError("items must not be read when the column exists")

    sampler = LengthGroupedSampler(1, dataset=Columnar(), length_column_name="n_tokens")
    assert sampler.lengths.tolist() == [5, 1, 9, 2]
    assert list(sampler)[0] == 2


def test_lengths_from_model_input_warns_once(caplog):
    data = [{"input_ids": list(range(i % 7 + 1))} for i in range(30)]
    with caplog.at_level(logging.WARNING, logger="toolkit.data.length_grouped"):
        sampler = LengthGroupedSampler(2, dataset=data)
    assert sampler.lengths.tolist() == [i % 7 + 1 for i in range(30)]
    assert len([r for r in caplog.records if "iterating the dataset once" in r.getMessage()]) == 1
    assert lengths_from_dataset([{"tokens": [1, 2]}], model_input_name="tokens") == [2]


def test_clear_errors():
    with pytest.raises(ValueError, match="batch_size"):
        LengthGroupedSampler(0, lengths=[1, 2])
    with pytest.raises(ValueError, match="`dataset` or `lengths`"):
        LengthGroupedSampler(2)
    with pytest.raises(ValueError, match="3 lengths for a dataset of 2"):
        LengthGroupedSampler(2, dataset=[{}, {}], lengths=[1, 2, 3])
    with pytest.raises(ValueError, match="'input_ids'"):
        LengthGroupedSampler(2, dataset=[{"x": [1]}])
    with pytest.raises(ValueError, match="not mappings"):
        LengthGroupedSampler(2, dataset=[(torch.zeros(2),)])
    with pytest.raises(ValueError, match=">= 0"):
        LengthGroupedSampler(2, lengths=[1, -1])
    with pytest.raises(ValueError, match="rank"):
        LengthGroupedSampler(2, lengths=[1, 2], num_replicas=2, rank=2)


def test_empty_and_tiny_inputs():
    assert list(LengthGroupedSampler(4, lengths=[])) == []
    assert list(LengthGroupedSampler(4, lengths=[3])) == [0]
    assert sorted(LengthGroupedSampler(4, lengths=[3, 3, 3])) == [0, 1, 2]
