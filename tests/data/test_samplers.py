"""Tests of ResumableRandomSampler, ShardedEvalSampler and seed_worker."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from toolkit.data import ResumableRandomSampler, ShardedEvalSampler, seed_worker


def test_same_seed_same_order_and_epochs_differ():
    a, b = ResumableRandomSampler(100, seed=3), ResumableRandomSampler(range(100), seed=3)
    first = list(a)
    assert first == list(b)
    assert sorted(first) == list(range(100))
    assert first != list(range(100))
    a.set_epoch(1)
    second = list(a)
    assert second != first and sorted(second) == list(range(100))
    assert list(ResumableRandomSampler(100, seed=4)) != first
    assert list(ResumableRandomSampler(10, shuffle=False)) == list(range(10))


@pytest.mark.parametrize("n,replicas", [(10, 3), (10, 2), (2, 4), (7, 1)])
def test_distributed_split_covers_every_index_padded_by_wrap(n, replicas):
    samplers = [ResumableRandomSampler(n, seed=1, num_replicas=replicas, rank=r) for r in range(replicas)]
    parts = [list(s) for s in samplers]
    lengths = {len(p) for p in parts}
    assert lengths == {len(samplers[0])} == {-(-n // replicas)}
    flat = [i for p in parts for i in p]
    assert set(flat) == set(range(n))
    # the padding repeats the head of the permutation (wrap-around), nothing else
    full = list(ResumableRandomSampler(n, seed=1))
    padded = (full * (len(flat) // n + 1))[: len(flat)]
    assert sorted(flat) == sorted(padded)
    # rank r takes positions r, r + R, ... of the padded order
    for r, part in enumerate(parts):
        assert part == padded[r::replicas]


def test_drop_last_split_has_no_duplicates():
    parts = [list(ResumableRandomSampler(10, num_replicas=3, rank=r, drop_last=True)) for r in range(3)]
    flat = [i for p in parts for i in p]
    assert all(len(p) == 3 for p in parts) and len(set(flat)) == 9


def test_resume_yields_exact_tail():
    full = list(ResumableRandomSampler(50, seed=7, num_replicas=2, rank=1))
    for k in (0, 1, 13, 24, 25):
        s = ResumableRandomSampler(50, seed=7, num_replicas=2, rank=1)
        s.load_state_dict({"epoch": 0, "seed": 7, "position": k})
        assert s.remaining() == 25 - k and len(s) == 25
        assert list(s) == full[k:]
        assert s.position == 0  # a full pass resets the position


def test_skip_and_position_tracking_and_pass_reset():
    s = ResumableRandomSampler(20, seed=0)
    full = list(s)
    assert s.position == 0
    it = iter(s)
    taken = [next(it) for _ in range(5)]
    assert taken == full[:5] and s.position == 5
    del it
    s.skip(3)
    assert list(s) == full[8:]
    with pytest.raises(ValueError):
        s.skip(21)
    with pytest.raises(ValueError):
        s.skip(-1)


def test_position_follows_the_latest_pass_only():
    s = ResumableRandomSampler(6, seed=0)
    full = list(s)
    old = iter(s)
    next(old)
    new = iter(s)  # starts where the other pass had got to
    assert s.position == 1
    assert next(new) == full[1] and s.position == 2
    assert list(old) == full[1:]  # the older pass runs out without moving the position
    assert s.position == 2
    assert list(new) == full[2:] and s.position == 0
    it = iter(s)
    next(it)
    s.load_state_dict({"epoch": 0, "seed": 0, "position": 4})  # detaches the running pass
    next(it)
    assert s.position == 4 and list(s) == full[4:]


def test_resume_is_o1_single_generator_call_and_slice(monkeypatch):
    n = 10_000
    s = ResumableRandomSampler(n, seed=5)
    full = s.epoch_indices().tolist()
    s.load_state_dict({"epoch": 0, "seed": 5, "position": 9000})

    calls = []
    real_randperm = torch.randperm

    def counting_randperm(*args, **kwargs):
        calls.append(args)
        return real_randperm(*args, **kwargs)

    monkeypatch.setattr(torch, "randperm", counting_randperm)

    slices = []
    real_epoch_indices = s.epoch_indices

    class Recorder:
        def __init__(self, t):
            self.t = t

        def __getitem__(self, key):
            slices.append(key)
            return self.t[key]

    monkeypatch.setattr(s, "epoch_indices", lambda: Recorder(real_epoch_indices()))
    it = iter(s)
    assert len(calls) == 1
    assert slices == [slice(9000, None, None)]
    assert next(it) == full[9000]
    assert list(it) == full[9001:]


class CountingDataset(Dataset):
    def __init__(self, n):
        self.n = n
        self.seen = []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.seen.append(i)
        return i


def test_resume_through_dataloader_loads_only_the_tail():
    ds = CountingDataset(10_000)
    s = ResumableRandomSampler(ds, seed=1)
    full = s.epoch_indices().tolist()
    s.load_state_dict({"epoch": 0, "seed": 1, "position": 9000})
    s.set_epoch(0)  # the loop's set_epoch of the same epoch keeps the position
    loader = DataLoader(ds, batch_size=100, sampler=s)
    got = torch.cat(list(loader)).tolist()
    assert got == full[9000:]
    assert ds.seen == full[9000:]  # no skipped item was ever fetched


def test_state_dict_round_trip_and_consumed_override(tmp_path):
    s = ResumableRandomSampler(30, seed=11)
    s.set_epoch(2)
    it = iter(s)
    for _ in range(10):
        next(it)  # the "loader" ran ahead to 10 ...
    state = s.state_dict(consumed=6)  # ... but the loop trained on 6
    assert state == {"epoch": 2, "seed": 11, "position": 6}
    assert s.state_dict()["position"] == 10
    torch.save(state, tmp_path / "s.pt")
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)
    r = ResumableRandomSampler(30, seed=0)
    r.load_state_dict(loaded)
    ref = ResumableRandomSampler(30, seed=11)
    ref.set_epoch(2)
    assert list(r) == list(ref)[6:]
    with pytest.raises(ValueError):
        s.state_dict(consumed=31)
    with pytest.raises(ValueError, match="number of processes"):
        ResumableRandomSampler(10).load_state_dict({"epoch": 0, "seed": 1, "position": 11})


def test_set_epoch_new_epoch_resets_position():
    s = ResumableRandomSampler(10)
    s.load_state_dict({"epoch": 1, "seed": 42, "position": 4})
    s.set_epoch(1)
    assert s.position == 4
    s.set_epoch(2)
    assert s.position == 0


def test_invalid_arguments():
    with pytest.raises(ValueError, match="rank"):
        ResumableRandomSampler(10, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_replicas"):
        ShardedEvalSampler(10, num_replicas=0)


def test_empty_dataset():
    assert list(ResumableRandomSampler(0, num_replicas=2)) == []


@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("n,replicas", [(10, 3), (2, 4), (9, 3), (0, 2)])
def test_eval_sampler_each_index_once(n, replicas, contiguous):
    parts = [
        list(ShardedEvalSampler(n, num_replicas=replicas, rank=r, contiguous=contiguous))
        for r in range(replicas)
    ]
    flat = [i for p in parts for i in p]
    assert sorted(flat) == list(range(n))
    assert [len(ShardedEvalSampler(n, replicas, r, contiguous)) for r in range(replicas)] == [
        len(p) for p in parts
    ]
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    if contiguous:
        assert flat == list(range(n))


def test_seed_worker_seeds_from_torch_initial_seed():
    torch.manual_seed(1234)
    seed_worker(0)
    a = (random.random(), np.random.rand())
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(1234)
    seed_worker(5)
    assert (random.random(), np.random.rand()) == a
