"""grow(n) / collectives.join(): new processes join a running group through its store,
proving the job secret, and every one gets the larger communicator."""

from __future__ import annotations

import numpy as np
import pytest
from recovery_world import die, run_ranks

import collectives
from collectives.errors import AuthenticationError, InvalidArgumentError, RendezvousTimeoutError
from collectives.store import HashStore
from collectives.store.tcp_store import TCPStoreServer
from collectives.testing import run_world


def _shrink_then_grow(comm: collectives.Communicator) -> tuple[int, int, int]:
    comm.barrier()
    if comm.rank == 1:
        die()
    try:
        comm.all_reduce(np.ones(10))
    except collectives.CollectivesError:
        pass
    comm.revoke()
    small = comm.shrink()
    assert small is not None
    big = small.grow(2)
    x = np.array([10 + comm.rank], dtype=np.int64)
    big.all_reduce(x)
    out = big.rank, big.size, int(x[0])
    big.close()
    small.close()
    comm.close()
    return out


def _joiner(comm: collectives.Communicator) -> tuple[int, int, int]:
    x = np.array([100 * comm.rank], dtype=np.int64)
    comm.all_reduce(x)
    comm.close()
    return comm.rank, comm.size, int(x[0])


@pytest.mark.multiprocess
@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_two_processes_join_a_shrunk_group(transport: str) -> None:
    out = run_ranks(_shrink_then_grow, 3, transport, joiners=2, join_fn=_joiner, timeout=5)
    total = 10 + 12 + 200 + 300
    assert out[1][0] == "died"
    assert out[0] == ("ok", (0, 4, total)) and out[2] == ("ok", (1, 4, total))
    assert sorted(out[3][1][:2] + out[4][1][:2]) == [2, 3, 4, 4]  # the store numbered the joiners
    assert out[3][1][2] == out[4][1][2] == total


def test_join_proves_the_job_secret() -> None:
    server = TCPStoreServer(secret="the-job-secret")
    try:
        env = {"COLLECTIVES_STORE_ADDR": f"127.0.0.1:{server.port}", "COLLECTIVES_SECRET": "a-guess"}
        with pytest.raises(AuthenticationError):
            collectives.join(env=env, timeout=2)
    finally:
        server.close()


def test_join_without_an_offer_times_out_and_without_a_store_is_refused() -> None:
    with pytest.raises(RendezvousTimeoutError, match="no group offered a place"):
        collectives.join(HashStore(), timeout=0.2)
    with pytest.raises(InvalidArgumentError, match="no store"):
        collectives.join(env={}, timeout=0.2)


def test_grow_needs_the_same_n_everywhere() -> None:
    def fn(comm: collectives.Communicator) -> str:
        try:
            comm.grow(1 + comm.rank)
        except InvalidArgumentError as exc:
            return str(exc)
        return "grew"

    out = run_world(fn, 2, "inproc", timeout=20)
    assert all("different n" in text for text in out), out
