"""A ``sendrecv`` through the express lane (engines/_express_c.c): a message of at least the
lane's single-copy size goes both ways by single copy in one C call (my RTS out, the peer's
RTS read straight out of its memory and answered TAKEN, the peer's TAKEN of mine awaited),
with the frames the engine writes (transports/single_copy.py). Only where the channel has
learnt that single copy works both ways; whatever the lane cannot finish (no answer in time,
a frame not of the swap next, a size that differs) it hands to the engine with the send on
its channel, awaiting its answer. Smaller messages go as the lane's send and recv.

The first tests run the C part alone, on rings in this process's memory (the peer is this
process); the last run ranks, with the lane and without it (``pure_python``)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
from collections import deque
from typing import Any

import numpy as np
import pytest

from collectives.buffers import BUILT_IN_DTYPES, address_of
from collectives.engines import express
from collectives.errors import PeerLostError, TransportError
from collectives.tags import MAX_USER_TAG, P2P_TAG_BIT
from collectives.testing import RankError, run_world
from collectives.transports import cma
from collectives.transports.frames import FLAG_END, HEADER, SINGLE_COPY
from collectives.transports.single_copy import FLAG_RTS, RTS, Remote, SingleCopy, SingleCopyChannel
from test_express import _Channel as _IdleChannel  # (this folder: what the lane reads of an idle channel)
from test_express import _Loop

SINGLE = 256  # the lanes' single-copy size here
APART = 128  # ... and where the message and the receive are parts of different arrays
N = 512  # bytes of the messages that go by single copy
BEYOND = 2048  # over the lanes' largest frame here (1024)


class _Channel(_IdleChannel, SingleCopyChannel):
    """What the lane reads of a ShmChannel: an idle channel whose engine has learnt that single
    copy works both ways (``offers`` and ``reads`` True), with the protocol's own methods."""

    def __init__(self, offers: bool | None = True, reads: bool | None = True) -> None:
        super().__init__()
        self.peer = 1
        self._awaiting: dict[int, Any] = {}
        self._remote_held = 0
        self.single_copy = SingleCopy(1, os.getpid(), offer=True, read=True, gone=lambda: False)
        self.single_copy.offers, self.single_copy.reads = offers, reads


class _Ring:
    """A ring's words (tail, want room, head, the writer's CPU) and bytes."""

    def __init__(self, capacity: int) -> None:
        self.words = np.zeros(4, np.uint64)
        self.data = np.zeros(capacity, np.uint8)

    def lane_words(self) -> tuple[int, ...]:
        at = self.words.ctypes.data
        return at, at + 8, at + 16, at + 24, self.data.ctypes.data

    tail, head = _Loop.tail, _Loop.head  # (its words in the same places)

    def frames(self, start: int = 0) -> list[bytes]:
        """The frames written from ``start`` (no wrap), each header and payload."""
        out, at = [], start
        while at < self.tail:
            nbytes = HEADER.unpack(self.data[at:at + HEADER.size].tobytes())[1]
            out.append(self.data[at:at + HEADER.size + nbytes].tobytes())
            at += HEADER.size + nbytes
        return out

    def put(self, frame: bytes) -> None:
        """Write ``frame`` as the peer would."""
        self.data[self.tail:self.tail + len(frame)] = np.frombuffer(frame, np.uint8)
        self.words[0] += len(frame)


class _Lanes:
    """An Express of rank 0 in a world of 3: ``loop`` gives it one lane, to rank 1, whose ring out
    is the ring in (it answers itself); else lanes to ranks 1 and 2, each with a ring out (``to1``,
    ``to2``) and a ring in (``from1``, ``from2``) that the test writes as the peer would."""

    def __init__(self, loop: bool = True, capacity: int = 4096, apart: int = SINGLE, spin_ns: int = 0,
                 aside: int = -1, shift_yield_ns: int = -1, **channel: Any) -> None:
        self.flags = np.zeros(4, np.uint64)  # bell, sleeping, peer closed, my closed
        at = self.flags.ctypes.data
        tail_words = (capacity, at, at + 8, at + 16, at + 24)
        self.to1, self.to2, self.from2 = _Ring(capacity), _Ring(capacity), _Ring(capacity)
        self.from1 = self.to1 if loop else _Ring(capacity)
        self.channels = {1: _Channel(**channel), 2: _Channel(**channel)}
        lanes = {1: (self.channels[1], self.to1.lane_words() + self.from1.lane_words() + tail_words)}
        if not loop:
            lanes[2] = (self.channels[2], self.to2.lane_words() + self.from2.lane_words() + tail_words)
        self.held: dict[int, Any] = {}
        self.lock = threading.RLock()
        self.express = express.Express(3, lanes, (self.flags, self.to1, self.to2, self.from1, self.from2), self.lock,
                                       self.held, itertools.count(1), np.ndarray, BUILT_IN_DTYPES, 1024, P2P_TAG_BIT,
                                       MAX_USER_TAG, spin_ns, 0, SINGLE, 0, apart, aside,
                                       shift_yield_ns=shift_yield_ns)

    def sendrecv(self, x: np.ndarray, out: np.ndarray, tag: int = 0, dst: int = 1, src: int = 1) -> Any:
        return self.express.sendrecv(x, dst, out, src, tag)


