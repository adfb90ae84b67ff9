"""perf.kept: inside ``keep_worlds()`` a run takes the coordinator (and so the worlds) of
the run before with the same ``--np`` and ``-T``; a run that did not complete, or one
outside the block, stops its worlds. (The worlds themselves: test_perf_runs.py, whose
programs run on kept worlds and check that their pids repeat.)"""

from __future__ import annotations

from collectives.spawn import Job
from perf import kept
from perf.coordinator import Coordinator, RemoteWorld


def test_outside_the_block_every_run_has_its_own_coordinator_and_stops_it() -> None:
    a, b = kept.coordinator(2, None), kept.coordinator(2, None)
    assert a is not b
    for coord in (a, b):
        kept.release(coord, graceful=True, completed=True)
        assert coord.listener.fileno() == -1  # closed


def test_inside_the_block_runs_alike_share_one_coordinator_until_the_block_ends() -> None:
    with kept.keep_worlds():
        first = kept.coordinator(3, None)
        kept.release(first, graceful=True, completed=True)
        assert first.listener.fileno() != -1, "a completed run's coordinator must stay"
        assert kept.coordinator(3, None) is first
        other_np, other_timeout = kept.coordinator(2, None), kept.coordinator(3, 5.0)
        assert len({id(first), id(other_np), id(other_timeout)}) == 3
    assert all(c.listener.fileno() == -1 for c in (first, other_np, other_timeout)), "the block's end stops them"
    assert kept.coordinator(3, None) is not first


def test_a_run_that_did_not_complete_stops_its_worlds_even_inside_the_block() -> None:
    with kept.keep_worlds():
        for graceful, completed in ((True, False), (False, True)):
            coord = kept.coordinator(2, None)
            kept.release(coord, graceful=graceful, completed=completed)
            assert coord.listener.fileno() == -1
            assert kept.coordinator(2, None) is not coord


def _ready_world(coord: Coordinator, name: str, started_as: tuple[object, ...]) -> RemoteWorld:
    """A world of no processes that said every hello (what a started, well world looks like)."""
    world = RemoteWorld(name, coord.nranks, Job(store=False))
    world.started_as = started_as
    world.hellos = {r: {} for r in range(coord.nranks)}
    coord.worlds.append(world)
    return world


def test_a_kept_world_is_reused_only_when_started_alike_and_well() -> None:
    coord = Coordinator(2)
    try:
        gloo = _ready_world(coord, "gloo", ("gloo", None))
        assert coord._kept("gloo", ("gloo", None)) is gloo
        assert coord._kept("gloo", ("gloo", 5.0)) is None, "another -T: a new world"
        assert gloo not in coord.worlds
        mpi = _ready_world(coord, "mpi", ("mpi",))
        ours = _ready_world(coord, "collectives", ("collectives", "shm", None, None))
        mpi.failed = "rank 1 exited"
        coord.drop_failed()
        assert coord.worlds == [ours]
        assert coord._kept("mpi", ("mpi",)) is None
    finally:
        coord.close()
