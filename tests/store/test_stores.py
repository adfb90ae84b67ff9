"""Stores: Store semantics for every implementation, and the TCP store's defences."""

from __future__ import annotations

import logging
import multiprocessing
import socket
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from collectives._handshake import HELLO_SIZE, PURPOSE_DATA, PURPOSE_STORE, client_handshake
from collectives.errors import (
    AuthenticationError,
    ConnectError,
    InvalidArgumentError,
    RendezvousTimeoutError,
    StoreError,
)
from collectives.store import FileStore, HashStore, Store, TCPStore, TCPStoreServer
from collectives.store.tcp_store import OP_GET, OP_SET

SECRET = b"k" * 32


@pytest.fixture
def server() -> Iterator[TCPStoreServer]:
    srv = TCPStoreServer(secret=SECRET, handshake_timeout=0.5)
    yield srv
    srv.close()


@pytest.fixture(params=["tcp", "file", "hash"])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[Store]:
    if request.param == "tcp":
        s: Store = TCPStore.create_server_or_connect("127.0.0.1", 0, SECRET, is_server=True, timeout=5.0)
    elif request.param == "file":
        s = FileStore(tmp_path / "store", timeout=5.0)
    else:
        s = HashStore(timeout=5.0)
    yield s
    s.close()


# -- semantics shared by every store ----------------------------------------------------------


def test_set_get_delete_check(store: Store) -> None:
    store.set("tcp/addr/0", b"127.0.0.1:1234")
    store.set("ключ with spaces", b"\x00\xff")
    assert store.get("tcp/addr/0") == b"127.0.0.1:1234"
    assert store.get("ключ with spaces") == b"\x00\xff"
    store.set("tcp/addr/0", b"")
    assert store.get("tcp/addr/0") == b""
    assert store.check(["tcp/addr/0", "ключ with spaces"])
    assert not store.check(["tcp/addr/0", "absent"])
    assert store.delete("tcp/addr/0") is True
    assert store.delete("tcp/addr/0") is False
    assert not store.check(["tcp/addr/0"])


def test_add_semantics(store: Store) -> None:
    assert store.add("n", 5) == 5  # absent counts as 0
    assert store.add("n", -2) == 3
    assert store.add("n", 0) == 3
    assert store.get("n") == b"3"


def test_compare_set_semantics(store: Store) -> None:
    assert store.compare_set("c", b"x", b"y") == b""  # absent and expected non-empty: no set
    assert not store.check(["c"])
    assert store.compare_set("c", b"", b"first") == b"first"  # absent and expected b"": set
    assert store.compare_set("c", b"", b"second") == b"first"  # present: b"" no longer matches
    assert store.compare_set("c", b"wrong", b"second") == b"first"
    assert store.compare_set("c", b"first", b"second") == b"second"
    assert store.get("c") == b"second"


def test_get_timeout_names_the_key(store: Store) -> None:
    start = time.monotonic()
    with pytest.raises(RendezvousTimeoutError, match="never/set/key"):
        store.get("never/set/key", timeout=0.2)
    assert 0.15 <= time.monotonic() - start < 3.0


def test_wait_names_only_missing_keys(store: Store) -> None:
    store.set("here", b"1")
    with pytest.raises(RendezvousTimeoutError) as info:
        store.wait(["here", "missing"], timeout=0.2)
    assert "'missing'" in str(info.value) and "'here'" not in str(info.value)
    store.wait(["here"], timeout=0.2)


def test_get_blocks_until_another_thread_sets(store: Store) -> None:
    timer = threading.Timer(0.2, store.set, ("late", b"v"))
    timer.start()
    start = time.monotonic()
    assert store.get("late", timeout=5.0) == b"v"
    assert 0.15 <= time.monotonic() - start < 3.0
    timer.join()


def test_concurrent_adds_from_threads(store: Store) -> None:
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: store.add("ctr", 1), range(200)))
    assert sorted(results) == list(range(1, 201))


# -- FileStore across processes ---------------------------------------------------------------


