"""Single files at a local path or any fsspec URL (``memory://``, ``s3://``, ``gs://`` ...).

`CheckpointIO` writes whole checkpoint folders; these helpers write the loose files a run
leaves beside them: the final model (``Trainer.save_model``), ``trainer_state.json``
(``Trainer.save_state``) and the ``*_results.json`` files (``Trainer.save_metrics``).

* On a local disk `write_bytes` writes aside (``<path>.tmp-<hex>``) and renames into
  place, so a reader never sees half a file.
* On object stores a file is one upload, which the store makes visible all at once.

Listing caches of the file system (``s3fs`` keeps one per instance) are dropped before a
check, so a file written by another process is not hidden by a stale listing.

Example:
    >>> from toolkit.checkpoint import files
    >>> url = files.join("memory://files-doc", "run", "notes.txt")
    >>> files.write_bytes(url, b"hello")
    >>> files.read_bytes(url), files.exists(url)
    (b'hello', True)
    >>> files.remove("memory://files-doc")
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

__all__ = ["is_url", "join", "is_local", "makedirs", "write_bytes", "read_bytes", "exists", "remove",
           "upload_dir", "staged_dir"]


def is_url(path: str | os.PathLike[str]) -> bool:
    """Return True when ``path`` names a protocol (``s3://...``, ``memory://...``, chained ``a::b``)."""
    text = os.fspath(path)
    return "://" in text or "::" in text


def join(base: str | os.PathLike[str], *names: str) -> str:
    """Join names onto a folder: `os.path.join` for local paths, ``/`` for URLs.

    Args:
        base: A local folder or an fsspec URL.
        names: Path components to append.
    """
    base = os.fspath(base)
    if not is_url(base):
        return os.path.join(base, *names)
    return "/".join([base.rstrip("/"), *(n.strip("/") for n in names)])


def _fs(url: str | os.PathLike[str], storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    fs, path = fsspec.core.url_to_fs(os.fspath(url), **(storage_options or {}))
    return fs, path.rstrip("/") or path


def _local(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return isinstance(fs, LocalFileSystem) or any(p in ("file", "local") for p in protocols)


def is_local(url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> bool:
    """Return True when ``url`` is on the local file system (a plain path or ``file://``)."""
    return _local(_fs(url, storage_options)[0])


def makedirs(url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> None:
    """Create the folder ``url`` and its parents; nothing happens when it exists.

    On object stores, where folders are only key prefixes, this is (almost) a no-op.
    """
    fs, path = _fs(url, storage_options)
    fs.makedirs(path, exist_ok=True)


def write_bytes(url: str | os.PathLike[str], data: bytes, storage_options: dict[str, Any] | None = None) -> None:
    """Write ``data`` as the whole file ``url``, replacing it; the parent folder must exist
    locally (object stores need none).

    Locally the bytes go to ``<path>.tmp-<hex>`` first, which is then renamed over
    ``path``; a failed write leaves the old file as it was.
    """
    fs, path = _fs(url, storage_options)
    if not _local(fs):
        fs.pipe_file(path, bytes(data))
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def read_bytes(url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> bytes:
    """Return the content of the file ``url``.

    Raises:
        FileNotFoundError: There is no such file.
    """
    fs, path = _fs(url, storage_options)
    return fs.cat_file(path)


def exists(url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> bool:
    """Return True when a file or folder exists at ``url`` (the listing cache is dropped first)."""
    fs, path = _fs(url, storage_options)
    fs.invalidate_cache(path)
    return fs.exists(path)


def remove(url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> None:
    """Delete the file or folder (recursively) at ``url``; no error when it is absent."""
    fs, path = _fs(url, storage_options)
    fs.invalidate_cache(path)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def upload_dir(
    local_dir: str | os.PathLike[str], url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
) -> list[str]:
    """Copy every file under the local folder ``local_dir`` to the folder ``url``.

    Returns:
        The written URLs, in walk order.
    """
    local_dir = os.fspath(local_dir)
    written = []
    for folder, _, names in os.walk(local_dir):
        rel = os.path.relpath(folder, local_dir)
        for name in sorted(names):
            parts = [] if rel == os.curdir else rel.split(os.sep)
            target = join(url, *parts, name)
            with open(os.path.join(folder, name), "rb") as f:
                write_bytes(target, f.read(), storage_options)
            written.append(target)
    return written


@contextlib.contextmanager
def staged_dir(url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> Iterator[str]:
    """A local folder for code that can only write to local paths (``save_pretrained``).

    A local ``url`` is created and yielded as is. For any other URL a temporary folder is
    yielded, and what was written into it is uploaded to ``url`` when the block ends
    without an error.
    """
    if is_local(url, storage_options):
        fs, path = _fs(url, storage_options)
        fs.makedirs(path, exist_ok=True)
        yield path if is_url(url) else os.fspath(url)
        return
    with tempfile.TemporaryDirectory(prefix="toolkit-stage-") as tmp:
        yield tmp
        makedirs(url, storage_options)
        upload_dir(tmp, url, storage_options)
