"""`CheckpointIO`: moves a checkpoint folder's bytes to and from storage, atomically.

A checkpoint here is a folder of files. `CheckpointIO.save` takes a dict that maps file
names to content and `CheckpointIO.load` gives the same dict back. How a value is
encoded follows from the file name:

* ``.safetensors``: a dict of tensors (tied tensors allowed); loaded as a dict of tensors.
* ``.json``: a JSON-able object; loaded as the decoded object.
* ``.pt``, ``.pth``, ``.bin``: anything ``torch.save`` accepts; loaded with
  ``torch.load(weights_only=True)``.
* anything else: ``bytes``; loaded as ``bytes``.

A ``bytes`` value is written as is whatever the name (and decoded by its extension on load).

**Commit protocol.** Every folder gets a ``manifest.json`` (format name, version, and
each file's size and checksum), written last: a folder without a valid manifest is not a
checkpoint, for `exists` and for every reader. On a local file system the files are
written into a sibling ``<path>.tmp-<uuid>`` folder, which is renamed into place once
complete; the manifest is then written (itself via a temporary name and a rename). Object
stores have no atomic rename, so there the files go straight under the final path and
the manifest is written after all of them. A marker file (`PARTIAL_MARKER`) is written
first and removed after the commit, so that a leftover partial folder can be told apart
from a folder someone else wrote (see `toolkit.checkpoint.manager`).

**Streaming.** Each file is encoded straight into its destination while its size and
CRC-32 are taken on the way (`toolkit.checkpoint.checksum`): no file is built in memory
first and nothing is read back. On a local disk, loading checks each file's size and
checksum in one chunked read, then decodes from the file itself: safetensors files and
pickled weights (``.bin``) are memory-mapped (private, copy-on-write), so tensors are not
copied up front; other archives (optimizer state, which the next step overwrites in
place) are read into memory, since a mapped copy would take a copy-on-write fault per
page at that step and keep the file's disk blocks held after the checkpoint is deleted. Manifests written before this layout (version 1, sha256) still load.

This class only moves bytes: it never overwrites an existing folder and never decides
what to delete. Naming, rotation and clean-up are `CheckpointManager`'s job.
"""

from __future__ import annotations

import abc
import builtins
import errno
import logging
import os
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from toolkit.checkpoint.checksum import (
    Checksum,
    HashingWriter,
    PendingChecksum,
    checksum_key,
    file_checksum,
    start_file_checksum,
)
from toolkit.checkpoint.serialization import (
    CheckpointCorruptedError,
    CheckpointWriteError,
    MapLocation,
    UnsafeCheckpointError,
    json_from_bytes,
    json_to_bytes,
    load_object,
    load_tensors,
    object_from_bytes,
    object_to_bytes,
    tensors_from_bytes,
    tensors_to_bytes,
    write_object,
    write_tensors,
)
from toolkit.utils.background import shared_executor

__all__ = [
    "CheckpointIO",
    "FsspecCheckpointIO",
    "MANIFEST_NAME",
    "MANIFEST_FORMAT",
    "MANIFEST_VERSION",
    "PARTIAL_MARKER",
    "TEMP_INFIX",
]

logger = logging.getLogger(__name__)

#: The commit marker: a folder is a checkpoint only once this file is present and valid.
MANIFEST_NAME = "manifest.json"
#: Value of the manifest's ``"format"`` field.
MANIFEST_FORMAT = "toolkit-checkpoint"
#: Manifest layout version written by this code; newer versions are refused on load.
#: Version 2 records a CRC-32 per file (``"crc32"``); version 1 recorded sha256, still read.
MANIFEST_VERSION = 2
#: The checksum new manifests record for each file.
CHECKSUM = "crc32"
#: Written first into every folder being saved and removed after the commit.
PARTIAL_MARKER = ".toolkit-partial"
#: Temporary sibling folders are named ``<path>` + TEMP_INFIX + <32 hex digits>``.
TEMP_INFIX = ".tmp-"

