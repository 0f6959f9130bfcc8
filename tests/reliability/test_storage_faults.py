"""Storage faults: a destination that fails mid-write, one that is full, one that turns
read-only, and checkpoint files that are truncated or have a flipped bit. Each gives a
clear error naming the path; the earlier checkpoints stay loadable, and resuming from
them ends exactly like a run that never failed.

The failing destinations are fsspec file systems of this file's own (``faultfs://``, an
in-memory store with switchable faults); the full disk is a real 1 MiB tmpfs when this
process may mount one (root with CAP_SYS_ADMIN), else the same fault store raising
ENOSPC.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
import torch
from fsspec.implementations.memory import MemoryFile, MemoryFileSystem

from toolkit import Trainer
from toolkit.callbacks import TrainerCallback
from toolkit.checkpoint import CheckpointCorruptedError, CheckpointWriteError, FsspecCheckpointIO

pytestmark = pytest.mark.slow  # the reliability suites run in CI: pytest -m slow tests/reliability
MAX_STEPS = 6
IO = FsspecCheckpointIO()


# ----------------------------------------------------------------------------- the faulty store
class FaultyFile(MemoryFile):
    """A file of `FaultFS` whose writes fail as the store's ``fault`` says."""

    def write(self, data: Any) -> int:
        fault = FaultFS.fault
        if fault is None or fault["contains"] not in self.path:
            return super().write(data)
        room = fault["after_bytes"] - FaultFS.bytes_written
        if len(data) > room:
            super().write(bytes(memoryview(data)[: max(room, 0)]))  # a torn file, as a real disk leaves
            FaultFS.bytes_written += max(room, 0)
            FaultFS.faults += 1
            raise OSError(fault["errno"], os.strerror(fault["errno"]), self.path)
        FaultFS.bytes_written += len(data)
        return super().write(data)


class FaultFS(MemoryFileSystem):
    """An in-memory fsspec store (protocol ``faultfs``) with injectable faults.

    ``fault = {"after_bytes": N, "errno": E, "contains": S}`` makes writes to paths
    containing ``S`` fail with ``E`` once N bytes were written to them; ``fail_on_file =
    (k, S)`` fails the opening of the k-th file whose path contains ``S``;
    ``read_only = True`` refuses every change with EROFS.
    """

    protocol = "faultfs"
    store: dict[str, Any] = {}
    pseudo_dirs: list[str] = [""]
    fault: dict[str, Any] | None = None
    fail_on_file: tuple[int, str] | None = None
    read_only = False
    bytes_written = 0
    files_opened = 0
    faults = 0

    @classmethod
    def reset(cls) -> None:
        cls.fault, cls.fail_on_file, cls.read_only = None, None, False
        cls.bytes_written = cls.files_opened = 0

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        path = str(path)
        if path.startswith("faultfs://"):
            path = path[len("faultfs://") :]
        return super()._strip_protocol(path)

    def _refuse_if_read_only(self, path: str) -> None:
        if FaultFS.read_only:
            FaultFS.faults += 1
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if "w" not in mode and "x" not in mode and "a" not in mode:
            return super()._open(path, mode, **kwargs)
        self._refuse_if_read_only(path)
        if FaultFS.fail_on_file is not None and FaultFS.fail_on_file[1] in path:
            FaultFS.files_opened += 1
            if FaultFS.files_opened == FaultFS.fail_on_file[0]:
                FaultFS.faults += 1
                raise OSError(errno.EIO, os.strerror(errno.EIO), path)
        stripped = self._strip_protocol(path)
        if stripped in self.pseudo_dirs:
            raise IsADirectoryError(path)
        f = FaultyFile(self, stripped)
        f.commit()  # visible at once, like a file being written on a disk
        return f

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        self._refuse_if_read_only(path)
        super().mkdir(path, create_parents=create_parents, **kwargs)

    def rm(self, path: Any, recursive: bool = False, maxdepth: Any = None) -> None:
        self._refuse_if_read_only(str(path))
        super().rm(path, recursive=recursive, maxdepth=maxdepth)

    def rm_file(self, path: str) -> None:
        self._refuse_if_read_only(path)
        super().rm_file(path)


fsspec.register_implementation("faultfs", FaultFS, clobber=True)


@pytest.fixture
def faultfs() -> Iterator[str]:
    """A fresh ``faultfs://`` root; the faults are cleared before and after."""
    FaultFS.reset()
    root = f"faultfs://run-{uuid.uuid4().hex}"
    yield root
    FaultFS.reset()
    fs = fsspec.filesystem("faultfs")
    if fs.exists(root):
        fs.rm(root, recursive=True)


