"""The shm ring's restart (transports/shm_ring.py), through the channel (transports/shm.py): a
writer that finds the ring empty, its tail at least ``RESTART_BYTES`` into a lap and its bytes
fitting before it, writes them at the next lap's start, and the reader skips the rest of the
lap, so that a stream of messages keeps to the ring's first lines. Whatever the writer and
reader do around it, every message arrives whole: mixed sizes, a writer that laps a reader
that is behind, both directions at once.

Both channels of a pair live in this process, on two fresh inboxes, so each test decides
when each side writes and reads."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest

from collectives.transports.frames import HEADER_SIZE
from collectives.testing.worlds import ShmPair
from collectives.transports.shm import SHM_DIR, ShmChannel
from collectives.transports.shm_ring import RESTART_BYTES

pytestmark = pytest.mark.skipif(not os.path.isdir(SHM_DIR), reason="needs /dev/shm")

R = RESTART_BYTES
CAP = 4 * R  # the rings here (a quarter ring, R, is the most a write moves: _step)
BIG = R - HEADER_SIZE  # a message whose frame, R bytes, restarts each time it finds the ring empty


class Pair(ShmPair):
    """Rank 0's channel to rank 1 (``a``) and rank 1's to rank 0 (``b``), over rings of ``capacity``."""

    def __init__(self, capacity: int = CAP, max_frame_bytes: int = 64 << 20) -> None:
        super().__init__(capacity, max_frame_bytes)


@pytest.fixture
def pair() -> Iterator[Pair]:
    with Pair() as p:
        yield p


message = ShmPair.message


def finish(*channels: ShmChannel, requests: list, limit: int = 100_000) -> None:
    for _ in range(limit):
        if all(r.test() for r in requests):
            return
        for c in channels:
            c.progress()
    raise AssertionError(f"not done: {requests}")


def send_recv(src: ShmChannel, dst: ShmChannel, x: np.ndarray, tag: int = 7) -> np.ndarray:
    """``x`` from ``src`` to ``dst``, the receive posted after the send was written; nothing else arrives (the
    bytes a restart skipped, read as frames, would: zeros read as empty messages of tag 0)."""
    out = np.zeros_like(x)
    sent = src.isend(x, tag)
    got = dst.irecv(out, tag)
    finish(src, dst, requests=[sent, got])
    assert not any(dst._unexpected.values())
    return out


def test_a_stream_of_messages_restarts_at_the_rings_start_when_it_is_empty(pair: Pair) -> None:
    frame = HEADER_SIZE + BIG
    for i in range(12):
        x = message(BIG, i)
        assert np.array_equal(send_recv(pair.a, pair.b, x), x)
        # written at the start of a lap each time (the first at 0, then a restart each call)
        assert Pair.tail(pair.a) == (i * CAP if i else 0) + frame
    assert Pair.head(pair.a) == Pair.tail(pair.a)


def test_no_restart_before_restart_bytes_into_the_lap_nor_where_the_bytes_do_not_fit(pair: Pair) -> None:
    small = message(1000, 1)
    for _ in range(3):
        assert np.array_equal(send_recv(pair.a, pair.b, small), small)
    assert Pair.tail(pair.a) == 3 * (HEADER_SIZE + 1000)  # under RESTART_BYTES: on along the lap
    big = message(BIG, 2)
    assert np.array_equal(send_recv(pair.a, pair.b, big), big)
    assert Pair.tail(pair.a) == 3 * (HEADER_SIZE + 1000) + HEADER_SIZE + BIG  # under R into the lap: on
    assert np.array_equal(send_recv(pair.a, pair.b, small), small)
    assert Pair.tail(pair.a) == CAP + HEADER_SIZE + 1000  # past RESTART_BYTES, empty, fits: the next lap


def test_messages_of_mixed_sizes_arrive_whole_across_restarts_and_wraps(pair: Pair) -> None:
    rng = np.random.default_rng(5)
    restarts = 0
    for i in range(100):
        n = int(rng.choice([0, 1, 15, 17, 4096, R // 10, BIG - 16, BIG, BIG + 1, R + R // 4, CAP // 2]))
        x = message(n, i)
        tail = Pair.tail(pair.a)
        assert np.array_equal(send_recv(pair.a, pair.b, x), x)
        if Pair.tail(pair.a) != tail + HEADER_SIZE + n:  # restarted (maybe between pieces: _step is CAP / 4)
            restarts += 1
            assert Pair.tail(pair.a) // CAP > tail // CAP
    assert restarts > 15


def test_a_writer_that_laps_a_reader_that_is_behind_restarts_only_once_it_caught_up(pair: Pair) -> None:
    xs = [message(n, i) for i, n in enumerate([BIG, R + R // 8, BIG + 5, R // 2, BIG, R + R // 4, 3, BIG])]
    sends = [pair.a.isend(x, 3) for x in xs]  # more than the ring holds: the writer waits for room
    pair.a.progress()
    assert Pair.tail(pair.a) == CAP  # filled along the lap: no restart while unread bytes lie there
    outs = [np.zeros_like(x) for x in xs]
    recvs = [pair.b.irecv(out, 3) for out in outs]
    finish(pair.a, pair.b, requests=sends + recvs)
    assert Pair.tail(pair.a) > CAP  # it went round the ring
    assert all(np.array_equal(o, x) for o, x in zip(outs, xs))
    while Pair.tail(pair.a) % CAP < HEADER_SIZE + BIG:  # on along the lap (under RESTART_BYTES into it)
        tail = Pair.tail(pair.a)
        assert np.array_equal(send_recv(pair.a, pair.b, message(999, 1)), message(999, 1))
        assert Pair.tail(pair.a) == tail + HEADER_SIZE + 999
    x = message(BIG, 9)
    tail = Pair.tail(pair.a)
    assert np.array_equal(send_recv(pair.a, pair.b, x), x)
    assert Pair.tail(pair.a) == (tail // CAP + 1) * CAP + HEADER_SIZE + BIG  # caught up: the next lap's start


def test_a_reader_behind_when_the_writer_would_restart_sees_the_stream_go_on(pair: Pair) -> None:
    first, second = message(BIG, 1), message(BIG, 2)
    s1 = pair.a.isend(first, 1)
    pair.a.progress()
    s2 = pair.a.isend(second, 2)  # the first unread: the second follows it along the lap
    pair.a.progress()
    assert Pair.tail(pair.a) == 2 * (HEADER_SIZE + BIG)
    out1, out2 = np.zeros_like(first), np.zeros_like(second)
    r2, r1 = pair.b.irecv(out2, 2), pair.b.irecv(out1, 1)
    finish(pair.a, pair.b, requests=[s1, s2, r1, r2])
    assert np.array_equal(out1, first) and np.array_equal(out2, second)
    third = message(BIG, 3)
    assert np.array_equal(send_recv(pair.a, pair.b, third), third)
    assert Pair.tail(pair.a) == CAP + HEADER_SIZE + BIG


def test_a_reader_that_read_part_of_a_message_before_the_writer_restarts_gets_the_rest(pair: Pair) -> None:
    n = 3 * BIG  # more than one piece (_step is a quarter ring): the ring may empty between pieces
    x = message(n, 4)
    out = np.zeros_like(x)
    s = pair.a.isend(x, 5)
    r = pair.b.irecv(out, 5)
    tails = []
    for _ in range(100):
        if s.test() and r.test():
            break
        pair.b.progress()  # the reader first: it empties the ring before each piece
        pair.a.progress()
        tails.append(Pair.tail(pair.a))
    assert s.test() and r.test() and np.array_equal(out, x)
    assert any(t >= CAP for t in tails)  # a piece restarted inside the message


def test_both_directions_at_once_each_ring_restarts_on_its_own() -> None:
    cap = 2 * CAP  # (a message in one piece: _step is a quarter ring)
    with Pair(capacity=cap) as p:
        for i in range(20):
            x, y = message(BIG + 20 - i, i), message(R // 10 + i, 100 + i)  # (x fits before the last)
            ox, oy = np.zeros_like(x), np.zeros_like(y)
            reqs = [p.a.isend(x, 1), p.b.isend(y, 1), p.b.irecv(ox, 1), p.a.irecv(oy, 1)]
            finish(p.a, p.b, requests=reqs)
            assert np.array_equal(ox, x) and np.array_equal(oy, y)
            assert Pair.tail(p.a) == i * cap + HEADER_SIZE + x.size  # at the start of a lap from the second on
            assert Pair.tail(p.b) % cap < R + HEADER_SIZE + y.size  # on till R into the lap, then back
        assert Pair.tail(p.b) >= cap


def test_a_ring_smaller_than_restart_bytes_never_restarts() -> None:
    with Pair(capacity=R // 2) as p:
        x = message(R // 4, 1)
        for _ in range(10):
            assert np.array_equal(send_recv(p.a, p.b, x), x)
        assert Pair.tail(p.a) == 10 * (HEADER_SIZE + x.size)
