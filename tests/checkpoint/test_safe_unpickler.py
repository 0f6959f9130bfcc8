"""`load_object` decodes allow-listed pickles with the C unpickler and refuses the rest."""

from __future__ import annotations

import collections
import dataclasses
import io
import pickle
import random

import numpy as np
import pytest
import torch
from torch import _weights_only_unpickler

from toolkit.checkpoint.serialization import UnsafeCheckpointError, load_object, save_object
from toolkit.utils.seed import get_rng_state


@dataclasses.dataclass
class Settings:
    """A user type that is only loadable once allowed with ``safe_globals``."""

    width: int
    name: str


def _rich_state() -> dict:
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    opt.param_groups[0]["params"][0].grad = torch.ones(3)
    opt.step()
    return {
        "optimizer": opt.state_dict(),
        "python": random.getstate(),
        "ordered": collections.OrderedDict(a=1, b=torch.arange(4)),
        "misc": [{1, 2}, torch.Size([2, 3]), torch.float16, 1 + 2j, b"raw", None, 2.5],
        "device": torch.device("cpu"),
    }


@pytest.fixture
def no_python_unpickler(monkeypatch):
    """Make torch's pure-Python weights-only unpickler fail if anything reaches it."""

    def refuse(self):
        raise AssertionError("the weights-only Python unpickler was used")

    monkeypatch.setattr(_weights_only_unpickler.Unpickler, "load", refuse)


def _assert_same(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert type(a) is type(b) and list(a) == list(b)
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert type(a) is type(b) and a == b


def test_allow_listed_archive_is_decoded_without_the_python_unpickler(tmp_path, no_python_unpickler) -> None:
    state = _rich_state()
    path = tmp_path / "state.pt"
    save_object(state, path)
    _assert_same(state, load_object(path))
    _assert_same(state, load_object(path, mmap=True))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    _assert_same(state, load_object(buffer))


def test_checkpoint_rng_state_takes_the_fast_path(tmp_path, no_python_unpickler) -> None:
    rng = get_rng_state()
    save_object(rng, tmp_path / "rng_state.pth")
    loaded = load_object(tmp_path / "rng_state.pth")
    assert loaded["python"] == rng["python"]
    assert torch.equal(loaded["cpu"], rng["cpu"])


def test_fast_path_gives_what_the_weights_only_loader_gives(tmp_path) -> None:
    state = _rich_state()
    save_object(state, tmp_path / "s.pt")
    _assert_same(torch.load(tmp_path / "s.pt", weights_only=True), load_object(tmp_path / "s.pt"))


def test_user_type_needs_safe_globals_on_both_paths(tmp_path) -> None:
    path = tmp_path / "settings.pt"
    torch.save({"settings": Settings(3, "x")}, path)
    with pytest.raises(UnsafeCheckpointError, match="settings.pt"):
        load_object(path)
    with torch.serialization.safe_globals([Settings]):
        assert load_object(path)["settings"] == Settings(3, "x")


def test_safe_globals_cannot_unblock_os_functions(tmp_path) -> None:
    marker = tmp_path / "pwned"

    class Shell:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save(Shell(), path)
    import os

    with torch.serialization.safe_globals([os.system]), pytest.raises(UnsafeCheckpointError):
        load_object(path)
    assert not marker.exists()


def test_protocol_2_builtins_eval_is_refused(tmp_path) -> None:
    marker = tmp_path / "pwned"
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch()"

    class Evil:
        def __reduce__(self):
            return (eval, (payload,))

    path = tmp_path / "evil.pt"
    torch.save(Evil(), path, pickle_protocol=2)
    with pytest.raises(UnsafeCheckpointError):
        load_object(path)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:'torch.load' received a zip file")
def test_torchscript_archive_is_not_handed_to_jit_load(tmp_path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(RuntimeError, match="TorchScript"):
        load_object(path)


def test_forced_weights_only_environment_still_loads(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")
    state = _rich_state()
    save_object(state, tmp_path / "s.pt")
    _assert_same(state, load_object(tmp_path / "s.pt"))


def test_small_archives_are_read_and_large_ones_mapped(tmp_path, monkeypatch) -> None:
    seen: list[bool] = []
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.append(bool(kwargs.get("mmap")))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    save_object({"w": torch.zeros(8)}, tmp_path / "small.pt")
    save_object({"w": torch.zeros(1 << 19)}, tmp_path / "large.pt")  # 2 MiB
    load_object(tmp_path / "small.pt", mmap=True)
    load_object(tmp_path / "large.pt", mmap=True)
    assert seen == [False, True]


def test_numpy_arrays_follow_the_weights_only_rules(tmp_path) -> None:
    path = tmp_path / "np.pt"
    torch.save({"a": np.arange(3)}, path)
    try:
        expected = torch.load(path, weights_only=True)
    except pickle.UnpicklingError:
        with pytest.raises(UnsafeCheckpointError):
            load_object(path)
    else:
        assert np.array_equal(load_object(path)["a"], expected["a"])