def _file_store_worker(path: str, count: int, name: str) -> None:
    store = FileStore(path, timeout=10.0)
    store.compare_set("winner", b"", name.encode())
    for _ in range(count):
        store.add("counter", 1)
    store.set(f"done/{name}", b"1")


def test_file_store_two_processes_agree(tmp_path) -> None:
    path = str(tmp_path / "fs")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_file_store_worker, args=(path, 150, f"p{i}")) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    store = FileStore(path, timeout=1.0)
    store.wait(["done/p0", "done/p1"])
    assert store.get("counter") == b"300"
    assert store.get("winner") in (b"p0", b"p1")
    assert store.add("counter", 1) == 301


# -- TCP store: connecting, concurrency ----------------------------------------------------------


def test_server_binds_loopback_by_default(server: TCPStoreServer) -> None:
    assert server.host == "127.0.0.1"
    assert server.port > 0


def test_create_server_or_connect(tmp_path) -> None:
    rank0 = TCPStore.create_server_or_connect("127.0.0.1", 0, SECRET, is_server=True, timeout=5.0)
    assert rank0.server is not None
    rank1 = TCPStore.create_server_or_connect("127.0.0.1", rank0.port, SECRET, is_server=False, timeout=5.0)
    rank1.set("from1", b"hello")
    assert rank0.get("from1") == b"hello"
    rank1.close()
    rank0.close()  # stops the server it hosts
    with pytest.raises(ConnectError):
        TCPStore("127.0.0.1", rank0.port, SECRET, timeout=0.3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connect_refused_names_address() -> None:
    port = _free_port()
    start = time.monotonic()
    with pytest.raises(ConnectError, match=f"127.0.0.1:{port}"):
        TCPStore("127.0.0.1", port, SECRET, timeout=0.4)
    assert time.monotonic() - start < 3.0


def test_client_waits_for_a_late_server() -> None:
    port = _free_port()
    servers: list[TCPStoreServer] = []
    timer = threading.Timer(0.3, lambda: servers.append(TCPStoreServer("127.0.0.1", port, secret=SECRET)))
    timer.start()
    try:
        client = TCPStore("127.0.0.1", port, SECRET, timeout=5.0)
        client.set("a", b"1")
        assert client.get("a") == b"1"
        client.close()
    finally:
        timer.join()
        for s in servers:
            s.close()


def test_blocked_get_does_not_block_other_threads(server: TCPStoreServer) -> None:
    client = TCPStore(server.host, server.port, SECRET, timeout=5.0)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(client.get, "k", 5.0)
        time.sleep(0.1)
        client.set("k", b"v")  # same client object, while another thread is parked in get
        assert waiting.result(timeout=3) == b"v"
    client.close()


def test_close_ends_a_get_parked_on_another_thread(server: TCPStoreServer) -> None:
    """A parked get (a revoke watcher's, whose wake-up came too late) ends with a StoreError
    when its client closes, though the server lives on: its thread and its connection do not
    outlive the client."""
    client = TCPStore(server.host, server.port, SECRET, timeout=10.0)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(client.get, "never-set", 10.0)
        time.sleep(0.2)  # parked on the server by now
        client.close()
        with pytest.raises(StoreError):
            waiting.result(timeout=3)


def test_large_value_and_limits(server: TCPStoreServer) -> None:
    client = TCPStore(server.host, server.port, SECRET, timeout=5.0)
    big = bytes(range(256)) * (32 << 10)  # 8 MiB
    client.set("big", big)
    assert client.get("big") == big
    with pytest.raises(InvalidArgumentError):
        client.set("k" * 5000, b"")
    client.close()


def test_512_clients_at_once(server: TCPStoreServer) -> None:
    def connect(_: int) -> TCPStore:
        return TCPStore(server.host, server.port, SECRET, timeout=20.0)

    with ThreadPoolExecutor(16) as pool, ThreadPoolExecutor(64) as waiters:
        clients = list(pool.map(connect, range(512)))
        parked = [waiters.submit(c.get, "go", 20.0) for c in clients[:64]]  # parked server-side
        counts = list(pool.map(lambda c: c.add("arrived", 1), clients))
        clients[-1].set("go", b"now")
        assert all(f.result(timeout=10) == b"now" for f in parked)
    assert sorted(counts) == list(range(1, 513))
    for c in clients:
        c.close()


# -- TCP store: strangers are turned away and the store keeps working ----------------------------


def _assert_closed_by_peer(sock: socket.socket, timeout: float = 3.0) -> bytes:
    """Read until the server closes the connection; return what it sent."""
    sock.settimeout(timeout)
    got = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return got
        if not chunk:
            return got
        got += chunk


def _check_alive(server: TCPStoreServer) -> None:
    client = TCPStore(server.host, server.port, SECRET, timeout=2.0)
    assert client.add("alive", 1) >= 1
    client.close()


def test_junk_bytes_are_rejected(server: TCPStoreServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="collectives"):
        with socket.create_connection((server.host, server.port)) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + struct.pack("<Q", 2**63) * 8)
            greeting = _assert_closed_by_peer(s)
        assert greeting[:8] == b"COLLECT1"
        _check_alive(server)
    assert any("bad magic" in r.getMessage() for r in caplog.records)


