"""The express lane (engines/express.py): a blocking send or receive of a small message over
shm moves in one C call, and only where the engine has nothing before it; everything else
(async calls, large messages, a full ring, another tag's frame first, a size that differs,
receives posted or held ahead) goes through the engine with the same results. Each case runs
with the lane and without it (``pure_python``)."""

from __future__ import annotations

import ctypes
import itertools
import os
import threading
import time
from collections import deque
from typing import Any

import numpy as np
import pytest

from collectives import CommunicatorClosedError
from collectives.buffers import BUILT_IN_DTYPES
from collectives.engines import express
from collectives.errors import MessageMismatchError
from collectives.tags import MAX_USER_TAG, P2P_TAG_BIT
from collectives.testing import run_world
from collectives.transports.base import FLAG_END, HEADER

LANES = [False, True]  # pure_python
IDS = ["lane", "engine"]


def _world(fn: Any, pure_python: bool, size: int = 2) -> list[Any]:
    return run_world(fn, size, "shm", timeout=60, pure_python=pure_python)


def _taken(comm: Any) -> tuple[int, int]:
    return comm._express.sends, comm._express.recvs


def _after_init(comm: Any, key: str) -> None:
    """Rank 1 waits for rank 0 to be past ``init()``: rank 0 may still be in the connect
    barrier, whose engine reads whatever frames are in the ring into its queue (where a
    receive finds them, correctly, without the lane)."""
    if comm.rank == 0:
        comm.store.set(f"test-express/{key}-ready", b"1")
    else:
        comm.store.get(f"test-express/{key}-ready", 30.0)


def _sent(comm: Any, key: str) -> None:
    """Tell the other rank through the store (a barrier would drive the channels, which
    read waiting frames into the engine's unexpected queue)."""
    comm.store.set(f"test-express/{key}", b"1")


def _wait_sent(comm: Any, key: str) -> None:
    comm.store.get(f"test-express/{key}", 30.0)


def test_the_lane_is_built() -> None:
    assert express.Express is not None, "collectives.engines._express_c was not built"