_PICKLE_SUFFIXES = (".pt", ".pth", ".bin")
_RESERVED_NAMES = (MANIFEST_NAME, PARTIAL_MARKER)


class CheckpointIO(abc.ABC):
    """The storage interface: save, load, check, remove and list checkpoint folders.

    Implementations only move bytes; they never overwrite and never choose what to
    delete. Wrap one in `AsyncCheckpointIO` to save in the background, and hand one to
    `CheckpointManager` for naming and rotation.
    """

    @abc.abstractmethod
    def save(self, state: dict[str, Any], path: str) -> None:
        """Write ``state`` (file name to content) as a committed checkpoint folder at ``path``.

        Args:
            state: File name to content; see the module docstring for accepted values.
            path: Destination folder (a local path or an fsspec URL). Must not exist.

        Raises:
            FileExistsError: Something already exists at ``path``.
            CheckpointWriteError: Storage refused the write; nothing was committed.
        """

    @abc.abstractmethod
    def load(self, path: str, map_location: MapLocation = None) -> dict[str, Any]:
        """Read a committed checkpoint folder back as file name to content.

        Args:
            path: The checkpoint folder.
            map_location: Device for loaded tensors; None keeps them on CPU.

        Returns:
            The dict that was saved.

        Raises:
            FileNotFoundError: Nothing exists at ``path``.
            CheckpointCorruptedError: The folder is not committed or a file is damaged.
        """

    @abc.abstractmethod
    def exists(self, path: str) -> bool:
        """Return True when ``path`` is a committed checkpoint (it has a valid manifest).

        Args:
            path: The checkpoint folder.
        """

    @abc.abstractmethod
    def remove(self, path: str) -> None:
        """Delete the folder at ``path`` and everything in it; no error if it is absent.

        Args:
            path: The folder to delete.
        """

    @abc.abstractmethod
    def list(self, path: str) -> list[str]:
        """Return the sorted names (not paths) of the entries directly under ``path``.

        Args:
            path: A folder; an absent path, or a file, gives an empty list.
        """

    def _start_checks(
        self, root: str, label: str, files: dict[str, Any], names: list[str], verify: bool
    ) -> dict[str, PendingChecksum]:
        """Check the sizes of local files now and start their checksums on helper threads."""
        pending: dict[str, PendingChecksum] = {}
        try:
            for name in names:
                target = f"{root}/{name}"
                if not os.path.isfile(target):
                    raise CheckpointCorruptedError(f"{label}/{name} is listed in the manifest but missing")
                _check_size(label, name, files[name], os.path.getsize(target))
                if verify:
                    pending[name] = start_file_checksum(
                        target, checksum_key(files[name]), threads=_HASH_THREADS
                    )
        except BaseException:
            for check in pending.values():
                check.close()
            raise
        return pending

    @staticmethod
    def _finish_checks(label: str, files: dict[str, Any], pending: dict[str, PendingChecksum]) -> None:
        """Wait for the checksums started by `_start_checks`; raise for the first bad file."""
        try:
            for name in list(pending):
                size, digest = pending.pop(name).result()
                _check_size(label, name, files[name], size)
                _check_digest(label, name, files[name], checksum_key(files[name]), digest)
        finally:
            for check in pending.values():
                check.close()

    def _load_local(
        self,
        root: str,
        label: str,
        files: dict[str, Any],
        wanted: list[str],
        map_location: MapLocation,
        verify: bool,
    ) -> dict[str, Any]:
        """Checksums run on helper threads (the files memory-mapped) while this thread
        decodes from the files; nothing is returned unless every checksum matches."""
        pending = self._start_checks(root, label, files, wanted, verify)
        out: dict[str, Any] = {}
        failed: tuple[str, Exception] | None = None
        try:
            for name in wanted:
                try:
                    out[name] = _decode_file(name, f"{root}/{name}", map_location)
                except Exception as exc:  # reported after the checksums: a damaged file says so
                    failed = (name, exc)
                    break
        finally:
            self._finish_checks(label, files, pending)
        if failed is not None:
            name, exc = failed
            if isinstance(exc, (UnsafeCheckpointError, CheckpointCorruptedError)):
                raise exc
            raise CheckpointCorruptedError(f"{label}/{name} cannot be decoded: {exc}") from exc
        return out

    def verify(self, path: str) -> None:
        """Check that ``path`` is committed and intact, without keeping what was read.

        The default loads the whole checkpoint; implementations may do better.

        Args:
            path: The checkpoint folder.

        Raises:
            CheckpointCorruptedError: The folder is not committed or a file is damaged.
        """
        self.load(path)

    def is_partial(self, path: str) -> bool:
        """Return True when ``path`` holds an uncommitted folder that this IO started writing.

        Used to clean up after crashes without touching folders written by other tools.
        The default says False (nothing is ever considered safe to clean).

        Args:
            path: A folder.
        """
        return False


