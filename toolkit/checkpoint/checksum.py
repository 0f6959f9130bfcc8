"""Checksums of checkpoint files, taken while the bytes stream to or from storage.

A checkpoint's manifest records each file's size and checksum. New manifests use CRC-32
(``zlib.crc32``, the checksum of zip and PNG files, written as 8 hex digits): it detects
every single-bit error and every burst of up to 32 bits, and costs about half of sha256
per byte. Manifests written before carry sha256 digests, which are still verified.

* `HashingWriter` wraps a binary file: everything written through it is counted and
  hashed on the way out, so a file is checksummed without an in-memory copy (used for
  object stores).
* `file_checksum` hashes a file that is already written: a local file in place through
  a read-only memory map (used for local disks, where it runs while the file is being
  flushed to disk), anything else in chunks through one reused buffer.
"""

from __future__ import annotations

import hashlib
import io
import mmap
import os
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any

from toolkit.utils.background import shared_executor

__all__ = [
    "CHECKSUM_KEYS",
    "HashingWriter",
    "Checksum",
    "PendingChecksum",
    "file_checksum",
    "start_file_checksum",
    "checksum_key",
    "crc32_combine",
]

#: Manifest keys of the known checksums, preferred first.
CHECKSUM_KEYS = ("crc32", "sha256")
_CHUNK = 1 << 20


class Checksum:
    """A running checksum of one named algorithm (``"crc32"`` or ``"sha256"``).

    Args:
        algorithm: One of `CHECKSUM_KEYS`.

    Raises:
        ValueError: Unknown ``algorithm``.

    Example:
        >>> c = Checksum("crc32")
        >>> c.update(b"123456789")
        >>> c.hexdigest()
        'cbf43926'
    """

    def __init__(self, algorithm: str = "crc32") -> None:
        if algorithm not in CHECKSUM_KEYS:
            raise ValueError(f"algorithm must be one of {CHECKSUM_KEYS}, got {algorithm!r}")
        self.algorithm = algorithm
        self._crc = 0
        self._sha = hashlib.sha256() if algorithm == "sha256" else None

    def update(self, data: Any) -> None:
        """Add a bytes-like object (bytes, memoryview, contiguous array) to the checksum."""
        if self._sha is not None:
            self._sha.update(data)
        else:
            self._crc = zlib.crc32(data, self._crc)

    def hexdigest(self) -> str:
        """Return the checksum as lowercase hex (8 digits for crc32, 64 for sha256)."""
        if self._sha is not None:
            return self._sha.hexdigest()
        return f"{self._crc:08x}"


def checksum_key(entry: dict[str, Any]) -> str | None:
    """Return the manifest key of the checksum ``entry`` carries (crc32 first), or None."""
    for key in CHECKSUM_KEYS:
        if isinstance(entry.get(key), str):
            return key
    return None


class HashingWriter:
    """A write-only binary file that counts and checksums what passes through to ``raw``.

    Has what ``torch.save`` and the safetensors writer need: ``write`` and ``flush``.

    Args:
        raw: The destination file object (opened for binary writing).
        algorithm: The checksum to take (see `Checksum`); None only counts the bytes.

    Example:
        >>> import io
        >>> out = io.BytesIO()
        >>> w = HashingWriter(out)
        >>> w.write(b"123456789")
        9
        >>> w.size, w.hexdigest(), out.getvalue() == b"123456789"
        (9, 'cbf43926', True)
    """

    def __init__(self, raw: IO[bytes], algorithm: str | None = "crc32") -> None:
        self.raw = raw
        self.size = 0
        self.checksum = None if algorithm is None else Checksum(algorithm)

    def write(self, data: Any) -> int:
        """Write a bytes-like object and add it to the size and checksum; returns its length."""
        view = memoryview(data)
        if not view.c_contiguous:
            view = memoryview(view.tobytes())
        view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
        if self.checksum is not None:
            self.checksum.update(view)
        self._write_all(view)
        self.size += view.nbytes
        return view.nbytes

    def _write_all(self, view: memoryview) -> None:
        written = 0
        while written < view.nbytes:  # raw files may write less than asked
            n = self.raw.write(view[written:])
            if n == 0:
                raise OSError("the file accepted no bytes")
            written += (view.nbytes - written) if n is None else n

    def flush(self) -> None:
        """Flush the underlying file."""
        self.raw.flush()

    def hexdigest(self) -> str:
        """The checksum of everything written so far.

        Raises:
            ValueError: The writer was made with ``algorithm=None``.
        """
        if self.checksum is None:
            raise ValueError("this HashingWriter only counts bytes (algorithm=None)")
        return self.checksum.hexdigest()


def file_checksum(f: IO[bytes], algorithm: str = "crc32", threads: int = 1) -> tuple[int, str]:
    """Checksum ``f`` from its current position to its end.

    A local file (one with a ``fileno``) is memory-mapped and hashed in place, without
    copying it; any other file is read in 1 MiB chunks into one reused buffer.

    Args:
        f: A binary file object open for reading.
        algorithm: The checksum to take (see `Checksum`).
        threads: For the CRC-32 of a large local file: hash this many parts at once
            (each on its own thread; the parts' CRCs are combined into the file's).

    Returns:
        ``(bytes read, hex digest)``.
    """
    checksum = Checksum(algorithm)
    mapped = _mapped(f)
    if mapped is not None:
        with mapped:
            if algorithm == "crc32" and threads > 1 and len(mapped) >= _SPLIT_MIN:
                return len(mapped), f"{_parallel_crc32(memoryview(mapped), threads):08x}"
            checksum.update(mapped)
            return len(mapped), checksum.hexdigest()
    size = 0
    readinto = getattr(f, "readinto", None)
    if readinto is None:
        while chunk := f.read(_CHUNK):
            checksum.update(chunk)
            size += len(chunk)
        return size, checksum.hexdigest()
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    while n := readinto(buffer):
        checksum.update(view[:n])
        size += n
    return size, checksum.hexdigest()


