"""`toolkit.checkpoint.files`: loose files at local paths and fsspec URLs."""

from __future__ import annotations

import os
import uuid

import fsspec
import pytest

from toolkit.checkpoint import files


@pytest.fixture
def memory_root():
    root = f"memory://files-test-{uuid.uuid4().hex}"
    yield root
    files.remove(root)
    assert not fsspec.filesystem("memory").exists(root)


def test_join_uses_the_os_for_paths_and_slashes_for_urls():
    assert files.join("out", "a", "b.json") == os.path.join("out", "a", "b.json")
    assert files.join("s3://bucket/run/", "a", "b.json") == "s3://bucket/run/a/b.json"
    assert files.join("memory://x", "y") == "memory://x/y"


def test_local_write_replaces_atomically_and_leaves_nothing_aside(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    files.write_bytes(str(target), b"one")
    files.write_bytes(str(target), b"two")
    assert files.read_bytes(str(target)) == b"two"
    assert os.listdir(tmp_path) == ["f.json"]

    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        files.write_bytes(str(target), b"three")
    assert target.read_bytes() == b"two"  # the old file is intact
    assert os.listdir(tmp_path) == ["f.json"]  # and the aside copy is gone


def test_memory_write_read_exists_remove(memory_root):
    url = files.join(memory_root, "a", "b.bin")
    assert not files.exists(url)
    files.makedirs(files.join(memory_root, "a"))
    files.write_bytes(url, b"\x00\x01")
    assert files.exists(url) and files.read_bytes(url) == b"\x00\x01"
    files.remove(files.join(memory_root, "a"))
    assert not files.exists(url)
    files.remove(files.join(memory_root, "absent"))  # no error


def test_staged_dir_is_the_folder_itself_locally(tmp_path):
    target = tmp_path / "new" / "dir"
    with files.staged_dir(str(target)) as local:
        assert local == str(target) and os.path.isdir(local)


def test_staged_dir_uploads_nested_files_and_nothing_on_error(memory_root):
    with files.staged_dir(f"{memory_root}/ok") as local:
        os.makedirs(os.path.join(local, "sub"))
        with open(os.path.join(local, "sub", "x.txt"), "wb") as f:
            f.write(b"x")
    assert files.read_bytes(f"{memory_root}/ok/sub/x.txt") == b"x"
    with pytest.raises(RuntimeError):
        with files.staged_dir(f"{memory_root}/failed") as local:
            with open(os.path.join(local, "y.txt"), "wb") as f:
                f.write(b"y")
            raise RuntimeError("save_pretrained failed")
    assert not files.exists(f"{memory_root}/failed/y.txt")
