"""Junk bytes, port scans, a 2^63 length prefix and wrong or missing secrets, at the store
and at a TCP data listener of a running job: every such connection is closed before
anything in it is parsed, the servers stay up within +10 MB, the job's collectives still
give the right results, and each server says so once per source address (issue 16,
security; acceptance cases 25 and 26)."""

from __future__ import annotations

import os
import re
import socket
import struct
from pathlib import Path

import pytest

from collectives._handshake import HANDSHAKE_TIMEOUT, PURPOSE_DATA, PURPOSE_STORE, client_handshake
from collectives.store.tcp_store import OP_SET, TCPStore
from faults_attack import SOURCES, Report, all_dropped, flood, half_open
from faults_jobs import Job, base_env, rss_bytes

pytestmark = pytest.mark.multiprocess

CONNECTIONS = int(os.environ.get("FAULTS_JUNK_CONNECTIONS", "1200"))
"""Hostile connections per server (docs/reliability.md quotes a run with 10000)."""
HALF_OPEN = 30
MB = 1 << 20


def _split(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _attack(address: tuple[str, int], pid: int, purpose: int, identity: int,
            silent: list[socket.socket] | None = None) -> tuple[Report, int]:
    """Flood ``address`` and check that its silent half-open connections (``silent``, or
    HALF_OPEN opened here) were dropped; return the report and how much ``pid``'s
    resident memory grew."""
    report = Report()
    flood(address, 60, purpose, identity, report)  # warm-up: first-use allocations are not growth
    before = rss_bytes(pid)
    if silent is None:
        silent = half_open(address, HALF_OPEN)
    flood(address, CONNECTIONS, purpose, identity, report)
    if not all_dropped(silent, HANDSHAKE_TIMEOUT + 10):
        report.problems.append("a silent half-open connection was not dropped after the handshake timeout")
    return report, rss_bytes(pid) - before


def _warned_sources(lines: list[str], server: str) -> list[str]:
    """The source address of each "rejected a connection" warning of ``server``."""
    found = []
    for line in lines:
        if server in line and "rejected a connection" in line:
            match = re.search(r"further rejections from (\S+) are counted", line)
            found.append(match.group(1) if match else line)
    return found


def test_junk_scans_and_wrong_secrets_leave_the_servers_and_the_job_unharmed(tmp_path: Path) -> None:
    # two ranks on TCP; rank 0 is slow to dial, so rank 1's data listener stays open for us
    job = Job(tmp_path, 2, "collectives-run", base_env(COLLECTIVES_TRANSPORT="tcp", FAULTS_HOLD_RANK="0"))
    try:
        launcher, _, rank1 = job.pids()
        info = job.rank_info(0)
        store_at, secret = _split(info["store"]), info["secret"]
        job.wait_file("holding-0")
        # silent connections to the store, opened now so that its handshake timeout runs out
        # while rank 1's listener is attacked; their drop is checked with the store's flood
        store_silent = half_open(store_at, HALF_OPEN)
        store = TCPStore(*store_at, secret, timeout=30)
        data_at = _split(store.get("collectives/1/tcp/addr/1").decode())
        # 1. rank 1's data listener, during setup (claiming to be rank 0, the one it waits for)
        data_report, data_growth = _attack(data_at, rank1, PURPOSE_DATA, 0)
        (tmp_path / "hold-0").touch()
        for rank in range(2):
            job.wait_file(f"ready-{rank}")
        # 2. the launcher's store, while the job runs its collectives
        store_report, store_growth = _attack(store_at, launcher, PURPOSE_STORE, 0xFFFFFFFF, store_silent)
        with socket.create_connection(store_at) as sock:  # a member that sends a 2^63-byte value
            client_handshake(sock, secret.encode(), PURPOSE_STORE)
            sock.sendall(struct.pack("<BIQQq", OP_SET, 1, 2**63, 0, 0) + b"k")
            sock.settimeout(10)
            assert sock.recv(1) == b"", "the store kept a connection that announced a 2^63-byte value"
        store.set("still", b"serving")
        assert store.get("still") == b"serving"
        store.close()
        results = job.finish()
    finally:
        job.kill()
    for report in (data_report, store_report):
        assert not report.problems, report.problems[:5]
        assert sum(report.counts.values()) == CONNECTIONS + 60
    assert all(r["ok"] and r["rounds"] >= 3 for r in results), results
    print(f"\nRSS growth after {CONNECTIONS} hostile connections (+{HALF_OPEN} half-open): "
          f"store {store_growth / MB:.2f} MB, data listener {data_growth / MB:.2f} MB")
    assert store_growth < 10 * MB and data_growth < 10 * MB, (store_growth, data_growth)
    lines = job.stderr()[0].splitlines()
    store_lines = [line for line in lines if not line.startswith("[rank")]
    assert sorted(_warned_sources(store_lines, "TCPStoreServer")) == sorted(SOURCES), store_lines[:20]
    rank1_lines = [line for line in lines if line.startswith("[rank 1]")]
    assert sorted(_warned_sources(rank1_lines, "tcp rank 1 listener")) == sorted(SOURCES), rank1_lines[:20]