def _message(n: int, seed: int) -> np.ndarray:
    return (np.arange(n, dtype=np.uint8) * 3 + seed).astype(np.uint8)


def _rts(tag: int, data: np.ndarray, id_: int) -> bytes:
    return HEADER.pack(P2P_TAG_BIT | tag, RTS.size, FLAG_RTS) + RTS.pack(address_of(data), data.nbytes, id_)


def test_a_swap_writes_an_rts_copies_the_peers_message_and_answers_it_as_the_engine_does() -> None:
    lanes = _Lanes()
    x, out = _message(N, 1), np.zeros(N, np.uint8)
    assert lanes.sendrecv(x, out, tag=5) is True
    assert np.array_equal(out, x)  # read out of "the peer's" memory: this process's
    engine_rts = SingleCopy(1, os.getpid(), offer=True, read=True, gone=lambda: False).rts(P2P_TAG_BIT | 5, memoryview(x))
    assert lanes.to1.frames() == [engine_rts[1], SingleCopy.answer(0, True)]
    assert lanes.to1.head == lanes.to1.tail  # my own answer taken
    assert lanes.channels[1].single_copy._next_id == 1 and not lanes.channels[1]._awaiting
    assert lanes.express.swaps == 1


def _swap_waited(peer_cpu: Any, n: int = N) -> int:
    """A swap whose peer never answers, on one CPU, where the peer last wrote from the CPU
    ``peer_cpu(here)``: how many waits the lane began by yielding."""
    lanes = _Lanes(loop=False, spin_ns=1_000_000)
    allowed = os.sched_getaffinity(0)
    here = min(allowed)
    os.sched_setaffinity(0, {here})
    try:
        lanes.from1.words[3] = peer_cpu(here) + 1
        assert lanes.sendrecv(_message(n, 1), np.zeros(n, np.uint8)) not in (True, False)  # handed to the engine
    finally:
        os.sched_setaffinity(0, allowed)
    return int(lanes.express.besides)


def test_a_swap_beside_its_peer_yields_from_the_start() -> None:
    assert _swap_waited(lambda here: here) == 1


def test_a_swap_whose_peer_wrote_elsewhere_or_never_or_beyond_the_frame_size_spins() -> None:
    assert _swap_waited(lambda here: here + 1) == 0
    assert _swap_waited(lambda here: -1) == 0  # (0 in the word: not known)
    assert _swap_waited(lambda here: here, n=BEYOND) == 0


def test_the_ids_of_the_rts_follow_the_engines_count() -> None:
    lanes = _Lanes()
    lanes.channels[1].single_copy._next_id = 41
    x, out = _message(N, 2), np.zeros(N, np.uint8)
    assert lanes.sendrecv(x, out) is True and lanes.sendrecv(x, out) is True
    ids = [RTS.unpack(f[HEADER.size:])[2] for f in lanes.to1.frames() if HEADER.unpack(f[:HEADER.size])[2] == FLAG_RTS]
    assert ids == [41, 42] and lanes.channels[1].single_copy._next_id == 43


@pytest.mark.parametrize("learnt", [{"offers": None}, {"reads": None}], ids=["offers", "reads"])
def test_until_the_engine_has_learnt_that_single_copy_works_nothing_moves(learnt: dict[str, Any]) -> None:
    lanes = _Lanes(**learnt)  # the engine's first RTS on the channel asks
    assert lanes.sendrecv(_message(N, 1), np.zeros(N, np.uint8)) is False
    assert lanes.to1.tail == 0