def _small_messages(comm: Any) -> Any:
    """Rank 1 sends every kind of small message before rank 0 asks for any; then they reply."""
    messages = [np.arange(n, dtype=t) for n, t in ((0, np.float32), (1, np.int8), (2, np.float32), (255, np.int16),
                                                  (1024, np.float64), (express.EXPRESS_BYTES // 8, np.int64))]
    _after_init(comm, "small")
    if comm.rank == 1:
        for tag, m in enumerate(messages):
            comm.send(m, 0, tag=tag)
        _sent(comm, "small")
        back = np.zeros(3, np.float64)
        comm.recv(back, 0, tag=7)
        return _taken(comm), back.tolist()
    _wait_sent(comm, "small")
    got = []
    for tag, m in enumerate(messages):
        out = np.full(m.shape, -1, m.dtype)
        assert comm.recv(out, 1, tag=tag) is out
        got.append(bool(np.array_equal(out, m)))
    comm.send(np.array([1.5, 2.5, 3.5]), 1, tag=7)
    return _taken(comm), got


@pytest.mark.multiprocess
@pytest.mark.parametrize("pure_python", LANES, ids=IDS)
def test_small_blocking_messages_take_the_lane(pure_python: bool) -> None:
    (taken0, got), (taken1, back) = _world(_small_messages, pure_python)
    assert got == [True] * 6 and back == [1.5, 2.5, 3.5]
    if pure_python:
        assert taken0 == taken1 == (0, 0)
    else:  # every frame was in the ring before its receive was called
        assert taken1[0] == 6 and taken0[1] == 6 and taken0[0] == 1


def _large_and_async(comm: Any) -> Any:
    big = np.arange(express.EXPRESS_BYTES // 4 + 1, dtype=np.float32)
    if comm.rank == 1:
        comm.send(big, 0)
        sent = comm.send(np.ones(4), 0, async_op=True)
        assert sent.is_completed() and sent.wait() is None and "send to rank 0" in repr(sent)
        return _taken(comm)
    out = np.zeros_like(big)
    comm.recv(out, 1)
    small = np.zeros(4)
    received = comm.recv(small, 1, async_op=True)
    assert received.wait() is small and received.source == 1
    assert np.array_equal(out, big) and small.tolist() == [1.0] * 4
    return _taken(comm)


@pytest.mark.multiprocess
def test_large_messages_and_async_receives_go_through_the_engine() -> None:
    """A small asynchronous send takes the lane: its Work is finished when returned (the bytes
    are in the peer's ring); an asynchronous receive is posted on the engine."""
    assert _world(_large_and_async, False) == [(0, 0), (1, 0)]


def _tags_out_of_order(comm: Any) -> Any:
    _after_init(comm, "tags")
    if comm.rank == 1:
        for tag in (1, 2, 1):
            comm.send(np.array([tag, tag * 10], np.int32), 0, tag=tag)
        _sent(comm, "tags")
        return None
    _wait_sent(comm, "tags")  # all three frames wait in the ring: tag 1's is next
    outs = [np.zeros(2, np.int32) for _ in range(3)]
    comm.recv(outs[0], 1, tag=2)
    comm.recv(outs[1], 1, tag=1)
    comm.recv(outs[2], 1, tag=1)
    return [o.tolist() for o in outs]


@pytest.mark.multiprocess
@pytest.mark.parametrize("pure_python", LANES, ids=IDS)
def test_a_receive_takes_its_own_tag_past_another_tags_frame(pure_python: bool) -> None:
    assert _world(_tags_out_of_order, pure_python)[0] == [[2, 20], [1, 10], [1, 10]]


def _behind_posted(comm: Any) -> Any:
    """Blocking receives behind an asynchronous one of the same tag, from the sender and from
    any source, take the next messages in posting order."""
    _after_init(comm, "posted")
    if comm.rank == 1:
        for i in range(5):
            comm.send(np.array([i], np.int64), 0, tag=3)
        _sent(comm, "posted")
        return None
    _wait_sent(comm, "posted")
    outs = [np.full(1, -1, np.int64) for _ in range(5)]
    first = comm.recv(outs[0], 1, tag=3, async_op=True)
    comm.recv(outs[1], 1, tag=3)
    anyone = comm.recv(outs[2], None, tag=3, async_op=True)
    comm.recv(outs[3], 1, tag=3)
    comm.recv(outs[4], 1, tag=3)
    first.wait()
    anyone.wait()
    return [int(o[0]) for o in outs]


@pytest.mark.multiprocess
@pytest.mark.parametrize("pure_python", LANES, ids=IDS)
def test_blocking_receives_behind_posted_ones_keep_posting_order(pure_python: bool) -> None:
    assert _world(_behind_posted, pure_python)[0] == [0, 1, 2, 3, 4]


def _full_ring(comm: Any) -> Any:
    """Rank 1 sends three rings' worth of messages before rank 0 reads any."""
    n, each = 3 * (4 << 20) // (32 << 10), (32 << 10) // 8
    if comm.rank == 1:
        for i in range(n):
            comm.send(np.full(each, i, np.int64), 0)
        return _taken(comm)[0], n
    time.sleep(0.3)
    out = np.zeros(each, np.int64)
    seen = []
    for _ in range(n):
        comm.recv(out, 1)
        seen.append(int(out[0]) if (out == out[0]).all() else -1)
    return seen == list(range(n))


@pytest.mark.multiprocess
@pytest.mark.parametrize("pure_python", LANES, ids=IDS)
def test_a_full_ring_sends_through_the_engine_in_order(pure_python: bool) -> None:
    in_order, (lane_sends, n) = _world(_full_ring, pure_python)
    assert in_order is True
    assert lane_sends < n  # the ring filled: the rest waited in the engine


def _mismatch(comm: Any) -> Any:
    _after_init(comm, "mismatch")
    if comm.rank == 1:
        comm.send(np.zeros(2, np.float32), 0)
        comm.send(np.zeros(3, np.float32), 0)
        _sent(comm, "mismatch")
        return None
    _wait_sent(comm, "mismatch")
    comm.recv(np.zeros(2, np.float32), 1)
    with pytest.raises(MessageMismatchError, match="recv from rank 1 #2"):
        comm.recv(np.zeros(2, np.float32), 1)
    return _taken(comm)


@pytest.mark.multiprocess
@pytest.mark.parametrize("pure_python", LANES, ids=IDS)
def test_a_size_mismatch_fails_the_receive_through_the_engine(pure_python: bool) -> None:
    """The lane counts the calls it takes as the engine does, so the error names call #2."""
    assert _world(_mismatch, pure_python)[0] == ((0, 0) if pure_python else (0, 1))


def _closed(comm: Any) -> Any:
    comm.barrier()
    comm.close()
    with pytest.raises(CommunicatorClosedError):
        comm.send(np.zeros(1), 1 - comm.rank)
    with pytest.raises(CommunicatorClosedError):
        comm.recv(np.zeros(1), 1 - comm.rank)
    return "ok"


@pytest.mark.multiprocess
def test_a_closed_communicator_refuses_the_lane_too() -> None:
    assert _world(_closed, False) == ["ok", "ok"]


def _others(comm: Any) -> Any:
    """What the lane leaves to the engine: a view that is not contiguous, an unsupported dtype,
    a read-only receive (each refused with the engine's error), numpy integer peers and tags
    (taken by the engine)."""
    from collectives.errors import InvalidArgumentError, InvalidTypeError

    if comm.rank == 1:
        with pytest.raises(InvalidArgumentError, match="C-contiguous"):
            comm.send(np.arange(8, dtype=np.float32)[::2], 0)
        with pytest.raises(InvalidTypeError, match="bool"):
            comm.send(np.ones(2, np.bool_), 0)
        comm.send(np.full(2, 7.0), np.int64(0), tag=np.int32(5))
        return _taken(comm)
    frozen = np.zeros(2)
    frozen.flags.writeable = False
    with pytest.raises(InvalidArgumentError, match="read-only"):
        comm.recv(frozen, 1, tag=5)
    out = np.zeros(2)
    comm.recv(out, np.int64(1), tag=np.int32(5))
    return out.tolist(), _taken(comm)


@pytest.mark.multiprocess
def test_what_the_lane_cannot_take_gets_the_engines_answer() -> None:
    (got, taken0), taken1 = _world(_others, False)
    assert got == [7.0, 7.0]
    assert taken0 == taken1 == (0, 0)


# -- the C lane alone, on rings in this process's memory ------------------------------------

class _Channel:
    """What the lane reads of a ShmChannel (transports/base.py): an idle channel."""

    def __init__(self) -> None:
        self.error: Any = None
        self._eof: Any = None
        self._intake: deque[Any] = deque()
        self._sendq: deque[Any] = deque()
        self._rx_have = 0
        self._rx_target: Any = None
        self._rx_deferred: Any = None
        self._posted: dict[int, deque[Any]] = {}
        self._unexpected: dict[int, deque[Any]] = {}


class _Loop:
    """An Express whose lane to rank 1 writes into the ring it reads (a loopback), with the
    ring's words in numpy arrays: ``tail``, ``head``, ``want``, ``bell`` and ``cpu`` are views of
    them. ``spin_ns``: how long a receive spins."""

    def __init__(self, capacity: int = 4096, max_bytes: int = 1024, single_bytes: int = 1 << 30,
                 spin_ns: int = 0) -> None:
        self.words = np.zeros(16, np.uint64)
        self.data = np.zeros(capacity, np.uint8)
        self.channel, self.held, self.lock = _Channel(), {}, threading.RLock()
        at = self.words.ctypes.data
        tail, want, head, bell, sleeping, peer_closed, my_closed, cpu = (at + 8 * i for i in range(8))
        ring = (tail, want, head, cpu, self.data.ctypes.data)
        lanes = {1: (self.channel, ring + ring + (capacity, bell, sleeping, peer_closed, my_closed))}
        self.express = express.Express(2, lanes, (self.words, self.data), self.lock, self.held, itertools.count(1),
                                       np.ndarray, BUILT_IN_DTYPES, max_bytes, P2P_TAG_BIT, MAX_USER_TAG, spin_ns, 0,
                                       single_bytes, 0)

    @property
    def tail(self) -> int:
        return int(self.words[0])

    @property
    def head(self) -> int:
        return int(self.words[2])

    @property
    def cpu(self) -> int:
        """The CPU the ring's writer last wrote from + 1 (0: none yet)."""
        return int(self.words[7])

    def send(self, x: Any, tag: Any = 0, dst: Any = 1) -> bool:
        return bool(self.express.send(x, dst, tag))

    def recv(self, x: Any, tag: Any = 0, src: Any = 1) -> bool:
        return bool(self.express.recv(x, src, tag))




def test_a_frame_is_a_header_and_the_payload_as_the_engine_writes_them() -> None:
    loop = _Loop()
    assert loop.send(np.array([1.5, -2.0], np.float32), tag=9)
    header = HEADER.pack(P2P_TAG_BIT | 9, 8, FLAG_END)
    assert loop.data[:24].tobytes() == header + np.array([1.5, -2.0], np.float32).tobytes()
    assert (loop.tail, loop.head) == (24, 0)
    out = np.zeros(2, np.float32)
    assert loop.recv(out, tag=9) and out.tolist() == [1.5, -2.0]
    assert (loop.tail, loop.head) == (24, 24)
    assert (loop.express.sends, loop.express.recvs) == (1, 1)


def test_frames_wrap_around_the_ring_end() -> None:
    loop = _Loop(capacity=100, max_bytes=64)
    for i in range(20):
        x = np.arange(i % 9, dtype=np.int64) + i
        assert loop.send(x, tag=i)
        out = np.zeros_like(x)
        assert loop.recv(out, tag=i) and np.array_equal(out, x), i
    assert loop.tail == loop.head > 100


def test_a_frame_that_does_not_fit_the_room_or_the_limit_is_left_to_the_engine() -> None:
    loop = _Loop(capacity=64, max_bytes=1024)
    assert not loop.send(np.zeros(7, np.int64))  # 16 + 56 bytes > 64
    assert loop.send(np.zeros(6, np.int64))      # 16 + 48 = 64: the ring is full
    assert loop.words[1] == 1                    # and the writer asks to be told of room
    assert not loop.send(np.zeros(0, np.int64))
    assert not _Loop(max_bytes=8).send(np.zeros(3, np.int32))
    assert loop.tail == 64


def test_a_receive_leaves_a_frame_of_another_tag_or_size() -> None:
    loop = _Loop()
    assert loop.send(np.arange(4, dtype=np.int32), tag=1)
    assert not loop.recv(np.zeros(4, np.int32), tag=2)
    assert not loop.recv(np.zeros(3, np.int32), tag=1)
    assert not loop.recv(np.zeros(5, np.int32), tag=1)
    assert loop.head == 0
    assert loop.recv(np.zeros(16, np.uint8), tag=1)  # the bytes are what count


def test_a_receive_with_nothing_there_returns_at_once_without_spin() -> None:
    loop = _Loop()
    started = time.monotonic()
    assert not loop.recv(np.zeros(1))
    assert time.monotonic() - started < 1.0 and loop.head == 0


def test_reading_rings_the_writer_that_waits_for_room() -> None:
    loop = _Loop()
    assert loop.send(np.zeros(2))
    loop.words[1] = 1  # want_room, as a writer that found no room leaves it
    bell = int(loop.words[3])
    assert loop.recv(np.zeros(2))
    assert int(loop.words[3]) == bell + 1


ENGINE_STATES: dict[str, Any] = {
    "error": lambda c, t: setattr(c, "error", RuntimeError("failed")),
    "intake": lambda c, t: c._intake.append(object()),
}
SEND_ONLY: dict[str, Any] = {"sendq": lambda c, t: c._sendq.append(object())}
RECV_ONLY: dict[str, Any] = {
    "eof": lambda c, t: setattr(c, "_eof", RuntimeError("eof")),
    "half a header": lambda c, t: setattr(c, "_rx_have", 3),
    "a frame under way": lambda c, t: setattr(c, "_rx_target", memoryview(b"")),
    "a header held back": lambda c, t: setattr(c, "_rx_deferred", (t, 8, 1)),
    "a receive posted": lambda c, t: c._posted.setdefault(t, deque()).append(object()),
    "an unexpected frame": lambda c, t: c._unexpected.setdefault(t, deque()).append(object()),
}


@pytest.mark.parametrize("state", sorted({**ENGINE_STATES, **SEND_ONLY}))
def test_a_send_waits_for_the_engine_where_it_has_anything(state: str) -> None:
    loop = _Loop()
    {**ENGINE_STATES, **SEND_ONLY}[state](loop.channel, P2P_TAG_BIT)
    assert not loop.send(np.zeros(2)) and loop.tail == 0


@pytest.mark.parametrize("state", sorted({**ENGINE_STATES, **RECV_ONLY, "a receive held": None}))
def test_a_receive_waits_for_the_engine_where_it_has_anything_of_the_tag(state: str) -> None:
    loop = _Loop()
    assert loop.send(np.zeros(2))
    if state == "a receive held":
        loop.held[P2P_TAG_BIT] = deque([object()])
    else:
        {**ENGINE_STATES, **RECV_ONLY}[state](loop.channel, P2P_TAG_BIT)
    assert not loop.recv(np.zeros(2)) and loop.head == 0


def test_a_receive_takes_its_frame_past_other_tags_posted_unexpected_or_held() -> None:
    loop = _Loop()
    assert loop.send(np.ones(2))
    other = P2P_TAG_BIT | 5
    loop.channel._posted[other] = deque([object()])
    loop.channel._unexpected[other] = deque([object()])
    loop.held[other] = deque([object()])
    loop.channel._posted[P2P_TAG_BIT] = deque()  # emptied, not yet removed
    out = np.zeros(2)
    assert loop.recv(out) and out.tolist() == [1.0, 1.0]


def _held_back(loop: _Loop, header: tuple[int, int, int]) -> None:
    """As the engine does where a frame comes before its receive is posted: it reads the
    frame's header out of the ring and holds it back (transports/base.py, ``_rx_deferred``)."""
    loop.words[2] += HEADER.size
    loop.channel._rx_deferred = header


def test_a_receive_takes_the_payload_whose_header_the_engine_held_back() -> None:
    loop = _Loop()
    assert loop.send(np.array([3.0, 4.0]), tag=2)
    _held_back(loop, (P2P_TAG_BIT | 2, 16, FLAG_END))
    out = np.zeros(2)
    assert loop.recv(out, tag=2) and out.tolist() == [3.0, 4.0]
    assert loop.head == loop.tail == 32 and loop.channel._rx_deferred is None


def test_a_sendrecv_through_the_ring_takes_the_payload_whose_header_the_engine_held_back() -> None:
    loop = _Loop()
    assert loop.send(np.array([3.0, 4.0]), tag=2)
    _held_back(loop, (P2P_TAG_BIT | 2, 16, FLAG_END))
    out = np.zeros(2)
    assert loop.express.sendrecv(np.array([5.0, 6.0]), 1, out, 1, 2) is True
    assert out.tolist() == [3.0, 4.0] and loop.channel._rx_deferred is None
    assert loop.recv(out, tag=2) and out.tolist() == [5.0, 6.0]  # the frame it sent, next


@pytest.mark.parametrize("header", [(P2P_TAG_BIT | 3, 16, FLAG_END), (P2P_TAG_BIT | 2, 8, FLAG_END),
                                    (P2P_TAG_BIT | 2, 16, 0)], ids=["another tag", "another size", "not the last"])
def test_a_header_held_back_for_another_message_leaves_the_receive_to_the_engine(header: tuple[int, int, int]) -> None:
    loop = _Loop()
    assert loop.send(np.array([3.0, 4.0]), tag=2)
    _held_back(loop, header)
    assert not loop.recv(np.zeros(2), tag=2)
    assert loop.head == HEADER.size and loop.channel._rx_deferred == header


def test_a_receive_whose_held_back_payload_is_not_all_there_leaves_it_to_the_engine() -> None:
    loop = _Loop()
    assert loop.send(np.array([3.0, 4.0]), tag=2)
    _held_back(loop, (P2P_TAG_BIT | 2, 24, FLAG_END))
    assert not loop.recv(np.zeros(3), tag=2)
    assert loop.head == HEADER.size and loop.channel._rx_deferred is not None


def test_the_lane_waits_for_a_lock_another_thread_holds() -> None:
    loop = _Loop()
    assert loop.send(np.zeros(2))
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with loop.lock:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)
    try:
        assert not loop.send(np.zeros(2)) and not loop.recv(np.zeros(2))
    finally:
        release.set()
        thread.join()
    assert loop.tail == 32 and loop.head == 0
    assert loop.recv(np.zeros(2))


@pytest.mark.parametrize("closed", [5, 6])
def test_a_closed_side_stops_the_lane(closed: int) -> None:
    loop = _Loop()
    assert loop.send(np.zeros(1))
    loop.words[closed] = 1  # the peer's closed word, then mine
    assert not loop.send(np.zeros(1)) and loop.tail == 24
    if closed == 6:
        assert not loop.recv(np.zeros(1)) and loop.head == 0


def test_arguments_the_engine_must_check_are_left_to_it() -> None:
    loop = _Loop()
    fine = np.zeros(2)
    frozen = np.zeros(2)
    frozen.flags.writeable = False

    class Sub(np.ndarray):
        pass

    for x, dst, tag in [([0.0, 0.0], 1, 0), (np.zeros(4)[::2], 1, 0), (np.zeros(2, np.bool_), 1, 0),
                        (fine.view(Sub), 1, 0), (fine, np.int64(1), 0), (fine, True, 0), (fine, 0, 0), (fine, 2, 0),
                        (fine, -1, 0), (fine, 1, True), (fine, 1, -1), (fine, 1, MAX_USER_TAG + 1),
                        (fine, 1, np.int32(0)), (fine, 1, 1 << 70)]:
        assert not loop.send(x, tag, dst), (x, dst, tag)
        assert not loop.recv(x, tag, dst), (x, dst, tag)
    assert loop.send(fine) and not loop.recv(frozen)
    assert loop.tail == 32 and loop.head == 0
    assert loop.express.sends == 1


def test_a_closed_lane_sends_every_call_to_the_engine() -> None:
    loop = _Loop()
    assert loop.send(np.zeros(1))
    loop.express.close()
    assert not loop.send(np.zeros(1)) and not loop.recv(np.zeros(1))
    assert (loop.tail, loop.head) == (24, 0)


# -- ranks on one CPU ------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def test_a_send_says_which_cpu_it_wrote_from() -> None:
    loop = _Loop()
    before = _libc.sched_getcpu()
    assert loop.send(np.zeros(4))
    assert loop.cpu - 1 in {before, _libc.sched_getcpu()}


def _on_one_cpu(size: int) -> Any:
    """Both ranks pinned to one CPU (as the scheduler keeps them where a third task busies the
    other) for their sendrecvs."""
    def body(comm: Any) -> tuple[int, bool]:
        allowed = os.sched_getaffinity(0)
        peer = 1 - comm.rank
        x, out = np.full(size, comm.rank, np.uint8), np.zeros(size, np.uint8)
        for _ in range(3):  # the channels learn single copy (the swap's sizes)
            comm.sendrecv(x, peer, out, peer)
        os.sched_setaffinity(0, {min(allowed)})
        try:
            for _ in range(50):
                comm.sendrecv(x, peer, out, peer)
        finally:
            os.sched_setaffinity(0, allowed)
        return comm._express.besides, bool(np.all(out == peer))
    return body


@pytest.mark.multiprocess
def test_ranks_on_one_cpu_yield_to_each_other_from_the_start_of_a_swap() -> None:
    """Two ranks on one CPU that spin hold the CPU the other needs to write: the swap's wait
    yields from the start where the peer last wrote from its CPU."""
    results = run_world(_on_one_cpu(express.SWAP_BYTES), 2, "shm", timeout=60)
    assert all(ok for _, ok in results)
    assert sum(besides for besides, _ in results) > 0, results


def _ping_pong_waits(comm: Any) -> Any:
    """Small messages back and forth (each receive waits for its peer's answer): whether each
    arrived, and the lane's frame waits that yielded at every poll."""
    x, ok, before = np.zeros(4, np.int64), [], comm._express.crowded_frame_waits
    for i in range(20):
        if comm.rank == 0:
            comm.send(np.full(4, i, np.int64), 1, tag=3)
            comm.recv(x, 1, tag=4)
        else:
            comm.recv(x, 0, tag=3)
            comm.send(x + 1, 0, tag=4)
        ok.append(bool((x == i + 1 - comm.rank).all()))  # rank 0 gets i + 1 back, rank 1 gets i
    return all(ok), comm._express.crowded_frame_waits - before


@pytest.mark.multiprocess
@pytest.mark.parametrize("cores", [1, 64], ids=["ranks outnumber cores", "a core each"])
def test_where_ranks_outnumber_cores_a_receives_frame_wait_yields_at_every_poll(
        cores: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where ranks outnumber cores (no spin) a receive waiting for its frame yields at every
    poll; where each rank has a core it spins first, as before."""
    from collectives.transports import progress

    monkeypatch.setattr(progress, "usable_cpus", lambda: cores)  # the forked ranks inherit it
    results = run_world(_ping_pong_waits, 2, "shm", timeout=60)
    assert all(ok for ok, _ in results), results
    waits = sum(waits for _, waits in results)
    assert (waits > 0) if cores == 1 else (waits == 0), results
