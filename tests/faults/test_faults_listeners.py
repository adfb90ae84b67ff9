"""A default single-host job listens on loopback only: the store and every TCP data
listener, under collectives-run and under a torchrun-style environment, on shared memory
and on TCP (issue 16, security; acceptance case 24). Read from the socket table
(/proc/net/tcp and tcp6, what ``ss -ltn`` prints) while a real job runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from faults_jobs import Job, base_env, is_loopback_listener, listeners

pytestmark = pytest.mark.multiprocess

CASES = [(launcher, transport) for launcher in ("collectives-run", "torchrun-style") for transport in ("shm", "tcp")]


@pytest.mark.parametrize("launcher,transport", CASES)
def test_a_single_host_job_listens_on_loopback_only(tmp_path: Path, launcher: str, transport: str) -> None:
    if launcher == "torchrun-style":
        pytest.importorskip("torch")  # rank 0 hosts torch's TCPStore on MASTER_PORT, as torchrun's ranks do
    # Rank 0 is slow to dial: on TCP, rank 1's data listener (it waits for rank 0) stays open
    # meanwhile. Shared memory has no data listener, only the store's.
    job = Job(tmp_path, 2, launcher, base_env(COLLECTIVES_TRANSPORT=transport, FAULTS_HOLD_RANK="0"))
    try:
        pids = job.pids()
        rank1 = pids[-1]
        snapshots = []
        if transport == "tcp":
            job.wait_file("holding-0")
            deadline = time.monotonic() + 30
            while not listeners([rank1])[rank1] and time.monotonic() < deadline:
                time.sleep(0.02)
            snapshots.append(listeners(pids))
            assert snapshots[-1][rank1], "rank 1's data listener never showed up in the socket table"
        (tmp_path / "hold-0").touch()
        for rank in range(2):
            job.wait_file(f"ready-{rank}")
        snapshots.append(listeners(pids))
        results = job.finish()
    finally:
        job.kill()
    seen = sorted({a for snap in snapshots for addrs in snap.values() for a in addrs})
    print(f"\n{launcher}/{transport}: listeners of the job's processes: {seen}")
    assert seen, "no listener at all: the store should be one"
    assert all(is_loopback_listener(a) for a in seen), f"listeners beyond loopback: {seen}"
    store_owner = pids[0]  # the launcher (collectives-run), or rank 0 (torchrun-style)
    assert snapshots[-1][store_owner], f"the store's listener was not found: {snapshots}"
    assert all(r["ok"] and r["transports"] == [transport] for r in results), results
