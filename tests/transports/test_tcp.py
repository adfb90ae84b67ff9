"""TcpTransport: messages, peer loss, setup, and strangers on the data listener."""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import struct
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from collectives._handshake import PURPOSE_DATA, PURPOSE_STORE, client_handshake, resolve_bind_address
from collectives.config import Config
from collectives.errors import (
    AuthenticationError,
    CollectiveTimeoutError,
    ConnectError,
    InvalidArgumentError,
    PeerLostError,
    RendezvousTimeoutError,
)
from collectives.store import HashStore, Store, TCPStore, TCPStoreServer
from collectives.transports.base import Request
from collectives.transports.progress import ProgressEngine
from collectives.transports.tcp import TcpTransport

SECRET = b"s" * 32
TIMEOUT = 10.0


def new_store(secret: bytes = SECRET) -> HashStore:
    store = HashStore(timeout=TIMEOUT)
    store.set("secret", secret)
    return store


def wait(transport: TcpTransport, requests: list[Request], timeout: float = TIMEOUT) -> None:
    def on_timeout(peers: list[int]) -> BaseException:
        return CollectiveTimeoutError("test", 0, peers, timeout)

    ProgressEngine([transport]).wait(requests, time.monotonic() + timeout, on_timeout)


def run_ranks(
    size: int,
    body: Callable[[int, TcpTransport], Any],
    store: Store | None = None,
    config: Config | None = None,
) -> list[Any]:
    """Run ``body(rank, transport)`` in one thread per rank, each owning its transport."""
    store = store or new_store()
    config = config or Config()

    def rank_main(rank: int) -> Any:
        transport = TcpTransport(rank, size, [p for p in range(size) if p != rank], store, config, TIMEOUT)
        try:
            return body(rank, transport)
        finally:
            transport.close()

    with ThreadPoolExecutor(size) as pool:
        futures = [pool.submit(rank_main, r) for r in range(size)]
        return [f.result(timeout=60) for f in futures]


def payload(seed: int, nbytes: int) -> np.ndarray:
    return np.frombuffer(np.random.default_rng(seed).bytes(nbytes), dtype=np.uint8)


# -- messages -------------------------------------------------------------------------------


def test_big_and_empty_messages_both_directions_at_once() -> None:
    nbytes = 64 << 20

    def body(rank: int, t: TcpTransport) -> None:
        peer = 1 - rank
        ch = t.channels[peer]
        src = payload(rank, nbytes)
        dst = np.empty(nbytes, np.uint8)
        empty_in, empty_in2 = bytearray(), bytearray()
        reqs = [
            ch.irecv(empty_in, 1),
            ch.isend(b"", 1),
            ch.isend(src, 2),
            ch.irecv(dst, 2),
            ch.isend(b"", 3),
            ch.irecv(empty_in2, 3),
        ]
        wait(t, reqs)
        assert all(r.done for r in reqs)
        assert np.array_equal(dst, payload(peer, nbytes))

    run_ranks(2, body)


def test_many_tags_interleaved_with_small_frames() -> None:
    rng = np.random.default_rng(7)
    sizes = {tag: int(rng.integers(0, 20000)) for tag in range(40)}
    order = [int(t) for t in rng.permutation(40)]

    def body(rank: int, t: TcpTransport) -> None:
        ch = t.channels[1 - rank]
        if rank == 0:
            sends = [ch.isend(payload(tag, sizes[tag]), tag) for tag in order]
            sends += [ch.isend(np.full(10, i, np.uint8), 99) for i in range(5)]  # same tag: kept in order
            wait(t, sends)
            ack = bytearray(1)
            wait(t, [ch.irecv(ack, 100)])
        else:
            outs = {tag: np.empty(sizes[tag], np.uint8) for tag in range(40)}
            first = [ch.irecv(outs[tag], tag) for tag in range(20)]  # posted before arrival
            wait(t, first)
            time.sleep(0.05)  # the rest arrive before their receives are posted
            rest = [ch.irecv(outs[tag], tag) for tag in range(39, 19, -1)]
            same = [np.empty(10, np.uint8) for _ in range(5)]
            wait(t, rest + [ch.irecv(buf, 99) for buf in same])
            for tag, out in outs.items():
                assert np.array_equal(out, payload(tag, sizes[tag])), tag
            assert [int(b[0]) for b in same] == [0, 1, 2, 3, 4]
            wait(t, [ch.isend(b"k", 100)])

    run_ranks(2, body, config=Config(max_frame_bytes=4096))


