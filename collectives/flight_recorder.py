"""The flight recorder: every rank's last operations, always kept, dumped when it matters.

Each communicator keeps its last ``TRACE_ENTRIES`` collectives in a ring of slots made
once: a call stores its signature (the plan's key: collective, dtype, count, operator,
root, requested algorithm), its sequence number and its start time into the slot of its
number, and its end time when it completes, about 0.1 µs on the fast path and nothing
allocated for the ring. Failures and queued (asynchronous, not yet started) calls are
rare and kept beside it.

Dumps are JSON lines, one header line per communicator (``"kind": "communicator"``) and
one line per operation, oldest first:

- on a failure (timeout, transport error, mismatch), to ``COLLECTIVES_TRACE_FILE``
  (``%r``: the rank, ``%p``: the pid) where it is set;
- on demand: ``comm.dump_trace(path)``, or the signal ``SIGUSR2`` to the process (every
  live communicator of it; to ``COLLECTIVES_TRACE_FILE``, else
  ``$TMPDIR/collectives-trace.%r.%p.jsonl``), where no other handler holds that signal.

``python -m collectives.trace FILE...`` (``collectives-trace``) reads the dumps of all
ranks and names the first operation where they differ.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import tempfile
import threading
import time
import weakref
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, NoReturn

from ._version import __version__
from .config import Config
from .errors import CollectiveTimeoutError, TransportError
from .plans.signature import as_dict, signature

logger = logging.getLogger("collectives")

TRACE_ENTRIES = 1024
"""Operations each communicator remembers (a power of two)."""
TRACE_MASK = TRACE_ENTRIES - 1
KEY, SEQ, STARTED, ENDED, QUEUED = range(5)
"""A slot: [signature, sequence number, monotonic start (0.0: queued), monotonic end
(older than the start until the call completes), (seq, monotonic time) when an
asynchronous call was queued (written by asynchronous calls only)]."""

DUMP_SIGNAL = signal.SIGUSR2
DEFAULT_SIGNAL_PATH = os.path.join(tempfile.gettempdir(), "collectives-trace.%r.%p.jsonl")

_live: weakref.WeakSet[FlightRecorder] = weakref.WeakSet()
_handler_lock = threading.Lock()
_handler_installed = False


def expand(path: str, rank: int) -> str:
    """``path`` with ``%r`` the rank and ``%p`` the pid (``%%``: a percent sign)."""
    return path.replace("%%", "\0").replace("%r", str(rank)).replace("%p", str(os.getpid())).replace("\0", "%")


def group_of(store: Any) -> str:
    """A name for a communicator that every rank of it gives alike: where in the store its
    ranks met (the prefixes of the store it was made on, outermost first)."""
    prefixes = []
    while store is not None and hasattr(store, "prefix"):
        prefixes.append(str(store.prefix))
        store = getattr(store, "store", None)
    return "/".join(reversed(prefixes)) or "world"


class FlightRecorder:
    """The last operations of one communicator (see the module docstring)."""

    __slots__ = ("rank", "size", "group", "path", "chosen", "slots", "failures", "origin", "__weakref__")

    def __init__(self, rank: int, size: int, store: Any, path: str | None, chosen: dict[Any, str]) -> None:
        self.rank, self.size, self.group, self.path = rank, size, group_of(store), path
        self.chosen = chosen  # the planner's algorithm per signature
        self.slots: list[list[Any]] = [[None, -1, 0.0, -1.0, None] for _ in range(TRACE_ENTRIES)]
        self.failures: dict[int, str] = {}  # seq -> the error, for the seqs still in the ring
        self.origin = (time.monotonic(), time.time())  # to report wall-clock times
        _live.add(self)
        _install_signal_handler()

    def issue(self, key: Hashable, seq: int) -> None:
        """An asynchronous call was queued behind earlier work."""
        slot = self.slots[seq & TRACE_MASK]
        slot[KEY], slot[SEQ], slot[STARTED], slot[ENDED], slot[QUEUED] = key, seq, 0.0, -1.0, (seq, time.monotonic())

    def start(self, key: Hashable, seq: int, now: float) -> list[Any]:
        """A call began at ``now``; returns its slot (set its ENDED when it completes)."""
        slot = self.slots[seq & TRACE_MASK]
        slot[KEY], slot[SEQ], slot[STARTED] = key, seq, now
        return slot

    def fail(self, seq: int, exc: BaseException) -> None:
        """Operation ``seq`` failed with ``exc``: note it and dump where a file is set."""
        for old in [s for s in self.failures if s <= seq - TRACE_ENTRIES]:
            del self.failures[old]
        self.failures[seq] = f"{type(exc).__name__}: {exc}"
        if self.path:
            try:
                self.dump(self.path, reason=f"#{seq} failed")
            except OSError as error:
                logger.warning("rank %d: could not write the flight recorder to %s (%s)", self.rank, self.path, error)

    def _state(self, slot: list[Any]) -> str:
        seq = slot[SEQ]
        if seq in self.failures:
            return "failed"
        if slot[STARTED] == 0.0:
            return "issued"
        return "completed" if slot[ENDED] > slot[STARTED] else "started"

    def _wall(self, monotonic: float) -> float:
        return round(self.origin[1] + monotonic - self.origin[0], 6)

    def entries(self) -> list[dict[str, Any]]:
        """Every remembered operation, oldest first, as the dump writes it."""
        records = []
        for slot in sorted((list(s) for s in self.slots if s[SEQ] >= 0), key=lambda s: s[SEQ]):
            key, seq, started, ended, queued = slot
            state = self._state(slot)
            record: dict[str, Any] = {"kind": "op", "comm": self.group, "rank": self.rank, "seq": seq,
                                      **as_dict(signature(key)), "state": state}
            record["algorithm"] = self.chosen.get(key, record["algorithm"])
            if queued is not None and queued[0] == seq:
                record["issued_at"] = self._wall(queued[1])
            if started:
                record["started_at"] = self._wall(started)
            if state == "completed":
                record["ended_at"] = self._wall(ended)
                record["duration_us"] = round((ended - started) * 1e6, 3)
            if seq in self.failures:
                record["error"] = self.failures[seq]
            records.append(record)
        return records

    def header(self, reason: str) -> dict[str, Any]:
        return {"kind": "communicator", "comm": self.group, "rank": self.rank, "size": self.size,
                "pid": os.getpid(), "host": socket.gethostname(), "version": __version__,
                "reason": reason, "time": round(time.time(), 6)}

    def lines(self, reason: str) -> list[str]:
        return [json.dumps(self.header(reason))] + [json.dumps(r) for r in self.entries()]

    def dump(self, path: str | None = None, reason: str = "on demand") -> str:
        """Write this communicator's trace (``path``: %r and %p expanded; default
        COLLECTIVES_TRACE_FILE, else DEFAULT_SIGNAL_PATH); returns the file written."""
        target = expand(path or self.path or DEFAULT_SIGNAL_PATH, self.rank)
        _write(target, self.lines(reason))
        return target


def _write(path: str, lines: list[str]) -> None:
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def dump_all(reason: str = "on demand") -> list[str]:
    """Dump every live communicator of this process (what SIGUSR2 does); returns the
    files written. Communicators whose paths expand alike share one file."""
    files: dict[str, list[str]] = {}
    for recorder in list(_live):
        target = expand(recorder.path or DEFAULT_SIGNAL_PATH, recorder.rank)
        files.setdefault(target, []).extend(recorder.lines(reason))
    for target, lines in files.items():
        try:
            _write(target, lines)
        except OSError as error:
            logger.warning("could not write the flight recorder to %s (%s)", target, error)
    return sorted(files)


def _on_signal(signum: int, frame: Any) -> None:
    for target in dump_all(f"signal {signal.Signals(signum).name}"):
        logger.warning("flight recorder written to %s", target)


def _install_signal_handler() -> None:
    """Dump on SIGUSR2, once per process, from the main thread, and only where nobody
    else handles that signal."""
    global _handler_installed
    with _handler_lock:
        if _handler_installed or threading.current_thread() is not threading.main_thread():
            return
        try:
            if signal.getsignal(DUMP_SIGNAL) not in (signal.SIG_DFL, None):
                _handler_installed = True  # someone else's: leave it
                return
            signal.signal(DUMP_SIGNAL, _on_signal)
        except (ValueError, OSError):  # not the main interpreter, or no such signal here
            return
        _handler_installed = True


class Traced:
    """The flight recorder's side of a communicator (a base of ``Communicator``): made
    with it, told of each failure, dumped on demand."""

    _trace: FlightRecorder
    _trace_slots: list[list[Any]]  # the ring, written inline by the fast path

    if TYPE_CHECKING:
        def _fail(self, name: str, seq: int, exc: Any) -> NoReturn: ...

    def _start_trace(self, rank: int, size: int, store: Any, config: Config, chosen: dict[Any, str]) -> None:
        self._trace = FlightRecorder(rank, size, store, config.trace_file, chosen)
        self._trace_slots = self._trace.slots

    def _failed(self, name: str, seq: int, exc: BaseException) -> NoReturn:
        """Note that operation ``seq`` failed (a dump where COLLECTIVES_TRACE_FILE is set),
        then raise what it means: ``_fail``'s error for a timeout or transport failure,
        else ``exc`` itself (call from the ``except`` block)."""
        self._trace.fail(seq, exc)
        if isinstance(exc, (CollectiveTimeoutError, TransportError)):
            self._fail(name, seq, exc)
        raise exc

    def dump_trace(self, path: str | None = None) -> str:
        """Write this communicator's flight recorder (its last operations, as JSON lines)
        to ``path`` (``%r``: the rank, ``%p``: the pid; default COLLECTIVES_TRACE_FILE,
        else ``$TMPDIR/collectives-trace.%r.%p.jsonl``) and return the file's name. Local:
        no other rank takes part, so it works on a hung or broken communicator too."""
        return self._trace.dump(path)

    def trace(self) -> list[dict[str, Any]]:
        """This communicator's last operations, oldest first, as the dump writes them."""
        return self._trace.entries()
