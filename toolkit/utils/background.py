"""One background thread that runs jobs in order and reports the first failure later.

Shared by `toolkit.checkpoint.AsyncCheckpointIO` (background saves) and
`toolkit.hub.ModelPusher` (background pushes): a failure is kept and raised by the next
`raise_error` / `wait` / `close` call on the caller's thread, so it is never lost.
`shared_executor` gives the process-wide helper pools (checksums, fsync) their threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from typing import Any

__all__ = ["BackgroundWorker", "shared_executor"]

_executors: dict[str, ThreadPoolExecutor] = {}
_executors_lock = threading.Lock()


def shared_executor(name: str, max_workers: int) -> ThreadPoolExecutor:
    """The process-wide thread pool called ``name``, created on first use.

    For helpers that live as long as the process (checksum threads, the fsync thread):
    their threads start only when first needed and are shared by every caller.

    Args:
        name: Pool name, also the prefix of its threads' names.
        max_workers: Threads of the pool when it is created.

    Example:
        >>> shared_executor("doc-pool", 1) is shared_executor("doc-pool", 1)
        True
    """
    with _executors_lock:
        pool = _executors.get(name)
        if pool is None:
            pool = _executors[name] = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)
        return pool


class BackgroundWorker:
    """A single worker thread with deferred error reporting.

    Args:
        name: prefix of the thread's name.

    Example:
        >>> worker = BackgroundWorker("doc")
        >>> future = worker.submit(lambda x: x + 1, 1)
        >>> worker.wait(); future.result()
        2
        >>> _ = worker.submit(lambda: 1 / 0)
        >>> try:
        ...     worker.wait()
        ... except ZeroDivisionError:
        ...     print("reported on the caller's thread")
        reported on the caller's thread
        >>> worker.close()
    """

    def __init__(self, name: str) -> None:
        self._lock = threading.Lock()
        self._pending: list[Future[Any]] = []
        self._error: BaseException | None = None
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    @property
    def closed(self) -> bool:
        """True after `close`."""
        return self._executor is None

    @property
    def pending(self) -> int:
        """Number of jobs queued or running."""
        with self._lock:
            return sum(1 for f in self._pending if not f.done())

    def _record(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except BaseException as error:
            with self._lock:
                if self._error is None:  # keep the first failure; later ones are the caller's to log
                    self._error = error
            raise

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Queue ``fn(*args)``; its failure is reported by the next `raise_error`.

        Raises:
            RuntimeError: the worker was closed.
        """
        if self._executor is None:
            raise RuntimeError("the background worker is closed")
        future = self._executor.submit(self._record, fn, *args)
        with self._lock:
            self._pending = [f for f in self._pending if not f.done()] + [future]
        return future

    def raise_error(self) -> None:
        """Raise (once) the first failure of a job since the last report."""
        with self._lock:
            error, self._error = self._error, None
        if error is not None:
            raise error

    def wait(self) -> None:
        """Block until every queued job finished, then report a failure."""
        with self._lock:
            pending = list(self._pending)
        futures_wait(pending)
        with self._lock:
            self._pending = [f for f in self._pending if not f.done()]
        self.raise_error()

    def close(self) -> None:
        """Wait for queued jobs and stop the thread; calling it again does nothing."""
        if self._executor is None:
            return
        try:
            self.wait()
        finally:
            self._executor.shutdown(wait=True)
            self._executor = None