def test_four_ranks_full_mesh() -> None:
    store = new_store()

    def body(rank: int, t: TcpTransport) -> list[int]:
        assert sorted(t.channels) == [p for p in range(4) if p != rank]
        outs = {p: np.empty(1000, np.int32) for p in t.channels}
        reqs = [ch.isend(np.full(1000, 10 * rank + p, np.int32), 5) for p, ch in t.channels.items()]
        reqs += [t.channels[p].irecv(outs[p], 5) for p in t.channels]
        wait(t, reqs)
        return [int(outs[p][0]) if p in outs else -1 for p in range(4)]

    got = run_ranks(4, body, store=store)
    for rank, row in enumerate(got):
        assert row == [10 * p + rank if p != rank else -1 for p in range(4)]
    for rank in (1, 2, 3):  # rank 0 only connects out, so it publishes nothing
        assert store.get(f"tcp/addr/{rank}").startswith(b"127.0.0.1:")
    assert not store.check(["tcp/addr/0"])


def test_wait_for_activity_sleeps_and_wakes() -> None:
    def body(rank: int, t: TcpTransport) -> tuple[float, float]:
        ch = t.channels[1 - rank]
        if rank == 0:
            time.sleep(0.3)
            wait(t, [ch.isend(b"wake", 1)])
            wait(t, [ch.irecv(bytearray(1), 2)])
            return (0.0, 0.0)
        start = time.monotonic()
        t.wait_for_activity(0.1)  # nothing arrives: sleeps its full timeout
        idle = time.monotonic() - start
        start = time.monotonic()
        t.wait_for_activity(5.0)  # returns when the message lands
        woke = time.monotonic() - start
        out = bytearray(4)
        wait(t, [ch.irecv(out, 1)])
        assert out == b"wake"
        wait(t, [ch.isend(b"k", 2)])
        return (idle, woke)

    _, (idle, woke) = run_ranks(2, body)
    assert 0.08 <= idle < 0.3
    assert woke < 2.0


# -- peers going away -------------------------------------------------------------------------


def test_peer_close_raises_peer_lost_not_a_hang() -> None:
    def body(rank: int, t: TcpTransport) -> None:
        ch = t.channels[1 - rank]
        if rank == 0:
            wait(t, [ch.isend(b"last words", 1)])
            t.close()  # closes before rank 1 has even posted its receive
            return
        time.sleep(0.2)
        out = bytearray(10)
        wait(t, [ch.irecv(out, 1)])  # data sent before the close still arrives
        assert out == b"last words"
        idle = time.monotonic()
        t.wait_for_activity(0.1)  # a cleanly closed stream, nothing posted: no busy wake-ups
        assert time.monotonic() - idle >= 0.08
        start = time.monotonic()
        with pytest.raises(PeerLostError, match="rank 0 closed the connection") as info:
            wait(t, [ch.irecv(bytearray(4), 2)])
        assert info.value.peer == 0
        assert time.monotonic() - start < 3.0
        idle = time.monotonic()
        t.wait_for_activity(0.1)  # nor does a failed channel
        assert time.monotonic() - idle >= 0.08
        with pytest.raises(PeerLostError):
            wait(t, [ch.isend(b"x", 3)])  # the channel stays failed

    run_ranks(2, body)


def test_close_from_another_thread_fails_every_pending_request_despite_a_selector_race() -> None:
    """``abort()`` closes the transport while the waiting thread updates its selector; a
    registration that thread already dropped must not stop the close at that channel (the
    requests on the channels after it would then wait for their peers, not fail now)."""
    def body(rank: int, t: TcpTransport) -> None:
        if rank != 0:
            time.sleep(0.5)  # alive and connected, but sends nothing
            return
        pending = [t.channels[peer].irecv(bytearray(4), 9) for peer in (1, 2)]
        t.wait_for_activity(0.01)  # both sockets are now registered
        t._sel.unregister(t.channels[1].sock)  # what the waiting thread did just before the close
        t.close()
        assert all(isinstance(r.error, PeerLostError) for r in pending), [r.error for r in pending]
        t.wait_for_activity(0.01)  # the waiting thread's next sleep, on a closed selector: no error

    run_ranks(3, body)


def test_send_to_closed_peer_raises_peer_lost() -> None:
    def body(rank: int, t: TcpTransport) -> None:
        ch = t.channels[1 - rank]
        if rank == 1:
            wait(t, [ch.isend(b"x", 0)])
            t.close()
            return
        wait(t, [ch.irecv(bytearray(1), 0)])
        time.sleep(0.1)
        with pytest.raises(PeerLostError) as info:
            wait(t, [ch.isend(np.zeros(32 << 20, np.uint8), 1)])  # more than the socket buffers hold
        assert "rank 1" in str(info.value)

    run_ranks(2, body)


