"""The Work handles torch receives, and the thread that runs a group's operations in order.

:class:`CollectivesWork` is a Python subclass of ``torch.distributed.Work``:

* ``wait()`` blocks until the operation has run and raises its error (a
  ``DistBackendError`` naming the group, the collective and the ranks). torch's
  future-wrapping Work cannot do that: its ``wait()`` never raises.
* ``get_future()`` returns a ``torch.futures.Future`` that completes on its own, without
  anyone calling ``wait()`` (the DDP reducer and comm hooks only chain on it). Its value is
  the list of output tensors; a failure is a real error of the C++ future, so ``value()``
  and chained callbacks raise.

:class:`OrderedRunner` runs the operations of one process group one at a time in the order
they were issued: a synchronous call with nothing queued runs on the caller's thread, the
rest on one worker thread. Futures of work that finished on the worker are completed on a
separate thread, so that a ``then`` callback may itself issue and wait for a collective.
"""

from __future__ import annotations

import datetime
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist


class _Outcome:
    __slots__ = ("value", "error")

    def __init__(self, value: Any, error: BaseException | None) -> None:
        self.value = value
        self.error = error


def _unwrap(fut: torch.futures.Future) -> Any:
    outcome = fut.value()
    if outcome.error is not None:
        raise outcome.error
    return outcome.value


def _seconds(timeout: Any) -> float:
    """A wait timeout in seconds; 0 or negative means none (torch passes kNoTimeout = 0)."""
    if timeout is None:
        return 0.0
    if isinstance(timeout, datetime.timedelta):
        return timeout.total_seconds()
    return float(timeout)


class CollectivesWork(dist.Work):
    """The handle of one operation of a collectives process group."""

    def __init__(self, name: str, seq: int, outputs: list[torch.Tensor], where: Callable[[], str]) -> None:
        super().__init__()
        self.name = name
        self.seq = seq
        self._outputs = outputs
        self._where = where
        self._finished = False
        self._event: threading.Event | None = None  # made only for a wait before the finish
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._source = -1
        self._src_future: torch.futures.Future | None = None
        self._future: torch.futures.Future | None = None
        self._completer: Completer | None = None

    def __repr__(self) -> str:
        state = "failed" if self._error else ("done" if self._finished else "pending")
        return f"<CollectivesWork {self.name} #{self.seq} {state}>"

    # -- torch's Work API ---------------------------------------------------------------

    def wait(self, timeout: Any = None) -> bool:
        if not self._finished:
            seconds = _seconds(timeout)
            with self._lock:
                if not self._finished and self._event is None:
                    self._event = threading.Event()
                event = self._event
            if event is not None and not event.wait(seconds if seconds > 0 else None):
                raise dist.DistBackendError(
                    f"{self._where()}: wait() Timed out after {seconds:g} s; {self.name} #{self.seq} has not finished"
                )
        if self._error is not None:
            raise self._error
        return True

    def get_future(self) -> torch.futures.Future:
        complete_now = False
        with self._lock:
            if self._future is None:
                self._src_future = torch.futures.Future()
                self._future = self._src_future.then(_unwrap)
                complete_now = self._finished
            future = self._future
        if complete_now:
            self._complete_future()
        return future

    def is_completed(self) -> bool:
        return self._finished

    def is_success(self) -> bool:
        return self._finished and self._error is None

    def exception(self) -> BaseException | None:
        return self._error

    def result(self) -> list[torch.Tensor]:
        self.wait()
        return self._outputs

    def source_rank(self) -> int:
        return self._source

    def _source_rank(self) -> int:
        return self._source

    def synchronize(self) -> None:
        pass

    # -- completion ---------------------------------------------------------------------

    def _finish(self, error: BaseException | None = None, *, source: int | None = None, on_worker: bool = False) -> None:
        """Record the outcome; complete the future (on the completer thread if ``on_worker``)."""
        if source is not None:
            self._source = source
        self._error = error
        with self._lock:
            self._finished = True
            event = self._event
            pending_future = self._src_future is not None
        if event is not None:
            event.set()
        if pending_future:
            if on_worker and self._completer is not None:
                self._completer.submit(self)
            else:
                self._complete_future()

    def _complete_future(self) -> None:
        src = self._src_future
        if src is not None and not src.done():
            src.set_result(_Outcome(self._outputs if self._error is None else None, self._error))


class AggregateWork(CollectivesWork):
    """Done when all of ``works`` are (``_end_coalescing``)."""

    def __init__(self, works: list[CollectivesWork], where: Callable[[], str]) -> None:
        outputs = [t for w in works for t in w._outputs]
        super().__init__("coalesced", works[-1].seq if works else 0, outputs, where)
        self._works = works
        remaining = [len(works)]
        lock = threading.Lock()
        if not works:
            self._finish()
            return

        def one_done(_: torch.futures.Future) -> None:
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                errors = [w._error for w in works if w._error is not None]
                self._finish(errors[0] if errors else None)

        for w in works:
            w.get_future().add_done_callback(one_done)


class Completer:
    """One daemon thread completing futures, in order, off the worker thread."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[CollectivesWork | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, work: CollectivesWork) -> None:
        self._queue.put(work)

    def _loop(self) -> None:
        while True:
            work = self._queue.get()
            if work is None:
                return
            try:
                work._complete_future()
            except Exception:  # noqa: BLE001 - a failing callback must not stop the others
                import logging

                logging.getLogger("collectives").exception("completing the future of %r failed", work)

    def stop(self) -> None:
        self._queue.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)


class OrderedRunner:
    """Runs submitted callables one at a time in submission order (see module doc)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._cv = threading.Condition()
        self._queue: deque[Callable[[], None]] = deque()
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._draining = 0  # threads in drain()
        self.worker_ident: int | None = None

    def claim_or_queue(self, fn: Callable[[], None], *, inline: bool) -> bool:
        """Queue ``fn``, or (``inline`` and nothing queued or running) claim the right to run
        it on this thread: then return True, and the caller runs it and calls :meth:`release`.
        Deciding under the caller's issue lock keeps the order of issue."""
        with self._cv:
            if self._stopping:
                raise RuntimeError("the process group was shut down")
            if inline and not self._busy and not self._queue:
                self._busy = True
                return True
            self._queue.append(fn)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._cv.notify_all()
            return False

    def release(self) -> None:
        with self._cv:
            self._busy = False
            if self._queue or self._thread is not None or self._draining:  # else no one waits
                self._cv.notify_all()

    def _loop(self) -> None:
        self.worker_ident = threading.get_ident()
        while True:
            with self._cv:
                while (self._busy or not self._queue) and not (self._stopping and not self._queue):
                    self._cv.wait()
                if not self._queue:
                    return
                fn = self._queue.popleft()
                self._busy = True
            try:
                fn()
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far has run; return whether it did in time."""
        with self._cv:
            self._draining += 1
            try:
                return self._cv.wait_for(lambda: not self._busy and not self._queue, timeout)
            finally:
                self._draining -= 1

    def stop(self, timeout: float | None = None) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
            thread = self._thread
        if thread is not None and threading.current_thread() is not thread:
            thread.join(timeout)
