"""Why an operation failed, told the same way on every rank: the rank at the root of it.

When a rank dies, its neighbours see their connection to it break and fail; the ranks
further round the ring then see *those* neighbours leave, and would blame them. So a
rank that fails writes why in the communicator's store before it tears its transports
down (which makes the ranks waiting on it fail at once instead of at their timeout): a
rank that then sees it leave adopts its record, and names the same rank, operation and
sequence number; a peer that left without a record is a root cause itself. A timeout
adopts the communicator's first recorded fault, if any; otherwise it asks the store which
ranks ever reported being in the operation, and looks at the absent ones' processes
where it can (same machine): dead, stopped ("unresponsive"), or alive elsewhere in the
program (it skipped the call or is late).

Only failure paths and stall warnings come here: a healthy call never touches the store.
Store keys (under the communicator's own prefix):

- ``proc/<rank>``: where rank's process runs (machine, pid namespace, pid, start time),
  written once when the communicator is made;
- ``stuck/<op>/<seq>/<rank>``: rank is inside ``op #seq`` and waiting (stall or timeout);
- ``where/<rank>``: the operation rank timed out in;
- ``fault/<rank>``: why rank failed (JSON: who saw it, whom it blames, how, in which
  operation), and ``fault``: the first such record (first writer wins).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from .errors import (
    CollectivesError,
    CollectiveTimeoutError,
    MessageMismatchError,
    PeerLostError,
    TransportError,
)
from .store import Store
from .transports.base import Transport
from .transports.shm import _pid_namespace, _proc_stat, _process_gone

STORE_BOUND = 3.0
"""Seconds the store work of one diagnosis may take beyond its grace: a store that does
not answer (its host frozen) leaves the plain error, it never adds a hang."""

TRANSPORT_STORE_BOUND = 1.0
"""The same for a transport failure (a lost peer, a message that did not fit), whose store
work is a few reads and one write: a store whose host already closed it (rank 0 done with
its part of a call, under mpiexec) must not hold the error back for long."""

_T = TypeVar("_T")
_ERROR_TYPES: dict[str, type[TransportError]] = {
    "PeerLostError": PeerLostError,
    "MessageMismatchError": MessageMismatchError,
    "TransportError": TransportError,
}


def this_machine() -> str:
    """This machine as its hostname plus boot id: what every process sharing its memory says
    (``connect.host_identity`` without an override)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def _machine() -> str:
    """This machine and this process's pid namespace: where a pid in a record can be looked at."""
    return f"{this_machine()}/{_pid_namespace()}"


def publish_process(store: Store, rank: int) -> None:
    """Say where this rank's process runs, so a peer on the same machine can look at it
    when it goes silent (one store write when a communicator is made)."""
    stat = _proc_stat(os.getpid())
    start = stat[19].decode() if stat is not None and len(stat) > 19 else ""
    store.set(f"proc/{rank}", json.dumps([_machine(), os.getpid(), start]).encode())


def process_record(store: Store, rank: int) -> list[object] | None:
    """What ``publish_process`` said for ``rank`` ([machine, pid, start time]), or None."""
    try:
        return json.loads(store.get(f"proc/{rank}", 1.0)) if store.check([f"proc/{rank}"]) else None
    except Exception:  # noqa: BLE001 - no record, no verdict
        return None


def process_state(record: list[object] | None, settle: float = 0.0) -> tuple[int, str] | None:
    """``(pid, state)`` of the process ``record`` describes if it runs on this machine,
    else None. ``state`` is "gone", "stopped" or "alive". A process that looks alive is
    looked at again for up to ``settle`` seconds (a killed one closes its sockets before
    it is gone)."""
    if record is None or record[0] != _machine():
        return None
    pid, start = int(str(record[1])), str(record[2]).encode() or None
    until = time.monotonic() + settle
    while True:
        if _process_gone(pid, start) is not None:
            return pid, "gone"
        stat = _proc_stat(pid)
        if stat is not None and stat[0] in (b"T", b"t"):
            return pid, "stopped"
        if time.monotonic() >= until:
            return pid, "alive"
        time.sleep(0.02)


@dataclass
class Fault:
    """The first failure of a communicator, as its first witness recorded it."""

    witness: int  # the rank that wrote it
    culprits: list[int]  # the ranks it blames (empty: every rank was there, none answered)
    kind: str  # "died", "left", "unresponsive", "absent", "stuck" or "error"
    error: str  # the class survivors raise: PeerLostError, CollectiveTimeoutError, ...
    op: str
    seq: int
    text: str  # what happened, naming the culprits, the operation and its number
    timeout: float = 0.0
    at: float = field(default_factory=time.time)

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> Fault:
        return cls(**json.loads(data))