def _mapped(f: IO[bytes]) -> mmap.mmap | None:
    """A read-only map of a whole local file read from its start, or None."""
    try:
        fileno = f.fileno()
        if f.tell() != 0 or os.fstat(fileno).st_size == 0:
            return None
        return mmap.mmap(fileno, 0, access=mmap.ACCESS_READ)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


_SPLIT_MIN = 32 << 20  # smaller files are not worth a hand-off to another thread


def _hash_pool() -> ThreadPoolExecutor:
    return shared_executor("toolkit-checksum", 4)


def _parallel_crc32(data: memoryview, threads: int) -> int:
    """The CRC-32 of ``data``, its parts hashed at once (zlib releases the GIL) and combined."""
    step = -(-len(data) // threads)
    parts = [data[i : i + step] for i in range(0, len(data), step)]
    futures = [_hash_pool().submit(zlib.crc32, part) for part in parts[1:]]
    crc = zlib.crc32(parts[0])
    for part, future in zip(parts[1:], futures):
        crc = crc32_combine(crc, future.result(), len(part))
    for part in parts:
        part.release()
    return crc


class PendingChecksum:
    """The checksum of a local file, being taken on helper threads (see `start_file_checksum`)."""

    def __init__(self, path: str, algorithm: str, threads: int) -> None:
        self.algorithm = algorithm
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self.size = size
        data = memoryview(self._map) if self._map is not None else memoryview(b"")
        self._data = data
        self._parts = [data]
        if size < _SPLIT_MIN:  # small: hashed now, a hand-off would cost more
            done: Future[Any] = Future()
            done.set_result(zlib.crc32(data) if algorithm == "crc32" else _digest_of(data, algorithm))
            self._futures = [done]
        elif algorithm == "crc32":
            step = max(-(-size // max(threads, 1)), _SPLIT_MIN)
            self._parts = [data[i : i + step] for i in range(0, size, step)]
            self._futures = [_hash_pool().submit(zlib.crc32, part) for part in self._parts]
        else:
            self._futures = [_hash_pool().submit(_digest_of, data, algorithm)]

    def result(self) -> tuple[int, str]:
        """Wait for the checksum; returns ``(size, hex digest)`` and releases the file."""
        try:
            if self.algorithm != "crc32":
                return self.size, self._futures[0].result()
            crc = self._futures[0].result()
            for part, future in zip(self._parts[1:], self._futures[1:]):
                crc = crc32_combine(crc, future.result(), len(part))
            return self.size, f"{crc:08x}"
        finally:
            self.close()

    def close(self) -> None:
        """Wait for the helper threads, then unmap the file."""
        for future in self._futures:
            future.exception()  # waits; errors are reported by result()
        for part in self._parts:
            part.release()
        self._data.release()
        if self._map is not None:
            self._map.close()
            self._map = None


def _digest_of(data: memoryview, algorithm: str) -> str:
    checksum = Checksum(algorithm)
    checksum.update(data)
    return checksum.hexdigest()


def start_file_checksum(path: str, algorithm: str = "crc32", threads: int = 2) -> PendingChecksum:
    """Start checksumming the local file ``path`` on helper threads and return at once.

    The file is memory-mapped (no copy); a CRC-32 of a large file is split into
    ``threads`` parts hashed at once and combined. Call ``result()`` for the answer.

    Args:
        path: A local file.
        algorithm: One of `CHECKSUM_KEYS`.
        threads: Parts to split a large file's CRC-32 into.

    Raises:
        OSError: The file cannot be opened or mapped.
    """
    if algorithm not in CHECKSUM_KEYS:
        raise ValueError(f"algorithm must be one of {CHECKSUM_KEYS}, got {algorithm!r}")
    return PendingChecksum(path, algorithm, threads)


def _gf2_times(matrix: list[int], vector: int) -> int:
    out = 0
    i = 0
    while vector:
        if vector & 1:
            out ^= matrix[i]
        vector >>= 1
        i += 1
    return out


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, row) for row in matrix]


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC-32 of ``A + B`` from ``crc1 = crc32(A)``, ``crc2 = crc32(B)`` and ``len(B)``.

    zlib's ``crc32_combine`` (not exposed by Python's ``zlib``): appending ``len2`` zero
    bytes to ``A`` is a linear map over GF(2), applied by repeated squaring.

    Example:
        >>> crc32_combine(zlib.crc32(b"1234"), zlib.crc32(b"56789"), 5) == zlib.crc32(b"123456789")
        True
    """
    if len2 <= 0:
        return crc1
    odd = [0xEDB88320] + [1 << n for n in range(31)]  # one zero bit
    even = _gf2_square(odd)  # two zero bits
    odd = _gf2_square(even)  # four zero bits
    while True:  # one zero byte first, then doubling
        even = _gf2_square(odd)
        if len2 & 1:
            crc1 = _gf2_times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = _gf2_square(even)
        if len2 & 1:
            crc1 = _gf2_times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2
