"""The swap of a shift through the express lane (engines/_swap.h): a ``sendrecv`` to one rank and
from another waits ``shift_yield_ns`` for its peers before it hands the call to the engine
(``SHIFT_YIELD_SECONDS_CROWDED`` where ranks outnumber cores), a swap with one peer
``swap_yield_ns`` as before. A peer later than that wait still completes the call through the
engine's waits, and a peer that died still fails it there.

The first tests run the C part alone (test_express_swap.py's lanes to ranks 1 and 2, whose
peers never answer); the last run ranks."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import numpy as np
import pytest

from collectives.engines import express
from collectives.errors import PeerLostError
from collectives.testing import RankError, run_world
from collectives.transports.progress import YIELD_SECONDS
from test_express_swap import N, _Lanes, _message

SHIFT_NS = 100_000_000  # the lanes' shift wait here: far beyond a swap with one peer's (0)


def _waited(dst: int, src: int) -> tuple[float, Any]:
    lanes = _Lanes(loop=False, shift_yield_ns=SHIFT_NS)
    start = time.perf_counter()
    handed = lanes.sendrecv(_message(N, 1), np.zeros(N, np.uint8), dst=dst, src=src)
    return time.perf_counter() - start, handed


def test_a_shift_unanswered_waits_its_own_yield_before_handing_the_call_to_the_engine() -> None:
    waited, (request, received) = _waited(dst=1, src=2)
    assert waited >= SHIFT_NS / 1e9 and received is False and not request.done


def test_a_swap_with_one_peer_unanswered_keeps_the_swap_yield() -> None:
    waited, (request, received) = _waited(dst=1, src=1)
    assert waited < SHIFT_NS / 1e9 and received is False and not request.done


def test_the_shift_yield_defaults_to_the_swap_yield() -> None:
    lanes = _Lanes()
    assert lanes.express.shift_yield_ns == 0


def _built(comm: Any) -> int:
    return comm._express.shift_yield_ns


@pytest.mark.multiprocess
@pytest.mark.parametrize("cores", [1, 64], ids=["ranks outnumber cores", "a core each"])
def test_the_lane_yields_longer_for_a_shift_only_where_ranks_outnumber_cores(
        cores: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from collectives.transports import progress

    monkeypatch.setattr(progress, "usable_cpus", lambda: cores)  # the forked ranks inherit it
    seconds = express.SHIFT_YIELD_SECONDS_CROWDED if cores == 1 else YIELD_SECONDS
    assert run_world(_built, 3, "shm", timeout=60) == [int(seconds * 1e9)] * 3


SIZE = max(express.SWAP_BYTES_CROWDED, express.SWAP_BYTES_APART)


def _shift(comm: Any, i: int) -> bool:
    r, n = comm.rank, comm.size
    out = np.zeros(SIZE, np.uint8)
    comm.sendrecv(_message(SIZE, r + i), (r + 1) % n, out, (r - 1) % n)
    return bool(np.array_equal(out, _message(SIZE, (r - 1) % n + i)))


def _late_shift(comm: Any) -> Any:
    """Shifts that swap (the first teaches the channels single copy), then one where rank 2 comes
    later than the shift's wait (busy, as a rank out of its turn): whether every message arrived
    and the lane began the late call as a swap."""
    ok = [_shift(comm, i) for i in range(3)]
    swaps = comm._express.swaps
    if comm.rank == 2:
        until = time.perf_counter() + 20 * express.SHIFT_YIELD_SECONDS_CROWDED
        while time.perf_counter() < until:
            pass
    ok.append(_shift(comm, 3))
    return all(ok), comm._express.swaps > swaps


@pytest.mark.multiprocess
def test_a_peer_later_than_the_shifts_wait_still_completes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from collectives.transports import progress

    monkeypatch.setattr(progress, "usable_cpus", lambda: 1)
    assert run_world(_late_shift, 3, "shm", timeout=60) == [(True, True)] * 3


def _dead_shift(folder: Any) -> Any:
    """Shifts that swap, then rank 2 is killed (SIGKILL); rank 0, which receives from it, writes
    what its next shift raised."""

    def body(comm: Any) -> Any:
        for i in range(3):
            _shift(comm, i)
        comm.barrier()
        if comm.rank == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        try:
            _shift(comm, 3)
        except PeerLostError as exc:
            (folder / f"rank{comm.rank}").write_text(json.dumps([type(exc).__name__, exc.peer]))
        return "raised"

    return body


@pytest.mark.multiprocess
def test_a_dead_peer_still_fails_the_shift_with_peer_lost(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from collectives.transports import progress

    monkeypatch.setattr(progress, "usable_cpus", lambda: 1)
    with pytest.raises(RankError) as info:
        run_world(_dead_shift(tmp_path), 3, "shm", timeout=60)
    assert info.value.rank == 2 and info.value.exitcode == -signal.SIGKILL
    assert json.loads((tmp_path / "rank0").read_text()) == ["PeerLostError", 2]


# In place, a rank whose next rank last wrote from its CPU, and whose previous rank did not, offers
# ``x`` itself (no copy aside) and copies the previous rank's message over it once the next has
# taken it (_swap.h, sent_first()): ranks pinned two to a CPU, neighbours together, the first of
# each pair does; pinned apart, none does.

IN_PLACE = express.EXPRESS_BYTES  # by single copy in place, crowded or not


def _pinned_shifts(cpus: list[int], late: int | None = None) -> Any:
    """Every rank pinned to ``cpus[rank]``, then in-place shifts (the first ones teach the channels
    single copy and the lanes each peer's CPU); with ``late``, that rank comes to the last shift
    later than the shift's wait, busy on its CPU. Per rank: whether every message arrived, the
    shifts that offered ``x`` itself, and the calls the lane handed back having offered it."""

    def body(comm: Any) -> Any:
        os.sched_setaffinity(0, {cpus[comm.rank]})
        lane, offered = comm._express, []

        class Seen:
            def __getattr__(self, name: str) -> Any:
                return getattr(lane, name)

            def sendrecv(self, *args: Any) -> Any:
                moved = lane.sendrecv(*args)
                offered.append(isinstance(moved, tuple) and len(moved) == 3)
                return moved

        comm._express = Seen()
        r, n, ok = comm.rank, comm.size, []
        for i in range(8):
            if i == 7 and comm.rank == late:
                until = time.perf_counter() + 20 * express.SHIFT_YIELD_SECONDS_CROWDED
                while time.perf_counter() < until:
                    pass
            x = _message(IN_PLACE, r + i)
            comm.sendrecv(x, (r + 1) % n, x, (r - 1) % n)
            ok.append(bool(np.array_equal(x, _message(IN_PLACE, (r - 1) % n + i))))
        return all(ok), lane.unset_aside, sum(offered)

    return body


def _two_cpus() -> list[int]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs to pin ranks to")
    return cpus[:2]


@pytest.mark.multiprocess
def test_in_place_shifts_offer_x_itself_where_the_next_rank_shares_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from collectives.transports import progress

    monkeypatch.setattr(progress, "usable_cpus", lambda: 2)
    a, b = _two_cpus()
    got = run_world(_pinned_shifts([a, a, b, b]), 4, "shm", timeout=60)
    assert [ok for ok, _, _ in got] == [True] * 4
    assert [unset >= 5 for _, unset, _ in got] == [True, False, True, False]  # (the first calls learn the CPUs)
    assert [unset for _, unset, _ in got][1::2] == [0, 0]
    got = run_world(_pinned_shifts([a, b, a, b]), 4, "shm", timeout=60)
    assert got == [(True, 0, 0)] * 4


@pytest.mark.multiprocess
def test_a_shift_that_offered_x_itself_completes_in_the_engine_when_its_next_rank_is_late(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank 0 offers its ``x`` and its next rank, 1, comes later than the wait: the engine takes
    the call, receiving apart from ``x`` until rank 1 has read it."""
    from collectives.transports import progress

    monkeypatch.setattr(progress, "usable_cpus", lambda: 2)
    a, b = _two_cpus()
    got = run_world(_pinned_shifts([a, a, b, b], late=1), 4, "shm", timeout=60)
    assert [ok for ok, _, _ in got] == [True] * 4
    assert got[0][2] >= 1  # rank 0's late call handed back having offered x
