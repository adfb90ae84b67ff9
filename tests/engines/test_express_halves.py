"""A ``sendrecv`` with one peer through the express lane by halves (engines/_half_swap.h): where
both ranks are in the lane at once, each moves half of the message both ways (reads the peer's
half into its receive, through a bounce buffer in place, and writes its own over the peer's),
bound by a word both compare-and-swap; where the peer does not come in time, or comes with
another call, the offer is withdrawn and the call goes as before. Every case runs with the lane and
without it (``pure_python``: the engine's copy aside), and must deliver the same bytes."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import numpy as np
import pytest

from collectives.engines import express
from collectives.errors import PeerLostError
from collectives.testing import RankError, run_world

pytestmark = pytest.mark.multiprocess

PIECE = 256 << 10  # the bounce buffer's piece (BOUNCE_BYTES)
CMA_PIECE = 4 << 20  # out of place, a piece is one cross-memory copy's (PIECE_BYTES, engines/_cma.h)


def _message(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n, np.uint8)


def _learn(comm: Any) -> None:
    """One large out-of-place sendrecv: the channels learn that single copy works both ways."""
    big = _message(2 << 20, comm.rank)
    comm.sendrecv(big, 1 - comm.rank, np.zeros_like(big), 1 - comm.rank)


def _late(seconds: float) -> None:
    """Come late by ``seconds``, busy (a sleep would hand the core over)."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


def _buffers(comm: Any, n: int, seed: int, how: str) -> tuple[np.ndarray, np.ndarray]:
    """My message and my receive's buffer: one buffer (``in place``), two arrays (``apart``),
    two blocks of one array (``one array``), or in place on rank 0 and apart on rank 1
    (``mixed``)."""
    x = _message(n, seed)
    if how == "in place" or (how == "mixed" and comm.rank == 0):
        return x, x
    if how == "one array":
        both = np.zeros(2 * n, np.uint8)
        both[:n] = x
        return both[:n], both[n:]
    return x, np.zeros(n, np.uint8)


def _swaps(comm: Any, sizes: list[int], how: str = "in place", rounds: int = 4, learn: bool = True) -> Any:
    """``rounds`` sendrecvs with the peer a size, each rank late in turn (after one large message
    that teaches the channels single copy, with ``learn``): whether every receive came to hold
    the peer's message (and out of place, its own left as it was), and how many calls the lane
    swapped by halves."""
    peer, ok = 1 - comm.rank, []
    if learn:
        _learn(comm)
    for n in sizes:
        for i in range(rounds):
            x, out = _buffers(comm, n, 10 * comm.rank + i, how)
            comm.barrier()
            if comm.rank == i % 2:  # the other rank offers, this one accepts
                _late(30e-6)
            comm.sendrecv(x, peer, out, peer)
            ok.append(bool(np.array_equal(out, _message(n, 10 * peer + i))))
            ok.append(bool(np.array_equal(x, _message(n, 10 * comm.rank + i))) or out is x)  # mine left as it was
    return all(ok), comm._express.halves


@pytest.mark.usefixtures("patient_offers")
@pytest.mark.parametrize("pure_python", [False, True], ids=["lane", "engine"])
def test_in_place_each_rank_moves_half_both_ways_whichever_rank_comes_first(pure_python: bool) -> None:
    sizes = [express.HALF_BYTES, express.HALF_BYTES + 7, 3 * PIECE + 1, (4 << 20) + 13]
    results = run_world(lambda comm: _swaps(comm, sizes), 2, "shm", timeout=60, pure_python=pure_python)
    assert all(ok for ok, _ in results)
    halves = [h for _, h in results]
    assert halves[0] == halves[1] and (halves[0] > 0) is (not pure_python), halves


