"""The progress engine's sleep where a communicator has several transports (shared memory
within a host, TCP between hosts): it sleeps on the transport its pending requests use, and
takes turns, in slices that grow from short, only when they span several."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from collectives.transports.base import Request
from collectives.transports.progress import SLEEP_SLICE, TURN_FIRST, TURN_MAX, ProgressEngine


class FakeTransport:
    """A transport that records each sleep in ``log``, shared with the others, and finishes
    every request in ``requests`` (also shared) at the sleep that makes ``wakes``."""

    def __init__(self, name: str, peer: int, log: list[tuple[str, float]], wakes: int,
                 requests: list[Request]) -> None:
        self.name = name
        self.channel = SimpleNamespace(peer=peer)
        self.channels = {peer: self.channel}
        self.log = log
        self.wakes = wakes
        self.requests = requests

    def request(self) -> Request:
        r = Request(self.channel, "recv", 0, 8)  # type: ignore[arg-type]
        self.requests.append(r)
        return r

    def progress(self) -> bool:
        return False

    def activity_token(self) -> int | None:
        return None

    def check_peers(self, peers: Any) -> None:
        return None

    def wait_for_activity(self, timeout: float, token: int | None = None) -> None:
        self.log.append((self.name, timeout))
        if len(self.log) >= self.wakes:
            for r in self.requests:
                r.done = True


def wait(transports: list[FakeTransport], requests: list[Request]) -> None:
    engine = ProgressEngine(transports)  # type: ignore[arg-type]
    engine.wait(requests, time.monotonic() + 60, lambda peers: TimeoutError(f"waiting on {peers}"))


def test_a_wait_on_one_transport_sleeps_on_it_alone_for_the_whole_slice() -> None:
    log: list[tuple[str, float]] = []
    requests: list[Request] = []
    shm, tcp = FakeTransport("shm", 1, log, 1, requests), FakeTransport("tcp", 2, log, 1, requests)
    wait([shm, tcp], [tcp.request()])
    # before: a 1 ms turn on the shared-memory doorbell first, the TCP message waiting meanwhile
    assert [name for name, _ in log] == ["tcp"]
    assert log[0][1] == pytest.approx(SLEEP_SLICE, rel=0.01)


def test_a_wait_across_transports_takes_turns_that_grow_from_short() -> None:
    log: list[tuple[str, float]] = []
    requests: list[Request] = []
    shm, tcp = FakeTransport("shm", 1, log, 12, requests), FakeTransport("tcp", 2, log, 12, requests)
    wait([shm, tcp], [shm.request(), tcp.request()])
    assert [name for name, _ in log] == ["shm", "tcp"] * 6
    turns = [timeout for _, timeout in log[::2]]
    assert turns == pytest.approx([min(TURN_FIRST * 2**i, TURN_MAX) for i in range(6)])
    assert turns[0] < 1e-4 and turns[-1] == TURN_MAX


def test_a_compiled_plan_yields_to_late_peers_only_where_ranks_outnumber_cores() -> None:
    """Where every rank has a core a compiled plan's wait spins and hands back (no yield window);
    where ranks outnumber cores it yields ``YIELD_SECONDS``, and ``LATE_PEER_YIELD_SECONDS`` where
    it has nothing left to do but wait for late peers."""
    from collectives.transports.progress import LATE_PEER_YIELD_SECONDS, YIELD_SECONDS, compiled_yield_seconds

    assert compiled_yield_seconds(False) == compiled_yield_seconds(False, waits_for_late_peers=True) == 0.0
    assert compiled_yield_seconds(True) == YIELD_SECONDS
    assert compiled_yield_seconds(True, waits_for_late_peers=True) == LATE_PEER_YIELD_SECONDS > YIELD_SECONDS


@pytest.mark.parametrize("host_ranks, spins", [(1, True), (2, True), (3, False), (8, False)])
def test_a_wait_spins_only_where_the_hosts_ranks_it_is_told_of_each_have_a_cpu(
        host_ranks: int, spins: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A world on one host over TCP alone has no shared-memory channel to count its host's
    ranks by: the caller's count (from the ranks' host identities) decides, where it is larger."""
    from collectives.transports import progress

    monkeypatch.setattr(progress, "usable_cpus", lambda: 2)
    log: list[tuple[str, float]] = []
    tcp = FakeTransport("tcp", 1, log, 1, [])
    engine = ProgressEngine([tcp], host_ranks)  # type: ignore[list-item]
    assert engine.spin_seconds == (progress.SPIN_SECONDS if spins else 0.0)


def test_the_ranks_behind_shared_memory_count_where_the_caller_knows_fewer(monkeypatch: pytest.MonkeyPatch) -> None:
    from collectives.transports import progress

    monkeypatch.setattr(progress, "usable_cpus", lambda: 2)
    shm = FakeTransport("shm", 1, [], 1, [])
    shm.channels = {1: shm.channel, 2: shm.channel}
    assert ProgressEngine([shm]).spin_seconds == ProgressEngine([shm], 1).spin_seconds == 0.0  # type: ignore[list-item]
