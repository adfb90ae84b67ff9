"""The transport conformance suite (collectives.testing.conformance) for the MPI transport,
with ranks as MPI processes instead of threads.

MPI gives one rank per process, so the thread-based suite cannot build an MPI world in
one process. These are the same checks, with the same sizes and the same pass criteria;
what the threaded suite does with ``threading.Event`` (post first, then let the other
side go on) is an MPI barrier here (``Ibarrier`` polled with sleeps, so idle ranks do
not spin). Each check runs on a sub-communicator of the first 2 (or 3) ranks of
COMM_WORLD; the other ranks skip it. Imported by mpi_script.py; run under mpiexec.

Beyond the threaded suite: the tag checks also use tags that only the overflow path can
carry (tags no MPI tag can hold exactly) and tags of the communicator's point-to-point
and control classes that a naive ``tag % (TAG_UB + 1)`` would merge with collective
numbers; the size-mismatch check also runs on an overflow tag.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from mpi4py import MPI

from collectives.config import Config
from collectives.errors import MessageMismatchError, PeerLostError
from collectives.store import HashStore
from collectives.testing.conformance import LARGE_BYTES
from collectives.transports.base import Request, Transport
from collectives.transports.mpi import MpiTransport
from collectives.transports.progress import ProgressEngine

TIMEOUT = 20.0
TIMEOUT_SLACK = 1.0
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


def _wait(engine: ProgressEngine, requests: Sequence[Request], what: str, timeout: float | None = None) -> None:
    timeout = TIMEOUT if timeout is None else timeout

    def hung(peers: list[int]) -> BaseException:
        return AssertionError(f"{what}: not done after {timeout:g} s (still waiting on rank(s) {peers})")

    engine.wait(requests, time.monotonic() + timeout, hung)


def _pattern(nbytes: int, seed: int) -> bytes:
    return np.random.default_rng(seed).bytes(nbytes)


def _assert_received(got: bytearray, want: bytes, what: str) -> None:
    if got != want:
        if len(got) != len(want):
            detail = f"{len(got)} bytes instead of {len(want)}"
        else:
            i = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
            detail = f"first difference at byte {i} of {len(want)}"
        raise AssertionError(f"{what}: wrong data, {detail}")


# -- the checks (each called on every member of its sub-communicator) -------------------------


def check_zero_bytes(sub: Any) -> None:
    with _world(sub) as transport:
        me = sub.Get_rank()
        peer = 1 - me
        engine = ProgressEngine([transport])
        ch = transport.channels[peer]
        recv_before, recv_empty, recv_after, recv_empty2 = bytearray(5), bytearray(0), bytearray(3), bytearray(0)
        requests = [
            ch.isend(_pattern(5, 10 + me), tag=1),
            ch.isend(b"", tag=1),
            ch.isend(_pattern(3, 20 + me), tag=1),
            ch.isend(bytearray(0), tag=2),
            ch.irecv(recv_before, tag=1),
            ch.irecv(recv_empty, tag=1),
            ch.irecv(recv_after, tag=1),
            ch.irecv(recv_empty2, tag=2),
        ]
        _wait(engine, requests, "zero-byte messages")
        _assert_received(recv_before, _pattern(5, 10 + peer), "5-byte message before a zero-byte one")
        _assert_received(recv_after, _pattern(3, 20 + peer), "3-byte message after a zero-byte one")
        nap_barrier(sub)


def check_large_both_ways(sub: Any, large_bytes: int = LARGE_BYTES) -> None:
    sizes = {0: large_bytes, 1: large_bytes - 3}
    with _world(sub) as transport:
        me = sub.Get_rank()
        peer = 1 - me
        engine = ProgressEngine([transport])
        ch = transport.channels[peer]
        out = bytearray(sizes[peer])
        requests = [ch.irecv(out, tag=7), ch.isend(_pattern(sizes[me], 100 + me), tag=7)]
        _wait(engine, requests, f"{sizes[me]}-byte send with a {sizes[peer]}-byte receive")
        _assert_received(out, _pattern(sizes[peer], 100 + peer), f"{sizes[peer]}-byte message from rank {peer}")
        nap_barrier(sub)


def check_fifo_per_tag(sub: Any) -> None:
    """Ranks 1 and 2 each send 30 messages on one tag to rank 0, which posts half its
    receives before they come and half after."""
    count = 30
    sizes = [(i * 7919) % 3000 + (i % 3 == 0) * 70000 for i in range(count)]

    def message(sender: int, i: int) -> bytes:
        return _pattern(sizes[i], sender * 1000 + i)

    with _world(sub) as transport:
        me = sub.Get_rank()
        engine = ProgressEngine([transport])
        if me == 0:
            outs = {p: [bytearray(s) for s in sizes] for p in (1, 2)}
            requests: list[Request] = []
            for i in range(count // 2):
                for p in (1, 2):
                    requests.append(transport.channels[p].irecv(outs[p][i], tag=5))
            nap_barrier(sub)  # "posted half"
            _wait(engine, requests[:2], "first receive")
            for i in range(count // 2, count):
                for p in (1, 2):
                    requests.append(transport.channels[p].irecv(outs[p][i], tag=5))
            _wait(engine, requests, f"{count} messages from each of ranks 1 and 2")
            for p in (1, 2):
                for i in range(count):
                    _assert_received(outs[p][i], message(p, i), f"receive #{i} from rank {p} (sent #{i})")
        else:
            nap_barrier(sub)
            ch = transport.channels[0]
            _wait(engine, [ch.isend(message(me, i), tag=5) for i in range(count)], f"{count} sends to rank 0")
        nap_barrier(sub)


def check_tags_reverse_order(sub: Any) -> None:
    """Messages on different tags, received in the reverse of their sending order. Besides
    the threaded suite's tags: point-to-point (bit 62) and control (bit 61) tags whose low
    bits equal small collective numbers, and tags only the overflow path can carry."""
    tags = [0, 1, 2, 3, 0xFFFF, 1 << 32, (1 << 64) - 1, (1 << 62) | 3, 1 << 61, (1 << 62) | (1 << 40), OVERFLOW_TAG]
    sizes = [1, 0, 40000, 300, 5, 200000, 17, 11, 0, 90000, 33]
    with _world(sub) as transport:
        me = sub.Get_rank()
        engine = ProgressEngine([transport])
        if me == 0:
            ch = transport.channels[1]
            requests = [ch.isend(_pattern(s, t % 1000), tag=t) for t, s in zip(tags, sizes)]
            nap_barrier(sub)  # "queued"
            _wait(engine, requests, "sends on several tags")
        else:
            nap_barrier(sub)
            ch = transport.channels[0]
            for t, s in reversed(list(zip(tags, sizes))):
                out = bytearray(s)
                _wait(engine, [ch.irecv(out, tag=t)], f"receive tag {t:#x} (reverse order)")
                _assert_received(out, _pattern(s, t % 1000), f"message on tag {t:#x}")
        nap_barrier(sub)


def check_recv_before_and_after_arrival(sub: Any) -> None:
    with _world(sub) as transport:
        me = sub.Get_rank()
        engine = ProgressEngine([transport])
        if me == 0:
            ch = transport.channels[1]
            nap_barrier(sub)  # "early posted"
            requests = [
                ch.isend(_pattern(1000, 1), tag=11),  # its receive was posted first
                ch.isend(_pattern(70000, 2), tag=12),  # arrives before its receive
                ch.isend(_pattern(10, 3), tag=13),
                ch.isend(_pattern(500, 4), tag=OVERFLOW_TAG),  # overflow, arrives before its receive
            ]
            _wait(engine, requests, "four sends")
        else:
            ch = transport.channels[0]
            early = bytearray(1000)
            early_request = ch.irecv(early, tag=11)
            nap_barrier(sub)
            marker = bytearray(10)
            _wait(engine, [early_request, ch.irecv(marker, tag=13)], "early receive")
            time.sleep(0.05)  # let the later messages arrive before their receives
            late = bytearray(70000)
            late_overflow = bytearray(500)
            _wait(engine, [ch.irecv(late, tag=12), ch.irecv(late_overflow, tag=OVERFLOW_TAG)],
                  "receives posted after their messages were sent")
            _assert_received(early, _pattern(1000, 1), "message whose receive was posted first")
            _assert_received(marker, _pattern(10, 3), "marker message")
            _assert_received(late, _pattern(70000, 2), "message that arrived before its receive")
            _assert_received(late_overflow, _pattern(500, 4), "overflow message that arrived before its receive")
        nap_barrier(sub)


def check_size_mismatch(sub: Any) -> None:
    """A longer or shorter message than its receive raises MessageMismatchError, posted
    before or after the message arrived, on a direct and on an overflow tag."""
    for tag in (3, OVERFLOW_TAG):
        for sent, posted in ((100, 50), (100, 200)):
            for post_first in (True, False):
                case = (f"{sent}-byte message on tag {tag:#x} into a {posted}-byte receive posted "
                        f"{'before' if post_first else 'after'} it")
                with _world(sub) as transport:
                    me = sub.Get_rank()
                    engine = ProgressEngine([transport])
                    if me == 0:
                        if post_first:
                            nap_barrier(sub)
                        ch = transport.channels[1]
                        _wait(engine, [ch.isend(_pattern(sent, 9), tag=tag), ch.isend(b"x", tag=tag + 1)], case)
                    else:
                        ch = transport.channels[0]
                        out = bytearray(posted)
                        request: Request | None = None
                        if post_first:
                            request = ch.irecv(out, tag=tag)
                            nap_barrier(sub)
                        else:
                            _wait(engine, [ch.irecv(bytearray(1), tag=tag + 1)], f"{case}: marker")
                        try:
                            if request is None:
                                request = ch.irecv(out, tag=tag)
                            _wait(engine, [request], case)
                        except MessageMismatchError:
                            if request is not None and request.done:
                                raise AssertionError(f"{case}: the receive completed before "
                                                     "MessageMismatchError was raised") from None
                        else:
                            raise AssertionError(f"{case}: the receive completed with data {bytes(out[:16])!r}... "
                                                 "instead of raising MessageMismatchError")
                    nap_barrier(sub)


def check_send_then_close(sub: Any) -> None:
    with _world(sub) as transport:
        me = sub.Get_rank()
        engine = ProgressEngine([transport])
        if me == 0:
            _wait(engine, [transport.channels[1].isend(_pattern(3000, 4), tag=6)], "send before close")
            transport.close()
            nap_barrier(sub)  # "closed"
        else:
            nap_barrier(sub)
            ch = transport.channels[0]
            out = bytearray(3000)
            _wait(engine, [ch.irecv(out, tag=6)], "receive of a message sent before the sender closed")
            _assert_received(out, _pattern(3000, 4), "message sent before close")
            try:
                _wait(engine, [ch.irecv(bytearray(1), tag=6)], "receive from a closed peer")
            except PeerLostError:
                pass
            else:
                raise AssertionError("a receive from a peer that had closed completed")
        nap_barrier(sub)


def check_peer_close(sub: Any) -> None:
    big = 32 << 20
    for direction in ("recv", "send"):
        with _world(sub) as transport:
            me = sub.Get_rank()
            engine = ProgressEngine([transport])
            if me == 0:
                nap_barrier(sub)  # "waiting"
                time.sleep(0.1)
                transport.close()
            else:
                ch = transport.channels[0]
                request = ch.irecv(bytearray(10), tag=1) if direction == "recv" else ch.isend(bytes(big), tag=1)
                nap_barrier(sub)
                start = time.monotonic()
                try:
                    _wait(engine, [request], f"pending {direction} while the peer closes")
                except PeerLostError as exc:
                    if exc.peer not in (None, 0):
                        raise AssertionError(f"PeerLostError names rank {exc.peer}, not 0") from exc
                else:
                    raise AssertionError(
                        f"a {direction} to a peer that closed completed after {time.monotonic() - start:.2f} s "
                        "instead of raising PeerLostError"
                    )
            nap_barrier(sub)


def check_wait_timeout(sub: Any) -> None:
    with _world(sub) as transport:
        if sub.Get_rank() == 1:
            engine = ProgressEngine([transport])
            request = transport.channels[0].irecv(bytearray(8), tag=1)
            seen: list[list[int]] = []

            class Expected(Exception):
                pass

            def on_timeout(peers: list[int]) -> BaseException:
                seen.append(peers)
                return Expected()

            delay = 0.2
            start = time.monotonic()
            try:
                engine.wait([request], start + delay, on_timeout)
            except Expected:
                pass
            else:
                raise AssertionError("wait() returned for a receive that nobody sent")
            elapsed = time.monotonic() - start
            if not delay <= elapsed <= delay + TIMEOUT_SLACK:
                raise AssertionError(f"wait() timed out after {elapsed:.3f} s (deadline {delay} s)")
            if seen != [[0]]:
                raise AssertionError(f"on_timeout was called with {seen}, expected [[0]]")
        nap_barrier(sub)


CHECKS: dict[str, tuple[int, Callable[[Any], None]]] = {
    "zero_bytes": (2, check_zero_bytes),
    "large_both_ways": (2, check_large_both_ways),
    "fifo_per_tag": (3, check_fifo_per_tag),
    "tags_reverse_order": (2, check_tags_reverse_order),
    "recv_before_and_after_arrival": (2, check_recv_before_and_after_arrival),
    "size_mismatch": (2, check_size_mismatch),
    "send_then_close": (2, check_send_then_close),
    "peer_close": (2, check_peer_close),
    "wait_timeout": (2, check_wait_timeout),
}


def run_all(world: Any) -> list[str]:
    """Run every check whose world fits in ``world``; return the names that ran."""
    groups = Groups(world)
    ran = []
    for name, (ranks, check) in CHECKS.items():
        if ranks not in groups.subs:
            continue
        sub = groups.subs[ranks]
        if sub is not None:
            try:
                check(sub)
            except AssertionError as exc:
                raise AssertionError(f"conformance {name}, rank {sub.Get_rank()} of {ranks}: {exc}") from exc
        nap_barrier(world)
        ran.append(name)
    return ran
