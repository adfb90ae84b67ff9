"""Broadcast into ``out`` through the direct engine's large route (``windowed.WindowBroadcast``):
every rank's ``out`` gets the root's ``x``, every ``x`` stays as it was. On the fast path the
plan gets ``out`` as it is (its ``folds_into_out``): through the halves the root posts every
piece from its ``x`` first and fills its own ``out`` after, so the others copy out meanwhile
instead of waiting for that copy; by reads (and on a shape's first call, whose full path fills
``out`` first) the root fills ``out`` and broadcasts from it, as before."""

from __future__ import annotations

import numpy as np
import pytest

from collectives.algorithms import direct_routes
from collectives.engines import small, small_native
from collectives.testing import run_world
from collectives.transports import progress

pytestmark = pytest.mark.multiprocess

PIECE = 64 << 10  # the halves' broadcasts shrunk: whole up to here, piece by piece beyond
SIZES = (small.PIPELINED_BROADCAST_BYTES + 8, 5 * PIECE + 24)  # bytes, beyond the slots: 5 and 6 pieces


def _into_out(comm):
    """Broadcasts of every size from every root into ``out``, twice a shape (the second call
    takes the fast path). Per call: the rank's ``out``, whether its ``x`` stayed, and on the root
    whether its ``out`` was still unfilled when each piece was posted."""
    posted: list[bool] = []
    current: list[np.ndarray] = []
    whole = small.BroadcastPlan.__call__

    def spy(self, x, root, serial, deadline, on_timeout):
        s = whole(self, x, root, serial, deadline, on_timeout)
        if comm.rank == root:
            posted.append(bool(np.isnan(current[0]).all()))
        return s

    small.BroadcastPlan.__call__ = spy
    got = []
    for nbytes in SIZES:
        for root in range(comm.size):
            for _ in range(2):
                x = np.arange(nbytes // 8, dtype=np.float64) + 10 * root if comm.rank == root else \
                    np.full(nbytes // 8, -1.0)
                kept = x.copy()
                out = np.full_like(x, np.nan)
                current[:] = [out]
                del posted[:]
                assert comm.broadcast(x, root, out=out, algorithm="direct") is out
                got.append((out, bool((x == kept).all()), list(posted)))
    return got


def _want(nbytes: int, root: int) -> np.ndarray:
    return np.arange(nbytes // 8, dtype=np.float64) + 10 * root


@pytest.mark.parametrize("pure_python", [False, True], ids=["c", "python"])
def test_a_broadcast_through_the_halves_fills_the_roots_out_after_its_pieces(pure_python, monkeypatch):
    if pure_python:
        monkeypatch.setenv(small_native.PURE_PYTHON_ENV, "1")
    else:
        monkeypatch.delenv(small_native.PURE_PYTHON_ENV, raising=False)
    monkeypatch.setattr(small, "BROADCAST_BYTES", PIECE)
    monkeypatch.setattr(progress, "usable_cpus", lambda: 2)  # 4 ranks outnumber the cores: piece by piece
    results = run_world(_into_out, 4, "shm", timeout=120)
    i = 0
    for nbytes in SIZES:
        pieces = -(-nbytes // PIECE)
        for root in range(4):
            for call in range(2):
                for r in range(4):
                    out, x_kept, posted = results[r][i]
                    assert x_kept, f"rank {r}'s x changed ({nbytes} B, root {root})"
                    assert np.array_equal(out, _want(nbytes, root)), f"rank {r}, {nbytes} B, root {root}"
                    if r == root:  # first call: filled by the full path first; then after every piece
                        assert posted == [call == 1] * pieces, (nbytes, root, call, posted)
                i += 1


def test_a_broadcast_by_reads_into_out_fills_the_roots_out_first(monkeypatch):
    monkeypatch.setattr(small, "BROADCAST_BYTES", PIECE)
    monkeypatch.setattr(direct_routes, "BROADCAST_HALVES_CROWDED_BYTES", 0)  # by reads even where ranks outnumber cores
    monkeypatch.setattr(progress, "usable_cpus", lambda: 2)
    results = run_world(_into_out, 3, "shm", timeout=120)
    i = 0
    for nbytes in SIZES:
        for root in range(3):
            for _ in range(2):
                for r in range(3):
                    out, x_kept, posted = results[r][i]
                    assert x_kept and np.array_equal(out, _want(nbytes, root)), (r, nbytes, root)
                    assert posted == []  # nothing through the halves
                i += 1
