"""Point-to-point on the core: posted at call time, so asynchronous sends and receives
never wait on each other (torch's "irecv then isend on both ranks", batch_isend_irecv);
receives from any source return the sender; per-tag order holds; failures and timeouts
name the operation and the peer. Over inproc (threads), shm and tcp (processes)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

import collectives
from collectives import CollectiveTimeoutError, CommunicatorBrokenError
from collectives.errors import MessageMismatchError
from collectives.testing import RankError, run_world

TRANSPORTS = ["inproc", "shm", "tcp"]


def _ring(comm: Any) -> list[Any]:
    """irecv then isend on every rank, large enough not to fit any transport's buffers."""
    n = 1 << 20
    right, left = (comm.rank + 1) % comm.size, (comm.rank - 1) % comm.size
    got = np.zeros(n, np.float32)
    r = comm.recv(got, left, tag=3, async_op=True)
    s = comm.send(np.full(n, comm.rank, np.float32), right, tag=3, async_op=True)
    assert r.wait() is got and s.wait() is None
    assert r.source == left
    return [float(got[0]), float(got[-1])]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_irecv_before_isend_on_every_rank(transport: str) -> None:
    results = run_world(_ring, 3, transport, timeout=60)
    assert results == [[2.0, 2.0], [0.0, 0.0], [1.0, 1.0]]


def _any_source(comm: Any) -> Any:
    if comm.rank == 0:
        seen = {}
        works = []
        for _ in range(comm.size - 1):
            x = np.zeros(2, np.int64)
            works.append((comm.recv(x, tag=9, async_op=True), x))
        for w, x in works:
            w.wait()
            seen[w.source] = x.tolist()
        return seen
    comm.send(np.array([comm.rank, 10 * comm.rank], np.int64), 0, tag=9)
    return None


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_receive_from_any_source_returns_the_sender(transport: str) -> None:
    seen = run_world(_any_source, 3, transport, timeout=60)[0]
    assert seen == {1: [1, 10], 2: [2, 20]}


def _order(comm: Any) -> Any:
    """Per-tag order between a pair, with an any-source receive between specific ones."""
    if comm.rank == 1:
        for i in range(4):
            comm.send(np.array([i], np.int32), 0, tag=1, async_op=True).wait()
        return None
    outs = [np.zeros(1, np.int32) for _ in range(4)]
    works = [comm.recv(outs[0], 1, tag=1, async_op=True), comm.recv(outs[1], tag=1, async_op=True),
             comm.recv(outs[2], 1, tag=1, async_op=True)]
    comm.recv(outs[3], 1, tag=1)  # synchronous, behind the three
    for w in works:
        w.wait()
    return [int(o[0]) for o in outs] + [works[1].source]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_messages_of_one_tag_match_in_posting_order(transport: str) -> None:
    assert run_world(_order, 2, transport, timeout=60)[0] == [0, 1, 2, 3, 1]


def test_point_to_point_while_collectives_run() -> None:
    def fn(comm: Any) -> Any:
        peer = 1 - comm.rank
        got = np.zeros(4)
        r = comm.recv(got, peer, async_op=True)
        x = np.ones(1000)
        comm.all_reduce(x)
        s = comm.send(np.full(4, comm.rank + 1.0), peer, async_op=True)
        comm.barrier()
        s.wait()
        r.wait()
        return [float(x[0]), got.tolist()]

    assert run_world(fn, 2, "inproc") == [[2.0, [2.0] * 4], [2.0, [1.0] * 4]]


def test_send_to_itself_needs_async_op() -> None:
    comm = collectives.init(0, 1, collectives.store.HashStore(), transport="inproc", timeout=5.0)
    try:
        got = np.zeros(3, np.float32)
        r = comm.recv(got, 0, tag=2, async_op=True)
        s = comm.send(np.arange(3, dtype=np.float32), 0, tag=2, async_op=True)
        assert s.wait() is None and r.wait() is got and r.source == 0
        assert got.tolist() == [0.0, 1.0, 2.0]
        s = comm.send(np.arange(2, dtype=np.float32), 0, async_op=True)
        r = comm.recv(got, async_op=True)  # any source: this rank's own message
        with pytest.raises(MessageMismatchError, match="recv from any rank #4.*2 .*12 bytes|8 bytes but"):
            r.wait()
    finally:
        comm.close()


def test_an_unmatched_receive_times_out_naming_the_peer(arrivals: Any) -> None:
    def fn(comm: Any) -> Any:
        if comm.rank == 1:
            arrivals.wait(1)  # alive, sending nothing, until rank 0 timed out
            return None
        comm.timeout = 0.5
        started = time.monotonic()
        work = comm.recv(np.zeros(2), 1, tag=4, async_op=True)
        try:
            with pytest.raises(CollectiveTimeoutError, match=r"recv from rank 1 #1 timed out .* rank\(s\) 1") as info:
                work.wait()
        finally:
            arrivals.arrive()
        assert info.value.ranks == [1] and 0.4 < time.monotonic() - started < 5
        with pytest.raises(CommunicatorBrokenError):
            comm.send(np.zeros(2), 1)
        return "ok"

    assert run_world(fn, 2, "inproc", timeout=30)[0] == "ok"