def test_nothing_moves_while_an_rts_of_the_engines_awaits_its_answer() -> None:
    lanes = _Lanes()
    lanes.channels[1]._awaiting[0] = object()
    assert lanes.sendrecv(_message(N, 1), np.zeros(N, np.uint8)) is False
    assert lanes.to1.tail == 0


@pytest.mark.parametrize("never", [{"offers": False}, {"reads": False}], ids=["offers", "reads"])
def test_where_single_copy_never_works_the_message_goes_through_the_ring(never: dict[str, Any]) -> None:
    lanes = _Lanes(**never)
    x, out = _message(N, 4), np.zeros(N, np.uint8)
    assert lanes.sendrecv(x, out) is True and np.array_equal(out, x)
    assert lanes.to1.frames() == [HEADER.pack(P2P_TAG_BIT, N, FLAG_END) + x.tobytes()]
    assert lanes.express.swaps == 0


def test_a_small_message_goes_through_the_ring_as_send_and_recv() -> None:
    lanes = _Lanes()
    x, out = _message(SINGLE - 1, 4), np.zeros(SINGLE - 1, np.uint8)
    assert lanes.sendrecv(x, out) is True and np.array_equal(out, x)
    assert lanes.to1.frames() == [HEADER.pack(P2P_TAG_BIT, SINGLE - 1, FLAG_END) + x.tobytes()]
    assert (lanes.express.sends, lanes.express.recvs, lanes.express.swaps) == (1, 1, 0)


def test_from_the_apart_size_separate_arrays_swap_and_two_blocks_of_one_array_go_through_the_ring() -> None:
    lanes, n = _Lanes(apart=APART), (APART + SINGLE) // 2
    x, out = _message(n, 3), np.zeros(n, np.uint8)
    assert lanes.sendrecv(x, out) is True and np.array_equal(out, x)
    assert lanes.express.swaps == 1
    assert HEADER.unpack(lanes.to1.frames()[0][:HEADER.size])[2] == FLAG_RTS
    blocks = np.concatenate([_message(n, 5), np.zeros(n, np.uint8)])  # an all-gather's exchange
    start = lanes.to1.tail
    assert lanes.sendrecv(blocks[:n], blocks[n:]) is True and np.array_equal(blocks[n:], blocks[:n])
    assert lanes.to1.frames(start) == [HEADER.pack(P2P_TAG_BIT, n, FLAG_END) + _message(n, 5).tobytes()]
    assert lanes.express.swaps == 1


def test_below_the_apart_size_separate_arrays_go_through_the_ring() -> None:
    lanes = _Lanes(apart=APART)
    x, out = _message(APART - 1, 3), np.zeros(APART - 1, np.uint8)
    assert lanes.sendrecv(x, out) is True and np.array_equal(out, x)
    assert lanes.to1.frames() == [HEADER.pack(P2P_TAG_BIT, APART - 1, FLAG_END) + x.tobytes()]
    assert lanes.express.swaps == 0


def test_where_the_engine_holds_a_frame_of_the_tag_a_small_send_still_goes() -> None:
    lanes = _Lanes()
    lanes.channels[1]._unexpected[P2P_TAG_BIT] = deque([(bytearray(4), True)])
    x = _message(SINGLE - 1, 4)
    assert lanes.sendrecv(x, np.zeros(SINGLE - 1, np.uint8)) == (None, False)  # the receive is the engine's
    assert lanes.to1.frames() == [HEADER.pack(P2P_TAG_BIT, SINGLE - 1, FLAG_END) + x.tobytes()]
    assert lanes.to1.head == 0


def test_in_place_the_peer_reads_a_copy_of_what_the_buffer_held() -> None:
    lanes = _Lanes()
    x = _message(BEYOND, 6)
    assert lanes.sendrecv(x, x) is True
    assert np.array_equal(x, _message(BEYOND, 6))
    address = RTS.unpack(lanes.to1.frames()[0][HEADER.size:])[0]
    assert address != address_of(x)


