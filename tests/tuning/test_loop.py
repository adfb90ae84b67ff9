"""A loop of short one-way calls is priced as the cores' work: per rank a cost per step, per
message sent and per message received (and its side of the bytes, its folds), per call the
busiest rank's work, or all of it over the cores where ranks outnumber them; no α per hop and
no wakes, since a root that runs ahead leaves every receiver its messages queued. Only where a
link has the loop's costs, on one host, for calls whose messages flow one way and whose
batch fits the ring; everything else is replayed as before."""

from __future__ import annotations

import pytest

from collectives.algorithms.schedule import Recv, Send
from collectives.config import Config
from collectives.timing import calls_for
from collectives.tuning import loop, tuner
from collectives.tuning.machine import LinkClass, Machine

US = 1e-6


def link(step: float = 2 * US, send: float = 3 * US, recv: float = 5 * US, beta: float = 0.0) -> LinkClass:
    return LinkClass("shm", 10 * US, beta, 0.5, wake=1 * US, crowd_wake=8 * US, loop_step=step, loop_send=send,
                     loop_recv=recv)


def test_a_ranks_work_is_its_steps_its_messages_its_side_of_the_bytes_and_its_folds() -> None:
    steps = [(Recv(0, 0, 100, reduce=True),), (Send(2, 0, 100), Send(3, 0, 100))]
    work = loop.rank_work(steps, link(beta=1e-9), gamma=2e-9, itemsize=4)
    # two steps, one receive (half of 400 B at 1 ns/B, 400 B folded at 2 ns/B), two sends (half each)
    assert work == pytest.approx(2 * 2 * US + 5 * US + 200e-9 + 800e-9 + 2 * (3 * US + 200e-9))


def test_where_each_rank_has_a_core_a_call_costs_the_busiest_ranks_work() -> None:
    steps = [list(s) for s in tuner.schedules("broadcast", "ring", 8, 3)]  # the chain 0 -> 1 -> 2
    machine = Machine(3, 3, link())
    assert loop.loop_time(steps, machine, 4) == pytest.approx(2 * 2 * US + 3 * US + 5 * US)  # rank 1 forwards


def test_where_ranks_outnumber_the_cores_a_call_costs_all_their_work_over_the_cores() -> None:
    steps = [list(s) for s in tuner.schedules("broadcast", "tree", 8, 8)]
    machine = Machine(8, 8, link(), cores=2)
    # 11 steps (the root's one, three forwarding ranks' two, four leaves' one), 7 sends, 7 receives
    assert loop.loop_time(steps, machine, 4) == pytest.approx((11 * 2 + 7 * 3 + 7 * 5) * US / 2)


def test_the_tuner_prices_a_short_one_way_call_on_a_looping_link_as_the_loop() -> None:
    make = lambda: Machine(8, 8, link(), cores=2)  # noqa: E731
    assert tuner.replay_time("broadcast", "tree", 8, make, calls=2) == pytest.approx(39 * US)


def test_without_the_loops_costs_the_call_is_replayed_with_its_hops_and_wakes() -> None:
    make = lambda: Machine(8, 8, link(0.0, 0.0, 0.0), cores=2)  # noqa: E731
    assert tuner.replay_time("broadcast", "tree", 8, make, calls=2) > 60 * US


def test_a_call_whose_messages_come_back_round_is_replayed() -> None:
    looping = tuner.replay_time("all_reduce", "ring", 8, lambda: Machine(4, 4, link(), cores=2), calls=2)
    plain = tuner.replay_time("all_reduce", "ring", 8, lambda: Machine(4, 4, link(0.0, 0.0, 0.0), cores=2), calls=2)
    assert looping == pytest.approx(plain)


def test_a_call_whose_batch_outgrows_the_ring_is_replayed() -> None:
    nbytes = 2 * loop.RING_BYTES // loop.BATCH_CALLS
    assert not loop.runs_ahead(nbytes)
    assert loop.runs_ahead(64 << 10)
    looping = tuner.replay_time("broadcast", "tree", nbytes, lambda: Machine(4, 4, link(), cores=2), calls=2)
    plain = tuner.replay_time("broadcast", "tree", nbytes, lambda: Machine(4, 4, link(0.0, 0.0, 0.0), cores=2),
                              calls=2)
    assert looping == pytest.approx(plain)


def test_several_hosts_are_replayed() -> None:
    looping = tuner.replay_time("broadcast", "tree", 8, lambda: Machine(4, 2, link(), cores=2), calls=2)
    plain = tuner.replay_time("broadcast", "tree", 8, lambda: Machine(4, 2, link(0.0, 0.0, 0.0), cores=2), calls=2)
    assert looping == pytest.approx(plain)


def test_the_batch_and_the_ring_are_the_harness_and_the_transport_ones() -> None:
    """The model may not import the transports or the harness; the names are tied here."""
    assert loop.BATCH_CALLS == calls_for(8) == calls_for(64 << 10)
    assert loop.RING_BYTES == Config().shm_ring_bytes
