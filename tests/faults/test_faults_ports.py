"""The store's ports (issue 16, launch and config; acceptance case 15): a port in use is
named as host:port, on the store server and through ``init()``'s MASTER_ADDR/MASTER_PORT;
port 0 takes a free port; an unreachable store is named by its address, through
``COLLECTIVES_STORE_ADDR`` and MASTER_ADDR alike; 512 clients connecting at the same
instant all get in (listen backlog, handshakes served without blocking, jittered retries)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import collectives
from collectives.errors import CollectivesError, ConnectError
from collectives.store import TCPStore, TCPStoreServer

REPO = Path(__file__).resolve().parents[2]


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


HOSTS = ["127.0.0.1"] + (["::1"] if _has_ipv6_loopback() else [])


def _closed_port(host: str) -> int:
    """A port on ``host`` that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@pytest.mark.parametrize("host", HOSTS)
def test_a_port_in_use_is_named_and_port_zero_works(host: str) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as squatter:
        squatter.bind((host, 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(ConnectError) as caught:
            TCPStoreServer(host, port, secret="s")
        assert _where(host, port) in str(caught.value) and "in use" in str(caught.value)
        # Through init(), rank 0 hosting the store on MASTER_PORT (torch's TCPStore where
        # torch is installed, ours otherwise): the same message.
        env = {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": host, "MASTER_PORT": str(port)}
        with pytest.raises(CollectivesError) as caught:
            collectives.init(env=env, timeout=2)
        assert _where(host, port) in str(caught.value), caught.value
    servers = [TCPStoreServer(host, 0, secret="s") for _ in range(2)]
    try:
        assert servers[0].port != servers[1].port and all(s.port > 0 for s in servers)
        client = TCPStore(host, servers[1].port, "s", timeout=5)
        client.set("k", b"v")
        assert client.get("k") == b"v" and client.where == _where(host, servers[1].port)
        client.close()
    finally:
        for server in servers:
            server.close()


@pytest.mark.parametrize("host", HOSTS)
def test_an_unreachable_store_is_named_by_its_address(host: str) -> None:
    port = _closed_port(host)
    start = time.monotonic()
    with pytest.raises(ConnectError) as caught:
        TCPStore(host, port, "s", timeout=0.5)
    assert f"store at {_where(host, port)}" in str(caught.value), caught.value
    assert time.monotonic() - start < 5
    env = {"COLLECTIVES_RANK": "1", "COLLECTIVES_WORLD_SIZE": "2", "COLLECTIVES_STORE_ADDR": _where(host, port),
           "COLLECTIVES_SECRET": "s"}
    with pytest.raises(ConnectError) as caught:
        collectives.init(env=env, timeout=0.5)
    assert _where(host, port) in str(caught.value), caught.value
    env = {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": host, "MASTER_PORT": str(port)}
    with pytest.raises(ConnectError) as caught:  # torch's TCPStore where torch is installed, ours otherwise
        collectives.init(env=env, timeout=1)
    assert _where(host, port) in str(caught.value), caught.value


CLIENTS_SCRIPT = textwrap.dedent(
    """
    import json, sys, threading, time
    from collectives.store import TCPStore
    host, port, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    results, errors, lock, go = [], [], threading.Lock(), threading.Event()
    start_at = 0.0
    def client():
        go.wait()
        t0 = time.time()
        try:
            store = TCPStore(host, port, "secret-512", timeout=60)
            n = store.add("arrived", 1)
            connected = time.time()
            store.wait(["go"], timeout=60)
            store.close()
            with lock:
                results.append((n, connected - start_at, connected - t0))
        except Exception as exc:
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")
    pool = [threading.Thread(target=client) for _ in range(threads)]
    for t in pool:
        t.start()
    print("ready", flush=True)
    sys.stdin.readline()  # the test says go to every process at once
    start_at = time.time()
    go.set()
    for t in pool:
        t.join()
    print(json.dumps({"results": results, "errors": errors[:5], "failed": len(errors)}))
    """
)


@pytest.mark.multiprocess
def test_512_simultaneous_clients_all_connect() -> None:
    processes, threads = 4, 128
    server = TCPStoreServer("127.0.0.1", 0, secret="secret-512")
    try:
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        procs = [
            subprocess.Popen([sys.executable, "-c", CLIENTS_SCRIPT, "127.0.0.1", str(server.port), str(threads)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for _ in range(processes)
        ]
        for proc in procs:  # every process has its threads waiting
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:  # then all 512 dial at once
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        admin = TCPStore("127.0.0.1", server.port, "secret-512", timeout=60)
        admin.wait(["arrived"], timeout=60)
        deadline = time.monotonic() + 60
        while int(admin.add("arrived", 0)) < processes * threads and time.monotonic() < deadline:
            time.sleep(0.05)
        arrived = int(admin.add("arrived", 0))
        admin.set("go", b"1")
        reports = []
        for proc in procs:
            out, err = proc.communicate(timeout=60)  # (stdin closed here)
            assert proc.returncode == 0, err[-2000:]
            reports.append(json.loads(out.strip().splitlines()[-1]))
        admin.close()
    finally:
        server.close()
    failed = sum(r["failed"] for r in reports)
    assert failed == 0, [r["errors"] for r in reports]
    results = [tuple(x) for r in reports for x in r["results"]]
    assert arrived == len(results) == processes * threads
    assert sorted(n for n, _, _ in results) == list(range(1, processes * threads + 1))
    assert server.rejections.total == 0
    last = max(at for _, at, _ in results)
    print(f"512 clients: all connected {last:.2f} s after the common start")
