"""An in-place ``sendrecv`` that the express lane swaps by single copy, within its largest frame
(engines/_express_c.c, ``held``): the peer reads my buffer itself, not a copy aside; I read the
peer's message into the lane's bounce buffer and copy it into mine once the peer has answered
that it has read my message. Where my send is left to the engine, the call returns the peer's
message (or the buffer to receive it into) apart from mine, and the communicator copies it in
once the send is done. Beyond the largest frame the copy aside stays (test_express_swap.py).

The first tests run the C part alone, on rings in this process's memory (test_express_swap.py's
``_Lanes``); the last run ranks where they outnumber cores, the only place these sizes go by
single copy in place, with the lane and without it (``pure_python``)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from collectives.buffers import address_of
from collectives.engines import express
from collectives.testing import run_world
from collectives.transports.frames import HEADER
from collectives.transports.single_copy import RTS, SingleCopy
from test_express_swap import N, _Lanes, _message, _rts  # (this folder)


def _rts_address(lanes: _Lanes) -> int:
    return RTS.unpack(lanes.to1.frames()[0][HEADER.size:])[0]


@pytest.mark.parametrize("answer_first", [False, True], ids=["rts first", "answer first"])
def test_in_place_the_peer_reads_my_buffer_and_its_message_lands_after_its_answer(answer_first: bool) -> None:
    lanes = _Lanes(loop=False, aside=N)
    x, theirs = _message(N, 1), _message(N, 9)
    frames = [_rts(0, theirs, 3), SingleCopy.answer(0, True)]
    for frame in frames[::-1] if answer_first else frames:
        lanes.from1.put(frame)
    assert lanes.sendrecv(x, x, dst=1, src=1) is True
    assert np.array_equal(x, theirs)
    assert _rts_address(lanes) == address_of(x)  # no copy aside
    assert lanes.express.swaps == 1


def test_in_place_with_itself_the_buffer_keeps_its_message() -> None:
    lanes = _Lanes(aside=N)  # the lane's peer is itself: it reads my buffer, I read it
    x = _message(N, 6)
    assert lanes.sendrecv(x, x) is True and np.array_equal(x, _message(N, 6))
    assert _rts_address(lanes) == address_of(x) and lanes.express.swaps == 1


def test_the_peers_message_read_before_mine_is_taken_comes_back_apart_and_mine_stays() -> None:
    lanes = _Lanes(loop=False, aside=N)
    x, theirs = _message(N, 1), _message(N, 9)
    lanes.from1.put(_rts(0, theirs, 3))  # no answer to mine: my send is the engine's
    request, received, held = lanes.sendrecv(x, x, dst=1, src=1)
    assert received is True and bytes(held) == theirs.tobytes()
    assert np.array_equal(x, _message(N, 1))  # the peer may still read it
    op = lanes.channels[1]._awaiting[0]
    assert op.request is request and address_of(np.frombuffer(op.data, np.uint8)) == address_of(x)


def test_neither_way_done_the_call_returns_a_buffer_to_receive_into_apart_from_mine() -> None:
    lanes = _Lanes(loop=False, aside=N)
    x = _message(N, 1)
    request, received, held = lanes.sendrecv(x, x, dst=1, src=2)
    assert received is False and len(held) == N
    assert np.array_equal(x, _message(N, 1)) and not request.done
    assert lanes.channels[1]._awaiting[0].request is request


def test_my_send_done_and_the_receive_not_the_engine_receives_into_the_buffer() -> None:
    lanes = _Lanes(loop=False, aside=N)
    x = _message(N, 1)
    lanes.from1.put(SingleCopy.answer(0, True))  # the answer to my RTS; the peer's RTS is not there
    assert lanes.sendrecv(x, x, dst=1, src=2) == (None, False)


# -- between processes ------------------------------------------------------------------------

SIZES = [express.SWAP_BYTES_IN_PLACE_CROWDED, 256 << 10, express.EXPRESS_BYTES]


class _Counted:
    """The lane, counting the calls it returned with the peer's message held apart."""

    def __init__(self, lane: Any) -> None:
        self.lane, self.held = lane, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.lane, name)

    def sendrecv(self, *args: Any) -> Any:
        moved = self.lane.sendrecv(*args)
        self.held += isinstance(moved, tuple) and len(moved) == 3
        return moved


def _ring_shift_in_place(comm: Any, late: int) -> Any:
    """In-place ring shifts of each size, after out-of-place ones that teach the channels single
    copy; rank ``late`` (-1: none) sleeps before each call, so that its neighbours' lanes hand
    their calls over. Whether every message arrived, the calls the lane swapped and those it
    returned with the peer's message held apart."""
    comm._express = _Counted(comm._express)
    r, n = comm.rank, comm.size
    for size in (express.SWAP_BYTES_APART, express.SWAP_BYTES_CROWDED):
        comm.sendrecv(_message(size, r), (r + 1) % n, np.zeros(size, np.uint8), (r - 1) % n)
    ok, before = [], comm._express.swaps
    for size in SIZES:
        for i in range(3):
            x = _message(size, r + i)
            if r == late:
                time.sleep(0.02)
            comm.sendrecv(x, (r + 1) % n, x, (r - 1) % n)
            ok.append(bool(np.array_equal(x, _message(size, (r - 1) % n + i))))
    return all(ok), comm._express.swaps - before, comm._express.held


@pytest.mark.multiprocess
@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("late", [-1, 1], ids=["together", "a rank late"])
@pytest.mark.parametrize("pure_python", [False, True], ids=["lane", "engine"])
def test_in_place_ring_shifts_where_ranks_outnumber_cores_arrive_whole(size: int, late: int, pure_python: bool,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from collectives.transports import progress

    monkeypatch.setattr(progress, "usable_cpus", lambda: 1)  # the forked ranks inherit it
    results = run_world(lambda comm: _ring_shift_in_place(comm, late), size, "shm", timeout=60,
                        pure_python=pure_python)
    assert all(ok for ok, _, _ in results), results
    swapped, held = [s for _, s, _ in results], [h for _, _, h in results]
    assert (sum(swapped) > 0) is (not pure_python), swapped
    if late >= 0 or pure_python:  # (ranks together may hand a call over too, by chance)
        assert (sum(held) > 0) is (not pure_python), held  # (the communicator copied them in)
