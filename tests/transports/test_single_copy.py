"""Single-copy messages (transports/single_copy.py): a point-to-point message over shm larger
than the express lane's is copied once by the receiver, straight out of the sender's memory,
and the send finishes when the receiver has taken it. Where the kernel refuses the read, the
bytes follow in ordinary frames where the message stood; a message whose receive is not yet
posted is held, then copied aside, so that sends preceding receives on both sides still run;
messages of one tag keep their order whichever way each one goes."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from collectives.buffers import address_of
from collectives.errors import MessageMismatchError, PeerLostError, TransportError
from collectives.testing import run_world
from collectives.transports import cma
from collectives.transports.base import HEADER
from collectives.transports.single_copy import (
    FLAG_REFUSED,
    FLAG_TAKEN,
    SINGLE_COPY_BYTES,
    Remote,
    SingleCopy,
)

BIG = 4 << 20


def _world(fn: Any, size: int = 2, **kwargs: Any) -> list[Any]:
    return run_world(fn, size, "shm", timeout=60, **kwargs)


def _message(n: int, seed: int) -> np.ndarray:
    return (np.arange(n, dtype=np.uint8) * 7 + seed).astype(np.uint8)


def _channel(comm: Any, peer: int) -> Any:
    return next(t.channels[peer] for t in comm.transports if peer in t.channels)


def _refuse_reads() -> None:
    """Make this process's kernel refuse cross-memory reads, as a container may."""
    def refused(pid: int, address: int, into: np.ndarray, peer: int) -> None:
        raise TransportError(f"process_vm_readv with rank {peer} failed: EPERM (refused for the test)", peer=peer)
    cma.read = refused  # the rank's own process: the test process keeps the real one


# -- the protocol's state, without processes ------------------------------------------------------


def test_only_messages_over_the_threshold_go_by_single_copy() -> None:
    offering = SingleCopy(1, os.getpid(), offer=True, read=True, gone=lambda: False)
    assert not offering.takes(SINGLE_COPY_BYTES - 1)
    assert offering.takes(SINGLE_COPY_BYTES)
    assert not SingleCopy(1, os.getpid(), offer=False, read=True, gone=lambda: False).takes(BIG)


def test_the_first_message_asks_from_the_lanes_size_then_the_threshold_holds() -> None:
    sender = SingleCopy(1, os.getpid(), offer=True, read=True, gone=lambda: False)
    sender.ask_bytes = 1000  # the express lane's swaps start lower (engines/express.py)
    assert sender.takes(1000) and not sender.takes(999)
    sender.answered(True)
    assert not sender.takes(1000) and sender.takes(SINGLE_COPY_BYTES)


def test_the_first_answer_settles_whether_the_channel_offers() -> None:
    taken = SingleCopy(1, os.getpid(), offer=True, read=True, gone=lambda: False)
    assert taken.asking
    taken.answered(True)
    assert taken.offers is True and not taken.asking
    refused = SingleCopy(1, os.getpid(), offer=True, read=True, gone=lambda: False)
    refused.answered(False)
    assert refused.offers is False and not refused.takes(BIG)


def test_an_rts_says_where_the_message_lies_and_the_receiver_copies_it() -> None:
    data = _message(SINGLE_COPY_BYTES, 3)
    sender = SingleCopy(1, os.getpid(), offer=True, read=True, gone=lambda: False)
    id_, frame = sender.rts(tag=9, data=memoryview(data))
    tag, nbytes, _ = HEADER.unpack(frame[: HEADER.size])
    remote = SingleCopy.remote(frame[HEADER.size :])
    assert (tag, remote.nbytes, remote.id) == (9, data.nbytes, id_) and nbytes == len(frame) - HEADER.size
    into = np.zeros_like(data)
    receiver = SingleCopy(0, os.getpid(), offer=True, read=True, gone=lambda: False)
    assert receiver.fetch(remote, memoryview(into))
    assert np.array_equal(into, data) and receiver.reads is True
    assert HEADER.unpack(SingleCopy.answer(id_, True)) == (id_, 0, FLAG_TAKEN)
    assert HEADER.unpack(SingleCopy.answer(id_, False)) == (id_, 0, FLAG_REFUSED)


