"""The plan context a communicator is built with: what it learns from the ranks' hosts."""

from __future__ import annotations

from typing import Any

import pytest

from collectives.testing import run_world
from collectives.transports import progress


def _spin(comm: Any) -> tuple[float, float]:
    """This rank's wait spin, and what the rule says for its host's ranks on this machine."""
    return comm._context.executor.engine.spin_seconds, progress.spin_seconds(comm.size)


@pytest.mark.parametrize("size", [2, 3, 4])
def test_a_tcp_world_on_one_host_counts_its_ranks_for_the_wait_spin(size: int) -> None:
    """TCP alone has no shared-memory channel to count the host's ranks by; their host identities
    do, so ranks that outnumber the cores do not spin on the cores their peers need."""
    for spin, rule in run_world(_spin, size, "tcp"):
        assert spin == rule


def test_ranks_on_hosts_of_their_own_count_only_their_own_host() -> None:
    """Host a has one rank, host b two: none of them counts the job's three (which on 2 cores
    would stop the spin)."""
    for spin, _ in run_world(_spin, 3, "tcp", hosts=["a", "b", "b"]):
        assert spin == progress.spin_seconds(2) == progress.SPIN_SECONDS