@pytest.mark.usefixtures("patient_offers")
def test_in_place_where_ranks_outnumber_cores_the_halves_take_the_copy_asides_place(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from collectives.transports import progress

    monkeypatch.setattr(progress, "usable_cpus", lambda: 1)  # the forked ranks inherit it
    results = run_world(lambda comm: _swaps(comm, [express.HALF_BYTES, express.HALF_BYTES + 7], rounds=2), 2, "shm",
                        timeout=60)
    assert all(ok for ok, _ in results)
    halves = [h for _, h in results]
    assert halves[0] == halves[1] > 0, halves


@pytest.mark.usefixtures("patient_offers")
@pytest.mark.parametrize("how", ["apart", "one array", "mixed"])
@pytest.mark.parametrize("pure_python", [False, True], ids=["lane", "engine"])
def test_out_of_place_up_to_the_lanes_frame_each_rank_reads_half_and_writes_half(how: str, pure_python: bool) -> None:
    sizes = [express.HALF_BYTES_OUT_OF_PLACE, express.HALF_BYTES + 7, express.EXPRESS_BYTES]
    results = run_world(lambda comm: _swaps(comm, sizes, how, rounds=2), 2, "shm", timeout=60,
                        pure_python=pure_python)
    assert all(ok for ok, _ in results)
    halves = [h for _, h in results]
    assert halves[0] == halves[1] and (halves[0] > 0) is (not pure_python), halves


@pytest.mark.usefixtures("patient_offers")
def test_blocks_of_one_array_from_the_out_of_place_size_go_by_halves_odd_sizes_too() -> None:
    """hypercube_perf's exchange at 2 MiB: blocks of 1 MiB of one array (below, the push)."""
    sizes = [express.HALF_BYTES_OUT_OF_PLACE, express.HALF_BYTES_OUT_OF_PLACE + 7]
    results = run_world(lambda comm: (*_swaps(comm, sizes, "one array", rounds=2), comm._express.pushes), 2, "shm",
                        timeout=60)
    assert all(ok for ok, _, _ in results)
    assert results[0][1] == results[1][1] > 0, results
    assert [pushes for _, _, pushes in results] == [0, 0], results


@pytest.mark.usefixtures("patient_offers")
def test_out_of_place_a_half_larger_than_a_piece_goes_in_pieces_of_one_cross_memory_copy_and_a_tail() -> None:
    """hypercube_perf's 2-rank exchange from 16 MiB: each half spans pieces of PIECE_BYTES
    (not the bounce's), the last one a few bytes; every byte lands, both ranks by halves."""
    sizes = [2 * CMA_PIECE + 13, 2 * CMA_PIECE + 2 * PIECE + 1]
    results = run_world(lambda comm: _swaps(comm, sizes, "one array", rounds=2), 2, "shm", timeout=60)
    assert all(ok for ok, _ in results)
    assert results[0][1] == results[1][1] == 2 * len(sizes), results


@pytest.mark.usefixtures("patient_offers")
@pytest.mark.parametrize("how", ["in place", "one array"])
@pytest.mark.parametrize("pure_python", [False, True], ids=["lane", "engine"])
def test_where_no_larger_message_taught_single_copy_the_halves_sizes_ask_the_engine_then_go_by_halves(
        how: str, pure_python: bool) -> None:
    """No message beyond the halves' sizes first: the first calls go to the engine, whose RTS
    asks whether single copy works; the later ones by halves (the engine's in pure Python)."""
    sizes = [express.HALF_BYTES + 7]
    results = run_world(lambda comm: _swaps(comm, sizes, how, rounds=12, learn=False), 2, "shm", timeout=60,
                        pure_python=pure_python)
    assert all(ok for ok, _ in results)
    halves = [h for _, h in results]
    assert halves[0] == halves[1] and (halves[0] > 0) is (not pure_python), halves


@pytest.mark.usefixtures("patient_offers")
def test_beyond_the_lanes_frame_separate_arrays_go_by_the_whole_swap_blocks_of_one_array_by_halves() -> None:
    def both(comm: Any) -> Any:
        apart = _swaps(comm, [express.EXPRESS_BYTES + 64], "apart", rounds=2)
        return apart, _swaps(comm, [express.EXPRESS_BYTES + 64], "one array", rounds=2)[0], comm._express.halves

    results = run_world(both, 2, "shm", timeout=60)
    assert [apart for apart, _, _ in results] == [(True, 0), (True, 0)]
    assert all(ok for _, ok, _ in results) and results[0][2] == results[1][2] > 0, results


@pytest.mark.usefixtures("patient_offers")
def test_sizes_of_a_few_bytes_split_where_the_lower_half_is_empty_or_odd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(express, "HALF_BYTES", 1)  # (read where each forked rank makes its lane)
    results = run_world(lambda comm: _swaps(comm, [1, 63, 64, 129, 1000], rounds=2), 2, "shm", timeout=60)
    assert all(ok for ok, _ in results)
    assert results[0][1] > 0


def _in_place_against(comm: Any, peer_call: str) -> Any:
    """Rank 0 sendrecvs in place; rank 1 answers with ``peer_call``: a sendrecv out of place,
    or a send then a receive. Whether both got the other's message, and rank 0's halves."""
    n, peer = 2 << 20, 1 - comm.rank
    _learn(comm)
    mine, theirs = _message(n, comm.rank), _message(n, peer)
    if comm.rank == 0:
        comm.sendrecv(mine, 1, mine, 1)
        return bool(np.array_equal(mine, theirs)), comm._express.halves
    out = np.zeros(n, np.uint8)
    if peer_call == "sendrecv out of place":
        comm.sendrecv(mine, 0, out, 0)
    else:
        comm.send(mine, 0)
        comm.recv(out, 0)
    return bool(np.array_equal(out, theirs)), comm._express.halves


@pytest.mark.parametrize("peer_call", ["sendrecv out of place", "send then recv"])
def test_a_peer_in_another_call_leaves_the_offer_unaccepted_and_the_call_goes_as_before(peer_call: str) -> None:
    results = run_world(lambda comm: _in_place_against(comm, peer_call), 2, "shm", timeout=60)
    assert results == [(True, 0), (True, 0)]


def test_a_peer_late_past_the_offer_finds_it_withdrawn_and_the_call_goes_as_before() -> None:
    def body(comm: Any) -> Any:
        _learn(comm)
        x = _message(1 << 20, comm.rank)
        comm.barrier()
        if comm.rank == 1:
            time.sleep(0.05)
        comm.sendrecv(x, 1 - comm.rank, x, 1 - comm.rank)
        return bool(np.array_equal(x, _message(1 << 20, 1 - comm.rank))), comm._express.halves

    assert run_world(body, 2, "shm", timeout=60) == [(True, 0), (True, 0)]


def _killed_while_bound(folder: Any) -> Any:
    """Both ranks swap 64 MiB in place by halves; a thread of rank 0 kills rank 1 (SIGKILL)
    while rank 0 copies its half (the GIL released), so that rank 0's wait for the peer's half
    finds it gone. Rank 0 writes what it raised."""

    def body(comm: Any) -> Any:
        n, peer = 64 << 20, 1 - comm.rank
        pid = int(comm.all_gather(np.array([os.getpid()], np.int64))[1])
        _learn(comm)
        x = _message(n, comm.rank)
        comm.barrier()
        comm.sendrecv(x, peer, x, peer)  # (the pages of both buffers mapped)
        halves = comm._express.halves
        comm.barrier()
        if comm.rank == 0:
            threading.Timer(0.003, os.kill, (pid, signal.SIGKILL)).start()
        try:
            comm.sendrecv(x, peer, x, peer)
        except PeerLostError as exc:
            (folder / "rank0").write_text(json.dumps([type(exc).__name__, exc.peer, halves > 0]))
        return "raised"

    return body


def test_a_peer_killed_during_the_swap_by_halves_fails_it_with_peer_lost(tmp_path: Any) -> None:
    with pytest.raises(RankError) as info:
        run_world(_killed_while_bound(tmp_path), 2, "shm", timeout=60)
    assert info.value.rank == 1 and info.value.exitcode == -signal.SIGKILL
    assert json.loads((tmp_path / "rank0").read_text()) == ["PeerLostError", 1, True]


@pytest.mark.usefixtures("patient_offers")
def test_the_patient_offers_of_the_counting_tests_reach_the_forked_ranks_lanes() -> None:
    """(What the tests above that count the halves rely on: conftest.py's wait is the lanes'.)"""
    from collectives.transports.progress import YIELD_SECONDS

    assert express.YIELD_SECONDS > 10 * YIELD_SECONDS
    waits = run_world(lambda comm: comm._express.shift_yield_ns, 2, "shm", timeout=60)
    assert waits == [int(express.YIELD_SECONDS * 1e9)] * 2, waits