def test_wrong_secret_is_rejected(server: TCPStoreServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="collectives"):
        with pytest.raises(AuthenticationError, match="rejected"):
            TCPStore(server.host, server.port, b"not the secret", timeout=2.0)
        _check_alive(server)
    assert any("failed to prove the job secret" in r.getMessage() for r in caplog.records)


def test_wrong_purpose_is_refused_by_client(server: TCPStoreServer) -> None:
    with socket.create_connection((server.host, server.port)) as s:
        with pytest.raises(AuthenticationError, match="expected a data endpoint"):
            client_handshake(s, SECRET, PURPOSE_DATA, 0, timeout=2.0)
    _check_alive(server)


def test_silent_client_is_dropped_and_does_not_block_others(server: TCPStoreServer) -> None:
    with socket.create_connection((server.host, server.port)) as silent:
        start = time.monotonic()
        _check_alive(server)  # served while the silent one holds its connection
        assert time.monotonic() - start < 0.45
        greeting = _assert_closed_by_peer(silent)  # dropped after handshake_timeout=0.5 s
        assert greeting[:8] == b"COLLECT1" and len(greeting) in (HELLO_SIZE, HELLO_SIZE + 1)  # + reject byte
        assert time.monotonic() - start < 3.0
    _check_alive(server)


@pytest.mark.parametrize(
    "header",
    [
        struct.pack("<BIQQq", OP_SET, 1, 2**63, 0, 0),
        struct.pack("<BIQQq", OP_GET, 2**32 - 1, 0, 0, 0),
        struct.pack("<BIQQq", 99, 1, 1, 0, 0),
    ],
    ids=["value-2**63", "key-4GiB", "unknown-op"],
)
def test_oversized_prefix_after_handshake_closes_connection(server: TCPStoreServer, header: bytes) -> None:
    with socket.create_connection((server.host, server.port)) as s:
        client_handshake(s, SECRET, PURPOSE_STORE, timeout=2.0)
        s.sendall(header)
        assert _assert_closed_by_peer(s) == b""
    _check_alive(server)


def test_client_refuses_a_server_that_is_not_a_store() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n" + b"\0" * 64)
        conn.settimeout(10.0)
        with conn:  # open until the client has read the greeting and hung up (or reset)
            try:
                while conn.recv(4096):
                    pass
            except ConnectionResetError:
                pass

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with pytest.raises(AuthenticationError, match="not a collectives endpoint"):
            TCPStore("127.0.0.1", port, SECRET, timeout=2.0)
    finally:
        thread.join()
        listener.close()


def test_server_refuses_wildcard_without_secret() -> None:
    with pytest.raises(InvalidArgumentError):
        TCPStoreServer("0.0.0.0", 0, secret=b"")
    with pytest.raises(InvalidArgumentError):
        TCPStoreServer("", 0, secret=SECRET)


def test_lost_server_raises_store_error(server: TCPStoreServer) -> None:
    client = TCPStore(server.host, server.port, SECRET, timeout=2.0)
    client.set("a", b"1")
    server.close()
    with pytest.raises(StoreError):
        client.get("a")
    client.close()
