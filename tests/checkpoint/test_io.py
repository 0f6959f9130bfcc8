"""Tests for FsspecCheckpointIO: round trips, commit protocol, corruption and write errors."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import fsspec
import pytest
import torch
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from toolkit.checkpoint import (
    MANIFEST_NAME,
    CheckpointCorruptedError,
    CheckpointWriteError,
    FsspecCheckpointIO,
    UnsafeCheckpointError,
)
from toolkit.checkpoint.io import PARTIAL_MARKER


def _state(tied_model: torch.nn.Module) -> dict:
    return {
        "model.safetensors": tied_model.state_dict(),
        "trainer_state.json": {"global_step": 5, "log_history": [{"loss": 0.5, "step": 5}]},
        "optimizer.pt": {"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": [{"lr": 0.1}]},
        "rng_state.pth": {"cpu": torch.get_rng_state(), "python": [3, (1, 2), None]},
        "pytorch_model.bin": {"w": torch.arange(4.0)},
        "README.txt": b"raw bytes\x00\xff",
    }


def _local_path(url: str) -> str:
    return fsspec.core.url_to_fs(url)[1]


def _flip_byte(fs, path: str, offset: int) -> None:
    data = bytearray(fs.cat_file(path))
    data[offset] ^= 0x01
    fs.pipe_file(path, bytes(data))


def test_round_trip_every_content_type(root, tied_model) -> None:
    io = FsspecCheckpointIO(fsync=False)
    state = _state(tied_model)
    path = f"{root}/checkpoint-5"
    io.save(state, path)
    assert io.exists(path)
    assert io.list(path) == sorted([*state, MANIFEST_NAME])  # the in-progress marker is gone
    loaded = io.load(path)
    assert set(loaded) == set(state)
    model = loaded["model.safetensors"]
    assert model["head.weight"] is model["embed.weight"]
    for name, tensor in state["model.safetensors"].items():
        assert torch.equal(model[name], tensor)
    assert loaded["trainer_state.json"] == state["trainer_state.json"]
    assert torch.equal(loaded["optimizer.pt"]["state"][0]["exp_avg"], torch.ones(3))
    assert torch.equal(loaded["rng_state.pth"]["cpu"], state["rng_state.pth"]["cpu"])
    assert loaded["rng_state.pth"]["python"] == [3, (1, 2), None]
    assert torch.equal(loaded["pytorch_model.bin"]["w"], torch.arange(4.0))
    assert loaded["README.txt"] == b"raw bytes\x00\xff"
    assert io.load(path, names=["trainer_state.json"]) == {"trainer_state.json": state["trainer_state.json"]}
    with pytest.raises(KeyError, match="nope.json"):
        io.load(path, names=["nope.json"])


def test_manifest_lists_sizes_and_checksums(root) -> None:
    io = FsspecCheckpointIO(fsync=False)
    path = f"{root}/checkpoint-1"
    io.save({"a.json": [1], "b.bin": b"12345"}, path)
    manifest = io.read_manifest(path)
    assert manifest["format"] == "toolkit-checkpoint" and manifest["version"] == 2
    assert manifest["files"]["b.bin"] == {"size": 5, "crc32": "cbf53a1c"}  # CRC-32 of b"12345"
    assert set(manifest["files"]) == {"a.json", "b.bin"}


def test_never_overwrites(root) -> None:
    io = FsspecCheckpointIO(fsync=False)
    path = f"{root}/checkpoint-1"
    io.save({"a.json": 1}, path)
    with pytest.raises(FileExistsError, match="checkpoint-1"):
        io.save({"a.json": 2}, path)
    assert io.load(path)["a.json"] == 1
    assert [n for n in io.list(root)] == ["checkpoint-1"]  # no temporary folder left


def test_bad_input_fails_before_anything_is_written(root) -> None:
    io = FsspecCheckpointIO(fsync=False)
    cases = [
        ({"model.safetensors": 3}, TypeError, "dict of tensors"),
        ({"model.safetensors": {"w": torch.ones(1), "step": 1}}, TypeError, "'step'"),
        ({"notes.txt": {"a": 1}}, ValueError, "cannot tell how to store"),
        ({"manifest.json": {}}, ValueError, "reserved"),
        ({"sub/x.json": {}}, ValueError, "separators"),
        ({"x.json": {"t": torch.ones(1)}}, TypeError, "x.json"),
    ]
    for state, error, message in cases:
        with pytest.raises(error, match=message):
            io.save(state, f"{root}/checkpoint-1")
        assert io.list(root) == [], state


def test_folder_without_manifest_does_not_exist(root) -> None:
    io = FsspecCheckpointIO(fsync=False)
    fs, base = fsspec.core.url_to_fs(root)
    fs.makedirs(f"{base}/checkpoint-3", exist_ok=True)
    fs.pipe_file(f"{base}/checkpoint-3/model.safetensors", b"whatever")
    assert not io.exists(f"{root}/checkpoint-3")
    with pytest.raises(CheckpointCorruptedError, match=f"checkpoint-3 has no {MANIFEST_NAME}"):
        io.load(f"{root}/checkpoint-3")
    with pytest.raises(FileNotFoundError):
        io.load(f"{root}/checkpoint-404")
    assert not io.exists(f"{root}/checkpoint-404")
    fs.pipe_file(f"{base}/checkpoint-3/{MANIFEST_NAME}", b"{not json")
    assert not io.exists(f"{root}/checkpoint-3")
    with pytest.raises(CheckpointCorruptedError, match="not valid JSON"):
        io.load(f"{root}/checkpoint-3")


def test_truncated_file_is_named(root, tied_model) -> None:
    io = FsspecCheckpointIO(fsync=False)
    path = f"{root}/checkpoint-1"
    io.save(_state(tied_model), path)
    fs, base = fsspec.core.url_to_fs(path)
    data = fs.cat_file(f"{base}/optimizer.pt")
    fs.pipe_file(f"{base}/optimizer.pt", data[: len(data) // 2])
    with pytest.raises(CheckpointCorruptedError, match=r"checkpoint-1/optimizer\.pt has \d+ bytes"):
        io.load(path)
    with pytest.raises(CheckpointCorruptedError, match=r"optimizer\.pt"):
        io.load(path, verify=False)  # sizes are checked even without checksums
    fs.rm(f"{base}/optimizer.pt")
    with pytest.raises(
        CheckpointCorruptedError, match=r"optimizer\.pt is listed in the manifest but missing"
    ):
        io.verify(path)


def test_bit_flip_fails_the_checksum(root, tied_model) -> None:
    io = FsspecCheckpointIO(fsync=False)
    path = f"{root}/checkpoint-1"
    io.save(_state(tied_model), path)
    fs, base = fsspec.core.url_to_fs(path)
    target = f"{base}/model.safetensors"
    _flip_byte(fs, target, fs.size(target) - 3)  # inside the tensor data
    with pytest.raises(CheckpointCorruptedError, match=r"model\.safetensors fails its crc32 checksum"):
        io.load(path)
    with pytest.raises(CheckpointCorruptedError, match=r"model\.safetensors"):
        io.verify(path)
    io.load(path, verify=False)  # the caller may opt out; the sizes still match
    assert io.exists(path)  # committed, though damaged: exists() does not read checksums


def test_unsafe_pickle_inside_a_checkpoint_is_refused(root, tmp_path) -> None:
    import io as stdlib_io

    class RunsShell:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    buffer = stdlib_io.BytesIO()
    torch.save({"x": RunsShell()}, buffer)
    io = FsspecCheckpointIO(fsync=False)
    io.save({"evil.pt": buffer.getvalue(), "ok.json": 1}, f"{root}/checkpoint-1")
    with pytest.raises(UnsafeCheckpointError, match="evil.pt"):
        io.load(f"{root}/checkpoint-1")
    assert not (tmp_path / "pwned").exists()
    assert io.load(f"{root}/checkpoint-1", names=["ok.json"]) == {"ok.json": 1}


def test_local_save_writes_aside_then_renames_then_commits(tmp_path, monkeypatch) -> None:
    io = FsspecCheckpointIO(fsync=False)
    final = str(tmp_path / "checkpoint-1")
    opened: list[str] = []
    renamed: list[tuple[str, str]] = []
    original_open, original_rename = LocalFileSystem.open, os.rename

    def spy_open(self, path, mode="rb", **kwargs):
        if "w" in mode:
            opened.append(os.path.relpath(path, tmp_path))
        return original_open(self, path, mode, **kwargs)

    def spy_rename(src, dst):
        renamed.append((os.path.basename(src), os.path.basename(dst)))
        return original_rename(src, dst)

    monkeypatch.setattr(LocalFileSystem, "open", spy_open)
    monkeypatch.setattr(os, "rename", spy_rename)
    io.save({"a.json": 1, "b.pt": {"x": 1}}, final)
    temp = opened[0].split("/")[0]
    assert temp.startswith("checkpoint-1.tmp-") and len(temp) == len("checkpoint-1.tmp-") + 32
    assert opened[:3] == [f"{temp}/{PARTIAL_MARKER}", f"{temp}/a.json", f"{temp}/b.pt"]
    assert renamed == [(temp, "checkpoint-1")]
    assert opened[3].startswith(f"checkpoint-1/{MANIFEST_NAME}.tmp-")  # manifest last, via rename
    assert len(opened) == 4
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-1"]


def test_object_store_writes_manifest_last(monkeypatch) -> None:
    io = FsspecCheckpointIO()
    url = "memory://toolkit-order-test/checkpoint-2"
    opened: list[str] = []
    original_open = MemoryFileSystem.open

    def spy_open(self, path, mode="rb", **kwargs):
        if "w" in mode:
            opened.append(path.rsplit("/", 1)[-1])
        return original_open(self, path, mode, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, "open", spy_open)
    try:
        io.save({"z.json": 1, "a.safetensors": {"w": torch.ones(2)}}, url)
        assert opened == [PARTIAL_MARKER, "a.safetensors", "z.json", MANIFEST_NAME]
        assert io.exists(url)
    finally:
        io.remove("memory://toolkit-order-test")


def _failing_open(monkeypatch, cls, fail_on: str, error: OSError):
    original = cls.open

    def open_(self, path, mode="rb", **kwargs):
        if "w" in mode and path.rsplit("/", 1)[-1].startswith(fail_on):
            raise error
        return original(self, path, mode, **kwargs)

    monkeypatch.setattr(cls, "open", open_)


@pytest.mark.parametrize("fail_on", ["b.pt", MANIFEST_NAME])
def test_write_error_mid_save_keeps_the_previous_checkpoint(root, tied_model, monkeypatch, fail_on) -> None:
    io = FsspecCheckpointIO(fsync=False)
    io.save(_state(tied_model), f"{root}/checkpoint-1")
    cls = LocalFileSystem if root.startswith("/") else MemoryFileSystem
    _failing_open(monkeypatch, cls, fail_on, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(CheckpointWriteError, match="checkpoint-2") as info:
        io.save({"a.json": 1, "b.pt": {"x": torch.ones(1)}, "c.json": 2}, f"{root}/checkpoint-2")
    assert isinstance(info.value, OSError)
    assert info.value.__cause__.errno == errno.ENOSPC
    monkeypatch.undo()
    assert io.list(root) == ["checkpoint-1"]  # neither temp folder nor partial checkpoint-2
    assert not io.exists(f"{root}/checkpoint-2")
    loaded = io.load(f"{root}/checkpoint-1")
    assert loaded["model.safetensors"]["head.weight"] is loaded["model.safetensors"]["embed.weight"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_destination(tmp_path) -> None:
    io = FsspecCheckpointIO(fsync=False)
    io.save({"a.json": 1}, str(tmp_path / "checkpoint-1"))
    os.chmod(tmp_path, 0o555)
    try:
        with pytest.raises(CheckpointWriteError, match="checkpoint-2"):
            io.save({"a.json": 2}, str(tmp_path / "checkpoint-2"))
    finally:
        os.chmod(tmp_path, 0o755)
    assert io.load(str(tmp_path / "checkpoint-1")) == {"a.json": 1}
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-1"]


_KILLED_SAVE = textwrap.dedent(
    """
    import sys, time
    import torch
    from toolkit.checkpoint import FsspecCheckpointIO

    target, ready = sys.argv[1], sys.argv[2]
    io = FsspecCheckpointIO(fsync=False)
    write = io._write_entry

    def slow_write(fs, path, name, value, local):
        entry = write(fs, path, name, value, local)
        if path.endswith("model.safetensors"):
            open(ready, "w").close()  # the temp folder now holds a file: kill me here
            time.sleep(120)
        return entry

    io._write_entry = slow_write
    io.save({"model.safetensors": {"w": torch.randn(256, 256)}, "z.pt": {"step": 2}}, target)
    """
)


def test_save_killed_by_sigkill_leaves_nothing_committed(tmp_path) -> None:
    io = FsspecCheckpointIO(fsync=False)
    io.save({"model.safetensors": {"w": torch.zeros(2)}, "z.pt": {"step": 1}}, str(tmp_path / "checkpoint-1"))
    ready = tmp_path / "ready"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_SAVE, str(tmp_path / "checkpoint-2"), str(ready)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the child never reached the middle of its save"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    leftovers = sorted(n for n in os.listdir(tmp_path) if n.startswith("checkpoint-2"))
    assert len(leftovers) == 1 and leftovers[0].startswith("checkpoint-2.tmp-")
    assert not io.exists(str(tmp_path / "checkpoint-2"))
    assert io.load(str(tmp_path / "checkpoint-1"))["z.pt"] == {"step": 1}


def test_remove_deletes_the_manifest_first(root, monkeypatch) -> None:
    io = FsspecCheckpointIO(fsync=False)
    path = f"{root}/checkpoint-1"
    io.save({"a.json": 1}, path)
    fs = fsspec.core.url_to_fs(path)[0]
    removed: list[str] = []
    original = type(fs).rm

    def spy_rm(self, p, recursive=False, **kwargs):
        removed.append(str(p).rsplit("/", 1)[-1])
        return original(self, p, recursive=recursive, **kwargs)

    monkeypatch.setattr(type(fs), "rm", spy_rm)
    io.remove(path)
    assert removed[0] == MANIFEST_NAME
    assert not io.exists(path) and io.list(root) == []
    io.remove(path)  # absent: no error


def test_manifest_from_a_newer_version_is_refused(tmp_path) -> None:
    io = FsspecCheckpointIO(fsync=False)
    path = tmp_path / "checkpoint-1"
    io.save({"a.json": 1}, str(path))
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    manifest["version"] = 99
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointCorruptedError, match="version 99"):
        io.load(str(path))


def test_file_url_and_empty_target_folder(tmp_path) -> None:
    io = FsspecCheckpointIO()
    (tmp_path / "checkpoint-1").mkdir()  # an empty folder may be replaced
    io.save({"a.json": {"k": "v"}}, f"file://{tmp_path}/checkpoint-1")
    assert io.load(str(tmp_path / "checkpoint-1")) == {"a.json": {"k": "v"}}
    assert _local_path(f"file://{tmp_path}") == str(tmp_path)