def _bounded(fn: Callable[[], _T], seconds: float, interrupted: Callable[[], bool] | None = None) -> _T | None:
    """``fn()`` in a helper thread, or None if it fails, takes longer than ``seconds``, or
    ``interrupted()`` turns true meanwhile (an ``abort()`` must not wait for a diagnosis)."""
    box: list[_T] = []

    def run() -> None:
        try:
            box.append(fn())
        except Exception:  # noqa: BLE001 - a failed diagnosis leaves the plain error
            pass

    thread = threading.Thread(target=run, name="collectives-diagnose", daemon=True)
    thread.start()
    deadline = time.monotonic() + seconds
    while thread.is_alive() and (left := deadline - time.monotonic()) > 0:
        thread.join(min(left, 0.01) if interrupted is not None else left)
        if interrupted is not None and interrupted():
            return None
    return box[0] if box else None


def explain(store: Store | None, rank: int, size: int, name: str, seq: int,
            exc: CollectiveTimeoutError | TransportError, grace: float,
            interrupted: Callable[[], bool] | None = None, *, diagnose_timeout: bool = True) -> CollectivesError:
    """The error this rank raises for ``exc`` in ``name #seq``: the root cause of the
    communicator's failure as the first rank to fail recorded it (recording it here if
    this rank is the first). Without a store, or if the store does not answer within
    ``grace + STORE_BOUND`` seconds (``TRANSPORT_STORE_BOUND`` for a transport failure),
    ``exc`` named by its operation; likewise at once when ``interrupted()`` turns true.
    ``diagnose_timeout=False`` returns a timeout as it is, at once: the communicator is a
    level of a larger operation, whose own diagnosis waits the one grace for every rank
    (a grace per level would add up)."""
    plain: CollectivesError = exc if isinstance(exc, CollectiveTimeoutError) else type(exc)(
        f"{name} #{seq}: {exc}", peer=exc.peer)
    if store is None or size < 2 or (isinstance(exc, CollectiveTimeoutError) and not diagnose_timeout):
        return plain
    if isinstance(exc, CollectiveTimeoutError):
        fault = _bounded(lambda: _timed_out(store, rank, size, exc, grace), grace + STORE_BOUND, interrupted)
    else:
        fault = _bounded(lambda: _transport_failed(store, rank, name, seq, exc), TRANSPORT_STORE_BOUND, interrupted)
    if fault is None or (fault.kind == "error" and fault.witness == rank):
        return plain
    return error_for(fault, rank, name, seq)


def error_for(fault: Fault, rank: int, name: str, seq: int) -> CollectivesError:
    """What ``rank``, failing in ``name #seq``, raises for the communicator's first fault."""
    text = fault.text if (name, seq) == (fault.op, fault.seq) else f"{name} #{seq}: {fault.text}"
    if fault.witness != rank:
        text += f" (reported by rank {fault.witness})"
    if rank in fault.culprits and fault.kind != "error":
        text += "; this rank is the one its peers gave up on"
    if fault.error == "CollectiveTimeoutError":
        error = CollectiveTimeoutError(name, seq, fault.culprits, fault.timeout)
        error.absent = list(fault.culprits)
        error.args = (text,)
        return error
    cls = _ERROR_TYPES.get(fault.error, TransportError)
    peer = fault.culprits[0] if fault.culprits else fault.witness
    return cls(text, peer=peer)