class Arm(TrainerCallback):
    """Calls ``action()`` when step ``step`` begins (after the checkpoints before it)."""

    def __init__(self, step: int, action: Any) -> None:
        self.step, self.action = step, action

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step - 1:
            self.action()


def _trainer(h, out: Any, callbacks: list | None = None, **overrides: Any) -> Trainer:
    values = dict(
        max_steps=MAX_STEPS,
        per_device_train_batch_size=2,
        save_strategy="steps",
        save_steps=2,
        logging_steps=1,
        learning_rate=0.05,
    )
    values.update(overrides)
    return Trainer(
        h.seeded(h.DropoutRegressor, seed=0),
        h.make_args(str(out), **values),
        train_dataset=h.regression_data(16),
        callbacks=callbacks,
    )


@pytest.fixture(scope="module")
def reference(h, tmp_path_factory) -> dict[str, Any]:
    """The uninterrupted run every recovered run must match."""
    trainer = _trainer(h, tmp_path_factory.mktemp("reference"))
    trainer.train()
    return {"weights": h.weights(trainer.model), "losses": h.train_losses(trainer.state.log_history)}


def _assert_matches(h, trainer: Trainer, reference: dict[str, Any]) -> None:
    weights = h.weights(trainer.model)
    for key, value in reference["weights"].items():
        assert torch.equal(value, weights[key]), key
    assert h.train_losses(trainer.state.log_history) == reference["losses"]


def _checkpoints(root: str) -> list[str]:
    fs, path = fsspec.core.url_to_fs(root)
    return sorted(
        p.rstrip("/").rsplit("/", 1)[-1]
        for p in fs.ls(path, detail=False)
        if p.rstrip("/").rsplit("/", 1)[-1].startswith("checkpoint-")
    )


def _assert_earlier_checkpoint_usable(root: str) -> None:
    """checkpoint-2 is committed, passes its checksums and loads; no partial checkpoint-4."""
    IO.verify(f"{root}/checkpoint-2")
    assert IO.load(f"{root}/checkpoint-2")["trainer_state.json"]["global_step"] == 2
    names = _checkpoints(root)
    assert "checkpoint-4" not in names or IO.exists(f"{root}/checkpoint-4") is False
    assert not [n for n in names if ".tmp-" in n], names


