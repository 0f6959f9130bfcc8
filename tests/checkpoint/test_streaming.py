"""Checkpoint files are streamed (no whole-file copy in memory), checksummed with CRC-32
on the way, decoded from the file on load, and still fail loudly when damaged."""

from __future__ import annotations

import hashlib
import io as stdlib_io
import json
import os
import zlib

import fsspec
import pytest
import safetensors.torch
import torch
from fsspec.implementations.local import LocalFileSystem

import toolkit.checkpoint.checksum as checksum_module
import toolkit.checkpoint.serialization as serialization
from toolkit.checkpoint import (
    MANIFEST_NAME,
    AsyncCheckpointIO,
    CheckpointCorruptedError,
    FsspecCheckpointIO,
    snapshot,
)
from toolkit.checkpoint.async_io import SnapshotBuffers
from toolkit.checkpoint.checksum import HashingWriter, crc32_combine, file_checksum, start_file_checksum
from toolkit.checkpoint.serialization import TIED_METADATA_KEY, write_tensors


def _state(tied_model: torch.nn.Module) -> dict:
    optimizer = torch.optim.AdamW(tied_model.parameters(), lr=0.1)
    tied_model(torch.tensor([[1, 2, 3]])).sum().backward()
    optimizer.step()
    return {
        "model.safetensors": tied_model.state_dict(),
        "optimizer.pt": optimizer.state_dict(),
        "trainer_state.json": {"global_step": 3},
        "notes.txt": b"\x00\x01 raw",
    }


def _file_bytes(root: str, name: str) -> bytes:
    fs, base = fsspec.core.url_to_fs(root)
    return fs.cat_file(f"{base}/{name}")


def test_streamed_safetensors_are_byte_identical_to_the_library_encoder() -> None:
    tensors = {
        "w": torch.randn(3, 4),
        "b": torch.arange(5, dtype=torch.int64),
        "h": torch.ones(2, 2, dtype=torch.bfloat16),
        "m": torch.tensor([True, False]),
        "e": torch.zeros(0, 3),
        "t": torch.randn(4, 3).t(),  # not contiguous
    }
    tensors["alias"] = tensors["w"]  # tied: stored once, recorded in the metadata
    out = stdlib_io.BytesIO()
    write_tensors(tensors, out, metadata={"note": "x"})
    unique = {k: v.contiguous() for k, v in tensors.items() if k != "alias"}
    expected = safetensors.torch.save(
        unique, metadata={"format": "pt", "note": "x", TIED_METADATA_KEY: json.dumps({"alias": "w"})}
    )
    ours = out.getvalue()

    def split(data: bytes) -> tuple[dict, bytes]:
        n = int.from_bytes(data[:8], "little")
        return json.loads(data[8 : 8 + n]), data[8 + n :]

    # the same header (the library orders metadata keys by hash) and the very same data bytes
    assert len(ours) == len(expected)
    assert split(ours) == split(expected)
    back = serialization.load_tensors(out.getvalue())
    assert back["alias"] is back["w"]
    for name, tensor in tensors.items():
        assert torch.equal(back[name], tensor), name


