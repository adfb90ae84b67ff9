"""The crowd of a wake in a call whose messages flow one way: a rank resuming after a wait
queues behind the ranks then waiting on its cores, not behind every rank of the host (tcp),
since in a loop of such calls the ranks upstream run ahead instead of waiting beside it;
where messages come back round (rings, exchanges) the crowd stays the host's ranks per core."""

from __future__ import annotations

import pytest

from collectives.tuning import tuner
from collectives.tuning.events import flows_one_way
from collectives.tuning.machine import LinkClass, Machine, crowd_of_waiters

ALPHA = 10e-6
WAKE = 5e-6
CROWD = 2e-6


def steps(collective: str, algorithm: str, size: int = 4) -> list[list]:
    return [list(s) for s in tuner.schedules(collective, algorithm, 64, size)]


@pytest.mark.parametrize("collective,algorithm", [("broadcast", "tree"), ("broadcast", "ring"),
                                                  ("reduce", "tree"), ("scatter", "tree"), ("gather", "tree")])
def test_trees_and_chains_of_rooted_calls_flow_one_way(collective: str, algorithm: str) -> None:
    assert flows_one_way(steps(collective, algorithm))


@pytest.mark.parametrize("collective,algorithm", [("all_reduce", "ring"), ("all_reduce", "tree"),
                                                  ("all_gather", "ring"), ("all_gather", "recursive"),
                                                  ("broadcast", "recursive")])
def test_calls_whose_messages_come_back_round_do_not(collective: str, algorithm: str) -> None:
    assert not flows_one_way(steps(collective, algorithm))


def machine(waiters: bool, cores: int = 2) -> Machine:
    return Machine(3, 3, LinkClass("x", ALPHA, 0.0, 0.5, wake=WAKE, crowd_wake=CROWD), cores=cores,
                   crowd_of_waiters=waiters)


def test_a_chain_counts_the_ranks_blocked_when_each_hop_resumes() -> None:
    """Three ranks on two cores, a chain of two hops, one call: when each receiver's message is
    sent, no other rank of the chain is blocked for a message not yet sent (the last rank's
    wait begins after the first hop is priced, in the replay's order), so each resumes alone,
    0.5 per core; counted by the host's ranks, both hops pay 1.5 per core."""
    assert tuner.replay_time("broadcast", "ring", 8, lambda: machine(False)) == pytest.approx(
        2 * ALPHA + 2 * (WAKE + 1.5 * CROWD))
    assert tuner.replay_time("broadcast", "ring", 8, lambda: machine(True)) == pytest.approx(
        2 * ALPHA + 2 * (WAKE + 0.5 * CROWD))


def test_a_tree_of_eight_pays_less_than_the_hosts_crowd_and_more_than_none() -> None:
    """Eight ranks on two cores, two calls of a tree broadcast: several leaves wait at once, so
    the crowd counted lies between one rank per wake and the host's four per core."""
    def make(waiters: bool, crowd: float) -> Machine:
        return Machine(8, 8, LinkClass("x", ALPHA, 0.0, 0.5, wake=WAKE, crowd_wake=crowd), cores=2,
                       crowd_of_waiters=waiters)

    counted = tuner.replay_time("broadcast", "tree", 8, lambda: make(True, CROWD), 2)
    assert tuner.replay_time("broadcast", "tree", 8, lambda: make(True, 0.0), 2) < counted
    assert counted < tuner.replay_time("broadcast", "tree", 8, lambda: make(False, CROWD), 2)


def test_a_ring_all_gather_is_priced_as_before() -> None:
    for calls in (1, 2):
        assert tuner.replay_time("all_gather", "ring", 64, lambda: machine(True), calls) == pytest.approx(
            tuner.replay_time("all_gather", "ring", 64, lambda: machine(False), calls))


def test_with_a_core_each_nobody_pays_a_wake_either_way() -> None:
    assert tuner.replay_time("broadcast", "ring", 8, lambda: machine(True, cores=0)) == pytest.approx(2 * ALPHA)


def test_tcp_counts_the_waiting_ranks_and_shared_memory_does_not() -> None:
    assert crowd_of_waiters("tcp") and crowd_of_waiters("tcp_hosts")
    assert not crowd_of_waiters("shm")