def test_in_place_within_the_rings_frame_the_message_goes_through_the_ring() -> None:
    lanes = _Lanes()
    x = _message(N, 6)
    assert lanes.sendrecv(x, x) is True and np.array_equal(x, _message(N, 6))
    assert lanes.to1.frames() == [HEADER.pack(P2P_TAG_BIT, N, FLAG_END) + x.tobytes()]


def test_in_place_from_the_aside_size_the_message_swaps_a_copy_and_below_it_goes_through_the_ring() -> None:
    lanes = _Lanes(aside=N)
    x = _message(N, 6)
    assert lanes.sendrecv(x, x) is True and np.array_equal(x, _message(N, 6))
    assert lanes.express.swaps == 1
    address = RTS.unpack(lanes.to1.frames()[0][HEADER.size:])[0]
    assert address != address_of(x)
    start, y = lanes.to1.tail, _message(N - 1, 7)
    assert lanes.sendrecv(y, y) is True and np.array_equal(y, _message(N - 1, 7))
    assert lanes.to1.frames(start) == [HEADER.pack(P2P_TAG_BIT, N - 1, FLAG_END) + y.tobytes()]
    assert lanes.express.swaps == 1


def test_an_rts_unanswered_in_time_is_handed_to_its_channel_and_the_receive_to_the_engine() -> None:
    lanes = _Lanes(loop=False)
    x, out = _message(N, 7), np.full(N, 0xAB, np.uint8)
    request, received = lanes.sendrecv(x, out, dst=1, src=2)
    assert received is False and (out == 0xAB).all()
    assert lanes.to1.frames() == [_rts(0, x, 0)]
    op = lanes.channels[1]._awaiting[0]
    assert op.request is request and op.kind == SINGLE_COPY and not request.done
    assert address_of(np.frombuffer(op.data, np.uint8)) == address_of(x) and request.nbytes == N


def test_an_answer_in_place_hands_over_the_copy_and_the_next_call_copies_aside_anew_while_it_is_held() -> None:
    lanes = _Lanes(loop=False)
    x = _message(BEYOND, 8)
    request, received = lanes.sendrecv(x, x, dst=1, src=2)
    first = lanes.channels[1]._awaiting[0].data
    assert bytes(first) == x.tobytes() and address_of(np.frombuffer(first, np.uint8)) != address_of(x)
    lanes.channels[1]._awaiting.clear()  # (as the peer's answer would; ``first`` still holds a view)
    lanes.sendrecv(x, x, dst=1, src=2)
    second = lanes.channels[1]._awaiting[1].data
    assert address_of(np.frombuffer(second, np.uint8)) != address_of(np.frombuffer(first, np.uint8))


def test_in_place_the_copy_aside_is_taken_again_once_the_engine_has_let_go_of_it() -> None:
    lanes = _Lanes(loop=False)
    x = _message(BEYOND, 8)
    lanes.sendrecv(x, x, dst=1, src=2)
    first = address_of(np.frombuffer(lanes.channels[1]._awaiting[0].data, np.uint8))
    lanes.channels[1]._awaiting.clear()  # answered: the engine lets go of the copy
    taken = bytearray(BEYOND)  # (would be given the copy's memory, had the lane let it go too)
    y = _message(BEYOND, 9)
    lanes.sendrecv(y, y, dst=1, src=2)
    again = lanes.channels[1]._awaiting[1].data
    assert address_of(np.frombuffer(again, np.uint8)) == first and bytes(again) == _message(BEYOND, 9).tobytes()
    del taken


def test_the_peers_rts_and_its_answer_come_in_either_order() -> None:
    lanes = _Lanes(loop=False)
    mine, theirs, out = _message(N, 1), _message(N, 9), np.zeros(N, np.uint8)
    lanes.from1.put(SingleCopy.answer(0, True))  # the answer to my RTS first, then the peer's RTS
    lanes.from1.put(_rts(0, theirs, 3))
    assert lanes.sendrecv(mine, out, dst=1, src=1) is True
    assert np.array_equal(out, theirs)
    assert lanes.to1.frames() == [_rts(0, mine, 0), SingleCopy.answer(3, True)]
    assert lanes.from1.head == lanes.from1.tail