def _digest(data: bytes, algorithm: str) -> str:
    checksum = Checksum(algorithm)
    checksum.update(data)
    return checksum.hexdigest()


#: Parts a large file's CRC-32 is split into when loading (hashed at once on helper threads).
_HASH_THREADS = 2


def _helper() -> ThreadPoolExecutor:
    """One shared thread for flushing files to disk while the caller hashes them."""
    return shared_executor("toolkit-fsync", 1)


def _check_size(label: str, name: str, entry: dict[str, Any], size: int) -> None:
    if size != entry["size"]:
        raise CheckpointCorruptedError(
            f"{label}/{name} has {size} bytes, the manifest says {entry['size']} (truncated or altered)"
        )


def _check_digest(label: str, name: str, entry: dict[str, Any], key: str | None, digest: str) -> None:
    if key is None or digest != entry[key]:
        raise CheckpointCorruptedError(f"{label}/{name} fails its {key} checksum (the file is damaged)")


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or name in (".", ".."):
        raise ValueError(f"checkpoint file names must be non-empty strings, got {name!r}")
    if "/" in name or "\\" in name:
        raise ValueError(f"checkpoint file names must not contain path separators, got {name!r}")
    if name in _RESERVED_NAMES:
        raise ValueError(f"{name!r} is reserved for the checkpoint's own bookkeeping")
    return name


def _encode(name: str, value: Any) -> bytes:
    """Turn one state entry into the bytes of its file (see the module table)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if name.endswith(".safetensors"):
        if not isinstance(value, Mapping):
            raise TypeError(
                f"{name!r}: a '.safetensors' file takes a dict of tensors, got {type(value).__name__}"
            )
        try:
            return tensors_to_bytes(value)
        except TypeError as exc:
            raise TypeError(f"{name!r}: {exc}") from exc
    if name.endswith(".json"):
        try:
            return json_to_bytes(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name!r}: value is not JSON-able ({exc})") from exc
    if name.endswith(_PICKLE_SUFFIXES):
        return object_to_bytes(value)
    raise ValueError(
        f"{name!r}: cannot tell how to store a {type(value).__name__}. Use a name ending in "
        "'.safetensors' (dict of tensors), '.json' (JSON-able), '.pt'/'.pth'/'.bin' "
        "(torch.save-able), or pass bytes"
    )


def _encode_into(name: str, value: Any, f: HashingWriter) -> None:
    """Stream one state entry into ``f`` (the same bytes `_encode` returns)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        f.write(value)
    elif name.endswith(".safetensors") and isinstance(value, Mapping):
        try:
            write_tensors(value, f)
        except TypeError as exc:
            raise TypeError(f"{name!r}: {exc}") from exc
    elif name.endswith(_PICKLE_SUFFIXES):
        write_object(value, f, record_checksums=False)  # the manifest checksums the whole file
    else:
        f.write(_encode(name, value))