def test_save_never_encodes_a_whole_file_in_memory(root, tied_model, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a whole file was encoded into memory")

    for name in ("tensors_to_bytes", "object_to_bytes"):
        monkeypatch.setattr(serialization, name, refuse)
    monkeypatch.setattr("toolkit.checkpoint.io.tensors_to_bytes", refuse)
    monkeypatch.setattr("toolkit.checkpoint.io.object_to_bytes", refuse)
    monkeypatch.setattr(safetensors.torch, "save", refuse)
    largest = max(t.numel() * t.element_size() for t in tied_model.state_dict().values())
    sizes: list[int] = []
    write = HashingWriter.write

    def spy(self, data):
        n = write(self, data)
        sizes.append(n)
        return n

    monkeypatch.setattr(HashingWriter, "write", spy)
    io = FsspecCheckpointIO(fsync=False)
    state = _state(tied_model)
    io.save(state, f"{root}/checkpoint-1")
    assert sizes and max(sizes) <= max(largest, 4096)  # one tensor (or one small record) per write
    monkeypatch.undo()
    loaded = io.load(f"{root}/checkpoint-1")
    assert torch.equal(
        loaded["model.safetensors"]["embed.weight"], state["model.safetensors"]["embed.weight"]
    )
    assert torch.equal(
        loaded["optimizer.pt"]["state"][0]["exp_avg"], state["optimizer.pt"]["state"][0]["exp_avg"]
    )


def test_manifest_checksums_are_the_crc32_of_the_files(root, tied_model) -> None:
    io = FsspecCheckpointIO(fsync=False)
    io.save(_state(tied_model), f"{root}/checkpoint-1")
    files = io.read_manifest(f"{root}/checkpoint-1")["files"]
    for name, entry in files.items():
        data = _file_bytes(f"{root}/checkpoint-1", name)
        assert entry == {"size": len(data), "crc32": f"{zlib.crc32(data):08x}"}, name


def test_local_load_decodes_from_the_files_not_from_a_copy(tmp_path, tied_model, monkeypatch) -> None:
    io = FsspecCheckpointIO(fsync=False)
    path = str(tmp_path / "checkpoint-1")
    io.save(_state(tied_model), path)
    read: list[str] = []
    cat_file = LocalFileSystem.cat_file

    def spy(self, target, *args, **kwargs):
        read.append(os.path.basename(target))
        return cat_file(self, target, *args, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "cat_file", spy)
    loaded = io.load(path)
    assert read == [MANIFEST_NAME]
    assert loaded["notes.txt"] == b"\x00\x01 raw"


@pytest.mark.parametrize("name", ["optimizer.pt", "model.safetensors", "trainer_state.json"])
def test_a_flipped_bit_anywhere_is_named_on_load(root, tied_model, name) -> None:
    io = FsspecCheckpointIO(fsync=False)
    path = f"{root}/checkpoint-1"
    io.save(_state(tied_model), path)
    fs, base = fsspec.core.url_to_fs(path)
    for offset in (0, 9, fs.size(f"{base}/{name}") - 2):  # header, start, end of the data
        data = bytearray(fs.cat_file(f"{base}/{name}"))
        data[offset] ^= 0x10
        fs.pipe_file(f"{base}/{name}", bytes(data))
        with pytest.raises(CheckpointCorruptedError, match=rf"{name} fails its crc32 checksum"):
            io.load(path)
        with pytest.raises(CheckpointCorruptedError, match=name):
            io.verify(path)
        data[offset] ^= 0x10
        fs.pipe_file(f"{base}/{name}", bytes(data))
    io.load(path)  # restored: loads again


def test_manifests_with_sha256_still_load_and_are_checked(root, tied_model) -> None:
    io = FsspecCheckpointIO(fsync=False)
    path = f"{root}/checkpoint-1"
    state = _state(tied_model)
    io.save(state, path)
    fs, base = fsspec.core.url_to_fs(path)
    files = {}
    for name in state:  # rewrite the manifest as version 1 wrote it
        data = fs.cat_file(f"{base}/{name}")
        files[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {"format": "toolkit-checkpoint", "version": 1, "files": files}
    fs.pipe_file(f"{base}/{MANIFEST_NAME}", json.dumps(manifest).encode())
    assert io.load(path)["trainer_state.json"] == {"global_step": 3}
    data = bytearray(fs.cat_file(f"{base}/optimizer.pt"))
    data[-5] ^= 1
    fs.pipe_file(f"{base}/optimizer.pt", bytes(data))
    with pytest.raises(CheckpointCorruptedError, match=r"optimizer\.pt fails its sha256 checksum"):
        io.load(path)


def test_crc32_combine_and_split_checksums_match_zlib(tmp_path, monkeypatch) -> None:
    data = os.urandom(300_001)
    for cut in (0, 1, 4, 777, 150_000, 300_001):
        a, b = data[:cut], data[cut:]
        assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(data)
    target = tmp_path / "blob"
    target.write_bytes(data)
    monkeypatch.setattr(checksum_module, "_SPLIT_MIN", 1000)  # split even this small file
    for threads in (1, 2, 3, 7):
        assert start_file_checksum(str(target), "crc32", threads).result() == (
            len(data),
            f"{zlib.crc32(data):08x}",
        )
        with open(target, "rb") as f:
            assert file_checksum(f, "crc32", threads) == (len(data), f"{zlib.crc32(data):08x}")
    assert start_file_checksum(str(target), "sha256").result()[1] == hashlib.sha256(data).hexdigest()


def test_snapshot_buffers_are_reused_and_hold_the_values_at_copy_time() -> None:
    weight = torch.arange(32.0).reshape(8, 4)
    state = {"model.safetensors": {"w": weight, "tied": weight}, "optimizer.pt": {"m": torch.ones(3)}}
    buffers = SnapshotBuffers()
    first = snapshot(state, buffers)
    pointers = [t.data_ptr() for t in buffers.tensors] + [s.data_ptr() for s in buffers.storages]
    assert first["model.safetensors"]["tied"].data_ptr() == first["model.safetensors"]["w"].data_ptr()
    assert first["model.safetensors"]["w"].data_ptr() != weight.data_ptr()
    del first
    weight.add_(1.0)
    second = snapshot(state, buffers)
    assert [t.data_ptr() for t in buffers.tensors] + [s.data_ptr() for s in buffers.storages] == pointers
    assert torch.equal(second["model.safetensors"]["w"], weight)
    weight.add_(1.0)  # training moves on: the snapshot keeps the values it copied
    assert torch.equal(second["model.safetensors"]["w"], weight - 1.0)
    state["optimizer.pt"]["m"] = torch.ones(5)  # another shape: a new buffer, the rest kept
    third = snapshot(state, buffers)
    assert third["optimizer.pt"]["m"].shape == (5,)


def test_async_saves_reuse_one_set_of_buffers_and_write_what_was_copied(tmp_path) -> None:
    weight = torch.arange(512.0).reshape(64, 8)  # exact in float32 after the additions below
    with AsyncCheckpointIO(FsspecCheckpointIO(fsync=False)) as io:
        for step in range(3):
            io.save({"model.safetensors": {"w": weight}}, str(tmp_path / f"checkpoint-{step}"))
            weight.add_(1.0)  # right after save() returns, as training does
        io.wait()
        assert len(io._free_buffers) == 1
        io.release_buffers()  # freed; the worker goes on and the next save allocates anew
        assert io._free_buffers == []
        io.save({"model.safetensors": {"w": weight}}, str(tmp_path / "checkpoint-3"))
        io.wait()
        assert len(io._free_buffers) == 1
    assert torch.equal(FsspecCheckpointIO().load(str(tmp_path / "checkpoint-3"))["model.safetensors"]["w"], weight)
    for step in range(3):
        loaded = FsspecCheckpointIO().load(str(tmp_path / f"checkpoint-{step}"))
        assert torch.equal(loaded["model.safetensors"]["w"], weight - 3.0 + step)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc/self/maps")
def test_loaded_optimizer_state_does_not_keep_the_file_mapped(tmp_path) -> None:
    big = {"state": {0: {"exp_avg": torch.randn(512, 1024)}}, "param_groups": [{"params": [0]}]}  # 2 MiB
    weights = {"w": torch.randn(512, 1024)}
    io = FsspecCheckpointIO(fsync=False)
    path = str(tmp_path / "checkpoint-1")
    io.save({"optimizer.pt": big, "pytorch_model.bin": weights}, path)
    loaded = io.load(path)
    with open("/proc/self/maps", encoding="utf-8") as f:
        mapped = f.read()
    # the optimizer state is updated in place by the next step: read, so that deleting the
    # checkpoint frees its disk space; pickled weights are only copied into a model: mapped
    assert os.path.join(path, "optimizer.pt") not in mapped
    assert os.path.join(path, "pytorch_model.bin") in mapped
    assert torch.equal(loaded["optimizer.pt"]["state"][0]["exp_avg"], big["state"][0]["exp_avg"])
    assert torch.equal(loaded["pytorch_model.bin"]["w"], weights["w"])
