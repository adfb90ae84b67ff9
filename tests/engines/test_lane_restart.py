"""The express lane's side of the shm ring's restart (engines/_lane_ring.h, claim() and settle();
transports/shm_ring.py's module docstring): the lane's writer restarts an empty ring at the next
lap's start as the channel's writer does, its readers skip what a restart skipped, whichever
side wrote it, and every message arrives whole.

Rank 0's and rank 1's channels of a pair live in this process on two fresh inboxes, each with
its own lane (an Express), so each test decides when each side writes and reads."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from collectives.buffers import BUILT_IN_DTYPES
from collectives.engines import express
from collectives.tags import MAX_USER_TAG, P2P_TAG_BIT
from collectives.transports.frames import HEADER_SIZE
from collectives.testing.worlds import ShmPair
from collectives.transports.shm import SHM_DIR, ShmChannel
from collectives.transports.shm_ring import RESTART_BYTES

pytestmark = pytest.mark.skipif(not os.path.isdir(SHM_DIR), reason="needs /dev/shm")
# (no skip without the lane's C extension: tests/engines/test_express.py fails then, and so do these)

R = RESTART_BYTES
CAP = 4 * R  # the rings here
BIG = R - HEADER_SIZE  # a message whose frame, R bytes, restarts each time it finds the ring empty
MAX_BYTES = 2 * R  # the lanes' largest frame here


class Pair(ShmPair):
    """Rank 0's channel to rank 1 (``a``) and rank 1's to rank 0 (``b``), each with a lane (``la``, ``lb``)."""

    def __init__(self, capacity: int = CAP) -> None:
        super().__init__(capacity)
        self.la, self.lb = self._lane(self.a), self._lane(self.b)

    @staticmethod
    def _lane(channel: ShmChannel) -> Any:
        words, kept = channel.lane()
        return express.Express(2, {channel.peer: (channel, words)}, (kept,), threading.RLock(), {},
                               itertools.count(1), np.ndarray, BUILT_IN_DTYPES, MAX_BYTES, P2P_TAG_BIT, MAX_USER_TAG,
                               0, 0, 1 << 30, 0)


@pytest.fixture
def pair() -> Iterator[Pair]:
    with Pair() as p:
        yield p


message = ShmPair.message


def lane_send_recv(p: Pair, x: np.ndarray, tag: int = 3) -> np.ndarray:
    out = np.zeros_like(x)
    assert p.la.send(x, 1, tag) and p.lb.recv(out, 0, tag)
    return out


def test_the_lanes_stream_restarts_at_the_rings_start_when_it_is_empty(pair: Pair) -> None:
    for i in range(10):
        x = message(BIG, i)
        assert np.array_equal(lane_send_recv(pair, x), x)
        assert Pair.tail(pair.a) == i * CAP + HEADER_SIZE + BIG  # the first at 0, then each at a lap's start


def test_mixed_sizes_through_the_lane_arrive_whole(pair: Pair) -> None:
    rng = np.random.default_rng(7)
    laps = 0
    for i in range(120):
        n = int(rng.choice([0, 1, 17, 4096, R // 16, BIG - 1, BIG, BIG + 1, R + R // 4, MAX_BYTES]))
        x = message(n, i)
        tail = Pair.tail(pair.a)
        assert np.array_equal(lane_send_recv(pair, x), x)
        if Pair.tail(pair.a) != tail + HEADER_SIZE + n:
            laps += 1
            assert Pair.tail(pair.a) == (tail // CAP + 1) * CAP + HEADER_SIZE + n
            assert tail % CAP >= max(R, HEADER_SIZE + n)
    assert laps > 20


def test_a_lane_writer_that_laps_a_reader_behind_it(pair: Pair) -> None:
    xs = [message(n, i) for i, n in enumerate([BIG, R + R // 8, BIG, R // 2, R + R // 4, 3, BIG, R // 8])]
    written = 0
    while written < len(xs) and pair.la.send(xs[written], 1, 4):  # no restart while unread frames lie
        written += 1
    assert written == 4 and Pair.tail(pair.a) == sum(HEADER_SIZE + x.size for x in xs[:4])  # the 5th has no room
    got = 0
    while got < len(xs):
        out = np.zeros_like(xs[got])
        assert pair.lb.recv(out, 0, 4) and np.array_equal(out, xs[got])
        got += 1
        while written < len(xs) and pair.la.send(xs[written], 1, 4):
            written += 1
    assert Pair.tail(pair.a) > CAP  # round the ring and on


def test_a_reader_behind_when_the_writer_would_restart(pair: Pair) -> None:
    first, second = message(BIG, 1), message(BIG, 2)
    assert pair.la.send(first, 1, 1) and pair.la.send(second, 1, 2)  # the first unread: along the lap
    assert Pair.tail(pair.a) == 2 * (HEADER_SIZE + BIG)
    out = np.zeros_like(first)
    assert pair.lb.recv(out, 0, 1) and np.array_equal(out, first)
    third = message(BIG, 3)
    assert pair.la.send(third, 1, 3)  # the second still unread: along the lap again
    assert Pair.tail(pair.a) == 3 * (HEADER_SIZE + BIG)
    for x, tag in ((second, 2), (third, 3)):
        assert pair.lb.recv(out, 0, tag) and np.array_equal(out, x)
    assert np.array_equal(lane_send_recv(pair, first), first)
    assert Pair.tail(pair.a) == CAP + HEADER_SIZE + BIG  # caught up: the next lap's start


def test_the_lane_and_the_channel_read_each_others_restarts() -> None:
    """Frames of the lane's writer read by the channel, and the channel's read by the lane, in one ring."""
    cap = 2 * CAP  # (the channel's message in one piece: its _step is a quarter ring)
    with Pair(capacity=cap) as pair:
        for i in range(8):
            x = message(BIG + 8 - i, i)  # (each fits before the last)
            out = np.zeros_like(x)
            if i % 2:
                assert pair.la.send(x, 1, 6)  # the lane writes, the channel reads
                r = pair.b.irecv(out, P2P_TAG_BIT | 6)
                while not r.test():
                    pair.b.progress()
            else:
                s = pair.a.isend(x, P2P_TAG_BIT | 6)  # the channel writes, the lane reads
                assert s.test() and pair.lb.recv(out, 0, 6)
            assert np.array_equal(out, x)
            assert Pair.tail(pair.a) == (i * cap if i else 0) + HEADER_SIZE + x.size


def test_both_directions_at_once_through_the_lanes(pair: Pair) -> None:
    for i in range(12):
        x, y = message(BIG + 12 - i, i), message(BIG + 24 - 2 * i, 50 + i)  # (each fits before the last)
        ox, oy = np.zeros_like(x), np.zeros_like(y)
        assert pair.la.send(x, 1, 8) and pair.lb.send(y, 0, 8)
        assert pair.lb.recv(ox, 0, 8) and pair.la.recv(oy, 1, 8)
        assert np.array_equal(ox, x) and np.array_equal(oy, y)
        assert Pair.tail(pair.a) == i * CAP + HEADER_SIZE + x.size
        assert Pair.tail(pair.b) == i * CAP + HEADER_SIZE + y.size