def _decode_file(name: str, path: str, map_location: MapLocation) -> Any:
    """Decode a local file from its path: weights are mapped, other archives read."""
    if name.endswith(".safetensors"):
        return load_tensors(path, map_location)
    if name.endswith(_PICKLE_SUFFIXES):
        return load_object(path, map_location, name=name, mmap=os.name == "posix" and name.endswith(".bin"))
    with open(path, "rb") as f:
        data = f.read()
    return json_from_bytes(data) if name.endswith(".json") else data


def _decode(name: str, data: bytes, map_location: MapLocation) -> Any:
    if name.endswith(".safetensors"):
        return tensors_from_bytes(data, map_location, name=name)
    if name.endswith(".json"):
        return json_from_bytes(data)
    if name.endswith(_PICKLE_SUFFIXES):
        return object_from_bytes(data, map_location, name=name)
    return data


def _occupied(fs: Any, path: str) -> bool:
    """True when ``path`` holds a file or a non-empty folder (an empty folder may be replaced)."""
    if not fs.exists(path):
        return os.path.islink(path) if isinstance(fs, LocalFileSystem) else False
    return not fs.isdir(path) or bool(fs.ls(path, detail=False))


def _check_state(state: Any) -> None:
    """Reject bad names and values that cannot fit their file name, before any write."""
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a dict of file name to content, got {type(state).__name__}")
    for name, value in state.items():
        _check_name(name)
        if isinstance(value, (bytes, bytearray, memoryview)):
            continue
        known = name.endswith((".safetensors", ".json") + _PICKLE_SUFFIXES)
        if not known or (name.endswith(".safetensors") and not isinstance(value, Mapping)):
            _encode(name, value)  # raises the explanatory error


