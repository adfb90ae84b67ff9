"""steps.py: the one rule for the pipelining step of a scheduled call, which the plans build the
schedules with and the tuner prices them with. 1 MiB everywhere, except a 2-rank TCP all-reduce
from TCP_LARGE_FROM_BYTES on, which steps in TCP_LARGE_STEP_BYTES."""

from __future__ import annotations

import pytest

from collectives.steps import (
    LARGER_STEP_RANKS,
    LARGER_STEPS,
    STEP_BYTES,
    TCP_LARGE_FROM_BYTES,
    TCP_LARGE_STEP_BYTES,
    step_bytes,
)

MIB = 1 << 20


def test_a_tcp_all_reduce_steps_larger_from_the_threshold_on() -> None:
    assert step_bytes("tcp", "all_reduce", TCP_LARGE_FROM_BYTES - 1, 2) == STEP_BYTES
    assert step_bytes("tcp", "all_reduce", TCP_LARGE_FROM_BYTES, 2) == TCP_LARGE_STEP_BYTES
    assert step_bytes("tcp", "all_reduce", 4 * TCP_LARGE_FROM_BYTES, 2) == TCP_LARGE_STEP_BYTES
    assert LARGER_STEPS["tcp"] == (TCP_LARGE_FROM_BYTES, TCP_LARGE_STEP_BYTES)
    assert TCP_LARGE_STEP_BYTES > STEP_BYTES


@pytest.mark.parametrize("collective", ["reduce_scatter", "all_gather", "broadcast", "reduce", "all_to_all"])
def test_the_other_collectives_keep_the_usual_step_at_every_size(collective: str) -> None:
    assert step_bytes("tcp", collective, 4 * TCP_LARGE_FROM_BYTES, 2) == STEP_BYTES


@pytest.mark.parametrize("transport", ["shm", "mpi", "cuda_ipc"])
def test_a_transport_that_names_no_larger_step_keeps_the_usual_one(transport: str) -> None:
    assert step_bytes(transport, "all_reduce", 4 * TCP_LARGE_FROM_BYTES, 2) == STEP_BYTES


def test_the_profiles_between_hosts_entry_steps_as_its_transport() -> None:
    assert step_bytes("tcp_hosts", "all_reduce", TCP_LARGE_FROM_BYTES, 2) == TCP_LARGE_STEP_BYTES
    assert step_bytes("shm_hosts", "all_reduce", TCP_LARGE_FROM_BYTES, 2) == STEP_BYTES


def test_the_usual_step_is_one_mib() -> None:
    assert STEP_BYTES == MIB


@pytest.mark.parametrize("ranks", [3, 4, 8])
def test_larger_worlds_keep_the_usual_step(ranks: int) -> None:
    assert LARGER_STEP_RANKS == 2
    assert step_bytes("tcp", "all_reduce", 4 * TCP_LARGE_FROM_BYTES, ranks) == STEP_BYTES