def test_an_rts_the_engine_holds_is_copied_answered_and_taken_off_its_held_messages() -> None:
    lanes = _Lanes(loop=False)
    theirs, out = _message(N, 10), np.zeros(N, np.uint8)
    channel = lanes.channels[2]
    channel._unexpected[P2P_TAG_BIT] = deque([(Remote(address_of(theirs), N, 7), True)])
    channel._remote_held = 1
    lanes.from1.put(SingleCopy.answer(0, True))
    assert lanes.sendrecv(_message(N, 1), out, dst=1, src=2) is True
    assert np.array_equal(out, theirs)
    assert not channel._unexpected and channel._remote_held == 0
    assert lanes.to2.frames() == [SingleCopy.answer(7, True)]


@pytest.mark.parametrize("held", ["a frame", "an rts of another size"])
def test_what_the_engine_holds_otherwise_is_left_to_it(held: str) -> None:
    lanes = _Lanes(loop=False)
    data = _message(N * 2, 0)
    first = (bytearray(N), True) if held == "a frame" else (Remote(address_of(data), N * 2, 7), True)
    lanes.channels[2]._unexpected[P2P_TAG_BIT] = deque([first])
    assert lanes.sendrecv(_message(N, 1), np.zeros(N, np.uint8), dst=1, src=2) is False
    assert lanes.to1.tail == lanes.to2.tail == 0


@pytest.mark.parametrize("next_frame", ["another tag's", "an rts of another size"])
def test_a_frame_not_of_the_swap_next_leaves_the_receive_to_the_engine(next_frame: str) -> None:
    lanes = _Lanes(loop=False)
    if next_frame == "another tag's":
        lanes.from2.put(HEADER.pack(P2P_TAG_BIT | 1, 4, FLAG_END) + b"abcd")
    else:
        lanes.from2.put(_rts(0, _message(N * 2, 0), 5))
    lanes.from1.put(SingleCopy.answer(0, True))
    out = np.full(N, 0xAB, np.uint8)
    assert lanes.sendrecv(_message(N, 1), out, dst=1, src=2) == (None, False)
    assert lanes.from2.head == 0 and (out == 0xAB).all() and lanes.to2.tail == 0


@pytest.mark.parametrize("closed", [2, 3], ids=["the peer's", "mine"])
def test_a_closed_side_stops_the_swap_before_its_rts(closed: int) -> None:
    lanes = _Lanes()
    lanes.flags[closed] = 1
    assert lanes.sendrecv(_message(N, 1), np.zeros(N, np.uint8)) is False
    assert lanes.to1.tail == 0


def test_an_rts_that_does_not_fit_the_ring_is_left_to_the_engine() -> None:
    lanes = _Lanes(capacity=64)
    lanes.to1.words[0] = 32  # 32 bytes written, none read: 32 left, an RTS is 40
    assert lanes.sendrecv(_message(N, 1), np.zeros(N, np.uint8)) is False
    assert lanes.to1.tail == 32


@pytest.mark.parametrize("n", [N, BEYOND], ids=["within the ring's frame", "over it"])
def test_a_receive_the_engine_must_check_is_left_to_it_and_the_send_goes_as_send_would(n: int) -> None:
    lanes = _Lanes()
    x, frozen = _message(n, 1), np.zeros(n, np.uint8)
    frozen.flags.writeable = False
    if n <= 1024:  # as the lane's send: the message is not lost whatever the receive's error
        assert lanes.sendrecv(x, frozen) == (None, False)
        assert lanes.to1.frames() == [HEADER.pack(P2P_TAG_BIT, n, FLAG_END) + x.tobytes()]
    else:
        assert lanes.sendrecv(x, frozen) is False and lanes.to1.tail == 0



# -- between processes ------------------------------------------------------------------------

BIG = 4 << 20
SIZES = [express.SWAP_BYTES_APART, express.SWAP_BYTES, BIG, express.SWAP_BYTES + 8]


def _ring_shift(comm: Any, in_place: bool, rounds: int = 4) -> Any:
    """Each rank sends to the next and receives from the one before, ``rounds`` times a size:
    whether every message arrived, and how many calls the lane swapped (by single copy, or in
    place with one peer by halves: test_express_halves.py)."""
    r, n = comm.rank, comm.size
    ok = []
    for size in SIZES:
        for i in range(rounds):
            x = _message(size, r + i)
            out = x if in_place else np.zeros(size, np.uint8)
            comm.sendrecv(x, (r + 1) % n, out, (r - 1) % n)
            ok.append(bool(np.array_equal(out, _message(size, (r - 1) % n + i))))
    return all(ok), comm._express.swaps + comm._express.halves


