"""`AsyncCheckpointIO`: save checkpoints in a background thread.

`AsyncCheckpointIO.save` copies the state before it returns (tensors to CPU, into
buffers reused from one save to the next; nested containers rebuilt), so training may
change its tensors as soon as ``save`` returns, and then hands the copy to one worker
thread that calls the wrapped `CheckpointIO` (encoding, checksums, writing). A state
of 16 MiB or more is copied by the calling thread and one short-lived helper thread
together, which about halves the stall where two CPUs are free, and
`AsyncCheckpointIO.prepare` lets the worker allocate the first save's buffers ahead of
it (the Trainer does so when ``train()`` starts). At most ``max_pending`` saves are in
flight; one more blocks the caller until a slot frees up.

A failure in the background is not lost: it is raised by the next call to `save`,
`wait` or `close` (once). Every other method (`load`, `exists`, `remove`, `list`,
`verify`, `is_partial`) first waits for the pending saves, so it sees what was saved.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any

import torch

from toolkit.checkpoint.io import CheckpointIO
from toolkit.checkpoint.serialization import MapLocation
from toolkit.utils.background import BackgroundWorker

__all__ = ["AsyncCheckpointIO", "SnapshotBuffers", "snapshot"]

logger = logging.getLogger(__name__)

_IMMUTABLE = (str, bytes, int, float, complex, bool, type(None), torch.device, torch.dtype)

#: A snapshot of at least this many bytes is copied by two threads (when two CPUs are usable).
_PARALLEL_MIN_BYTES = 16 << 20
#: Contiguous tensors are copied in pieces of about this size, shared out between the threads.
_PIECE_BYTES = 4 << 20


def _is_dense(t: torch.Tensor) -> bool:
    """True when ``t``'s elements fill a block of memory without gaps or overlaps, in
    any dimension order (contiguous, channels-last, a transpose)."""
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride()), key=lambda pair: pair[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def _empty_like_layout(t: torch.Tensor) -> torch.Tensor:
    """An uninitialised CPU tensor with ``t``'s shape, dtype and (dense) layout."""
    if t.is_contiguous() or not _is_dense(t):
        return torch.empty(t.shape, dtype=t.dtype, device="cpu")
    # keep the layout (e.g. channels-last) so the copy is a straight memcpy
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cpu")


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _pieces(copies: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Split large contiguous copies into `_PIECE_BYTES` pieces."""
    out = []
    for dst, src in copies:
        numel = dst.numel()
        if numel * dst.element_size() > 2 * _PIECE_BYTES and dst.is_contiguous() and src.is_contiguous():
            step = _PIECE_BYTES // dst.element_size()
            flat_dst, flat_src = dst.view(-1), src.view(-1)
            out.extend((flat_dst[i : i + step], flat_src[i : i + step]) for i in range(0, numel, step))
        else:
            out.append((dst, src))
    return out


def _copy_all(copies: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Run ``dst.copy_(src)`` for every pair, on this thread and one helper for big states.

    The two threads take pieces from one shared list, so a helper that the scheduler
    starts late only takes what is left: the caller never waits for more than the one
    piece the helper is copying.
    """
    total = sum(dst.numel() * dst.element_size() for dst, _ in copies)
    if total < _PARALLEL_MIN_BYTES or _usable_cpus() < 2:
        for dst, src in copies:
            dst.copy_(src)
        return
    pieces = _pieces(copies)
    lock = threading.Lock()
    cursor = [0]
    errors: list[BaseException] = []

    def drain() -> None:
        try:
            while True:
                with lock:
                    i = cursor[0]
                    cursor[0] = i + 1
                if i >= len(pieces):
                    return
                dst, src = pieces[i]
                dst.copy_(src)
        except BaseException as error:  # stop the other thread too, report on the caller
            errors.append(error)
            with lock:
                cursor[0] = len(pieces)

    helper = threading.Thread(target=drain, name="toolkit-snapshot-copy", daemon=True)
    helper.start()
    drain()
    helper.join()
    if errors:
        raise errors[0]


def _storage_key(t: torch.Tensor) -> tuple[Any, int] | None:
    if t.device.type == "meta" or t.numel() == 0:
        return None
    return (t.device, t.untyped_storage().data_ptr())


def _count_storages(obj: Any, counts: dict[tuple[Any, int], set[int]], seen: set[int]) -> None:
    if isinstance(obj, torch.Tensor):
        key = _storage_key(obj)
        if key is not None:
            counts.setdefault(key, set()).add(id(obj))
    elif isinstance(obj, (Mapping, list, tuple, set, frozenset)):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        for item in obj.values() if isinstance(obj, Mapping) else obj:
            _count_storages(item, counts, seen)


def _signature(t: torch.Tensor) -> tuple[Any, ...]:
    """What a buffer must match to take ``t``'s copy: dtype, shape and, for a dense
    non-contiguous layout (channels-last, a transpose), the strides."""
    keep_strides = not t.is_contiguous() and _is_dense(t)
    return (t.dtype, tuple(t.shape), tuple(t.stride()) if keep_strides else None)


class SnapshotBuffers:
    """CPU buffers that `snapshot` copies tensors into, kept for the next snapshot.

    Buffers are pooled by dtype, shape and layout: a tensor takes a free buffer of its
    kind, or a new one when there is none. Once the buffers exist, a snapshot is one
    ``copy_`` per tensor into memory that is already mapped: no allocation, no page
    faults. `prepare` creates them ahead of the first snapshot (on any thread), so that
    even the first one finds them. Whoever holds a snapshot taken with these buffers
    must be done with it before they are passed to `snapshot` again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: dict[tuple[Any, ...], list[torch.Tensor]] = {}
        self._free_storages: dict[int, list[torch.UntypedStorage]] = {}
        # allocated by `prepare` but not written yet (their pages are not mapped)
        self._untouched: dict[tuple[Any, ...], list[torch.Tensor]] = {}
        self._untouched_storages: dict[int, list[torch.UntypedStorage]] = {}
        #: The buffers of the latest snapshot, in the order its tensors were met.
        self.tensors: list[torch.Tensor] = []
        self.storages: list[torch.UntypedStorage] = []
        self._stop_preparing = threading.Event()

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffers."""
        with self._lock:
            tensors = self.tensors + [t for d in (self._free, self._untouched) for pool in d.values() for t in pool]
            storages = self.storages + [
                s for d in (self._free_storages, self._untouched_storages) for pool in d.values() for s in pool
            ]
        return sum(t.untyped_storage().nbytes() for t in tensors) + sum(s.nbytes() for s in storages)

    def _recycle(self) -> None:
        """A new snapshot begins: the previous one's buffers are free again."""
        self._stop_preparing.set()
        with self._lock:
            for buffer in self.tensors:
                self._free.setdefault(_signature(buffer), []).append(buffer)
            for storage in self.storages:
                self._free_storages.setdefault(storage.nbytes(), []).append(storage)
            self.tensors, self.storages = [], []

    def _tensor(self, t: torch.Tensor) -> torch.Tensor:
        sig = _signature(t)
        with self._lock:
            pool = self._free.get(sig) or self._untouched.get(sig)
            buffer = pool.pop() if pool else None
        if buffer is None:
            buffer = _empty_like_layout(t)
        self.tensors.append(buffer)
        return buffer

    def _storage(self, nbytes: int) -> torch.UntypedStorage:
        with self._lock:
            pool = self._free_storages.get(nbytes) or self._untouched_storages.get(nbytes)
            storage = pool.pop() if pool else None
        if storage is None:
            storage = torch.UntypedStorage(nbytes, device="cpu")
        self.storages.append(storage)
        return storage

    def prepare(self, state: Any) -> int:
        """Create the buffers a snapshot of ``state`` will need, and write each once.

        Only shapes, dtypes and layouts are read (``meta`` tensors describe a state
        without memory). Buffers already there (free, or holding the latest snapshot)
        are counted, so preparing twice, or after a save, allocates nothing more.
        Writing a buffer once maps its pages, so that a snapshot's copy into it takes
        no page fault; `AsyncCheckpointIO.prepare` does that part on its worker thread.

        Args:
            state: A nested structure of containers and tensors shaped like the states
                that will be snapshotted.

        Returns:
            Bytes newly allocated.
        """
        self._stop_preparing.clear()
        added = self._allocate(*_buffer_needs(state))
        self._touch_pending()
        return added

    def _allocate(self, tensors: dict[tuple[Any, ...], list[torch.Tensor]], storages: dict[int, int]) -> int:
        """Add the missing buffers, untouched (memory reserved, pages not mapped yet).

        They are allocated on the calling thread, so that the memory comes from (and
        goes back to) the allocator arena that the training thread uses.
        """
        added = 0
        with self._lock:
            have: dict[Any, int] = {}
            for buffer in self.tensors:  # the latest snapshot's: free again at the next one
                have[_signature(buffer)] = have.get(_signature(buffer), 0) + 1
            for pools in (self._free, self._untouched):
                for sig, pool in pools.items():
                    have[sig] = have.get(sig, 0) + len(pool)
            have_storages: dict[int, int] = {}
            for storage in self.storages:
                have_storages[storage.nbytes()] = have_storages.get(storage.nbytes(), 0) + 1
            for storage_pools in (self._free_storages, self._untouched_storages):
                for size, storage_pool in storage_pools.items():
                    have_storages[size] = have_storages.get(size, 0) + len(storage_pool)
            for sig, like in tensors.items():
                for t in like[have.get(sig, 0) :]:
                    buffer = _empty_like_layout(t)
                    self._untouched.setdefault(sig, []).append(buffer)
                    added += buffer.untyped_storage().nbytes()
            for nbytes, count in storages.items():
                for _ in range(count - have_storages.get(nbytes, 0)):
                    self._untouched_storages.setdefault(nbytes, []).append(torch.UntypedStorage(nbytes))
                    added += nbytes
        return added

    def _touch_pending(self) -> None:
        """Write each untouched buffer once, until none is left or a snapshot begins.

        A buffer is out of the pools while it is written, so a snapshot (which may
        start at any moment on another thread) never copies into one being zeroed.
        """
        while not self._stop_preparing.is_set():
            with self._lock:
                sig = next((k for k, pool in self._untouched.items() if pool), None)
                if sig is not None:
                    item: Any = self._untouched[sig].pop()
                else:
                    size = next((k for k, pool in self._untouched_storages.items() if pool), None)
                    if size is None:
                        return
                    item = self._untouched_storages[size].pop()
            _touch(item.untyped_storage() if isinstance(item, torch.Tensor) else item)
            with self._lock:
                if sig is not None:
                    self._free.setdefault(sig, []).append(item)
                else:
                    self._free_storages.setdefault(item.nbytes(), []).append(item)


def _buffer_needs(state: Any) -> tuple[dict[tuple[Any, ...], list[torch.Tensor]], dict[int, int]]:
    """The buffers a snapshot of ``state`` takes: tensors by signature (with one tensor
    each as the model of its buffer) and shared storages by size (how many)."""
    counts: dict[tuple[Any, int], set[int]] = {}
    _count_storages(state, counts, set())
    tensors: dict[tuple[Any, ...], list[torch.Tensor]] = {}
    storages: dict[int, int] = {}
    seen_storages: set[tuple[Any, int]] = set()
    for t in _tensors_in(state):
        key = _storage_key(t)
        if key is not None and len(counts[key]) > 1:
            if key not in seen_storages:
                seen_storages.add(key)
                nbytes = t.untyped_storage().nbytes()
                storages[nbytes] = storages.get(nbytes, 0) + 1
        elif t.layout == torch.strided and t.numel() > 0:
            tensors.setdefault(_signature(t), []).append(t)
    return tensors, storages


def _tensors_in(obj: Any) -> Iterator[torch.Tensor]:
    """The distinct tensors of a nested structure (each container visited once)."""
    stack, seen = [obj], set()
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        if isinstance(item, torch.Tensor):
            seen.add(id(item))
            yield item
        elif isinstance(item, (Mapping, list, tuple, set, frozenset)):
            seen.add(id(item))
            stack.extend(reversed(list(item.values() if isinstance(item, Mapping) else item)))


def _touch(storage: torch.UntypedStorage) -> None:
    """Write every page of ``storage`` once, so that a later copy into it faults nothing."""
    if storage.nbytes():
        _bytes_of(storage).zero_()


def _bytes_of(storage: torch.UntypedStorage) -> torch.Tensor:
    """A flat uint8 tensor over the whole of ``storage``."""
    return torch.empty(0, dtype=torch.uint8, device=storage.device).set_(storage)


class _Copier:
    """Copies a nested state, keeping tensors that share memory sharing it in the copy."""

    def __init__(self, shared: set[tuple[Any, int]], buffers: SnapshotBuffers | None = None) -> None:
        self.shared = shared
        self.buffers = buffers
        if buffers is not None:
            buffers._recycle()
        self.storages: dict[tuple[Any, int], torch.UntypedStorage] = {}
        self.memo: dict[int, Any] = {}
        #: (buffer, source) pairs of CPU tensors, copied together by `_copy_all`.
        self.copies: list[tuple[torch.Tensor, torch.Tensor]] = []

    def tensor(self, t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        key = _storage_key(t)
        if key is None or key not in self.shared:
            if self.buffers is None or key is None or t.layout != torch.strided:
                return t.to("cpu", copy=True)
            buffer = self.buffers._tensor(t)
            if t.device.type == "cpu":
                self.copies.append((buffer, t))
            else:
                buffer.copy_(t)
            return buffer
        storage = self.storages.get(key)
        if storage is None:
            source = t.untyped_storage()
            if self.buffers is not None:
                storage = self.buffers._storage(source.nbytes())
                if source.device.type == "cpu":
                    self.copies.append((_bytes_of(storage), _bytes_of(source)))
                else:
                    storage.copy_(source)
            else:
                storage = source.cpu() if t.device.type != "cpu" else source.clone()
            self.storages[key] = storage
        return torch.empty(0, dtype=t.dtype).set_(storage, t.storage_offset(), t.size(), t.stride())

    def __call__(self, obj: Any) -> Any:
        if isinstance(obj, _IMMUTABLE):
            return obj
        if id(obj) in self.memo:
            return self.memo[id(obj)]
        if isinstance(obj, torch.Tensor):
            out: Any = self.tensor(obj)
        elif isinstance(obj, (bytearray, memoryview)):
            out = bytes(obj)
        elif isinstance(obj, Mapping):
            items = [(k, self(v)) for k, v in obj.items()]
            try:
                out = type(obj)(items)
            except Exception:
                out = dict(items)
        elif isinstance(obj, tuple) and hasattr(obj, "_fields"):  # named tuple
            out = type(obj)(*(self(v) for v in obj))
        elif isinstance(obj, (list, tuple, set, frozenset)):
            values = [self(v) for v in obj]
            out = values if type(obj) is list else type(obj)(values)
        else:
            out = copy.deepcopy(obj)
        self.memo[id(obj)] = out
        return out


def snapshot(state: Any, buffers: SnapshotBuffers | None = None) -> Any:
    """Return a copy of ``state`` that later changes to the original cannot reach.

    Tensors are copied to CPU (tensors that share memory, such as tied weights, keep
    sharing it in the copy); dicts, lists, tuples and sets are rebuilt; ``bytes`` and
    other immutable leaves are kept; anything else is ``copy.deepcopy``-ed.

    Args:
        state: A nested structure of containers, tensors and plain values.
        buffers: Copy the tensors into these reused buffers (see `SnapshotBuffers`)
            instead of fresh memory; the copy's tensors are then those buffers.

    Returns:
        The independent copy.
    """
    counts: dict[tuple[Any, int], set[int]] = {}
    _count_storages(state, counts, set())
    copier = _Copier({key for key, ids in counts.items() if len(ids) > 1}, buffers)
    with _one_intra_op_thread():
        out = copier(state)
        _copy_all(copier.copies)
    return out


@contextlib.contextmanager
def _one_intra_op_thread() -> Iterator[None]:
    """Run each CPU copy without torch's intra-op threads.

    With several intra-op threads on a machine whose cores are busy, each copy waits
    for the slowest of them to be scheduled (measured 5-10x slower on a loaded 2-core
    machine); `_copy_all` instead shares pieces between two threads that never wait
    for each other except at the very end.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class AsyncCheckpointIO(CheckpointIO):
    """Wraps any `CheckpointIO` so that `save` returns as soon as the state is copied.

    The copy is the only work ``save`` does before it returns: each tensor is copied
    (``copy_``) into a CPU buffer kept from the previous save (`SnapshotBuffers`, one
    set per pending save), so after the first save it costs one memory copy of the
    state and no allocation; large states are copied by two threads. Encoding, checksums and writing all
    happen on the worker thread.

    Args:
        inner: The `CheckpointIO` that does the writing, on one worker thread. With
            ``reuse_buffers`` it must be done with the tensors it is given when its
            ``save`` returns (every `CheckpointIO` that writes bytes is).
        max_pending: How many saves may be queued or running at once; a further
            `save` blocks until one finishes. At least 1.
        reuse_buffers: Keep the snapshot buffers between saves (up to ``max_pending``
            sets, each the size of the state's tensors). False: fresh memory every
            save, released once it is written.

    Raises:
        ValueError: ``max_pending`` is below 1.

    Example:
        >>> from toolkit.checkpoint import FsspecCheckpointIO
        >>> with AsyncCheckpointIO(FsspecCheckpointIO()) as io:
        ...     io.save({"meta.json": {"step": 1}}, "memory://async-doc/checkpoint-1")
        ...     io.wait()
        >>> FsspecCheckpointIO().exists("memory://async-doc/checkpoint-1")
        True
        >>> FsspecCheckpointIO().remove("memory://async-doc")
    """

    def __init__(self, inner: CheckpointIO, max_pending: int = 1, reuse_buffers: bool = True) -> None:
        if not isinstance(inner, CheckpointIO):
            raise TypeError(f"inner must be a CheckpointIO, got {type(inner).__name__}")
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(f"max_pending must be an int >= 1, got {max_pending!r}")
        self.inner = inner
        self.max_pending = max_pending
        self.reuse_buffers = reuse_buffers
        self._slots = threading.BoundedSemaphore(max_pending)
        self._free_buffers: list[SnapshotBuffers] = []
        self._buffers_lock = threading.Lock()
        self._worker = BackgroundWorker("toolkit-checkpoint")

    # ------------------------------------------------------------------ background

    def _take_buffers(self) -> SnapshotBuffers | None:
        if not self.reuse_buffers:
            return None
        with self._buffers_lock:
            return self._free_buffers.pop() if self._free_buffers else SnapshotBuffers()

    def _give_back(self, buffers: SnapshotBuffers | None) -> None:
        if buffers is not None:
            with self._buffers_lock:
                self._free_buffers.append(buffers)

    def _run(self, state: dict[str, Any], path: str, buffers: SnapshotBuffers | None = None) -> None:
        """Worker body; the worker keeps the first failure for the caller."""
        try:
            self.inner.save(state, path)
        except BaseException as error:
            logger.error("background checkpoint save to %s failed: %s", path, error)
            raise
        finally:
            del state  # the snapshot's tensors are the buffers: drop this reference first
            self._give_back(buffers)
            self._slots.release()

    # ------------------------------------------------------------------ interface

    def save(self, state: dict[str, Any], path: str) -> None:
        """Copy ``state`` now and write it to ``path`` in the background.

        Args:
            state: File name to content, as for the wrapped `CheckpointIO`.
            path: Destination folder.

        Raises:
            RuntimeError: This object was closed.
            Exception: The failure of an earlier background save (this save is then
                not started).
        """
        if self._worker.closed:
            raise RuntimeError("AsyncCheckpointIO is closed")
        self._stop_preparing()
        self._worker.raise_error()
        self._slots.acquire()
        buffers = None
        try:
            self._worker.raise_error()
            buffers = self._take_buffers()
            self._worker.submit(self._run, snapshot(state, buffers), path, buffers)
        except BaseException:
            self._give_back(buffers)
            self._slots.release()
            raise

    def prepare(self, state: Any) -> None:
        """Create the buffers of the next save of a state shaped like ``state``, on the
        worker thread, so that the first save copies into memory that is already mapped.

        The buffers are allocated now (reserving memory takes microseconds); their pages
        are mapped in the background, each buffer written once (see
        `SnapshotBuffers.prepare`), while training goes on. Optional: a
        save without it allocates what it needs itself. Does nothing when
        ``reuse_buffers`` is False. A failure to prepare is logged, never raised.

        Args:
            state: Tensors (``meta`` tensors will do) shaped like those to be saved,
                in any nesting, for example ``{"model": model.state_dict()}``.
        """
        if not self.reuse_buffers or self._worker.closed:
            return
        with self._buffers_lock:
            if not self._free_buffers:
                self._free_buffers.append(SnapshotBuffers())
            buffers = self._free_buffers[-1]
        try:
            buffers._allocate(*_buffer_needs(state))
        except Exception as error:  # a save allocates what it needs itself
            logger.warning("preparing checkpoint buffers failed (%s); the next save allocates them", error)
            return
        buffers._stop_preparing.clear()

        def job() -> None:
            try:
                buffers._touch_pending()
            except Exception as error:  # the buffers left untouched still serve, a little slower
                logger.warning("preparing checkpoint buffers failed (%s); the next save maps them", error)

        self._worker.submit(job)

    def _stop_preparing(self) -> None:
        """Cut a `prepare` short: a save (or a wait for one) is due now."""
        with self._buffers_lock:
            for buffers in self._free_buffers:
                buffers._stop_preparing.set()

    def wait(self) -> None:
        """Block until every pending save has finished (a `prepare` still running
        stops at its next buffer).

        Raises:
            Exception: The first failure of a background save since the last report.
        """
        self._stop_preparing()
        self._worker.wait()

    def release_buffers(self) -> None:
        """Wait for pending saves, then free the snapshot buffers kept for reuse (about
        the size of the state saved); the next save allocates new ones. The worker stays.

        Raises:
            Exception: The first unreported failure of a background save.
        """
        self.wait()
        with self._buffers_lock:
            self._free_buffers.clear()

    def close(self) -> None:
        """Wait for pending saves, then stop the worker and free the snapshot buffers;
        calling it again does nothing.

        Raises:
            Exception: The first unreported failure of a background save.
        """
        self._stop_preparing()
        try:
            self._worker.close()
        finally:
            with self._buffers_lock:
                self._free_buffers.clear()

    @property
    def pending(self) -> int:
        """Number of saves queued or running."""
        return self._worker.pending

    def __enter__(self) -> AsyncCheckpointIO:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # do not hide the exception already on its way out
            self.close()
        except Exception as error:
            logger.error("background checkpoint save failed during an error exit: %s", error)

    def load(self, path: str, map_location: MapLocation = None, **kwargs: Any) -> dict[str, Any]:
        """Wait for pending saves, then load through the wrapped IO.

        Args:
            path: The checkpoint folder.
            map_location: Device for loaded tensors.
            **kwargs: Passed on (for example ``verify`` or ``names``).

        Returns:
            File name to content.
        """
        self.wait()
        return self.inner.load(path, map_location, **kwargs)

    def exists(self, path: str) -> bool:
        """Wait for pending saves, then ask the wrapped IO.

        Args:
            path: The checkpoint folder.
        """
        self.wait()
        return self.inner.exists(path)

    def remove(self, path: str) -> None:
        """Wait for pending saves, then remove through the wrapped IO.

        Args:
            path: The folder to delete.
        """
        self.wait()
        self.inner.remove(path)

    def list(self, path: str) -> list[str]:
        """Wait for pending saves, then list through the wrapped IO.

        Args:
            path: A folder.
        """
        self.wait()
        return self.inner.list(path)

    def verify(self, path: str) -> None:
        """Wait for pending saves, then verify through the wrapped IO.

        Args:
            path: The checkpoint folder.
        """
        self.wait()
        self.inner.verify(path)

    def is_partial(self, path: str) -> bool:
        """Wait for pending saves, then ask the wrapped IO.

        Args:
            path: A folder.
        """
        self.wait()
        return self.inner.is_partial(path)
