"""Two hosts for real: ranks in two network namespaces joined by a veth pair, each
namespace acting as a host (its own address, COLLECTIVES_HOSTNAME). Ranks on one "host"
talk over shared memory, across hosts over TCP on the namespaces' addresses, and the
store listens on the address it is given, not on loopback. The automatic all_reduce runs
in two levels (within each host, then across).

Needs root and iproute2 (`ip netns`); skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.multiprocess, pytest.mark.netns]

REPO = Path(__file__).resolve().parents[2]

RANK_SCRIPT = textwrap.dedent(
    """
    import os, sys, numpy as np, collectives
    from collectives.store import TCPStore, TCPStoreServer
    rank, size, store_host, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
    secret = os.environ["COLLECTIVES_SECRET"]
    server = TCPStoreServer(host=store_host, port=port, secret=secret) if rank == 0 else None
    store = TCPStore(store_host, port, secret=secret, timeout=60)
    comm = collectives.init(rank, size, store, timeout=60)
    x = np.arange(1 << 16, dtype=np.float64) + rank
    comm.all_reduce(x, algorithm="ring")
    ok = np.array_equal(x, size * np.arange(1 << 16) + size * (size - 1) / 2)
    y = np.arange(1 << 16, dtype=np.float64) * (rank + 1)
    comm.all_reduce(y)  # automatic: in two levels (two hosts of two ranks), TCP between the namespaces
    ok = ok and np.array_equal(y, np.arange(1 << 16) * size * (size + 1) / 2) and comm._context.levels.pair is not None
    g = comm.all_gather(np.array([rank]))
    kinds = sorted(f"{p}:{t}" for p, t in comm.transport_names.items())
    with open(out, "w") as f:
        f.write(f"{ok} {g.tolist()} {' '.join(kinds)}")
    comm.close()
    store.close()
    if server is not None:
        server.close()
    """
)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def two_hosts():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to make network namespaces")
    tag = uuid.uuid4().hex[:6]
    hosts = [f"coll-a-{tag}", f"coll-b-{tag}"]
    addrs = ["10.213.77.1", "10.213.77.2"]
    try:
        _ip("netns", "add", hosts[0])
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create network namespaces here: {exc.stderr.strip()}")
    try:
        _ip("netns", "add", hosts[1])
        _ip("link", "add", f"va{tag}", "type", "veth", "peer", "name", f"vb{tag}")
        for host, dev, addr in zip(hosts, (f"va{tag}", f"vb{tag}"), addrs):
            _ip("link", "set", dev, "netns", host)
            _ip("-n", host, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", host, "link", "set", dev, "up")
            _ip("-n", host, "link", "set", "lo", "up")
        yield list(zip(hosts, addrs))
    finally:
        for host in hosts:
            subprocess.run(["ip", "netns", "del", host], capture_output=True)


def test_ranks_on_two_hosts_use_shm_within_and_tcp_across(two_hosts, tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    (host_a, addr_a), (host_b, addr_b) = two_hosts
    placement = [(host_a, addr_a), (host_a, addr_a), (host_b, addr_b), (host_b, addr_b)]
    port = 29577
    procs = []
    for rank, (host, addr) in enumerate(placement):
        env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTIVES_")}
        env.update(PYTHONPATH=str(REPO), COLLECTIVES_SECRET="netns-test-secret",
                   COLLECTIVES_HOSTNAME=host, COLLECTIVES_SOCKET_ADDR=addr)
        cmd = ["ip", "netns", "exec", host, sys.executable, str(script), str(rank), "4", addr_a, str(port),
               str(tmp_path / f"rank{rank}.txt")]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
    for rank in range(4):
        ok, rest = (tmp_path / f"rank{rank}.txt").read_text().split(" ", 1)
        assert ok == "True"
        assert rest.startswith("[0, 1, 2, 3] ")
        kinds = dict(item.split(":") for item in rest.split("] ", 1)[1].split())
        same_host = {0: "1", 1: "0", 2: "3", 3: "2"}[rank]
        for peer, kind in kinds.items():
            assert kind == ("shm" if peer == same_host else "tcp"), (rank, kinds)