@pytest.mark.multiprocess
@pytest.mark.parametrize("size", [2, 4])
@pytest.mark.parametrize("in_place", [False, True], ids=["apart", "in place"])
@pytest.mark.parametrize("pure_python", [False, True], ids=["lane", "engine"])
def test_sendrecv_of_large_messages_swaps_them_once_the_channels_have_learnt(size: int, in_place: bool,
                                                                            pure_python: bool) -> None:
    results = run_world(lambda comm: _ring_shift(comm, in_place), size, "shm", timeout=60, pure_python=pure_python)
    assert all(ok for ok, _ in results)
    swaps = [s for _, s in results]
    assert (sum(swaps) > 0) is (not pure_python), swaps


@pytest.mark.multiprocess
def test_without_cross_memory_sendrecv_goes_through_the_rings() -> None:
    results = run_world(lambda comm: _ring_shift(comm, False, rounds=2), 2, "shm", timeout=60, cross_memory=False)
    assert results == [(True, 0), (True, 0)]


def _refused(comm: Any) -> Any:
    def refused(pid: int, address: int, into: np.ndarray, peer: int) -> None:
        raise TransportError(f"process_vm_readv with rank {peer} failed: EPERM (refused for the test)", peer=peer)
    cma.read = refused  # this rank's process only: the engine's first read is refused
    return _ring_shift(comm, False, rounds=2)


@pytest.mark.multiprocess
def test_where_the_first_read_is_refused_sendrecv_never_swaps() -> None:
    assert run_world(_refused, 2, "shm", timeout=60) == [(True, 0), (True, 0)]


@pytest.mark.multiprocess
def test_a_sendrecv_with_a_rank_that_left_fails_with_peer_lost() -> None:
    def body(comm: Any) -> Any:
        peer = 1 - comm.rank
        x, out = _message(BIG, comm.rank), np.zeros(BIG, np.uint8)
        for _ in range(2):  # the channels learn, then the lane swaps
            comm.sendrecv(x, peer, out, peer)
        if comm.rank == 1:
            comm.close()
            comm.store.set("test-swap/left", b"1")
            return comm._express.swaps > 0
        comm.store.get("test-swap/left", 30.0)
        with pytest.raises(PeerLostError):
            comm.sendrecv(x, peer, out, peer)
        return comm._express.swaps > 0

    assert run_world(body, 2, "shm", timeout=60) == [True, True]