def test_a_size_mismatch_fails_the_receive() -> None:
    def fn(comm: Any) -> Any:
        if comm.rank == 1:
            comm.send(np.zeros(3, np.float32), 0, async_op=True).wait()
            return None
        with pytest.raises(MessageMismatchError, match="recv from rank 1 #1"):
            comm.recv(np.zeros(2, np.float32), 1)
        return "ok"

    try:
        assert run_world(fn, 2, "inproc", timeout=30)[0] == "ok"
    except RankError as exc:  # rank 1's send may see the channel fail as rank 0 closes
        assert exc.rank == 1, exc


LATE = 0.5


def _waits_for_a_late_sender(comm: Any) -> Any:
    """Rank 0 waits half a second for rank 1's message in three ways; returns its CPU share in each."""
    shares = {}
    for how in ("recv from any source", "irecv(...).wait()", "irecv from any source .wait()"):
        x = np.zeros(16, np.float32)
        comm.barrier()
        if comm.rank == 1:
            time.sleep(LATE)
            comm.send(np.ones(16, np.float32), 0)
            continue
        wall, cpu = time.monotonic(), time.process_time()
        if how == "recv from any source":
            comm.recv(x)
        else:
            comm.recv(x, None if "any" in how else 1, async_op=True).wait()
        waited = time.monotonic() - wall
        assert waited > LATE - 0.5 and x[0] == 1.0
        shares[how] = (time.process_time() - cpu) / waited
    return shares


@pytest.mark.multiprocess
@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_waiting_for_a_late_sender_sleeps(transport: str) -> None:
    """A receive waiting for a late peer sleeps on the transport (a receive from any source
    used to poll every 250 µs: 12-14 % of a core; the engine's thread every 1 ms: 8-10 %)."""
    shares = run_world(_waits_for_a_late_sender, 2, transport, timeout=60)[0]
    print(f"\n{transport}: waiting {LATE:g} s for a late sender used " + ", ".join(
        f"{100 * s:.1f} % of a core in {how}" for how, s in shares.items()))
    assert max(shares.values()) < 0.10, {how: f"{100 * s:.1f} % of a core" for how, s in shares.items()}


def _shift(comm: Any, n: int) -> list[float]:
    """A ring shift by ``sendrecv``, of a small message and of one larger than a ring."""
    out = np.zeros(n, np.float32)
    got = comm.sendrecv(np.full(n, comm.rank, np.float32), (comm.rank + 1) % comm.size, out,
                        (comm.rank - 1) % comm.size, tag=4)
    assert got is out
    return [float(out[0]), float(out[-1])]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("n", [2, 3 << 20], ids=["8 B", "12 MiB"])
def test_sendrecv_shifts_a_ring_without_deadlock(transport: str, n: int) -> None:
    """Every rank sends first and receives second, as MPI_Sendrecv lets it: messages larger
    than a ring (4 MiB over shm) still pass, both directions at once."""
    assert run_world(lambda c: _shift(c, n), 3, transport, timeout=60) == [[2.0, 2.0], [0.0, 0.0], [1.0, 1.0]]


@pytest.mark.parametrize("pure_python", [False, True], ids=["c", "python"])
def test_sendrecv_swaps_with_a_peer_and_with_itself(pure_python: bool) -> None:
    def fn(comm: Any) -> Any:
        peer = 1 - comm.rank
        mine, theirs = np.arange(4, dtype=np.int64) + 10 * comm.rank, np.zeros(4, np.int64)
        comm.sendrecv(mine, peer, theirs, peer)
        itself = comm.sendrecv(mine, comm.rank, np.zeros(4, np.int64), comm.rank)
        return theirs.tolist(), itself.tolist()

    results = run_world(fn, 2, "shm", timeout=60, pure_python=pure_python)
    assert results == [([10, 11, 12, 13], [0, 1, 2, 3]), ([0, 1, 2, 3], [10, 11, 12, 13])]


def test_sendrecv_names_a_bad_output() -> None:
    def fn(comm: Any) -> Any:
        frozen = np.zeros(2)
        frozen.flags.writeable = False
        with pytest.raises(collectives.InvalidArgumentError, match="read-only"):
            comm.sendrecv(np.ones(2), 1 - comm.rank, frozen, 1 - comm.rank)
        out = np.zeros(2)
        comm.recv(out, 1 - comm.rank)  # the message sent is not lost
        return out.tolist()

    assert run_world(fn, 2, "shm", timeout=30) == [[1.0, 1.0], [1.0, 1.0]]
