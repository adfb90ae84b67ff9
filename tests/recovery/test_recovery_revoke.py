"""revoke(): every member's pending and later calls raise CommunicatorRevokedError within
1 s of the revoke, even a call blocked on a peer that never comes; revoke_on_failure
turns one rank's failure into a revoke for all."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from recovery_world import die, run_ranks

import collectives
from collectives import CommunicatorRevokedError, Config
from collectives.errors import InvalidArgumentError

TRANSPORTS = ["shm", "tcp"]


def _revoke_while_blocked(comm: collectives.Communicator) -> tuple[str, float, str]:
    comm.barrier()
    if comm.rank == 1:  # revokes while rank 0 waits in an all_reduce that rank 2 never enters
        time.sleep(0.5)
        comm.revoke()
        comm.revoke()  # again: a no-op
        return "revoked", time.time(), ""
    if comm.rank == 2:  # a hung member: it calls only after the revoke
        time.sleep(1.0)
    try:
        comm.all_reduce(np.ones(10))
    except CommunicatorRevokedError as exc:
        return "raised", time.time(), str(exc)
    return "completed", time.time(), ""


@pytest.mark.multiprocess
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_revoke_ends_pending_and_later_calls_on_every_member(transport: str) -> None:
    out = run_ranks(_revoke_while_blocked, 3, transport, timeout=20)
    assert all(kind == "ok" for kind, _ in out.values()), out
    (_, revoked_at, _), (what0, raised_at, text0), (what2, _, text2) = (out[1][1], out[0][1], out[2][1])
    assert what0 == "raised" and "all_reduce #2" in text0 and "rank 1 revoked" in text0
    assert raised_at - revoked_at < 1.0, f"rank 0 raised {raised_at - revoked_at:.3f} s after the revoke"
    assert what2 == "raised" and "revoked" in text2  # a later call


def _one_dies(comm: collectives.Communicator) -> tuple[str, str]:
    comm.barrier()
    if comm.rank == 3:
        die()
    errors = []
    for _ in range(2):  # the failing call, then a later one
        try:
            comm.all_reduce(np.ones(1000))
            errors.append("completed")
        except collectives.CollectivesError as exc:
            errors.append(type(exc).__name__)
    return errors[0], errors[1]


@pytest.mark.multiprocess
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_revoke_on_failure_turns_one_failure_into_a_revoke_for_all(transport: str) -> None:
    out = run_ranks(_one_dies, 4, transport, timeout=3, revoke_on_failure=True)
    assert out[3][0] == "died"
    for rank in range(3):
        assert out[rank] == ("ok", ("CommunicatorRevokedError", "CommunicatorRevokedError")), out


def test_a_world_of_one_revokes_itself() -> None:
    with collectives.init() as comm:
        comm.all_reduce(np.ones(2))
        comm.revoke()
        with pytest.raises(CommunicatorRevokedError, match="revoked"):
            comm.all_reduce(np.ones(2))
        assert comm.agree(6) == 6  # agreement still works on a revoked communicator
        assert "BROKEN" in repr(comm)


def test_revoke_on_failure_is_off_by_default_and_read_from_the_environment() -> None:
    assert Config().revoke_on_failure is False
    assert Config.from_env({"COLLECTIVES_REVOKE_ON_FAILURE": "1"}).revoke_on_failure is True
    assert Config.from_env({"COLLECTIVES_RECOVERY_TIMEOUT": "2.5"}).recovery_timeout == 2.5
    with pytest.raises(InvalidArgumentError, match="COLLECTIVES_RECOVERY_TIMEOUT"):
        Config.from_env({"COLLECTIVES_RECOVERY_TIMEOUT": "-1"})


def _revoke_ends_a_receive(comm: collectives.Communicator) -> tuple[str, float]:
    comm.barrier()
    if comm.rank == 1:  # never sends; revokes instead
        time.sleep(0.3)
        comm.revoke()
        return "revoked", time.time()
    try:
        comm.recv(np.empty(4), src=1)
    except CommunicatorRevokedError:
        return "raised", time.time()
    return "received", time.time()


@pytest.mark.multiprocess
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_revoke_ends_a_pending_receive(transport: str) -> None:
    out = run_ranks(_revoke_ends_a_receive, 2, transport, timeout=20)
    (what, raised_at), (_, revoked_at) = out[0][1], out[1][1]
    assert what == "raised" and raised_at - revoked_at < 1.0, out


def test_revoke_reaches_both_levels_of_a_two_level_communicator(arrivals: Any) -> None:
    def fn(comm: collectives.Communicator) -> tuple[str, float]:
        x = np.ones(1 << 16)
        comm.all_reduce(x, algorithm="hierarchical")  # connects the levels
        if comm.rank == 3:  # never enters the second all_reduce; revokes, and stays alive
            time.sleep(0.5)
            comm.revoke()
            revoked_at = time.time()
            arrivals.wait(3, timeout=10)  # until the three others are out of their call
            return "revoked", revoked_at
        try:
            comm.all_reduce(x, algorithm="hierarchical")
        except CommunicatorRevokedError:
            return "raised", time.time()
        finally:
            arrivals.arrive()
        return "completed", time.time()

    out = run_ranks(fn, 4, "auto", timeout=20, hosts=["a", "a", "b", "b"])
    revoked_at = out[3][1][1]
    for rank in range(3):
        what, at = out[rank][1]
        assert what == "raised" and at - revoked_at < 1.0, out


class _HungStore:
    """A store whose host went away without closing connections: a parked get never
    answers, and a new request (a connect retried until the client's timeout) hangs."""

    def __init__(self) -> None:
        import threading

        self.gone = threading.Event()

    def get(self, key: str, timeout: float) -> bytes:
        self.gone.wait(timeout)
        from collectives.errors import StoreError

        raise StoreError("the store went away")

    def compare_set(self, key: str, expected: bytes, desired: bytes) -> bytes:
        self.gone.wait(60.0)
        return desired


def test_closing_does_not_wait_on_a_store_whose_host_has_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray's destroy_collective_group closes every member at once; the member that hosts the
    store can go first, and the others' close() then waited on the store for minutes. Close
    gives up after CLOSE_SECONDS (set shorter here: the bound, not its length, is the point)."""
    from collectives.recovery import revoke
    from collectives.recovery.revoke import Watcher

    monkeypatch.setattr(revoke, "CLOSE_SECONDS", 0.25)
    CLOSE_SECONDS = revoke.CLOSE_SECONDS
    store = _HungStore()
    watcher = Watcher(store, 0, lambda reason: None)  # type: ignore[arg-type]
    start = time.monotonic()
    watcher.close()
    took = time.monotonic() - start
    store.gone.set()
    assert CLOSE_SECONDS * 0.9 <= took < CLOSE_SECONDS + 1.5