class FsspecCheckpointIO(CheckpointIO):
    """`CheckpointIO` over fsspec: local paths, ``file://``, ``memory://``, ``s3://``, ...

    Local file systems get the write-aside-then-rename commit with fsync; object stores
    get files first and the manifest last (see the module docstring).

    Args:
        storage_options: Keyword arguments for the fsspec file system (credentials,
            endpoint, ...), passed to ``fsspec.core.url_to_fs``.
        fsync: On local disks, flush files and folders to stable storage before
            committing. Turn off only for throwaway runs.

    Example:
        >>> io = FsspecCheckpointIO()
        >>> io.save({"meta.json": {"step": 1}}, "memory://doc-example/checkpoint-1")
        >>> io.load("memory://doc-example/checkpoint-1")["meta.json"]
        {'step': 1}
        >>> io.remove("memory://doc-example")
    """

    def __init__(self, storage_options: dict[str, Any] | None = None, fsync: bool = True) -> None:
        self.storage_options = dict(storage_options or {})
        self.fsync = fsync

    # ------------------------------------------------------------------ helpers

    def _fs(self, path: str) -> tuple[Any, str]:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str, got {type(path).__name__}")
        path = os.fspath(path)
        fs, fs_path = fsspec.core.url_to_fs(path, **self.storage_options)
        fs_path = fs_path.rstrip("/") or fs_path
        # Object-store file systems (s3fs, gcsfs) cache listings per instance, and instances
        # are shared: drop what is cached for this path and its parents, so that folders and
        # manifests written by another process (or another file-system instance) are seen.
        fs.invalidate_cache(fs_path)
        return fs, fs_path

    @staticmethod
    def _is_local(fs: Any) -> bool:
        protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
        return isinstance(fs, LocalFileSystem) or any(p in ("file", "local") for p in protocols)

    def _write_file(self, fs: Any, path: str, data: bytes, local: bool) -> None:
        with fs.open(path, "wb") as f:
            f.write(data)
            if local and self.fsync:
                f.flush()
                os.fsync(f.fileno())

    def _write_entry(self, fs: Any, path: str, name: str, value: Any, local: bool) -> dict[str, Any]:
        """Stream one entry into its file; return its manifest entry (size and checksum).

        Object stores: hashed on the way out. Local disks: the written file is hashed in
        place (memory-mapped, from the page cache) while a helper thread flushes it to
        disk, so the checksum costs no extra time when the disk is the bottleneck.
        """
        with fs.open(path, "wb") as f:
            writer = HashingWriter(f, None if local else CHECKSUM)
            _encode_into(name, value, writer)
            if not local:
                return {"size": writer.size, CHECKSUM: writer.hexdigest()}
            f.flush()
            synced = _helper().submit(os.fsync, f.fileno()) if self.fsync else None
            try:
                with open(path, "rb") as written:
                    size, digest = file_checksum(written, CHECKSUM)
            finally:
                if synced is not None:
                    synced.result()
        if size != writer.size:
            raise CheckpointWriteError(f"{path}: {writer.size} bytes were written but {size} are on disk")
        return {"size": size, CHECKSUM: digest}

    def _fsync_dir(self, path: str) -> None:
        if not self.fsync:
            return
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _remove_quietly(self, fs: Any, path: str) -> None:
        try:
            if fs.exists(path):
                fs.rm(path, recursive=True)
        except Exception as exc:  # best effort: report, but keep the original error
            logger.warning("could not remove partial checkpoint folder %s: %s", path, exc)

    def _read_manifest(self, fs: Any, path: str, label: str) -> dict[str, Any]:
        manifest_path = f"{path}/{MANIFEST_NAME}"
        try:
            raw = fs.cat_file(manifest_path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            if not fs.exists(path):
                raise FileNotFoundError(f"no checkpoint at {label}") from None
            if not fs.isdir(path):
                raise CheckpointCorruptedError(f"{label} is a file, not a checkpoint folder") from None
            raise CheckpointCorruptedError(
                f"{label} has no {MANIFEST_NAME}: it is not a committed checkpoint "
                "(an interrupted save, or a folder written by another tool)"
            ) from None
        try:
            manifest = json_from_bytes(raw)
        except ValueError as exc:
            raise CheckpointCorruptedError(f"{label}/{MANIFEST_NAME} is not valid JSON: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise CheckpointCorruptedError(f"{label}/{MANIFEST_NAME} is not a {MANIFEST_FORMAT!r} manifest")
        version = manifest.get("version")
        if not isinstance(version, int) or version < 1:
            raise CheckpointCorruptedError(f"{label}/{MANIFEST_NAME} has an invalid version {version!r}")
        if version > MANIFEST_VERSION:
            raise CheckpointCorruptedError(
                f"{label}/{MANIFEST_NAME} has version {version}, newer than this toolkit reads "
                f"({MANIFEST_VERSION}); upgrade toolkit"
            )
        files = manifest.get("files")
        if not isinstance(files, dict):
            raise CheckpointCorruptedError(f"{label}/{MANIFEST_NAME} has no 'files' table")
        for name, entry in files.items():
            try:
                _check_name(name)
            except ValueError as exc:
                raise CheckpointCorruptedError(f"{label}/{MANIFEST_NAME}: bad file name {name!r}") from exc
            if not (isinstance(entry, dict) and isinstance(entry.get("size"), int) and checksum_key(entry)):
                raise CheckpointCorruptedError(f"{label}/{MANIFEST_NAME}: bad entry for {name!r}")
        return manifest

    def _read_checked(
        self, fs: Any, path: str, label: str, name: str, entry: dict[str, Any], verify: bool
    ) -> bytes:
        try:
            data = fs.cat_file(f"{path}/{name}")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise CheckpointCorruptedError(f"{label}/{name} is listed in the manifest but missing") from None
        _check_size(label, name, entry, len(data))
        if verify:
            key = checksum_key(entry)
            _check_digest(label, name, entry, key, _digest(data, key))
        return data

    # ------------------------------------------------------------------ interface

    def save(self, state: dict[str, Any], path: str) -> None:
        """Write ``state`` as a committed checkpoint folder at ``path``; see `CheckpointIO.save`.

        Args:
            state: File name to content; see the module docstring for accepted values.
            path: Destination folder (local path or fsspec URL). Must not exist.

        Raises:
            FileExistsError: Something already exists at ``path``.
            TypeError: A value does not fit its file name (raised before any write).
            ValueError: A file name is invalid or reserved (raised before any write).
            CheckpointWriteError: Storage refused a write; the partial folder was removed.
        """
        _check_state(state)
        fs, final = self._fs(path)
        if _occupied(fs, final):
            raise FileExistsError(
                f"{path} already exists; CheckpointIO never overwrites. Remove it first "
                "(CheckpointManager.save(..., overwrite=True) does this)"
            )
        local = self._is_local(fs)
        workdir = f"{final}{TEMP_INFIX}{uuid.uuid4().hex}" if local else final
        entries: dict[str, dict[str, Any]] = {}
        committed_folder = False
        try:
            fs.makedirs(workdir, exist_ok=False if local else True)
            self._write_file(fs, f"{workdir}/{PARTIAL_MARKER}", b"", local)
            for name in sorted(state):
                entries[name] = self._write_entry(fs, f"{workdir}/{name}", name, state[name], local)
            if local:
                self._fsync_dir(workdir)
                if _occupied(fs, final):
                    raise FileExistsError(f"{path} appeared while the checkpoint was being written")
                try:
                    os.rename(workdir, final)
                except OSError as exc:
                    if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                        raise FileExistsError(
                            f"{path} appeared while the checkpoint was being written"
                        ) from exc
                    raise
                committed_folder = True
                self._fsync_dir(os.path.dirname(final) or ".")
            manifest = json_to_bytes(
                {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "files": entries}
            )
            if local:
                tmp_manifest = f"{final}/{MANIFEST_NAME}{TEMP_INFIX}{uuid.uuid4().hex}"
                self._write_file(fs, tmp_manifest, manifest, local)
                os.replace(tmp_manifest, f"{final}/{MANIFEST_NAME}")
                self._fsync_dir(final)
            else:
                self._write_file(fs, f"{final}/{MANIFEST_NAME}", manifest, local)
        except FileExistsError:
            if local:  # on object stores workdir is the final path, which is not ours here
                self._remove_quietly(fs, workdir)
            raise
        except BaseException as exc:
            self._remove_quietly(fs, workdir)
            if committed_folder:
                self._remove_quietly(fs, final)
            if isinstance(exc, OSError):
                raise CheckpointWriteError(f"could not write checkpoint {path}: {exc}") from exc
            raise
        try:  # the commit is done; the marker is only a hint for crash clean-up
            fs.rm(f"{final}/{PARTIAL_MARKER}")
        except Exception as exc:
            logger.debug("could not remove %s/%s: %s", path, PARTIAL_MARKER, exc)

    def load(
        self,
        path: str,
        map_location: MapLocation = None,
        *,
        verify: bool = True,
        names: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        """Read a committed checkpoint; see `CheckpointIO.load`.

        Sizes are always checked against the manifest; checksums when ``verify`` is True.
        Local files are checked in one chunked read and then decoded from the file
        (safetensors and ``.bin`` weights memory-mapped, copy-on-write; other archives
        read).

        Args:
            path: The checkpoint folder.
            map_location: Device for loaded tensors (and for ``.pt`` files); None = CPU.
            verify: Check each file's checksum against the manifest.
            names: Load only these files (default: every file in the manifest).

        Returns:
            File name to content, as it was saved.

        Raises:
            FileNotFoundError: Nothing exists at ``path``.
            KeyError: A requested name is not in the checkpoint.
            CheckpointCorruptedError: No valid manifest, or a file is missing, short,
                fails its checksum or cannot be decoded; the message names the file.
            UnsafeCheckpointError: A pickle would run code on load.
        """
        fs, root = self._fs(path)
        label = os.fspath(path).rstrip("/")
        files = self._read_manifest(fs, root, label)["files"]
        wanted = sorted(files) if names is None else builtins.list(names)
        missing = [n for n in wanted if n not in files]
        if missing:
            raise KeyError(f"{label} has no file(s) {missing}; it holds {sorted(files)}")
        if self._is_local(fs):
            return self._load_local(root, label, files, wanted, map_location, verify)
        out: dict[str, Any] = {}
        for name in wanted:
            data = self._read_checked(fs, root, label, name, files[name], verify)
            try:
                out[name] = _decode(name, data, map_location)
            except UnsafeCheckpointError:
                raise
            except Exception as exc:
                raise CheckpointCorruptedError(f"{label}/{name} cannot be decoded: {exc}") from exc
        return out

    def verify(self, path: str) -> None:
        """Check the manifest, every file's size and checksum, without decoding or keeping anything.

        Args:
            path: The checkpoint folder.

        Raises:
            FileNotFoundError: Nothing exists at ``path``.
            CheckpointCorruptedError: The message names the first bad file.
        """
        fs, root = self._fs(path)
        label = os.fspath(path).rstrip("/")
        files = self._read_manifest(fs, root, label)["files"]
        if self._is_local(fs):
            self._finish_checks(label, files, self._start_checks(root, label, files, sorted(files), True))
            return
        for name in sorted(files):
            self._read_checked(fs, root, label, name, files[name], verify=True)

    def read_manifest(self, path: str) -> dict[str, Any]:
        """Return the parsed manifest of a committed checkpoint.

        Args:
            path: The checkpoint folder.

        Returns:
            ``{"format": ..., "version": ..., "files": {name: {"size", "crc32"}}}`` (version 1
            manifests carry ``"sha256"`` instead of ``"crc32"``).

        Raises:
            FileNotFoundError: Nothing exists at ``path``.
            CheckpointCorruptedError: The manifest is missing or invalid.
        """
        fs, root = self._fs(path)
        return self._read_manifest(fs, root, os.fspath(path).rstrip("/"))

    def exists(self, path: str) -> bool:
        """Return True when ``path`` holds a valid manifest (checksums are not read).

        Args:
            path: The checkpoint folder.
        """
        fs, root = self._fs(path)
        try:
            self._read_manifest(fs, root, os.fspath(path))
        except (FileNotFoundError, CheckpointCorruptedError):
            return False
        return True

    def is_partial(self, path: str) -> bool:
        """Return True for an uncommitted folder carrying this IO's in-progress marker.

        Args:
            path: A folder.
        """
        fs, root = self._fs(path)
        return fs.exists(f"{root}/{PARTIAL_MARKER}") and not self.exists(path)

    def remove(self, path: str) -> None:
        """Delete the folder at ``path``; the manifest goes first, so a half-deleted
        folder is never mistaken for a checkpoint. No error if ``path`` is absent.

        Args:
            path: The folder to delete.
        """
        fs, root = self._fs(path)
        if not fs.exists(root):
            return
        if fs.isdir(root):
            manifest = f"{root}/{MANIFEST_NAME}"
            if fs.exists(manifest):
                fs.rm(manifest)
            fs.rm(root, recursive=True)
        else:
            fs.rm(root)

    def list(self, path: str) -> list[str]:
        """Return the sorted names of the entries directly under ``path``.

        An absent path, or one that is not a folder, gives an empty list.

        Args:
            path: A folder.
        """
        fs, root = self._fs(path)
        try:
            if not fs.isdir(root):
                return []
            entries = fs.ls(root, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = {str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries}
        names.discard("")
        return sorted(names)