def _transport_failed(store: Store, rank: int, name: str, seq: int, exc: TransportError) -> Fault:
    """A peer went away (or a message did not fit). A peer that recorded a fault before it
    left failed because of that fault: this rank adopts it. A peer that left without a
    record is a root cause itself (it died, froze, or closed on its own). Any other error
    after another rank's recorded fault is taken as its consequence."""
    peer = exc.peer if isinstance(exc, PeerLostError) else None
    if peer is None and (first := _read(store, "fault")) is not None:
        fault = first  # e.g. a message of the operation the others gave up on, met by a later call
    elif peer is None:
        fault = Fault(rank, [rank], "error", type(exc).__name__, name, seq, f"rank {rank} failed in {name} #{seq}: {exc}")
    elif (theirs := _read(store, f"fault/{peer}")) is not None:
        fault = theirs
    else:
        state = process_state(process_record(store, peer), settle=0.3)
        kind, verdict = "died", ""
        if state is not None and state[1] == "gone":
            verdict = f"; rank {peer} died (its process, pid {state[0]}, exited)"
        elif state is not None and state[1] == "stopped":
            kind, verdict = "unresponsive", f"; rank {peer} is unresponsive (its process, pid {state[0]}, is stopped)"
        elif state is not None:
            kind, verdict = "left", f"; rank {peer} closed or abandoned its communicator (its process, pid {state[0]}, is alive)"
        fault = Fault(rank, [peer], kind, "PeerLostError", name, seq, f"{name} #{seq}: {exc}{verdict}")
    return _keep(store, rank, fault)


def _read(store: Store, key: str) -> Fault | None:
    """The fault recorded under ``key``; None if there is none, or no store to ask any more."""
    try:
        return Fault.decode(store.get(key, 1.0)) if store.check([key]) else None
    except Exception:  # noqa: BLE001
        return None


def _keep(store: Store, rank: int, fault: Fault) -> Fault:
    """Record ``fault`` as the reason this rank failed (peers that see it leave adopt it),
    and as the communicator's first fault unless one is recorded already."""
    try:
        store.set(f"fault/{rank}", fault.encode())
        store.compare_set("fault", b"", fault.encode())
    except Exception:  # noqa: BLE001 - the store's host may have left: this rank still knows
        pass
    return fault


def _timed_out(store: Store, rank: int, size: int, exc: CollectiveTimeoutError, grace: float) -> Fault:
    """This rank timed out: wait up to ``grace`` for the others to say they are in the
    operation too (or for a recorded fault; or until those still silent are stopped, gone,
    or timed out in another operation), then blame those that never did."""
    op, seq = exc.collective, exc.seq
    if op.startswith(("send", "recv")):  # point to point: only its peer was ever expected
        return _keep(store, rank, Fault(rank, list(exc.ranks), "absent", "CollectiveTimeoutError", op, seq, str(exc),
                                    exc.timeout))
    store.set(f"where/{rank}", json.dumps([op, seq]).encode())
    # Read now what may be needed: the rank hosting the store may close it while we wait.
    records = {r: process_record(store, r) for r in range(size) if r != rank}
    wheres: dict[int, list[object]] = {}  # each where/<r> once read: written once (r's communicator then breaks)
    absent = reported_absent(store, rank, size, op, seq, grace, stop=lambda: store.check(["fault"]),
                             silenced=lambda r: _silenced(records[r]) or _elsewhere(store, r, op, seq, wheres))
    first = _read(store, "fault")
    if first is not None:  # another rank failed first (a peer died, or it timed out): its cause
        return _keep(store, rank, first)
    exc.absent = absent
    if not absent:
        text = (f"{op} #{seq} timed out after {exc.timeout:g} s waiting on rank(s) "
                f"{', '.join(map(str, exc.ranks)) or 'none'}; every rank reported being in it")
        return _keep(store, rank, Fault(rank, [], "stuck", "CollectiveTimeoutError", op, seq, text, exc.timeout))
    described = {r: describe_absent(store, r, op, seq, grace, records[r], wheres) for r in absent}
    # Ranks still waiting in another operation are held up too; the silent ones are the cause.
    waiting = [r for r in absent if described[r][0] == "waiting"]
    culprits = [r for r in absent if r not in waiting] or waiting
    also = [described[r][1] for r in waiting if r not in culprits]
    dead = [r for r in culprits if described[r][0] == "died"]
    if dead:
        text = "; ".join([described[r][1] for r in dead] + also)
        return _keep(store, rank, Fault(rank, dead, "died", "PeerLostError", op, seq, text, exc.timeout))
    kind = "unresponsive" if any(described[r][0] == "unresponsive" for r in culprits) else "absent"
    text = (f"{op} #{seq} timed out after {exc.timeout:g} s; missing rank(s) {', '.join(map(str, culprits))}: "
            + "; ".join([described[r][1] for r in culprits] + also))
    return _keep(store, rank, Fault(rank, culprits, kind, "CollectiveTimeoutError", op, seq, text, exc.timeout))


def _silenced(record: list[object] | None) -> bool:
    """Whether the process ``record`` describes can say nothing: it runs on this machine and
    is gone or stopped."""
    state = process_state(record)
    return state is not None and state[1] != "alive"