def test_a_read_refused_first_is_a_refusal_and_later_an_error() -> None:
    bad = Remote(address=8, nbytes=16, id_=0)  # an address no process maps
    receiver = SingleCopy(0, os.getpid(), offer=True, read=True, gone=lambda: False)
    assert receiver.fetch(bad, memoryview(bytearray(16))) is False
    assert receiver.reads is False
    trusted = SingleCopy(0, os.getpid(), offer=True, read=True, gone=lambda: False)
    good = _message(16, 1)
    assert trusted.fetch(Remote(address_of(good), 16, 0), memoryview(bytearray(16)))
    with pytest.raises(TransportError, match="process_vm_readv"):
        trusted.fetch(bad, memoryview(bytearray(16)))


def test_bytes_read_after_the_sender_left_are_not_its_message() -> None:
    data = _message(64, 5)
    receiver = SingleCopy(1, os.getpid(), offer=True, read=True, gone=lambda: True)
    with pytest.raises(PeerLostError, match="left before its message was taken"):
        receiver.fetch(Remote(address_of(data), 64, 0), memoryview(bytearray(64)))


# -- two processes over shm ---------------------------------------------------------------------


def _send_one(comm: Any, n: int) -> Any:
    """Rank 1 sends ``n`` bytes to rank 0 and returns whether its channel offers single copies;
    rank 0 returns whether the bytes arrived, how many were copied aside, and whether it read."""
    channel = _channel(comm, 1 - comm.rank)
    if comm.rank == 1:
        comm.send(_message(n, 1), 0)
        return channel.single_copy.offers
    out = np.zeros(n, np.uint8)
    comm.recv(out, 1)
    return np.array_equal(out, _message(n, 1)), channel.unexpected_bytes, channel.single_copy.reads


@pytest.mark.parametrize("n", [SINGLE_COPY_BYTES - 1, SINGLE_COPY_BYTES, BIG])
def test_a_large_message_is_copied_once_from_the_senders_memory(n: int) -> None:
    (ok, unexpected, reads), offers = _world(lambda comm: _send_one(comm, n))
    assert ok and unexpected == 0
    by_single_copy = n >= SINGLE_COPY_BYTES
    assert (reads is True, offers is True) == (by_single_copy, by_single_copy)


def test_sends_before_receives_on_both_sides_still_run() -> None:
    def body(comm: Any) -> Any:
        peer = 1 - comm.rank
        comm.send(_message(BIG, comm.rank), peer)
        out = np.zeros(BIG, np.uint8)
        comm.recv(out, peer)
        return np.array_equal(out, _message(BIG, peer))

    assert _world(body) == [True, True]


def test_a_receive_posted_after_a_later_message_of_another_tag_takes_the_held_one() -> None:
    def body(comm: Any) -> Any:
        if comm.rank == 1:
            big = comm.send(_message(BIG, 1), 0, tag=1, async_op=True)
            comm.send(_message(10, 2), 0, tag=2)  # waits behind the big one's RTS until it is answered
            big.wait()
            return True
        small, out = np.zeros(10, np.uint8), np.zeros(BIG, np.uint8)
        comm.recv(small, 1, tag=2)
        comm.recv(out, 1, tag=1)
        return np.array_equal(small, _message(10, 2)) and np.array_equal(out, _message(BIG, 1))

    assert _world(body) == [True, True]


def _in_order(comm: Any, sizes: list[int], refuse: bool, late: bool) -> Any:
    """Rank 1 sends messages of ``sizes`` on one tag, without waiting; rank 0 receives them in
    order, having posted its receives first (or late: after the store says all were sent)."""
    if comm.rank == 1:
        works = [comm.send(_message(n, i), 0, tag=4, async_op=True) for i, n in enumerate(sizes)]
        comm.store.set("test-single-copy/sent", b"1")
        for w in works:
            w.wait()
        return _channel(comm, 0).single_copy.offers
    if refuse:
        _refuse_reads()
    outs = [np.zeros(n, np.uint8) for n in sizes]
    if late:
        comm.store.get("test-single-copy/sent", 30.0)
    works = [comm.recv(o, 1, tag=4, async_op=True) for o in outs]
    for w in works:
        w.wait()
    return [bool(np.array_equal(o, _message(n, i))) for i, (o, n) in enumerate(zip(outs, sizes))]