def _crashing_rank(port: int, secret: bytes) -> None:
    store = TCPStore("127.0.0.1", port, secret, timeout=TIMEOUT)
    t = TcpTransport(1, 2, [0], store, Config(), TIMEOUT)
    ch = t.channels[0]
    out = bytearray(5)
    wait(t, [ch.isend(b"hello", 1), ch.irecv(out, 1)])
    assert out == b"olleh"
    os._exit(0)  # no close, no goodbye: like a crash


@pytest.mark.multiprocess
def test_peer_process_dies() -> None:
    server = TCPStoreServer(secret=SECRET)
    store = TCPStore(server.host, server.port, SECRET, timeout=TIMEOUT)
    store.set("secret", SECRET)
    proc = multiprocessing.get_context("spawn").Process(target=_crashing_rank, args=(server.port, SECRET))
    proc.start()
    try:
        t = TcpTransport(0, 2, [1], store, Config(), TIMEOUT)
        ch = t.channels[1]
        out = bytearray(5)
        wait(t, [ch.irecv(out, 1), ch.isend(b"olleh", 1)])
        assert out == b"hello"
        with pytest.raises(PeerLostError, match="rank 1"):
            wait(t, [ch.irecv(bytearray(8), 2)])
        t.close()
    finally:
        proc.join(10)
        store.close()
        server.close()
    assert proc.exitcode == 0


# -- setup ------------------------------------------------------------------------------------


def test_strangers_on_the_data_listener_are_rejected(caplog: pytest.LogCaptureFixture) -> None:
    store = new_store()
    caplog.set_level(logging.DEBUG, logger="collectives")
    with ThreadPoolExecutor(2) as pool:
        rank1 = pool.submit(TcpTransport, 1, 2, [0], store, Config(), TIMEOUT)
        host, port = store.get("tcp/addr/1", 5).decode().rsplit(":", 1)
        address = (host, int(port))
        silent = socket.create_connection(address)  # says nothing, stays open
        with socket.create_connection(address) as junk:
            junk.sendall(b"\x16\x03\x01" + struct.pack("<Q", 2**63) * 16)
        with socket.create_connection(address) as s, pytest.raises(AuthenticationError, match="rejected"):
            client_handshake(s, b"wrong secret", PURPOSE_DATA, 0, timeout=3)
        with socket.create_connection(address) as s, pytest.raises(AuthenticationError, match="rejected"):
            client_handshake(s, SECRET, PURPOSE_DATA, 7, timeout=3)  # right secret, not a peer
        with socket.create_connection(address) as s, pytest.raises(AuthenticationError, match="data endpoint"):
            client_handshake(s, SECRET, PURPOSE_STORE, timeout=3)
        rank0 = pool.submit(TcpTransport, 0, 2, [1], store, Config(), TIMEOUT)
        t0, t1 = rank0.result(timeout=10), rank1.result(timeout=10)
    silent.close()
    try:
        out = bytearray(2)
        t0.channels[1].isend(b"ok", 4)
        req = t1.channels[0].irecv(out, 4)
        deadline = time.monotonic() + 5
        while not req.done and time.monotonic() < deadline:
            t0.progress()
            t1.progress()
        assert out == b"ok"
        with pytest.raises(ConnectionRefusedError):  # the listener closed once rank 0 arrived
            socket.create_connection(address, timeout=1).close()
    finally:
        t0.close()
        t1.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any("bad magic" in m for m in messages)
    assert any("failed to prove the job secret" in m for m in messages)
    assert any("claims rank 7" in m for m in messages)
    # one warning for the one source address; the other rejections only at DEBUG
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING and "rejected a connection" in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in warned]


def test_wrong_job_secret_between_ranks() -> None:
    store_a, store_b = new_store(b"a" * 32), new_store(b"b" * 32)
    with ThreadPoolExecutor(2) as pool:
        rank1 = pool.submit(TcpTransport, 1, 2, [0], store_b, Config(), 1.0)
        store_a.set("tcp/addr/1", store_b.get("tcp/addr/1", 5))
        with pytest.raises(AuthenticationError, match="rank 1 at 127.0.0.1"):
            TcpTransport(0, 2, [1], store_a, Config(), 1.0)
        with pytest.raises(ConnectError, match="rank\\(s\\) 0 did not connect"):
            rank1.result(timeout=10)


