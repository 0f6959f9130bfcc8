"""Tests for CheckpointManager, get_last_checkpoint and sorted_checkpoints."""

from __future__ import annotations

import logging
import os

import fsspec
import pytest
import torch

from toolkit.checkpoint import (
    AsyncCheckpointIO,
    CheckpointManager,
    FsspecCheckpointIO,
    get_last_checkpoint,
    sorted_checkpoints,
)
from toolkit.checkpoint.io import PARTIAL_MARKER


def _state(step: int) -> dict:
    return {
        "model.safetensors": {"w": torch.full((2,), float(step))},
        "trainer_state.json": {"global_step": step},
    }


def _names(paths: list[str]) -> list[str]:
    return [p.rsplit("/", 1)[-1] for p in paths]


def _mkdir_with_file(root: str, name: str, file: str = "pytorch_model.bin") -> None:
    fs, base = fsspec.core.url_to_fs(root)
    fs.makedirs(f"{base}/{name}", exist_ok=True)
    fs.pipe_file(f"{base}/{name}/{file}", b"x")


def test_paths_listing_and_numeric_order(root) -> None:
    manager = CheckpointManager(root, io=FsspecCheckpointIO(fsync=False))
    assert manager.path_for(500) == f"{root}/checkpoint-500"
    assert manager.latest() is None
    for step in (9, 10, 2):
        assert manager.save(step, _state(step)) == manager.path_for(step)
    assert _names(manager.list_checkpoints()) == ["checkpoint-2", "checkpoint-9", "checkpoint-10"]
    assert manager.latest() == f"{root}/checkpoint-10"
    assert manager.load()["trainer_state.json"] == {"global_step": 10}
    assert manager.is_valid(manager.latest())
    with pytest.raises(ValueError, match="step"):
        manager.path_for(-1)


def test_existing_checkpoint_needs_overwrite(root) -> None:
    manager = CheckpointManager(root, io=FsspecCheckpointIO(fsync=False))
    manager.save(3, _state(3))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        manager.save(3, _state(30))
    assert manager.load(manager.path_for(3))["trainer_state.json"] == {"global_step": 3}
    manager.save(3, _state(30), overwrite=True)
    assert manager.load(manager.path_for(3))["trainer_state.json"] == {"global_step": 30}


def test_rotation_keeps_best_and_newest_and_logs(root, caplog) -> None:
    log = logging.getLogger("test.rotation")
    manager = CheckpointManager(root, io=FsspecCheckpointIO(fsync=False), save_total_limit=2, logger=log)
    for step in (1, 2, 3, 4, 5):
        manager.save(step, _state(step))
    with caplog.at_level(logging.INFO, logger="test.rotation"):
        deleted = manager.rotate(best=manager.path_for(2))
    assert _names(deleted) == ["checkpoint-1", "checkpoint-3", "checkpoint-4"]
    assert _names(manager.list_checkpoints()) == ["checkpoint-2", "checkpoint-5"]
    messages = [r.getMessage() for r in caplog.records if r.name == "test.rotation"]
    assert len(messages) == 3
    for message, path in zip(messages, deleted):
        assert path in message and "save_total_limit=2" in message
    assert manager.rotate(best=manager.path_for(2)) == []


def test_rotation_without_best_keeps_the_newest(root) -> None:
    manager = CheckpointManager(root, io=FsspecCheckpointIO(fsync=False), save_total_limit=2)
    for step in (10, 9, 100):
        manager.save(step, _state(step))
    assert _names(manager.rotate()) == ["checkpoint-9"]
    assert _names(manager.list_checkpoints()) == ["checkpoint-10", "checkpoint-100"]


def test_limit_one_keeps_both_best_and_newest(root) -> None:
    manager = CheckpointManager(root, io=FsspecCheckpointIO(fsync=False), save_total_limit=1)
    for step in (1, 2, 3):
        manager.save(step, _state(step))
    assert _names(manager.rotate(best="checkpoint-1")) == ["checkpoint-2"]
    assert _names(manager.list_checkpoints()) == ["checkpoint-1", "checkpoint-3"]
    assert _names(manager.rotate(best=manager.path_for(3) + "/")) == ["checkpoint-1"]
    assert _names(manager.list_checkpoints()) == ["checkpoint-3"]


def test_rotation_ignores_uncommitted_and_foreign_folders(root) -> None:
    manager = CheckpointManager(root, io=FsspecCheckpointIO(fsync=False), save_total_limit=1)
    _mkdir_with_file(root, "checkpoint-0")  # written by another tool: not ours to delete
    manager.save(1, _state(1))
    manager.save(2, _state(2))
    assert _names(manager.rotate()) == ["checkpoint-1"]
    assert "checkpoint-0" in manager.io.list(root)


