"""A one-way message split LogP-style: the sender is busy ``send_overhead`` of α (its side of
the transport's send path), the receiver ``recv_overhead`` after the message
is there, and the rest is latency. Only a step that receives nothing goes on early; steps
that also receive, and profiles without the fields (0), price α whole as before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collectives.tuning import tuner
from collectives.tuning import profile as profiles
from collectives.tuning.machine import LinkClass, Machine

ALPHA = 10e-6


def link(send: float = 0.0, recv: float = 0.0) -> LinkClass:
    return LinkClass("x", ALPHA, 0.0, 0.5, send_overhead=send, recv_overhead=recv)


def test_a_one_way_sender_is_free_after_its_overhead_and_the_message_still_takes_alpha() -> None:
    machine = Machine(2, 2, link(send=3e-6, recv=1e-6))
    free, arrival, receive = machine.message(0, 1, 8, 0.0, one_way=True)
    assert free == pytest.approx(3e-6)
    assert arrival == pytest.approx(ALPHA)
    assert receive == pytest.approx(1e-6)


def test_a_sender_that_also_receives_in_the_step_pays_alpha_whole() -> None:
    machine = Machine(2, 2, link(send=3e-6, recv=1e-6))
    assert machine.message(0, 1, 8, 0.0) == pytest.approx((ALPHA, ALPHA, 0.0))


def test_without_the_split_every_sender_is_busy_alpha() -> None:
    machine = Machine(2, 2, link())
    assert machine.message(0, 1, 8, 0.0, one_way=True) == pytest.approx((ALPHA, ALPHA, 0.0))


def test_the_receive_overhead_never_exceeds_what_the_sender_leaves_of_alpha() -> None:
    machine = Machine(2, 2, link(send=8e-6, recv=5e-6))
    assert machine.message(0, 1, 8, 0.0, one_way=True)[2] == pytest.approx(2e-6)


def test_a_tree_root_hands_its_second_message_over_after_the_first_ones_overhead() -> None:
    """Three ranks, 8 B: the tree's root sends to both leaves in one step. Whole α, the second
    leaf has its message at 2α; split, at the overhead plus α: the tree gains on the chain,
    which still waits α at every hop."""
    def priced(send: float) -> dict[str, float]:
        return {a: tuner.replay_time("broadcast", a, 8, lambda: Machine(3, 3, link(send=send)))
                for a in ("tree", "ring")}

    whole, split = priced(0.0), priced(3e-6)
    assert whole["tree"] == pytest.approx(2 * ALPHA)
    assert split["tree"] == pytest.approx(3e-6 + ALPHA)
    assert split["ring"] == pytest.approx(2 * ALPHA)
    assert split["tree"] < split["ring"]


def test_an_exchange_is_priced_the_same_with_or_without_the_split() -> None:
    def make(send: float) -> Machine:
        return Machine(4, 4, link(send=send, recv=1e-6))

    assert tuner.replay_time("all_gather", "recursive", 8, lambda: make(3e-6)) == pytest.approx(
        tuner.replay_time("all_gather", "recursive", 8, lambda: make(0.0)))


def test_a_profile_without_the_overheads_loads_with_them_zero(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"transports": {"tcp": {"overhead": 0, "alpha": 1e-5, "beta": 1e-10,
                                                       "gamma": 1e-11}}}))
    costs = profiles.load(path).costs("tcp")
    assert (costs.send_overhead, costs.recv_overhead) == (0.0, 0.0)