def test_stale_address_reaching_the_wrong_rank_is_refused() -> None:
    store = new_store()
    with ThreadPoolExecutor(1) as pool:
        rank1 = pool.submit(TcpTransport, 1, 3, [0], store, Config(), 2.0)
        store.set("tcp/addr/2", store.get("tcp/addr/1", 5))  # rank 2's key points at rank 1
        with pytest.raises(AuthenticationError, match="is rank 1 of this job, not the rank 2"):
            TcpTransport(0, 3, [2], store, Config(), 2.0)
        rank1.result(timeout=10).close()


def test_missing_peer_times_out_naming_the_key() -> None:
    start = time.monotonic()
    with pytest.raises(RendezvousTimeoutError, match="tcp/addr/1"):
        TcpTransport(0, 2, [1], new_store(), Config(), 0.3)
    assert time.monotonic() - start < 3.0


def test_bind_address_defaults_to_loopback() -> None:
    assert resolve_bind_address(Config()) == "127.0.0.1"
    assert resolve_bind_address(Config(socket_addr="127.0.0.2")) == "127.0.0.2"
    assert resolve_bind_address(Config(socket_ifname="lo")) == "127.0.0.1"
    assert resolve_bind_address(Config(socket_ifname="nosuch0,lo")) == "127.0.0.1"
    with pytest.raises(InvalidArgumentError, match="nosuch0"):
        resolve_bind_address(Config(socket_ifname="nosuch0"))
    env = {"COLLECTIVES_SOCKET_ADDR": "127.0.0.3"}
    assert resolve_bind_address(Config.from_env(env)) == "127.0.0.3"


def test_listener_uses_the_configured_address() -> None:
    store = new_store()

    def body(rank: int, t: TcpTransport) -> str:
        out = bytearray(1)
        wait(t, [t.channels[1 - rank].isend(b"x", 0), t.channels[1 - rank].irecv(out, 0)])
        return t.channels[1 - rank].sock.getsockname()[0]

    local = run_ranks(2, body, store=store, config=Config(socket_addr="127.0.0.2"))
    assert store.get("tcp/addr/1").startswith(b"127.0.0.2:")
    assert local[1] == "127.0.0.2"  # rank 1 accepted on its listener's address
    assert run_ranks(2, body)[1] == "127.0.0.1"  # by default: loopback, never the wildcard


def _non_loopback_interface() -> tuple[str, str] | None:
    from collectives._handshake import interface_ipv4

    for _, name in socket.if_nameindex():
        address = interface_ipv4(name)
        if address is not None and not address.startswith("127."):
            return name, address
    return None


def test_interface_bind_needs_a_secret() -> None:
    found = _non_loopback_interface()
    if found is None:
        pytest.skip("no non-loopback IPv4 interface here")
    name, address = found
    config = Config(socket_ifname=name)
    assert resolve_bind_address(config) == address
    with pytest.raises(InvalidArgumentError, match="without a job secret"):
        TcpTransport(1, 2, [0], new_store(b""), config, 1.0)
    store = new_store()

    def body(rank: int, t: TcpTransport) -> str:
        out = bytearray(1)
        wait(t, [t.channels[1 - rank].isend(b"x", 0), t.channels[1 - rank].irecv(out, 0)])
        return t.channels[1 - rank].sock.getsockname()[0]

    assert run_ranks(2, body, store=store, config=config)[1] == address
    assert store.get("tcp/addr/1").startswith(f"{address}:".encode())


def test_tcps_larger_step_is_the_one_rule_the_tuner_prices() -> None:
    """TcpTransport.large_chunk and tcp.LARGE_FROM_BYTES / LARGE_CHUNK_BYTES (kept for their
    callers) describe ``steps.step_bytes`` for tcp (at 2 ranks), not a rule of their own."""
    from collectives.steps import STEP_BYTES, step_bytes
    from collectives.transports.tcp import LARGE_CHUNK_BYTES, LARGE_FROM_BYTES

    assert TcpTransport.large_chunk == (LARGE_FROM_BYTES, LARGE_CHUNK_BYTES)
    assert TcpTransport.chunk_bytes == STEP_BYTES == step_bytes("tcp", "all_reduce", LARGE_FROM_BYTES - 1, 2)
    assert step_bytes("tcp", "all_reduce", LARGE_FROM_BYTES, 2) == LARGE_CHUNK_BYTES
