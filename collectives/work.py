"""Asynchronous operations: a handle per call and one worker thread per communicator.

Operations on one communicator run in the order they were issued (every rank must see
the same order, or messages of different collectives would meet). A single worker
thread runs the asynchronous ones; a synchronous call made while asynchronous work is
queued joins the same queue, so the order holds for both.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from .errors import CollectiveTimeoutError


class Work:
    """The handle of an operation issued with ``async_op=True``."""

    def __init__(self, name: str, seq: int) -> None:
        self.name = name
        self.seq = seq
        self._done = threading.Event()
        self._result: Any = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[Work], None]] = []
        self._lock = threading.Lock()

    def is_completed(self) -> bool:
        """Whether the operation finished (successfully or not)."""
        return self._done.is_set()

    def is_success(self) -> bool:
        return self._done.is_set() and self._error is None

    def exception(self) -> BaseException | None:
        return self._error

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the operation finishes; return its result or raise its error.

        Raises:
            CollectiveTimeoutError: it did not finish within ``timeout`` seconds (it keeps
                running; the communicator's own timeout still bounds it).
        """
        if not self._done.wait(timeout):
            raise CollectiveTimeoutError(self.name, self.seq, [], timeout or 0.0)
        if self._error is not None:
            raise self._error
        return self._result

    def result(self) -> Any:
        return self.wait()

    def add_done_callback(self, callback: Callable[[Work], None]) -> None:
        """Call ``callback(self)`` once finished (at once if it already is)."""
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(callback)
                return
        callback(self)

    def _finish(self, result: Any = None, error: BaseException | None = None) -> None:
        with self._lock:
            self._result, self._error = result, error
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)

    def __repr__(self) -> str:
        state = "done" if self.is_completed() else "pending"
        return f"<Work {self.name} #{self.seq} {state}>"


class Worker:
    """One daemon thread running queued operations in order."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Work, Callable[[], Any]] | None] = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    def submit(self, work: Work, fn: Callable[[], Any]) -> Work:
        with self._lock:
            self._pending += 1
        self._queue.put((work, fn))
        return work

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            work, fn = item
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiter
                work._finish(error=exc)
            else:
                work._finish(result=result)
            finally:
                with self._lock:
                    self._pending -= 1

    def stop(self, timeout: float | None = None) -> None:
        self._queue.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
