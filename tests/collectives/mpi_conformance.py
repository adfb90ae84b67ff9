"""The transport conformance suite (collectives.testing.conformance) for the MPI transport,
with ranks as MPI processes instead of threads.

MPI gives one rank per process, so the thread-based drivers cannot build an MPI world in
one process. This driver runs the suite's per-rank bodies (``RANK_CHECKS``) themselves,
with the same sizes and pass criteria; what the threaded driver does with
``threading.Event`` (post first, then let the other side go on) is an MPI barrier here
(``Ibarrier`` polled with sleeps, so idle ranks do not spin). Each check runs on a
sub-communicator of the first 2 (or 3) ranks of COMM_WORLD; the other ranks skip it.
Imported by mpi_script.py; run under mpiexec.

Beyond the threaded suite: the tag checks also use tags that only the overflow path can
carry (tags no MPI tag can hold exactly) and tags of the communicator's point-to-point
and control classes that a naive ``tag % (TAG_UB + 1)`` would merge with collective
numbers; the size-mismatch check also runs on an overflow tag.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from mpi4py import MPI

from collectives.config import Config
from collectives.store import HashStore
from collectives.testing.conformance import RANK_CHECKS, REVERSE_ORDER_TAGS, SIZE_MISMATCH_CASES
from collectives.transports.base import Transport
from collectives.transports.mpi import MpiTransport
from collectives.transports.progress import ProgressEngine

TIMEOUT = 20.0
OVERFLOW_TAG = 1 << 40  # class 0, beyond every MPI tag range: the overflow path


def nap_barrier(comm: Any) -> None:
    """A barrier that sleeps instead of spinning (4 ranks share 2 cores in CI)."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(5e-4)


class Groups:
    """Sub-communicators of the first 2 and 3 ranks of ``world`` (None where not a member)."""

    def __init__(self, world: Any) -> None:
        self.world = world
        self.subs: dict[int, Any] = {}
        for k in (2, 3):
            if world.Get_size() >= k:
                sub = world.Split(0 if world.Get_rank() < k else MPI.UNDEFINED, world.Get_rank())
                self.subs[k] = None if sub == MPI.COMM_NULL else sub


@contextlib.contextmanager
def _world(sub: Any) -> Iterator[Transport]:
    rank, size = sub.Get_rank(), sub.Get_size()
    transport = MpiTransport(rank, size, [p for p in range(size) if p != rank], HashStore(), Config(), TIMEOUT, comm=sub)
    try:
        peers = set(range(size)) - {rank}
        assert set(transport.channels) == peers, f"channels to {sorted(transport.channels)}, expected {sorted(peers)}"
        yield transport
    finally:
        try:
            transport.close()
            transport.close()  # idempotent
        except Exception as exc:
            raise AssertionError(f"close() raised {type(exc).__name__}: {exc}") from exc


class BarrierSignal:
    """The suite's ``signal`` between processes: the side that sets it and the side that
    waits on it both enter one barrier."""

    def __init__(self, comm: Any) -> None:
        self.comm = comm

    def set(self) -> None:
        nap_barrier(self.comm)

    def wait(self, timeout: float | None = None) -> None:
        nap_barrier(self.comm)


EXTRA_PARAMS: dict[str, list[dict[str, Any]]] = {
    # point-to-point (bit 62) and control (bit 61) tags whose low bits equal small
    # collective numbers, and tags only the overflow path can carry
    "tags_reverse_order": [{"tags": REVERSE_ORDER_TAGS + (((1 << 62) | 3, 11), (1 << 61, 0),
                                                           ((1 << 62) | (1 << 40), 90000), (OVERFLOW_TAG, 33))}],
    # an overflow message arrives before its receive too; the overflow path is a stream of
    # its own, so the marker proves nothing about it: let it settle
    "recv_before_and_after_arrival": [{"late": ((12, 70000), (OVERFLOW_TAG, 500)), "settle": 0.05}],
    # the size check on an overflow tag as well
    "size_mismatch": [dict(case, tag=tag) for tag in (3, OVERFLOW_TAG) for case in SIZE_MISMATCH_CASES],
}
"""Cases that replace the suite's own, for what only the MPI transport does."""


def run_check(name: str, sub: Any) -> None:
    """Run one check on every member of ``sub``, one fresh transport per case."""
    check = RANK_CHECKS[name]
    for case in EXTRA_PARAMS.get(name, check.cases):
        with _world(sub) as transport:
            check.body(sub.Get_rank(), transport, ProgressEngine([transport]), BarrierSignal(sub), TIMEOUT, **case)
            nap_barrier(sub)  # both done before either closes (a send may complete buffered)


def run_all(world: Any) -> list[str]:
    """Run every check whose world fits in ``world``; return the names that ran."""
    groups = Groups(world)
    ran = []
    for name, check in RANK_CHECKS.items():
        if check.ranks not in groups.subs:
            continue
        sub = groups.subs[check.ranks]
        if sub is not None:
            try:
                run_check(name, sub)
            except AssertionError as exc:
                raise AssertionError(f"conformance {name}, rank {sub.Get_rank()} of {check.ranks}: {exc}") from exc
        nap_barrier(world)
        ran.append(name)
    return ran