def test_save_cleans_leftovers_but_not_foreign_folders(root, caplog) -> None:
    manager = CheckpointManager(root, io=FsspecCheckpointIO(fsync=False))
    manager.save(1, _state(1))
    temp = "checkpoint-2.tmp-" + "ab" * 16
    _mkdir_with_file(root, temp, "model.safetensors")
    _mkdir_with_file(root, "checkpoint-3", PARTIAL_MARKER)  # interrupted object-store save
    _mkdir_with_file(root, "checkpoint-4")  # Hugging Face folder, no manifest
    _mkdir_with_file(root, "other.tmp-" + "cd" * 16)  # not our prefix
    with caplog.at_level(logging.WARNING, logger="toolkit.checkpoint.manager"):
        manager.save(5, _state(5))
    listing = manager.io.list(root)
    assert listing == ["checkpoint-1", "checkpoint-4", "checkpoint-5", "other.tmp-" + "cd" * 16]
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert temp in logged and "checkpoint-3" in logged and "checkpoint-4" not in logged
    with pytest.raises(FileExistsError, match="not written by toolkit"):
        manager.save(4, _state(4))


def test_save_recovers_after_a_killed_local_save(tmp_path) -> None:
    manager = CheckpointManager(str(tmp_path), io=FsspecCheckpointIO(fsync=False))
    manager.save(1, _state(1))
    os.makedirs(tmp_path / ("checkpoint-2.tmp-" + "0" * 32))
    (tmp_path / ("checkpoint-2.tmp-" + "0" * 32) / "model.safetensors").write_bytes(b"half")
    assert manager.latest() == f"{tmp_path}/checkpoint-1"
    manager.save(2, _state(2))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-1", "checkpoint-2"]


def test_is_valid_reports_damage(root, caplog) -> None:
    manager = CheckpointManager(root, io=FsspecCheckpointIO(fsync=False))
    path = manager.save(1, _state(1))
    fs, base = fsspec.core.url_to_fs(path)
    data = bytearray(fs.cat_file(f"{base}/model.safetensors"))
    data[-1] ^= 0xFF
    fs.pipe_file(f"{base}/model.safetensors", bytes(data))
    with caplog.at_level(logging.WARNING, logger="toolkit.checkpoint.manager"):
        assert not manager.is_valid(path)
    assert "model.safetensors" in caplog.text
    assert not manager.is_valid(f"{root}/checkpoint-99")


def test_works_with_async_io(root) -> None:
    with AsyncCheckpointIO(FsspecCheckpointIO(fsync=False)) as io:
        manager = CheckpointManager(root, io=io, save_total_limit=2)
        for step in range(1, 5):
            manager.save(step, _state(step))
            manager.rotate()
        assert _names(manager.list_checkpoints()) == ["checkpoint-3", "checkpoint-4"]


def test_invalid_arguments(tmp_path) -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="save_total_limit"):
            CheckpointManager(str(tmp_path), save_total_limit=bad)
    with pytest.raises(ValueError, match="prefix"):
        CheckpointManager(str(tmp_path), prefix="a/b")
    with pytest.raises(TypeError, match="CheckpointIO"):
        CheckpointManager(str(tmp_path), io=object())  # type: ignore[arg-type]


def test_get_last_checkpoint_on_hugging_face_folders(tmp_path) -> None:
    for name in ("checkpoint-9", "checkpoint-10", "checkpoint-2", "checkpoint-x", "runs"):
        _mkdir_with_file(str(tmp_path), name)
    (tmp_path / "checkpoint-11").write_bytes(b"a file, not a folder")
    assert get_last_checkpoint(str(tmp_path)) == os.path.join(str(tmp_path), "checkpoint-10")
    assert _names(sorted_checkpoints(str(tmp_path))) == ["checkpoint-2", "checkpoint-9", "checkpoint-10"]
    assert get_last_checkpoint(str(tmp_path / "missing")) is None
    assert get_last_checkpoint(str(tmp_path / "runs")) is None


def test_get_last_checkpoint_prefers_committed_toolkit_folders(root) -> None:
    manager = CheckpointManager(root, io=FsspecCheckpointIO(fsync=False))
    manager.save(9, _state(9))
    manager.save(10, _state(10))
    _mkdir_with_file(root, "checkpoint-11", PARTIAL_MARKER)  # interrupted
    _mkdir_with_file(root, "checkpoint-12")  # no manifest
    assert get_last_checkpoint(root) == f"{root}/checkpoint-10"
    assert _names(sorted_checkpoints(root)) == ["checkpoint-9", "checkpoint-10"]


def test_get_last_checkpoint_skips_interrupted_saves_in_hf_mode(tmp_path) -> None:
    _mkdir_with_file(str(tmp_path), "checkpoint-5")
    _mkdir_with_file(str(tmp_path), "checkpoint-6", PARTIAL_MARKER)
    assert get_last_checkpoint(str(tmp_path)) == os.path.join(str(tmp_path), "checkpoint-5")
