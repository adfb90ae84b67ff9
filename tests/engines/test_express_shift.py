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
