"""Waiting for requests without burning a core: spin briefly, then yield, then sleep.

Eight ranks on two cores must still run well, so a rank that has nothing to do gives its
core away quickly: a short spin (cheap when the peer answers within microseconds), a few
``sched_yield`` rounds, then a blocking wait on the transport's OS primitive (a socket
selector, a futex, a condition variable) with a bounded slice, between which dead peers
and the deadline are checked. A communicator with several transports (shared memory within
a host, TCP between hosts) sleeps on the one its pending requests use; only when they span
several does it take turns, in slices that start short and grow while nothing moves.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence

from ..errors import TransportError
from .base import Request, Transport

SPIN_SECONDS = 20e-6
YIELD_SECONDS = 200e-6
SLEEP_SLICE = 0.05
TURN_FIRST = 50e-6
TURN_MAX = 1e-3
LATE_PEER_YIELD_SECONDS = 20e-3
"""Where ranks outnumber cores, how long a compiled plan's wait that has nothing of its own left
to do but wait for late peers (a crowded all-gather by reads, a crowded reduce's root) yields to
them before it hands the call back to the Python plan's sleeping waits: a peer there is late by
most of a call's copies, and a hand-back mid-call costs a futex sleep and the interpreter's wait
loop. Measured: docs/performance.md, "Thirty-first round, the all_gather cells" and "Thirty-second
round, crowded reduces"."""


def compiled_yield_seconds(crowded: bool, waits_for_late_peers: bool = False) -> float:
    """How long a compiled plan's wait yields to a late peer before handing the call back: none
    where every rank has a core (it spins, then hands back), ``LATE_PEER_YIELD_SECONDS`` for a wait
    that ``waits_for_late_peers`` where ranks outnumber cores, else ``YIELD_SECONDS``."""
    if not crowded:
        return 0.0
    return LATE_PEER_YIELD_SECONDS if waits_for_late_peers else YIELD_SECONDS


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def oversubscribed(local_processes: int) -> bool:
    """Whether this host's ranks outnumber the CPUs we may run on."""
    return local_processes > usable_cpus()


def spin_seconds(local_processes: int) -> float:
    """How long a waiting rank spins before it yields (``spin_for`` this host)."""
    return spin_for(oversubscribed(local_processes))


def spin_for(host_oversubscribed: bool) -> float:
    """SPIN_SECONDS, or no spin at all where the host is oversubscribed, since a spinning
    rank then holds the core the rank it waits for needs (docs/performance.md,
    "Thresholds", spin_for)."""
    return 0.0 if host_oversubscribed else SPIN_SECONDS


class ProgressEngine:
    """Drives the transports of one communicator until requests complete."""

    def __init__(self, transports: Sequence[Transport], host_ranks: int = 1) -> None:
        """``host_ranks``: the ranks of this host where the caller knows them (from the ranks'
        host identities), this one included. The engine also counts those behind shared memory
        and this one, and takes the larger: a world on one host over TCP alone has no shared
        memory channel to count, and its waits spun on cores that the ranks they waited for
        needed (docs/performance.md, "Forty-second round, a TCP world's waits on a crowded
        host")."""
        self.transports = list(transports)
        behind_shm = 1 + max((len(t.channels) for t in self.transports if t.name == "shm"), default=0)
        self.spin_seconds = spin_seconds(max(behind_shm, host_ranks))

    def progress(self) -> bool:
        moved = False
        for transport in self.transports:
            if transport.progress():
                moved = True
        return moved

    def wait(
        self,
        requests: Iterable[Request],
        deadline: float,
        on_timeout: Callable[[list[int]], BaseException],
    ) -> None:
        """Progress until every request is done.

        Raises the request's TransportError (PeerLostError, MessageMismatchError, ...) if one
        fails, or ``on_timeout(pending_peers)`` once ``time.monotonic()`` passes ``deadline``.
        """
        pending = [r for r in requests if not r.done]
        idle_since: float | None = None
        busy_rounds = 0
        turn = TURN_FIRST
        while True:
            for r in pending:
                if r.error is not None:
                    raise r.error
            pending = [r for r in pending if not r.done]
            if not pending:
                return
            if self.progress():
                idle_since = None
                busy_rounds += 1
                if busy_rounds % 256 == 0 and time.monotonic() >= deadline:
                    # bytes keep moving, but not the ones awaited: still a timeout
                    raise on_timeout(sorted({r.peer for r in pending}))
                continue
            now = time.monotonic()
            if idle_since is None:
                idle_since = now
                continue
            idle = now - idle_since
            if idle < self.spin_seconds:
                continue
            if idle < self.spin_seconds + YIELD_SECONDS:
                os.sched_yield()
                continue
            if now >= deadline:
                raise on_timeout(sorted({r.peer for r in pending}))
            self._check_peers(pending)
            # Take wake-up tokens before the last look, so that a wake-up arriving between
            # that look and the sleep is not lost.
            tokens = [t.activity_token() for t in self.transports]
            if self.progress():
                idle_since = None
                turn = TURN_FIRST
                continue
            self._sleep(pending, tokens, min(deadline - now, SLEEP_SLICE), turn)
            turn = min(2 * turn, TURN_MAX)

    def _check_peers(self, pending: list[Request]) -> None:
        by_transport: dict[int, tuple[Transport, set[int]]] = {}
        for r in pending:
            t = self._transport_of(r)
            by_transport.setdefault(id(t), (t, set()))[1].add(r.peer)
        for transport, peers in by_transport.values():
            transport.check_peers(peers)

    def _transport_of(self, request: Request) -> Transport:
        for transport in self.transports:
            if transport.channels.get(request.peer) is request.channel:
                return transport
        raise TransportError(f"no transport owns the channel to rank {request.peer}", peer=request.peer)

    def _sleep(self, pending: list[Request], tokens: list[int | None], timeout: float, turn: float) -> None:
        if len(self.transports) == 1:
            self.transports[0].wait_for_activity(timeout, tokens[0])
            return
        # Sleep only on the transports that own a pending request: a wait for a TCP
        # message that dozed on the shared-memory doorbell first woke up to a slice late.
        owners = {id(self._transport_of(r)) for r in pending}
        waited = [(t, token) for t, token in zip(self.transports, tokens) if id(t) in owners]
        if len(waited) == 1:
            waited[0][0].wait_for_activity(timeout, waited[0][1])
            return
        # Several: none can sleep on the others' primitives, so each takes a turn of
        # ``turn`` seconds (short at first, growing while nothing moves).
        for transport, token in waited:
            transport.wait_for_activity(min(timeout, turn), token)
