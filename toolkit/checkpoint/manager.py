"""`CheckpointManager`: naming, discovery, clean-up and rotation of checkpoint folders.

The manager owns the policy; the `CheckpointIO` it holds only moves bytes. Folders are
named ``<root>/<prefix>-<step>`` like the Hugging Face Trainer's ``checkpoint-500``.

Invariants:

* Only committed folders (a valid manifest, see `toolkit.checkpoint.io`) are listed,
  loaded or rotated.
* Rotation never deletes the newest checkpoint nor the best one, and logs every deletion.
* Clean-up deletes only what a crashed save of this toolkit left behind: temporary
  ``<prefix>-<step>.tmp-<hex>`` folders and uncommitted folders carrying the in-progress
  marker. A ``checkpoint-<N>`` folder written by another tool (say, the Hugging Face
  Trainer) has no marker and is never touched.
* A committed checkpoint is replaced only when ``overwrite=True`` is passed.

`get_last_checkpoint` and `sorted_checkpoints` are the free-function forms, compatible
with ``transformers.trainer_utils.get_last_checkpoint``.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from toolkit.checkpoint.io import MANIFEST_NAME, TEMP_INFIX, CheckpointIO, FsspecCheckpointIO
from toolkit.checkpoint.serialization import CheckpointCorruptedError, MapLocation

__all__ = ["CheckpointManager", "get_last_checkpoint", "sorted_checkpoints"]

_default_logger = logging.getLogger(__name__)


def _join(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}" if root.rstrip("/") else f"/{name}"


def _check_prefix(prefix: Any) -> str:
    if not isinstance(prefix, str) or not prefix or "/" in prefix or "\\" in prefix:
        raise ValueError(f"prefix must be a non-empty folder name without separators, got {prefix!r}")
    return prefix


def _step_folders(io: CheckpointIO, root: str, prefix: str) -> list[tuple[int, str]]:
    """``(step, name)`` of every ``<prefix>-<digits>`` entry under ``root``, by step."""
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)$")
    found = []
    for name in io.list(root):
        match = pattern.match(name)
        if match:
            found.append((int(match.group(1)), name))
    return sorted(found)


def sorted_checkpoints(folder: str, prefix: str = "checkpoint", io: CheckpointIO | None = None) -> list[str]:
    """Return the checkpoint folders under ``folder``, oldest step first.

    Steps compare as numbers (``checkpoint-10`` comes after ``checkpoint-9``). Which
    folders count:

    * when at least one folder is a committed toolkit checkpoint (valid manifest), only
      committed folders;
    * otherwise every non-empty ``<prefix>-<N>`` folder without a toolkit manifest or
      in-progress marker, i.e. plain Hugging Face Trainer checkpoints, as
      ``transformers`` would (which also accepts empty folders).

    Folders left by an interrupted toolkit save are never returned.

    Args:
        folder: The output directory (local path or fsspec URL).
        prefix: Folder name prefix.
        io: The `CheckpointIO` to look through (default: `FsspecCheckpointIO`).

    Returns:
        Paths ``<folder>/<prefix>-<N>``; an empty list when there are none or when
        ``folder`` does not exist.
    """
    io = io if io is not None else FsspecCheckpointIO()
    _check_prefix(prefix)
    entries = _step_folders(io, folder, prefix)
    committed = [(step, name) for step, name in entries if io.exists(_join(folder, name))]
    if not committed:  # Hugging Face layout: non-empty folders that toolkit never touched
        committed = [(step, name) for step, name in entries if _plain_folder(io, _join(folder, name))]
    return [_join(folder, name) for _, name in committed]


def _plain_folder(io: CheckpointIO, path: str) -> bool:
    names = io.list(path)
    return bool(names) and MANIFEST_NAME not in names and not io.is_partial(path)


def get_last_checkpoint(
    folder: str, prefix: str = "checkpoint", io: CheckpointIO | None = None
) -> str | None:
    """Return the ``<prefix>-<N>`` folder under ``folder`` with the highest N, or None.

    Same answer as ``transformers.trainer_utils.get_last_checkpoint`` for a Hugging
    Face output directory (no toolkit manifest anywhere). When toolkit checkpoints are
    present, only committed ones count, so a save that was interrupted is never
    picked for resuming. Unlike ``transformers``, an absent ``folder`` gives None.

    Args:
        folder: The output directory (local path or fsspec URL).
        prefix: Folder name prefix.
        io: The `CheckpointIO` to look through (default: `FsspecCheckpointIO`).

    Returns:
        The path of the latest checkpoint, or None.
    """
    found = sorted_checkpoints(folder, prefix=prefix, io=io)
    return found[-1] if found else None


class CheckpointManager:
    """Owns the ``<prefix>-<step>`` folders under one root: save, find, validate, rotate.

    Args:
        root: Folder holding the checkpoints (local path or fsspec URL).
        io: How bytes are moved (default: `FsspecCheckpointIO`). Pass an
            `AsyncCheckpointIO` to save in the background; listing, clean-up and
            rotation then wait for pending saves first.
        prefix: Folder name prefix.
        save_total_limit: Keep at most this many committed checkpoints when `rotate`
            runs (None: keep all). The newest and the best are always kept, so with a
            limit of 1 and a best that is not the newest, two remain.
        logger: Where deletions and clean-ups are reported (default: this module's).

    Raises:
        ValueError: ``prefix`` is not a plain folder name or ``save_total_limit`` < 1.

    Example:
        >>> manager = CheckpointManager("memory://manager-doc", save_total_limit=1)
        >>> manager.save(1, {"meta.json": {"step": 1}})
        'memory://manager-doc/checkpoint-1'
        >>> manager.latest()
        'memory://manager-doc/checkpoint-1'
        >>> manager.io.remove("memory://manager-doc")
    """

    def __init__(
        self,
        root: str,
        io: CheckpointIO | None = None,
        prefix: str = "checkpoint",
        save_total_limit: int | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if not isinstance(root, (str, os.PathLike)) or not os.fspath(root):
            raise ValueError(f"root must be a non-empty path, got {root!r}")
        if save_total_limit is not None and (
            isinstance(save_total_limit, bool)
            or not isinstance(save_total_limit, int)
            or save_total_limit < 1
        ):
            raise ValueError(
                f"save_total_limit must be None (keep everything) or an int >= 1, got {save_total_limit!r}"
            )
        if io is not None and not isinstance(io, CheckpointIO):
            raise TypeError(f"io must be a CheckpointIO, got {type(io).__name__}")
        root = os.fspath(root)
        self.root = root.rstrip("/") or root
        self.io: CheckpointIO = io if io is not None else FsspecCheckpointIO()
        self.prefix = _check_prefix(prefix)
        self.save_total_limit = save_total_limit
        self.logger = logger if logger is not None else _default_logger
        self._step_pattern = re.compile(rf"^{re.escape(prefix)}-\d+$")
        self._temp_pattern = re.compile(rf"^{re.escape(prefix)}-\d+{re.escape(TEMP_INFIX)}[0-9a-f]{{32}}$")

    # ------------------------------------------------------------------ naming

    def path_for(self, step: int) -> str:
        """Return the folder for ``step``: ``<root>/<prefix>-<step>``.

        Args:
            step: The global optimizer step, a non-negative int.

        Raises:
            ValueError: ``step`` is not a non-negative int.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}")
        return _join(self.root, f"{self.prefix}-{step}")

    # ------------------------------------------------------------------ writing

    def cleanup(self) -> list[str]:
        """Delete what interrupted saves left behind; each deletion is logged.

        Removes temporary ``<prefix>-<step>.tmp-<hex>`` folders and uncommitted
        ``<prefix>-<step>`` folders that carry the in-progress marker. Anything else,
        including folders written by other tools, is left alone.

        Returns:
            The deleted paths.
        """
        removed = []
        for name in self.io.list(self.root):
            path = _join(self.root, name)
            if self._temp_pattern.match(name):
                reason = "temporary folder of an interrupted save"
            elif self._step_pattern.match(name) and self.io.is_partial(path):
                reason = "uncommitted checkpoint left by an interrupted save"
            else:
                continue
            self.logger.warning("Removing %s: %s", path, reason)
            self.io.remove(path)
            removed.append(path)
        return removed

    def save(self, step: int, state: dict[str, Any], *, overwrite: bool = False) -> str:
        """Clean up leftovers, then save ``state`` as the checkpoint of ``step``.

        Args:
            step: The global optimizer step.
            state: File name to content (see `toolkit.checkpoint.io`).
            overwrite: Replace an existing checkpoint of the same step. The old one is
                deleted before the new one is written, so a failing write loses both.

        Returns:
            The checkpoint's path (with `AsyncCheckpointIO` it is committed once the
            background save finishes).

        Raises:
            FileExistsError: ``<prefix>-<step>`` exists and ``overwrite`` is False.
            CheckpointWriteError: Storage refused the write; earlier checkpoints are intact.
        """
        path = self.path_for(step)
        self.cleanup()
        if self.io.list(path) or self.io.exists(path):
            if not overwrite:
                what = "a committed checkpoint" if self.io.exists(path) else "a folder not written by toolkit"
                raise FileExistsError(f"{path} already holds {what}; pass overwrite=True to replace it")
            self.logger.warning("Overwriting %s (overwrite=True)", path)
            self.io.remove(path)
        self.io.save(state, path)
        return path

    # ------------------------------------------------------------------ reading

    def list_checkpoints(self) -> list[str]:
        """Return the committed checkpoint paths, oldest step first (numeric order)."""
        return [
            _join(self.root, name)
            for _, name in _step_folders(self.io, self.root, self.prefix)
            if self.io.exists(_join(self.root, name))
        ]

    def latest(self) -> str | None:
        """Return the committed checkpoint with the highest step, or None."""
        found = self.list_checkpoints()
        return found[-1] if found else None

    def is_valid(self, path: str) -> bool:
        """Return True when ``path`` is committed and every file matches its checksum.

        A damaged checkpoint is reported with a warning naming the bad file.

        Args:
            path: A checkpoint folder.
        """
        try:
            self.io.verify(path)
        except FileNotFoundError:
            return False
        except CheckpointCorruptedError as exc:
            self.logger.warning("Checkpoint %s is not valid: %s", path, exc)
            return False
        return True

    def load(self, path: str | None = None, map_location: MapLocation = None) -> dict[str, Any]:
        """Load a checkpoint (verified against its manifest); the latest when ``path`` is None.

        Args:
            path: A checkpoint folder, or None for `latest`.
            map_location: Device for loaded tensors.

        Returns:
            File name to content.

        Raises:
            FileNotFoundError: ``path`` is None and there is no committed checkpoint.
            CheckpointCorruptedError: The checkpoint is damaged; the message names the file.
        """
        if path is None:
            path = self.latest()
            if path is None:
                raise FileNotFoundError(f"no committed checkpoint under {self.root}")
        return self.io.load(path, map_location)

    # ------------------------------------------------------------------ rotation

    def rotate(self, best: str | None = None) -> list[str]:
        """Delete the oldest committed checkpoints beyond ``save_total_limit``.

        The newest checkpoint and ``best`` are never deleted; with a limit of 1 and a
        ``best`` other than the newest, both are kept (as the Hugging Face Trainer does).
        Each deletion is logged at INFO level.

        Args:
            best: Path (or folder name) of the best checkpoint so far, if any.

        Returns:
            The deleted paths, oldest first.
        """
        if self.save_total_limit is None:
            return []
        found = self.list_checkpoints()
        if len(found) <= self.save_total_limit:
            return []
        newest = found[-1]
        best_name = os.path.basename(best.rstrip("/")) if best else None
        best_path = next((p for p in found if os.path.basename(p) == best_name), None)
        protected = {newest} | ({best_path} if best_path else set())
        limit = self.save_total_limit
        if limit == 1 and best_path is not None and best_path != newest:
            limit = 2
        excess = len(found) - limit
        doomed = [p for p in found if p not in protected][: max(excess, 0)]
        for path in doomed:
            self.logger.info(
                "Deleting older checkpoint %s (save_total_limit=%d)", path, self.save_total_limit
            )
            self.io.remove(path)
        return doomed