def _stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP)."""
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "T"


def _killed_mid_swap(folder: Any, half: str) -> Any:
    """Rank 1 takes its half of rank 0's last swap and is killed (SIGKILL) with the other half
    unanswered. ``"received"``: rank 0 has read the peer's message and awaits the answer to its
    RTS (rank 1 posts its send, is frozen, and rank 0 kills it once the message is in ``out``);
    ``"sent"``: rank 1 receives (reads rank 0's message and answers) and kills itself, rank 0
    awaiting its RTS. Rank 0 writes what it raised."""

    def body(comm: Any) -> Any:
        peer = 1 - comm.rank
        pid = int(comm.all_gather(np.array([os.getpid()], np.int64))[1])
        x, out = _message(BIG, comm.rank), np.zeros(BIG, np.uint8)
        for _ in range(2):  # the channels learn, then the lane swaps
            comm.sendrecv(x, peer, out, peer)
        sent = _message(BIG, 7)
        if comm.rank == 1:
            if half == "received":
                comm.send(sent, 0, async_op=True)  # its RTS out; frozen before it can answer mine
                os.kill(os.getpid(), signal.SIGSTOP)
            comm.recv(out, 0)
            os.kill(os.getpid(), signal.SIGKILL)

        def kill_once_read() -> None:
            while not np.array_equal(out, sent):
                time.sleep(0.001)
            os.kill(pid, signal.SIGKILL)

        if half == "received":
            while not _stopped(pid):
                time.sleep(0.001)
            threading.Thread(target=kill_once_read, daemon=True).start()
        swaps = comm._express.swaps
        try:
            comm.sendrecv(_message(BIG, 5), peer, out, peer)
        except PeerLostError as exc:
            (folder / "rank0").write_text(json.dumps([type(exc).__name__, exc.peer, comm._express.swaps - swaps,
                                                      bool(np.array_equal(out, sent))]))
        return "raised"

    return body


@pytest.mark.multiprocess
@pytest.mark.parametrize("half", ["received", "sent"])
def test_a_peer_killed_mid_swap_fails_the_sendrecv_with_peer_lost(half: str, tmp_path: Any) -> None:
    with pytest.raises(RankError) as info:
        run_world(_killed_mid_swap(tmp_path, half), 2, "shm", timeout=60)
    assert info.value.rank == 1 and info.value.exitcode == -signal.SIGKILL
    # the last call began as a swap; rank 0 had read the peer's message where the peer sent it
    assert json.loads((tmp_path / "rank0").read_text()) == ["PeerLostError", 1, 1, half == "received"]


def _in_place_swaps(comm: Any) -> Any:
    """After out-of-place calls that teach the channels single copy, in-place ring shifts of
    ``SWAP_BYTES_IN_PLACE_CROWDED`` bytes and of a little less: whether every message arrived,
    and how many of each size the lane swapped."""
    r, n = comm.rank, comm.size
    ok, swapped = [], []
    for size in (express.SWAP_BYTES_APART, express.SWAP_BYTES_CROWDED):
        comm.sendrecv(_message(size, r), (r + 1) % n, np.zeros(size, np.uint8), (r - 1) % n)
    for size in (express.SWAP_BYTES_IN_PLACE_CROWDED, express.SWAP_BYTES_IN_PLACE_CROWDED - 8):
        before = comm._express.swaps
        for i in range(3):
            x = _message(size, r + i)
            comm.sendrecv(x, (r + 1) % n, x, (r - 1) % n)
            ok.append(bool(np.array_equal(x, _message(size, (r - 1) % n + i))))
        swapped.append(comm._express.swaps - before)
    return all(ok), swapped


@pytest.mark.multiprocess
@pytest.mark.parametrize("cores", [1, 64], ids=["ranks outnumber cores", "a core each"])
def test_in_place_where_ranks_outnumber_cores_sendrecv_swaps_a_copy_from_the_crowded_size(
        cores: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where ranks outnumber cores an in-place ``sendrecv`` from ``SWAP_BYTES_IN_PLACE_CROWDED``
    goes by the copy aside and the swap, below it through the ring; with a core each, through
    the ring up to ``EXPRESS_BYTES``."""
    from collectives.transports import progress

    monkeypatch.setattr(progress, "usable_cpus", lambda: cores)  # the forked ranks inherit it
    results = run_world(_in_place_swaps, 2, "shm", timeout=60)
    assert results == [(True, [3, 0] if cores == 1 else [0, 0])] * 2


def _ring_shift_waits(comm: Any) -> Any:
    """Out-of-place ring shifts of separate arrays that swap whether or not ranks outnumber cores
    (two peers: the swap, not the halves): whether every message arrived, the calls the lane
    swapped, and its swap waits that yielded at every poll."""
    r, n, size = comm.rank, comm.size, max(express.SWAP_BYTES_CROWDED, express.SWAP_BYTES_APART)
    ok, before, waits = [], comm._express.swaps, comm._express.crowded_waits
    for i in range(8):
        out = np.zeros(size, np.uint8)
        comm.sendrecv(_message(size, r + i), (r + 1) % n, out, (r - 1) % n)
        ok.append(bool(np.array_equal(out, _message(size, (r - 1) % n + i))))
    return all(ok), comm._express.swaps - before, comm._express.crowded_waits - waits


@pytest.mark.multiprocess
@pytest.mark.parametrize("cores", [1, 64], ids=["ranks outnumber cores", "a core each"])
def test_where_ranks_outnumber_cores_the_swaps_waits_yield_at_every_poll(
        cores: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where ranks outnumber cores (no spin) a swap that waits for its peers yields at every
    poll; where each rank has a core it spins first, as before. The messages arrive whole either
    way (the first call teaches the channels single copy, through the engine)."""
    from collectives.transports import progress

    monkeypatch.setattr(progress, "usable_cpus", lambda: cores)  # the forked ranks inherit it
    results = run_world(_ring_shift_waits, 3, "shm", timeout=60)
    assert all(ok and swaps >= 7 for ok, swaps, _ in results), results
    waits = sum(waits for _, _, waits in results)
    assert (waits > 0) if cores == 1 else (waits == 0), results