# ----------------------------------------------------------------------------- failing writes
@pytest.mark.parametrize("save_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("kind", ["mid-file", "kth-file"])
def test_a_write_that_fails_mid_checkpoint(h, faultfs, reference, kind, save_async) -> None:
    def arm() -> None:
        FaultFS.bytes_written = FaultFS.files_opened = 0
        if kind == "mid-file":  # 100 bytes into the checkpoint: inside its first sizeable file
            FaultFS.fault = {"after_bytes": 100, "errno": errno.EIO, "contains": "checkpoint-4"}
        else:  # the 3rd file of checkpoint-4: two of its files are already written
            FaultFS.fail_on_file = (3, "checkpoint-4")

    faults_before = FaultFS.faults
    trainer = _trainer(h, faultfs, callbacks=[Arm(3, arm)], save_async=save_async)
    with pytest.raises(
        CheckpointWriteError, match=r"could not write checkpoint .*checkpoint-4.*Input/output error"
    ):
        trainer.train()
    assert FaultFS.faults > faults_before
    FaultFS.reset()  # the storage recovers
    _assert_earlier_checkpoint_usable(faultfs)
    resumed = _trainer(h, faultfs, save_async=save_async)
    resumed.train(resume_from_checkpoint=True)
    _assert_matches(h, resumed, reference)


def test_a_read_only_destination(h, faultfs, reference) -> None:
    trainer = _trainer(h, faultfs, callbacks=[Arm(3, lambda: setattr(FaultFS, "read_only", True))])
    with pytest.raises(CheckpointWriteError, match=r"checkpoint-4.*Read-only file system"):
        trainer.train()
    FaultFS.read_only = False
    _assert_earlier_checkpoint_usable(faultfs)
    resumed = _trainer(h, faultfs)
    resumed.train(resume_from_checkpoint=True)
    _assert_matches(h, resumed, reference)


def _chmod_blocks_writes(folder: Path) -> bool:
    probe = folder / "probe"
    try:
        probe.write_bytes(b"x")
    except PermissionError:
        return True
    probe.unlink()
    return False


def test_a_local_folder_made_read_only(h, tmp_path, reference) -> None:
    out = tmp_path / "run"
    out.mkdir()
    out.chmod(0o555)
    try:
        if not _chmod_blocks_writes(out):
            pytest.skip("this process ignores file modes (root); test_a_read_only_destination covers it")
    finally:
        out.chmod(0o755)
    trainer = _trainer(h, out, callbacks=[Arm(3, lambda: out.chmod(0o555))])
    try:
        with pytest.raises(CheckpointWriteError, match=r"checkpoint-4.*Permission denied"):
            trainer.train()
    finally:
        out.chmod(0o755)
    _assert_earlier_checkpoint_usable(str(out))
    resumed = _trainer(h, out)
    resumed.train(resume_from_checkpoint=True)
    _assert_matches(h, resumed, reference)


# ----------------------------------------------------------------------------- a full disk
@pytest.fixture
def small_disk() -> Iterator[Path | None]:
    """A real 1 MiB tmpfs when this process may mount one, else None."""
    folder = Path(tempfile.mkdtemp(prefix="toolkit-full-"))
    mounted = False
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount"):
        mounted = (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True
            ).returncode
            == 0
        )
    try:
        yield folder if mounted else None
    finally:
        if mounted:  # lazily: loaded checkpoints may still be memory-mapped by objects not yet collected
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def _fill(folder: Path) -> Path:
    """Write a file until the disk is full; return it."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_full_disk(h, small_disk, faultfs, reference) -> None:
    if small_disk is not None:
        out: str = str(small_disk / "run")
        filler: list[Path] = []
        arm = lambda: filler.append(_fill(small_disk))  # noqa: E731
    else:
        out = faultfs

        def arm() -> None:
            FaultFS.bytes_written = 0
            FaultFS.fault = {"after_bytes": 0, "errno": errno.ENOSPC, "contains": "checkpoint-4"}

    trainer = _trainer(h, out, callbacks=[Arm(3, arm)])
    with pytest.raises(
        CheckpointWriteError, match=r"could not write checkpoint .*checkpoint-4.*No space left"
    ):
        trainer.train()
    if small_disk is not None:
        filler[0].unlink()  # space is freed
    FaultFS.reset()
    _assert_earlier_checkpoint_usable(out)
    resumed = _trainer(h, out)
    resumed.train(resume_from_checkpoint=True)
    _assert_matches(h, resumed, reference)


# ----------------------------------------------------------------------------- damaged files
class _Stop(Exception):
    pass


def _stop() -> None:
    raise _Stop  # the process dies before step 5 (after checkpoint-4 was committed)


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:  # one bit flipped in the middle: same size, different content
        data[len(data) // 2] ^= 0x10
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt", "trainer_state.json"])
@pytest.mark.parametrize("how", ["truncated", "bit-flipped"])
def test_a_damaged_checkpoint_file(h, tmp_path, reference, caplog, name, how) -> None:
    out = tmp_path / "run"
    with pytest.raises(_Stop):
        _trainer(h, out, callbacks=[Arm(5, _stop)]).train()  # checkpoints 2 and 4 of the 6-step run
    assert _checkpoints(str(out)) == ["checkpoint-2", "checkpoint-4"]
    _damage(out / "checkpoint-4" / name, how)
    newest = str(out / "checkpoint-4")
    reason = "bytes, the manifest says" if how == "truncated" else "checksum"

    with pytest.raises(CheckpointCorruptedError, match=rf"checkpoint-4/{name} .*{reason}"):
        IO.load(newest)
    # resuming from it explicitly: refused, naming the folder, the file and what is wrong
    with pytest.raises(ValueError, match=rf"resume_from_checkpoint=.*checkpoint-4' is damaged: .*{name}"):
        _trainer(h, out).train(resume_from_checkpoint=newest)
    # the newest valid one is used instead, with a warning naming the damaged file; the damaged
    # folder is newer, so it is only replaced when overwrite_output_dir allows it
    with pytest.raises(ValueError, match=r"checkpoint-4.*overwrite_output_dir=True"):
        _trainer(h, out).train(resume_from_checkpoint=True)
    with caplog.at_level(logging.WARNING):
        resumed = _trainer(h, out, overwrite_output_dir=True)
        resumed.train(resume_from_checkpoint=True)
    assert f"checkpoint-4/{name}" in caplog.text
    _assert_matches(h, resumed, reference)
    IO.verify(newest)  # saved again by the resumed run
