"""Two hosts for real: ranks in two network namespaces joined by a veth pair, each
namespace acting as a host (its own address, COLLECTIVES_HOSTNAME). Ranks on one "host"
talk over shared memory, across hosts over TCP on the namespaces' addresses, and the
store listens on the address it is given, not on loopback. The automatic all_reduce runs
in two levels (within each host, then across).

Ranks are started the way a user would, with ``ip netns exec`` (``run_world(netns=...)``,
which the perf scripts use, has its test in ``tests/testing/test_netns.py``). Needs root and
iproute2 (`ip netns`); skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from collectives.testing.netns import Host

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


def test_ranks_on_two_hosts_use_shm_within_and_tcp_across(netns_hosts: list[Host], tmp_path: Path) -> None:
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    (host_a, addr_a), (host_b, addr_b) = ((host.name, host.address) for host in netns_hosts)
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
