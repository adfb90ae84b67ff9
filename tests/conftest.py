"""Fixtures shared by test packages: network namespaces as two hosts (``netns_hosts``), and
``arrivals``, by which a rank of a test world waits for the others' news instead of sleeping."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator

import pytest

from collectives.plans.planner import Planner
from collectives.testing.netns import Host, NamespaceError, two_hosts


@pytest.fixture
def netns_hosts() -> Iterator[list[Host]]:
    """Two network namespaces joined by a veth pair (:func:`collectives.testing.netns.two_hosts`),
    deleted after the test; skipped with the reason where they cannot be made (root, iproute2)."""
    try:
        with two_hosts() as hosts:
            yield hosts
    except NamespaceError as exc:
        pytest.skip(f"cannot create network namespaces here: {exc}")


class Arrivals:
    """A count that ranks of one world raise (``arrive``) and one rank waits for (``wait``):
    a rank that must stay away until the others have timed out waits for exactly that,
    where a fixed sleep had to guess a margin. Works across threads and forked processes
    (a semaphore made before the world forks)."""

    def __init__(self) -> None:
        self._count = multiprocessing.get_context("fork").Semaphore(0)

    def arrive(self) -> None:
        self._count.release()

    def wait(self, count: int, timeout: float = 30.0) -> bool:
        """Whether ``count`` arrivals came within ``timeout`` seconds (False: the test fails
        on what the others returned, not here)."""
        deadline = time.monotonic() + timeout
        return all(self._count.acquire(timeout=max(0.0, deadline - time.monotonic())) for _ in range(count))


@pytest.fixture
def arrivals() -> Arrivals:
    """An :class:`Arrivals` for one test's world (made before it forks)."""
    return Arrivals()


@pytest.fixture
def direct_reduces(monkeypatch: pytest.MonkeyPatch) -> None:
    """The automatic choice of a reduce through the windows is the direct engine (the forked ranks
    inherit it): for tests of the engine's routes at sizes where the cost model would take a schedule."""
    automatic = Planner.automatic

    def direct_for_reduces(self: Planner, collective: str, nbytes: int, size: int, windows: bool = False,
                           hosts: bool = False) -> str:
        if collective == "reduce" and windows:
            return "direct"
        return automatic(self, collective, nbytes, size, windows, hosts)

    monkeypatch.setattr(Planner, "automatic", direct_for_reduces)
