"""Stall warnings: an operation that waits too long is reported before its hard timeout,
with the ranks missing from it (Horovod's stall inspector).

One daemon thread per process looks at every live communicator a few times per stall
period. A communicator whose current operation has run longer than
``Config.stall_warning`` seconds (``COLLECTIVES_STALL_WARNING``; by default half the
timeout, at most 60 s; 0 turns warnings off) and still holds its run lock is stalled: the
thread says so in the store, asks the other ranks' inspectors to say whether they are in
that operation too, and logs one warning naming the ranks that never did. The calls
themselves are untouched: the inspector reads the operation's name, number and start from
the communicator's ``Call`` and tests its lock without waiting.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING

from .diagnose import describe_absent, process_record, publish_process, reported_absent

if TYPE_CHECKING:
    from .communicator import Communicator

logger = logging.getLogger("collectives")

DEFAULT_CAP = 60.0
"""The default stall warning is half the timeout, but never later than this (seconds)."""


def stall_after(comm: Communicator) -> float | None:
    """Seconds after which ``comm``'s operations count as stalled, or None (no warnings)."""
    setting = comm.config.stall_warning
    if setting is None:
        return min(DEFAULT_CAP, comm.timeout / 2)
    return setting if setting > 0 else None


class _Watched:
    """What the inspector remembers of one communicator: the operations it handled."""

    __slots__ = ("warned", "answered")

    def __init__(self) -> None:
        self.warned: tuple[int, float] | None = None  # (seq, start) of the last warning
        self.answered: tuple[int, float] | None = None  # (seq, start) last reported for a peer


class _Inspector:
    """The thread that looks at the communicators of this process."""

    def __init__(self) -> None:
        self.comms: weakref.WeakKeyDictionary[Communicator, _Watched] = weakref.WeakKeyDictionary()
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.wake = threading.Event()  # set by add(): a new communicator may need a shorter period
        self.thread = threading.Thread(target=self._loop, name="collectives-stall-inspector", daemon=True)
        self.thread.start()

    def add(self, comm: Communicator) -> None:
        with self.lock:
            self.comms[comm] = _Watched()
        self.wake.set()

    def _loop(self) -> None:
        while True:
            self.wake.wait(self._pass())
            self.wake.clear()

    def _pass(self) -> float:
        """Look at every communicator once; return the seconds until the next look (a
        quarter of the shortest stall period, so a warning comes at most that late)."""
        with self.lock:
            watched = list(self.comms.items())
        period = 5.0
        for comm, state in watched:
            after = stall_after(comm)
            if after is None or comm._closed or comm._broken is not None:
                continue
            period = min(period, max(0.05, after / 4))
            try:
                self._inspect(comm, state, after, period)
            except Exception:  # noqa: BLE001 - a closed store must not end the inspector
                pass
        return period

    @staticmethod
    def _inspect(comm: Communicator, state: _Watched, after: float, period: float) -> None:
        call = comm._call
        name, seq, timeout = call.name, call.seq, call.timeout
        started = call.deadline - timeout
        waited = time.monotonic() - started
        if seq <= 0 or waited < period or not _running(comm, seq, started):
            return
        store, op = comm.store, (seq, started)
        assert store is not None
        if waited >= after and state.warned != op:
            state.warned = op
            if name.startswith(("send", "recv")):
                logger.warning("rank %d: %s #%d has waited %.1f s of its %g s timeout", comm.rank, name, seq,
                               waited, timeout)
                return
            store.set(f"stall/{name}/{seq}", b"1")
            absent = reported_absent(store, comm.rank, comm.size, name, seq, grace=min(1.0, after / 2))
            why = "; ".join(describe_absent(store, r, name, seq, min(1.0, after / 2), process_record(store, r))[1]
                            for r in absent)
            logger.warning("rank %d: %s #%d has waited %.1f s of its %g s timeout; missing rank(s): %s%s",
                           comm.rank, name, seq, waited, timeout, ", ".join(map(str, absent)) or "none",
                           f" ({why})" if why else " (every rank is in it: waiting on a slow or lost message)")
        elif state.answered != op and store.check([f"stall/{name}/{seq}"]):
            state.answered = op  # a peer stalled in the operation this rank is in: say so
            store.set(f"stuck/{name}/{seq}/{comm.rank}", b"1")


def _running(comm: Communicator, seq: int, started: float) -> bool:
    """Whether operation ``seq`` (begun at ``started``) still runs: its lock is held and
    the communicator has not moved on. Takes the lock for no longer than a test."""
    lock = comm._run_lock
    if lock.acquire(blocking=False):
        lock.release()
        return False
    call = comm._call
    return call.seq == seq and call.deadline - call.timeout == started


_inspector: _Inspector | None = None
_guard = threading.Lock()


def watch(comm: Communicator) -> None:
    """Publish where ``comm``'s process runs (for diagnosis) and inspect it for stalls.
    Communicators without a store or peers have nothing to report."""
    global _inspector
    if comm.store is None or comm.size < 2:
        return
    try:
        publish_process(comm.store, comm.rank)
    except Exception:  # noqa: BLE001 - diagnosis is best effort; the communicator works without
        pass
    with _guard:
        if _inspector is None or _inspector.pid != os.getpid():  # none yet, or a forked child
            _inspector = _Inspector()
        inspector = _inspector
    inspector.add(comm)
