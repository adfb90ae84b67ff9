"""A rank that skips a collective (reliability.md acceptance case 3), over shared memory and
TCP in worlds of 2 and 4: the others' timeout says which rank it was, which operation it
completed last and which it never joined ("rank 3 completed #41, never joined
all_reduce #42"), and lists only that rank; the skipping rank, when it calls again, is told
its peers gave up on it.

Without COLLECTIVES_CHECK a skip is seen only where the calls stop lining up: when the
skipped call's messages match the next call's in size, the ranks pair the wrong calls
(wrong results, no error) until the skipping rank runs out of calls, and the error names
that last operation (test below; docs/reliability.md says so).
"""

from __future__ import annotations


import numpy as np
import pytest

import collectives
from collectives.testing import run_world

pytestmark = pytest.mark.multiprocess

TIMEOUT = 0.6
WORLDS = [("shm", 2), ("shm", 4), ("tcp", 2), ("tcp", 4)]
PATIENCE = 30.0
"""Seconds a rank waits for the others to have raised: reached only when they never do."""


@pytest.mark.parametrize(("transport", "size"), WORLDS)
def test_a_rank_that_skips_a_collective_is_named_with_its_last_completed_one(transport, size, arrivals):
    skipper = size - 1
    others = [r for r in range(size) if r != skipper]

    def fn(comm):
        x = np.ones(8)
        for _ in range(41):
            comm.all_reduce(x)
        comm.timeout = TIMEOUT
        if comm.rank == skipper:
            arrivals.wait(len(others), PATIENCE)  # skips #42 until the others have timed out
            try:
                comm.barrier()  # its #42: the others have given up
            except collectives.CollectivesError as exc:
                return type(exc).__name__, str(exc), None
            return "completed", "", None
        try:
            comm.all_reduce(x)
        except collectives.CollectiveTimeoutError as exc:
            return type(exc).__name__, str(exc), (exc.collective, exc.seq, exc.absent)
        finally:
            arrivals.arrive()
        return "completed", "", None

    results = run_world(fn, size, transport, timeout=60)
    for rank, (kind, message, facts) in enumerate(results[:skipper]):
        assert kind == "CollectiveTimeoutError", (rank, message)
        assert facts == ("all_reduce", 42, [skipper]), (rank, message)
        assert f"rank {skipper} completed #41, never joined all_reduce #42" in message, (rank, message)
        assert not any(f"rank {r} completed" in message or f"rank {r} never" in message for r in others), message
    kind, message, _ = results[skipper]
    assert kind == "CollectiveTimeoutError", message  # the same story, told to the rank it is about
    assert f"rank {skipper} completed #41, never joined all_reduce #42" in message, message
    assert "this rank is the one its peers gave up on" in message, message


def test_a_skip_hidden_by_matching_sizes_is_named_where_the_calls_stop_lining_up(arrivals):
    """Rank 3 skips call 42 of 50, all of one size: calls 42-49 pair rank 3's call k+1
    with the others' call k (wrong sums for the others, no error: COLLECTIVES_CHECK is
    what catches it there), and the others' call 50, which rank 3 never makes, names it."""

    def fn(comm):
        wrong = 0
        try:
            for call in range(1, 51):
                if comm.rank == 3 and call == 42:
                    continue
                x = np.full(4, float(call))
                comm.all_reduce(x)
                wrong += int(x[0] != 4.0 * call)
                if call == 49:
                    comm.timeout = TIMEOUT
        except collectives.CollectiveTimeoutError as exc:
            arrivals.arrive()
            return wrong, str(exc)
        arrivals.wait(3, PATIENCE)  # rank 3: done after its 49th call; the others wait for #50
        return wrong, "completed"

    results = run_world(fn, 4, "shm", timeout=60)
    assert results[3] == (8, "completed")  # its calls 43-50 met the others' 42-49: wrong sums, no error
    for wrong, message in results[:3]:
        assert wrong == 8  # calls 42-49
        assert "rank 3 completed #49, never joined all_reduce #50" in message, message
