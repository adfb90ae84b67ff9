"""perf/sendrecv_split.py: a 2-rank sendrecv against a copy and a cross-memory read of its size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CALLS = 20 + 3  # the untimed calls, then one batch
RUNS = 3
"""The lane binds a call by halves only where the peer comes within its wait (200 µs); on a machine
slowed by work outside the test every call of a run can miss it (each byte still right). The counts
of each run are checked; that the halves were taken, over up to this many runs."""


def _moved() -> dict[tuple[str, str], tuple[int, int, int]]:
    """One run at 64 KiB and 2 MiB: (swaps, halves, ring) by (size, case), its rows checked."""
    done = subprocess.run([sys.executable, "perf/sendrecv_split.py", "--bytes", "64K", "2M", "--calls", "3",
                           "--batches", "1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert [(r[0], r[1]) for r in rows] == [(size, case) for size in ("64K", "2M")
                                            for case in ("out", "in", "shared", "entry", "memcpy", "readv")]
    assert all(float(r[2]) > 0 for r in rows)
    moved = {(r[0], r[1]): (int(r[5]), int(r[7]), int(r[9])) for r in rows}
    assert moved["64K", "in"] == (0, 0, CALLS)  # in place below the halves: the ring
    # Out of place from PUSH_BYTES: pushed (counted with the halves) where the peer comes in time,
    # else through the ring; a call while single copy is not yet known goes to the engine.
    for case in ("out", "shared"):
        swaps, halves, ring = moved["64K", case]
        assert swaps == 0 and CALLS - 1 <= halves + ring <= CALLS, (case, swaps, halves, ring)
    for case in ("out", "in", "shared"):  # (the first large call of all teaches the channels single copy)
        swaps, halves, ring = moved["2M", case]
        assert CALLS - 1 <= swaps + halves <= CALLS and ring == 0, (case, swaps, halves, ring)
    # separate arrays beyond the lane's frame, the whole swap
    assert moved["2M", "out"][1] == 0, moved["2M", "out"]
    assert moved["64K", "memcpy"] == moved["2M", "readv"] == (0, 0, 0)
    return moved


@pytest.mark.multiprocess
def test_each_case_prints_its_time_and_which_way_the_lane_moved_the_calls() -> None:
    # pushed below the halves' size out of place; in place and blocks of one array by halves at 2 MiB
    # (where the peer comes in time: else the copy aside and the swap, or the ring)
    bound = [("64K", "out"), ("64K", "shared"), ("2M", "in"), ("2M", "shared")]
    for _ in range(RUNS):
        moved = _moved()
        if all(moved[cell][1] > 0 for cell in bound):
            break
    assert all(moved[cell][1] > 0 for cell in bound), moved


@pytest.mark.multiprocess
def test_the_mixed_pairs_cases_print_both_ranks_each_call_through_the_ring_or_taken_whole() -> None:
    """``--cases in/out out/in --both``: rank 0 in place against rank 1 out of place and the other
    way round, a line a rank; at 64 KiB every call of both goes through the ring or is taken whole
    by the in-place rank (none swapped, by halves or pushed: the offer is declined, taken or not
    made), taken whole alike on both ranks."""
    done = subprocess.run([sys.executable, "perf/sendrecv_split.py", "--bytes", "64K", "--calls", "3", "--batches",
                           "1", "--cases", "in/out", "out/in", "--both"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert [(r[1], r[2]) for r in rows] == [(case, rank) for case in ("in/out", "out/in") for rank in ("r0", "r1")]
    assert all(float(r[3]) > 0 for r in rows)
    for r in rows:
        swaps, halves, ring, whole = (int(r[i]) for i in (6, 8, 10, 12))
        in_place = r[2] == ("r0" if r[1] == "in/out" else "r1")
        # (the out-of-place rank's calls while single copy is not yet known go to the engine: up to
        # HALF_ASKS, 8, engines/_half_swap.h; the in-place rank's frame goes through the ring then too)
        assert swaps == halves == 0 and (ring + whole == CALLS if in_place else CALLS - 8 <= ring + whole <= CALLS), r
    assert rows[0][12] == rows[1][12] and rows[2][12] == rows[3][12], rows  # (taken whole: both ranks count it)