@pytest.mark.parametrize("late", [False, True], ids=["posted", "late"])
@pytest.mark.parametrize("refuse", [False, True], ids=["read", "refused"])
def test_messages_of_one_tag_keep_their_order_whichever_way_each_goes(refuse: bool, late: bool) -> None:
    sizes = [BIG, 100, SINGLE_COPY_BYTES, 0, BIG + 8, 5]
    received, offers = _world(lambda comm: _in_order(comm, sizes, refuse, late))
    assert received == [True] * len(sizes)
    assert offers is (not refuse)


def test_a_receive_from_any_rank_takes_a_large_message() -> None:
    def body(comm: Any) -> Any:
        if comm.rank == 1:
            comm.send(_message(BIG, 9), 0, tag=3)
            return None
        out = np.zeros(BIG, np.uint8)
        work = comm.recv(out, None, tag=3, async_op=True)
        work.wait()
        return work.source, np.array_equal(out, _message(BIG, 9))

    assert _world(body)[0] == (1, True)


def test_a_receive_of_another_size_is_an_error_not_a_copy() -> None:
    def body(comm: Any) -> Any:
        if comm.rank == 1:
            try:
                comm.send(_message(BIG, 1), 0)
            except Exception as exc:  # noqa: BLE001 - the receiver failed its channel and left
                return type(exc).__name__
            return None
        out = np.full(BIG - 8, 0xAB, np.uint8)
        with pytest.raises(MessageMismatchError, match=f"has {BIG} bytes"):
            comm.recv(out, 1)
        return bool((out == 0xAB).all())

    untouched, _ = _world(body)
    assert untouched


def test_sendrecv_in_place_sends_what_the_buffer_held() -> None:
    def body(comm: Any) -> Any:
        peer = 1 - comm.rank
        ok = []
        for n in (BIG, BIG // 2 + 3, 2 * BIG, 100):  # the buffer kept aside serves the smaller, grows for the larger
            x = _message(n, comm.rank)
            comm.sendrecv(x, peer, x, peer)
            ok.append(bool(np.array_equal(x, _message(n, peer))))
        return ok

    assert _world(body) == [[True] * 4] * 2


def test_a_ring_shift_of_four_ranks_copies_each_message_once() -> None:
    def body(comm: Any) -> Any:
        r, n = comm.rank, comm.size
        out = np.zeros(BIG, np.uint8)
        for _ in range(3):
            comm.sendrecv(_message(BIG, r), (r + 1) % n, out, (r - 1) % n)
        return np.array_equal(out, _message(BIG, (r - 1) % n)), _channel(comm, (r - 1) % n).unexpected_bytes

    assert _world(body, 4) == [(True, 0)] * 4


def test_a_message_whose_sender_left_is_an_error_not_its_memory() -> None:
    def body(comm: Any) -> Any:
        if comm.rank == 1:
            data = _message(BIG, 1)
            work = comm.send(data, 0, async_op=True)
            comm.close()
            data[:] = 0  # the sender may reuse its buffer once it has left
            comm.store.set("test-single-copy/left", b"1")
            return work.is_completed()
        comm.store.get("test-single-copy/left", 30.0)
        out = np.zeros(BIG, np.uint8)
        with pytest.raises(PeerLostError):
            comm.recv(out, 1)
        return True

    assert _world(body) == [True, True]


def test_without_cross_memory_the_bytes_go_through_the_ring() -> None:
    (ok, _, reads), offers = _world(lambda comm: _send_one(comm, BIG), cross_memory=False)
    assert ok and offers is False and reads is False
