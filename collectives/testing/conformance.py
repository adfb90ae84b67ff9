"""A conformance suite every transport must pass (trio's ``check_one_way_stream`` style).

Give :func:`check_transport` a factory that builds a connected world of N transports (one
per rank, all in this process, ranks being threads) and it checks the contract that
algorithms rely on:

* zero-byte messages are delivered, and do not blur the frame boundaries around them;
* a large message goes both ways at once (full duplex, flow control, multi-frame);
* messages with one tag arrive in the order they were sent (per-tag FIFO), per peer;
* messages on different tags may be received in any order (here: reverse);
* a receive can be posted before or after its message arrives;
* a size mismatch raises :class:`MessageMismatchError` instead of truncating;
* data sent before a peer closes is still delivered, and after that a receive fails;
* a peer closing raises :class:`PeerLostError` on the other side, for receives and for
  sends that cannot complete, instead of hanging;
* ``ProgressEngine.wait`` with a near deadline and no sender raises the ``on_timeout``
  error promptly.

Each check is also available on its own in :data:`CONFORMANCE_CHECKS`, so that a test file
can parametrize over checks x transports. Failures raise :class:`AssertionError` with a
message that says which rank saw what.

Example::

    from collectives.testing import check_transport
    from collectives.testing.conformance import build_world
    check_transport(lambda n: build_world(MyTransport, n))
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, Protocol

from ..errors import MessageMismatchError, PeerLostError
from ..transports.base import Request, Transport
from ..transports.progress import ProgressEngine
from .worlds import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT  # re-exported: their home before worlds.py
from .worlds import MakeWorld as MakeWorld
from .worlds import build_world as build_world
from .worlds import make_inproc_world as make_inproc_world

LARGE_BYTES = 64 << 20
TIMEOUT_SLACK = 1.0
"""How late after its deadline ``ProgressEngine.wait`` may raise and still be 'prompt'."""


class _ExpectedTimeout(Exception):
    """What ``on_timeout`` returns in the timeout check."""

    def __init__(self, peers: list[int]) -> None:
        super().__init__(f"timed out waiting on {peers}")
        self.peers = peers


@contextlib.contextmanager
def _world(make_world: MakeWorld, n: int) -> Iterator[list[Transport]]:
    """Build a world of ``n``, check its channels, and close every transport (twice: idempotent) afterwards."""
    transports = make_world(n)
    try:
        assert len(transports) == n, f"make_world({n}) returned {len(transports)} transports"
        for rank, transport in enumerate(transports):
            peers = set(range(n)) - {rank}
            assert set(transport.channels) == peers, (
                f"rank {rank}: channels to {sorted(transport.channels)}, expected {sorted(peers)}"
            )
        yield transports
    finally:
        for rank, transport in enumerate(transports):
            try:
                transport.close()
                transport.close()  # idempotent
            except Exception as exc:
                raise AssertionError(f"rank {rank}: close() raised {type(exc).__name__}: {exc}") from exc


def _run_ranks(transports: Sequence[Transport], bodies: dict[int, Callable[[Transport, ProgressEngine], None]],
               timeout: float) -> None:
    """Run ``bodies[rank](transport, engine)`` in one thread per rank; re-raise the first
    failure as an AssertionError naming the rank, or report ranks that hung."""
    failures: list[tuple[float, int, BaseException]] = []

    def run(rank: int) -> None:
        try:
            bodies[rank](transports[rank], ProgressEngine([transports[rank]]))
        except BaseException as exc:
            failures.append((time.monotonic(), rank, exc))

    threads = {r: threading.Thread(target=run, args=(r,), name=f"conformance-rank{r}", daemon=True) for r in bodies}
    for t in threads.values():
        t.start()
    deadline = time.monotonic() + timeout + 5.0
    for t in threads.values():
        t.join(max(0.0, deadline - time.monotonic()))
    hung = [r for r, t in threads.items() if t.is_alive()]
    if failures:
        _, rank, exc = min(failures, key=lambda f: f[0])
        if isinstance(exc, AssertionError):
            raise AssertionError(f"rank {rank}: {exc}") from exc
        raise AssertionError(f"rank {rank}: unexpected {type(exc).__name__}: {exc}") from exc
    if hung:
        raise AssertionError(f"rank(s) {hung} hung (still running after {timeout + 5.0:g} s)")


def _wait(engine: ProgressEngine, requests: Sequence[Request], timeout: float, what: str) -> None:
    """Wait for ``requests``; a timeout is a conformance failure (the transport hung)."""

    def hung(peers: list[int]) -> BaseException:
        return AssertionError(f"{what}: not done after {timeout:g} s (still waiting on rank(s) {peers})")

    engine.wait(requests, time.monotonic() + timeout, hung)


def _pattern(nbytes: int, seed: int) -> bytes:
    """``nbytes`` reproducible random bytes: misrouted or shifted data cannot pass for right."""
    return random.Random(seed).randbytes(nbytes)


def _first_difference(got: bytes | bytearray, want: bytes) -> str:
    """Where two byte strings first differ, in words."""
    if len(got) != len(want):
        return f"{len(got)} bytes instead of {len(want)}"
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return f"first difference at byte {i} of {len(want)} (got {a:#04x}, want {b:#04x})"
    return "equal"


def _assert_received(got: bytearray, want: bytes, what: str) -> None:
    """Fail, saying where, unless ``got`` is ``want``."""
    if got != want:
        raise AssertionError(f"{what}: wrong data, {_first_difference(got, want)}")


# -- the checks: one body per rank ---------------------------------------------------------
#
# Each check is a function run on every rank of its world, as
# ``body(me, transport, engine, signal, timeout, **params)``. ``signal`` orders the ranks
# where a check needs it: one side calls ``signal.set()`` once it has posted something,
# the other ``signal.wait()`` before it goes on (every rank calls at most one of the two,
# at most once). Threads pass a ``threading.Event``; ranks that are processes pass a
# barrier both sides call (tests/collectives/mpi_conformance.py runs these bodies under mpiexec).


class Signal(Protocol):
    """Orders two ranks within a check: one side sets, the other waits."""
    def set(self) -> None: ...
    def wait(self, timeout: float | None = None) -> Any: ...


Body = Callable[..., None]


def zero_bytes_rank(me: int, transport: Transport, engine: ProgressEngine, signal: Signal, timeout: float) -> None:
    """Zero-byte messages complete both ways, and frames around them stay intact."""
    peer = 1 - me
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
    _wait(engine, requests, timeout, "zero-byte messages")
    _assert_received(recv_before, _pattern(5, 10 + peer), "5-byte message before a zero-byte one")
    _assert_received(recv_after, _pattern(3, 20 + peer), "3-byte message after a zero-byte one")
    assert len(recv_empty) == 0 and len(recv_empty2) == 0


def large_both_ways_rank(
    me: int, transport: Transport, engine: ProgressEngine, signal: Signal, timeout: float,
    large_bytes: int = LARGE_BYTES,
) -> None:
    """Two large messages (odd sizes) cross at once: full duplex with flow control."""
    sizes = {0: large_bytes, 1: max(0, large_bytes - 3)}
    timeout = max(timeout, large_bytes / (8 << 20))  # at least 8 MiB/s, even on slow machines
    peer = 1 - me
    ch = transport.channels[peer]
    out = bytearray(sizes[peer])
    requests = [ch.irecv(out, tag=7), ch.isend(_pattern(sizes[me], 100 + me), tag=7)]
    _wait(engine, requests, timeout, f"{sizes[me]}-byte send with a {sizes[peer]}-byte receive")
    _assert_received(out, _pattern(sizes[peer], 100 + peer), f"{sizes[peer]}-byte message from rank {peer}")


_FIFO_COUNT = 30
_FIFO_SIZES = [(i * 7919) % 3000 + (i % 3 == 0) * 70000 for i in range(_FIFO_COUNT)]


def _fifo_message(sender: int, i: int) -> bytes:
    """The ``i``-th message of the per-tag FIFO check from ``sender`` (sizes vary, some multi-frame)."""
    return _pattern(_FIFO_SIZES[i], sender * 1000 + i)


def fifo_per_tag_rank(me: int, transport: Transport, engine: ProgressEngine, signal: Signal, timeout: float) -> None:
    """Several messages with one tag arrive in sending order, separately for each peer.

    Ranks 1 and 2 each send 30 messages of varying size on the same tag to rank 0, which
    posts half its receives before the messages come (then signals) and half after.
    """
    count = _FIFO_COUNT
    if me != 0:
        signal.wait(timeout)
        ch = transport.channels[0]
        requests = [ch.isend(_fifo_message(me, i), tag=5) for i in range(count)]
        _wait(engine, requests, timeout, f"{count} sends to rank 0")
        return
    outs = {p: [bytearray(s) for s in _FIFO_SIZES] for p in (1, 2)}
    posted: list[Request] = []
    for i in range(count // 2):
        for p in (1, 2):
            posted.append(transport.channels[p].irecv(outs[p][i], tag=5))
    signal.set()
    _wait(engine, posted[:2], timeout, "first receive")  # let the rest arrive early
    for i in range(count // 2, count):
        for p in (1, 2):
            posted.append(transport.channels[p].irecv(outs[p][i], tag=5))
    _wait(engine, posted, timeout, f"{count} messages from each of ranks 1 and 2")
    for p in (1, 2):
        for i in range(count):
            _assert_received(outs[p][i], _fifo_message(p, i), f"receive #{i} from rank {p} (sent #{i})")


REVERSE_ORDER_TAGS = ((0, 1), (1, 0), (2, 40000), (3, 300), (0xFFFF, 5), (1 << 32, 200000), ((1 << 64) - 1, 17))
"""(tag, message bytes) of the reverse-order check."""


def tags_reverse_order_rank(
    me: int, transport: Transport, engine: ProgressEngine, signal: Signal, timeout: float,
    tags: Sequence[tuple[int, int]] = REVERSE_ORDER_TAGS,
) -> None:
    """Messages on different tags are received in the reverse of their sending order,
    each receive awaited before the next is posted (earlier tags must wait, unexpected)."""
    if me == 0:
        ch = transport.channels[1]
        requests = [ch.isend(_pattern(s, t % 1000), tag=t) for t, s in tags]
        signal.set()
        _wait(engine, requests, timeout, "sends on several tags")
        return
    signal.wait(timeout)
    ch = transport.channels[0]
    for t, s in reversed(list(tags)):
        out = bytearray(s)
        _wait(engine, [ch.irecv(out, tag=t)], timeout, f"receive tag {t:#x} (reverse order)")
        _assert_received(out, _pattern(s, t % 1000), f"message on tag {t:#x}")


def recv_before_and_after_arrival_rank(
    me: int, transport: Transport, engine: ProgressEngine, signal: Signal, timeout: float,
    late: Sequence[tuple[int, int]] = ((12, 70000),), settle: float = 0.0,
) -> None:
    """A receive posted before its message and ones posted after theirs arrived all work.

    ``late``: (tag, bytes) of the messages whose receives come late; they are sent before a
    marker on tag 13, which on one ordered stream proves they are in. Transports that
    carry some tags apart (MPI's overflow tags) pass ``settle``: seconds to wait after
    the marker.
    """
    if me == 0:
        ch = transport.channels[1]
        signal.wait(timeout)
        requests = [ch.isend(_pattern(1000, 1), tag=11)]  # its receive was posted first
        requests += [ch.isend(_pattern(n, 2 + i), tag=t) for i, (t, n) in enumerate(late)]  # arrive first
        requests.append(ch.isend(_pattern(10, 99), tag=13))
        _wait(engine, requests, timeout, f"{len(requests)} sends")
        return
    ch = transport.channels[0]
    early = bytearray(1000)
    early_request = ch.irecv(early, tag=11)
    signal.set()
    marker = bytearray(10)
    _wait(engine, [early_request, ch.irecv(marker, tag=13)], timeout, "early receive")
    time.sleep(settle)
    outs = [bytearray(n) for _, n in late]
    _wait(engine, [ch.irecv(out, tag=t) for out, (t, _) in zip(outs, late)], timeout,
          "receives posted after their messages arrived")
    _assert_received(early, _pattern(1000, 1), "message whose receive was posted first")
    _assert_received(marker, _pattern(10, 99), "marker message")
    for i, (out, (t, _)) in enumerate(zip(outs, late)):
        _assert_received(out, _pattern(len(out), 2 + i), f"message on tag {t:#x} that arrived before its receive")


def size_mismatch_rank(
    me: int, transport: Transport, engine: ProgressEngine, signal: Signal, timeout: float,
    sent: int = 100, posted: int = 50, post_first: bool = True, tag: int = 3,
) -> None:
    """A message longer or shorter than its receive raises MessageMismatchError, whether
    the receive was posted before the message arrived or after."""
    case = (f"{sent}-byte message on tag {tag:#x} into a {posted}-byte receive posted "
            f"{'before' if post_first else 'after'} it")
    if me == 0:
        if post_first:
            signal.wait(timeout)
        ch = transport.channels[1]
        _wait(engine, [ch.isend(_pattern(sent, 9), tag=tag), ch.isend(b"x", tag=tag + 1)], timeout, case)
        return
    ch = transport.channels[0]
    out = bytearray(posted)
    request: Request | None = None
    if post_first:
        request = ch.irecv(out, tag=tag)
        signal.set()
    else:
        marker = bytearray(1)  # sent after the other one: once in, both are
        _wait(engine, [ch.irecv(marker, tag=tag + 1)], timeout, f"{case}: marker")
    try:
        if request is None:  # may raise at once: the message is already here
            request = ch.irecv(out, tag=tag)
        _wait(engine, [request], timeout, case)
    except MessageMismatchError:
        if request is not None and request.done:
            raise AssertionError(f"{case}: the receive completed (with wrong data) before "
                                 "MessageMismatchError was raised") from None
        return
    raise AssertionError(f"{case}: the receive completed with data {bytes(out[:16])!r}... "
                         "instead of raising MessageMismatchError")


SIZE_MISMATCH_CASES = [
    {"sent": sent, "posted": posted, "post_first": first} for sent, posted in ((100, 50), (100, 200)) for first in (True, False)
]


def send_then_close_rank(me: int, transport: Transport, engine: ProgressEngine, signal: Signal, timeout: float) -> None:
    """A message whose send completed is delivered even if the sender closes right after
    (a communicator closes after its last collective); the next receive fails."""
    if me == 0:
        _wait(engine, [transport.channels[1].isend(_pattern(3000, 4), tag=6)], timeout, "send before close")
        transport.close()
        signal.set()
        return
    signal.wait(timeout)
    ch = transport.channels[0]
    out = bytearray(3000)
    _wait(engine, [ch.irecv(out, tag=6)], timeout, "receive of a message sent before the sender closed")
    _assert_received(out, _pattern(3000, 4), "message sent before close")
    try:
        _wait(engine, [ch.irecv(bytearray(1), tag=6)], timeout, "receive from a closed peer")
    except PeerLostError:
        return
    raise AssertionError("a receive from a peer that had closed completed")


def peer_close_rank(
    me: int, transport: Transport, engine: ProgressEngine, signal: Signal, timeout: float, direction: str = "recv"
) -> None:
    """A peer that closes makes a pending receive, and a send too large to be buffered,
    fail with PeerLostError on this side, promptly instead of hanging."""
    if me == 0:
        signal.wait(timeout)
        time.sleep(0.1)  # let the other side go to sleep in its wait
        transport.close()
        return
    big = 32 << 20  # more than any socket buffer or shared-memory ring holds
    ch = transport.channels[0]
    request = ch.irecv(bytearray(10), tag=1) if direction == "recv" else ch.isend(bytes(big), tag=1)
    signal.set()
    start = time.monotonic()
    try:
        _wait(engine, [request], timeout, f"pending {direction} while the peer closes")
    except PeerLostError as exc:
        if exc.peer not in (None, 0):
            raise AssertionError(f"PeerLostError names rank {exc.peer}, not 0") from exc
        return
    raise AssertionError(
        f"a {direction} to a peer that closed completed after {time.monotonic() - start:.2f} s "
        "instead of raising PeerLostError"
    )


def wait_timeout_rank(me: int, transport: Transport, engine: ProgressEngine, signal: Signal, timeout: float) -> None:
    """``ProgressEngine.wait`` with a near deadline and no sender raises ``on_timeout(peers)``
    soon after the deadline, naming the peer that did not answer (rank 0 sends nothing)."""
    if me == 0:
        return
    request = transport.channels[0].irecv(bytearray(8), tag=1)
    seen: list[list[int]] = []

    def on_timeout(peers: list[int]) -> BaseException:
        seen.append(peers)
        return _ExpectedTimeout(peers)

    delay = 0.2
    start = time.monotonic()
    try:
        engine.wait([request], start + delay, on_timeout)
    except _ExpectedTimeout:
        pass
    else:
        raise AssertionError("wait() returned for a receive that nobody sent")
    elapsed = time.monotonic() - start
    if elapsed < delay:
        raise AssertionError(f"wait() timed out after {elapsed:.3f} s, before its {delay} s deadline")
    if elapsed > delay + TIMEOUT_SLACK:
        raise AssertionError(f"wait() timed out {elapsed - delay:.2f} s late (deadline {delay} s)")
    if seen != [[0]]:
        raise AssertionError(f"on_timeout was called with {seen}, expected [[0]]")


class RankCheck(NamedTuple):
    """One check: its world size, its per-rank body, and the cases (keyword arguments of
    the body) each run on a fresh world."""

    ranks: int
    body: Body
    cases: Sequence[dict[str, Any]] = ({},)


RANK_CHECKS: dict[str, RankCheck] = {
    "zero_bytes": RankCheck(2, zero_bytes_rank),
    "large_both_ways": RankCheck(2, large_both_ways_rank),
    "fifo_per_tag": RankCheck(3, fifo_per_tag_rank),
    "tags_reverse_order": RankCheck(2, tags_reverse_order_rank),
    "recv_before_and_after_arrival": RankCheck(2, recv_before_and_after_arrival_rank),
    "size_mismatch": RankCheck(2, size_mismatch_rank, SIZE_MISMATCH_CASES),
    "send_then_close": RankCheck(2, send_then_close_rank),
    "peer_close": RankCheck(2, peer_close_rank, [{"direction": "recv"}, {"direction": "send"}]),
    "wait_timeout": RankCheck(2, wait_timeout_rank),
}
"""Every check by name, for drivers whose ranks are not threads of one process."""


def _run_check(name: str, make_world: MakeWorld, timeout: float, **params: Any) -> None:
    """Run check ``name`` on fresh threaded worlds, one per case (``params`` added to each)."""
    check = RANK_CHECKS[name]
    for case in check.cases:
        with _world(make_world, check.ranks) as world:
            signal = threading.Event()

            def body(me: int) -> Callable[[Transport, ProgressEngine], None]:
                return lambda transport, engine: check.body(me, transport, engine, signal, timeout, **case, **params)

            _run_ranks(world, {r: body(r) for r in range(check.ranks)}, timeout)


def check_zero_bytes(make_world: MakeWorld, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Zero-byte messages complete both ways, and frames around them stay intact."""
    _run_check("zero_bytes", make_world, timeout)


def check_large_both_ways(make_world: MakeWorld, *, timeout: float = DEFAULT_TIMEOUT,
                          large_bytes: int = LARGE_BYTES) -> None:
    """Two large messages (odd sizes) cross at once: full duplex with flow control."""
    _run_check("large_both_ways", make_world, max(timeout, large_bytes / (8 << 20)), large_bytes=large_bytes)


def check_fifo_per_tag(make_world: MakeWorld, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Several messages with one tag arrive in sending order, separately for each peer."""
    _run_check("fifo_per_tag", make_world, timeout)


def check_tags_reverse_order(make_world: MakeWorld, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Messages on different tags are received in the reverse of their sending order."""
    _run_check("tags_reverse_order", make_world, timeout)


def check_recv_before_and_after_arrival(make_world: MakeWorld, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """A receive posted before its message and one posted after it arrived both work."""
    _run_check("recv_before_and_after_arrival", make_world, timeout)


def check_size_mismatch(make_world: MakeWorld, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """A message longer or shorter than its receive raises MessageMismatchError, whether
    the receive was posted before the message arrived or after."""
    _run_check("size_mismatch", make_world, timeout)


def check_send_then_close(make_world: MakeWorld, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """A message whose send completed is delivered even if the sender closes right after;
    the next receive fails."""
    _run_check("send_then_close", make_world, timeout)


def check_peer_close(make_world: MakeWorld, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """A peer that closes makes a pending receive, and a send too large to be buffered,
    fail with PeerLostError on this side, promptly instead of hanging."""
    _run_check("peer_close", make_world, timeout)


def check_wait_timeout(make_world: MakeWorld, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """``ProgressEngine.wait`` with a near deadline and no sender raises ``on_timeout(peers)``
    soon after the deadline, naming the peer that did not answer."""
    _run_check("wait_timeout", make_world, timeout)


CONFORMANCE_CHECKS: dict[str, Callable[..., None]] = {
    "zero_bytes": check_zero_bytes,
    "large_both_ways": check_large_both_ways,
    "fifo_per_tag": check_fifo_per_tag,
    "tags_reverse_order": check_tags_reverse_order,
    "recv_before_and_after_arrival": check_recv_before_and_after_arrival,
    "size_mismatch": check_size_mismatch,
    "send_then_close": check_send_then_close,
    "peer_close": check_peer_close,
    "wait_timeout": check_wait_timeout,
}
"""Every check by name; each is called as ``check(make_world, timeout=...)`` (and
``large_both_ways`` also takes ``large_bytes=``)."""


def check_transport(make_world: MakeWorld, *, large_bytes: int = LARGE_BYTES,
                    timeout: float = DEFAULT_TIMEOUT) -> None:
    """Run every conformance check against the transport ``make_world`` builds.

    Args:
        make_world: ``make_world(n)`` returns n connected transports, rank order, built
            concurrently (see :func:`build_world`).
        large_bytes: size of the large message sent both ways at once.
        timeout: seconds after which any single wait counts as a hang.

    Raises:
        AssertionError: the first check that failed, prefixed with its name.
    """
    for name, check in CONFORMANCE_CHECKS.items():
        kwargs: dict[str, Any] = {"timeout": timeout}
        if name == "large_both_ways":
            kwargs["large_bytes"] = large_bytes
        try:
            check(make_world, **kwargs)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc


__all__ = [
    "CONFORMANCE_CHECKS",
    "LARGE_BYTES",
    "MakeWorld",
    "RANK_CHECKS",
    "RankCheck",
    "Signal",
    "build_world",
    "check_transport",
    "check_fifo_per_tag",
    "check_large_both_ways",
    "check_peer_close",
    "check_recv_before_and_after_arrival",
    "check_send_then_close",
    "check_size_mismatch",
    "check_tags_reverse_order",
    "check_wait_timeout",
    "check_zero_bytes",
    "make_inproc_world",
]