def _elsewhere(store: Store, peer: int, op: str, seq: int, known: dict[int, list[object]] | None = None) -> bool:
    """Whether ``peer`` said it timed out in an operation other than ``op #seq`` (an earlier
    one it is held in, a later one it moved on to, or a different collective): it fails
    there, and will never say it is in this one. ``known``: as :func:`_where`'s."""
    where = _where(store, peer, known)
    return where is not None and list(where) != [op, seq]


def _where(store: Store, peer: int, known: dict[int, list[object]] | None = None) -> list[Any] | None:
    """The ``[op, seq]`` that ``peer`` said it timed out in; None while it has not (or no store
    answers). ``known``: the words read so far, kept there once read (a rank writes it once, as
    its communicator breaks), so that a wait that asks at every poll, and the description
    after it, ask the store only until the answer is there: one ``check`` a poll until then
    (the store has no get that does not wait), one ``get`` once, nothing after."""
    if known is not None and peer in known:
        return known[peer]
    key = f"where/{peer}"
    try:
        where = json.loads(store.get(key, 1.0)) if store.check([key]) else None
    except Exception:  # noqa: BLE001 - nothing read, nothing known
        return None
    if where is not None and known is not None:
        known[peer] = list(where)
    return where


def reported_absent(store: Store, rank: int, size: int, op: str, seq: int, grace: float,
                    stop: Callable[[], bool] = lambda: False,
                    silenced: Callable[[int], bool] = lambda r: False) -> list[int]:
    """Say in the store that this rank is inside ``op #seq``, and wait up to ``grace``
    seconds (or until ``stop()``) for the other ranks to say so: those that never do. The
    wait ends early once every rank still absent is ``silenced``: it cannot report at all
    (its process gone or stopped) or never will (it timed out in another operation); the
    grace is for ranks that are late."""
    key = f"stuck/{op}/{seq}"
    store.set(f"{key}/{rank}", b"1")
    deadline = time.monotonic() + grace
    absent = [r for r in range(size) if r != rank]
    try:
        while absent:
            absent = [r for r in absent if not store.check([f"{key}/{r}"])]
            if not absent or time.monotonic() >= deadline or stop() or all(map(silenced, absent)):
                break
            time.sleep(0.05)
    except Exception:  # noqa: BLE001 - the store went away meanwhile: those not seen so far
        pass
    return absent


def describe_absent(store: Store, peer: int, op: str, seq: int, grace: float,
                    record: list[object] | None, known: dict[int, list[object]] | None = None) -> tuple[str, str]:
    """``(kind, text)`` for a rank that never reported being in ``op #seq``; ``record``:
    its ``process_record``; ``known``: the ``where`` words already read (:func:`_where`)."""
    where = _where(store, peer, known)  # None also where the store went away: what the process says is left
    state = process_state(record)
    if state is not None and state[1] == "gone":
        return "died", f"rank {peer} died (its process, pid {state[0]}, exited) before or during {op} #{seq}"
    if state is not None and state[1] == "stopped":
        return "unresponsive", (f"rank {peer} is unresponsive in {op} #{seq}: its process (pid {state[0]}) "
                                "is stopped (SIGSTOP, a debugger, or a frozen host)")
    if where is not None and list(where) != [op, seq]:
        other, other_seq = where[0], int(where[1])
        if other_seq == seq:
            return "absent", f"rank {peer} is in {other} #{seq}, not {op} #{seq} (the ranks called different collectives)"
        return "waiting", (f"rank {peer} is still waiting in {other} #{other_seq}" if other_seq < seq
                           else f"rank {peer} is already in {other} #{other_seq}")
    done = f"completed #{seq - 1}, " if seq > 1 else ""
    if state is not None:
        return "absent", (f"rank {peer} {done}never joined {op} #{seq} (its process, pid {state[0]}, runs "
                          "elsewhere in its program: it skipped the call or is late)")
    return "absent", (f"rank {peer} {done}never joined {op} #{seq}: no word from it within {grace:g} s "
                      "(unresponsive, late, or it skipped the call)")


def abandon(transports: Sequence[Transport]) -> None:
    """Close a failed communicator's transports at once, so that the ranks waiting on
    this one fail now (and read the recorded fault) rather than at their timeout."""
    for transport in transports:
        try:
            transport.close()
        except Exception:  # noqa: BLE001 - the others must still close
            pass
