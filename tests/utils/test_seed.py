"""Tests of set_seed, enable_full_determinism and the RNG state round trip."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from toolkit.utils.seed import enable_full_determinism, get_rng_state, set_rng_state, set_seed


def _draws():
    return (random.random(), float(np.random.rand()), torch.rand(3).tolist())


def test_set_seed_twice_gives_same_draws():
    set_seed(123)
    a = _draws()
    set_seed(123)
    assert _draws() == a
    set_seed(124)
    assert _draws() != a


@pytest.fixture
def restore_determinism(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    flags = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    yield
    torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[2], flags[3]


def test_enable_full_determinism(restore_determinism):
    import os

    enable_full_determinism(7, warn_only=True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    a = _draws()
    set_seed(7, deterministic=True)
    assert _draws() == a
    assert not torch.is_deterministic_algorithms_warn_only_enabled()


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    set_seed(5)
    _draws()  # move away from the freshly-seeded state (numpy pos, gauss cache)
    np.random.randn()
    random.gauss(0, 1)
    state = get_rng_state()
    expected = _draws() + (float(np.random.randn()), random.gauss(0, 1))

    torch.save(state, tmp_path / "rng_state.pth")
    loaded = torch.load(tmp_path / "rng_state.pth", weights_only=True)
    set_seed(999)
    _draws()
    set_rng_state(loaded)
    assert _draws() + (float(np.random.randn()), random.gauss(0, 1)) == expected


def test_set_rng_state_accepts_numpy_native_tuple():
    # the form the HF Trainer saves: numpy's own tuple with an ndarray
    np.random.seed(3)
    native = {"numpy": np.random.get_state(), "cpu": torch.get_rng_state()}
    expected = (float(np.random.rand()), torch.rand(1).item())
    np.random.seed(4)
    torch.manual_seed(4)
    set_rng_state(native)
    assert (float(np.random.rand()), torch.rand(1).item()) == expected


def test_cuda_key_only_when_initialised():
    state = get_rng_state()
    assert set(state) >= {"python", "numpy", "cpu"}
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        assert "cuda" not in state
    else:
        assert len(state["cuda"]) == torch.cuda.device_count()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_cuda_state_without_cuda_is_skipped_with_warning(caplog):
    with caplog.at_level("WARNING", logger="toolkit.utils.seed"):
        set_rng_state({"cuda": [torch.zeros(16, dtype=torch.uint8)]})
    assert any("CUDA is not available" in r.getMessage() for r in caplog.records)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_rng_state_round_trip(tmp_path):
    torch.cuda.init()
    set_seed(1)
    state = get_rng_state()
    assert "cuda" in state
    expected = torch.rand(4, device="cuda").tolist()
    torch.save(state, tmp_path / "rng.pth")
    set_seed(2)
    set_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True))
    assert torch.rand(4, device="cuda").tolist() == expected
