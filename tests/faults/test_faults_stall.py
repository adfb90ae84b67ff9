"""Stall warnings (reliability.md acceptance case 13): a collective that waits longer than
``stall_warning`` seconds logs a warning naming the ranks missing from it, before the hard
timeout, and the collective still completes when they arrive. Over shared memory and TCP,
in worlds of 2 and 4."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import pytest

from collectives.config import Config
from collectives.errors import InvalidArgumentError
from collectives.testing import run_world
from fault_worlds import figure

STALL = 0.5
WARN_BY = 2.0
"""Seconds into the stalled call by which the warning must have come: the stall period,
the inspector's period and its question to the peers, with room for a loaded machine."""
PATIENCE = 30.0
"""Seconds the late rank stays away at most, waiting for the others' warnings: reached only
when a warning never comes."""
WORLDS = [("shm", 2), ("shm", 4), ("tcp", 2), ("tcp", 4)]


class _Kept(logging.Handler):
    """Keeps the warnings logged, with when; calls ``at_first`` (if given) at the first."""

    def __init__(self, at_first: Callable[[], None] | None = None) -> None:
        super().__init__(logging.WARNING)
        self.kept: list[tuple[float, str]] = []
        self.at_first = at_first

    def emit(self, record: logging.LogRecord) -> None:
        self.kept.append((time.monotonic(), record.getMessage()))
        if self.at_first is not None and len(self.kept) == 1:
            self.at_first()


@pytest.mark.multiprocess
@pytest.mark.parametrize(("transport", "size"), WORLDS)
def test_a_stalled_collective_warns_naming_the_missing_rank_before_the_timeout(transport, size, arrivals):
    late = size - 1

    def fn(comm):
        kept = _Kept(arrivals.arrive)
        logging.getLogger("collectives").addHandler(kept)
        x = np.ones(1000)
        comm.all_reduce(x)  # #1, everyone there
        if comm.rank == late:  # stays away until every other rank has warned (PATIENCE at most)
            arrivals.wait(size - 1, PATIENCE)
        began = time.monotonic()
        comm.all_reduce(x)  # #2: waits for the late rank, then completes
        ended = time.monotonic()
        return [(at - began, text) for at, text in kept.kept], ended - began, x[0]

    results = run_world(fn, size, transport, timeout=60, stall_warning=STALL)
    waited = []
    for rank, (warnings, took, value) in enumerate(results):
        assert value == size ** 2  # it completed, with the right sum
        if rank == late:
            assert warnings == [], warnings  # it was not waiting: nothing to say
            continue
        assert warnings, f"rank {rank} waited {took:.2f} s without a warning"
        at, text = warnings[0]
        assert "all_reduce #2 has waited" in text and f"missing rank(s): {late} (" in text, text
        assert STALL <= at < min(took, WARN_BY), (at, took, text)  # after the stall period, before it completed
        waited.append(at)
    figure(f"stall warning {transport} n={size} (stall_warning {STALL} s)", waited)


def test_the_stall_warning_is_read_from_the_environment_and_checked():
    assert Config.from_env({"COLLECTIVES_STALL_WARNING": "30"}).stall_warning == 30.0
    assert Config.from_env({"COLLECTIVES_STALL_WARNING": "0"}).stall_warning == 0.0
    assert Config.from_env({}).stall_warning is None  # half the timeout, at most 60 s
    with pytest.raises(InvalidArgumentError, match="COLLECTIVES_STALL_WARNING"):
        Config.from_env({"COLLECTIVES_STALL_WARNING": "soon"})
    with pytest.raises(InvalidArgumentError, match="COLLECTIVES_STALL_WARNING"):
        Config.from_env({"COLLECTIVES_STALL_WARNING": "-1"})


@pytest.mark.multiprocess
def test_no_warning_when_turned_off_or_when_nothing_stalls():
    def fn(comm):
        kept = _Kept()
        logging.getLogger("collectives").addHandler(kept)
        if comm.rank == 1:
            time.sleep(1.0)
        comm.all_reduce(np.ones(10))
        return [text for _, text in kept.kept]

    assert run_world(fn, 2, "shm", timeout=60, stall_warning=0) == [[], []]
