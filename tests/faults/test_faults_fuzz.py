"""Hypothesis fuzzing of every decoder of bytes from a peer (issue 16, security): the
handshake (both halves), the store's request and answer headers and its server behind the
handshake, the TCP transport's frame headers, the object codec, and the addresses ranks
publish. Each raises nothing but our typed errors, and never allocates from a length it
has not checked (tracemalloc's peak stays far below the lengths announced)."""

from __future__ import annotations

import socket
import struct
import tracemalloc
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectives import object_codec
from collectives._handshake import (
    ACCEPT_SIZE,
    HELLO_SIZE,
    MAGIC,
    PURPOSE_DATA,
    PURPOSE_STORE,
    REPLY_SIZE,
    VERSION,
    HandshakeResponder,
    client_handshake,
)
from collectives.errors import AuthenticationError, ConnectError, DecodeError, StoreError, TransportError
from collectives.store.tcp_store import MAX_VALUE_BYTES, TCPStore, TCPStoreServer, answer_header, request_length
from collectives.transports.base import HEADER, Channel
from collectives.transports.tcp import _split_address

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SECRET = b"fuzz-secret"
ALLOCATION_BOUND = 1 << 20
"""Peak bytes any one decode may allocate here: every announced length above it is a lie."""


def peak_of(fn) -> int:  # type: ignore[no-untyped-def]
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -- the handshake ---------------------------------------------------------------------------

# replies that start right (magic, version) half the time, so the fuzzer reaches the MAC check
replies = st.one_of(
    st.binary(max_size=2 * REPLY_SIZE),
    st.binary(min_size=REPLY_SIZE - 10, max_size=REPLY_SIZE - 10).map(lambda b: MAGIC + struct.pack("<H", VERSION) + b),
)


@FUZZ
@given(reply=replies, purpose=st.sampled_from([PURPOSE_STORE, PURPOSE_DATA]))
def test_the_servers_half_of_the_handshake_turns_away_any_bytes(reply: bytes, purpose: int) -> None:
    server, client = socket.socketpair()
    with server, client:
        responder = HandshakeResponder(server, SECRET, purpose, timeout=1.0)
        client.sendall(reply)
        client.shutdown(socket.SHUT_WR)
        try:
            for _ in range(100):
                assert responder.on_readable() is None, "bytes without the secret passed the handshake"
        except AuthenticationError:
            pass


greetings = st.one_of(
    st.binary(max_size=2 * HELLO_SIZE),
    st.tuples(st.binary(min_size=32, max_size=32), st.sampled_from([PURPOSE_STORE, PURPOSE_DATA, 0, 255]),
              st.binary(max_size=2 * ACCEPT_SIZE)).map(
        lambda t: MAGIC + struct.pack("<H", VERSION) + t[0] + bytes([t[1]]) + t[2]),
)


@FUZZ
@given(greeting=greetings)
def test_the_clients_half_of_the_handshake_turns_away_any_server(greeting: bytes) -> None:
    server, client = socket.socketpair()
    with server, client:
        server.sendall(greeting)
        server.shutdown(socket.SHUT_WR)
        with pytest.raises(AuthenticationError):
            client_handshake(client, SECRET, PURPOSE_STORE, timeout=1.0, where="fuzz")


# -- the store protocol ----------------------------------------------------------------------

@FUZZ
@given(data=st.binary(max_size=64))
def test_store_request_and_answer_headers_are_bounded_before_anything_is_read(data: bytes) -> None:
    try:
        end = request_length(data)
        assert end is None or end <= 29 + 4096 + 2 * MAX_VALUE_BYTES
    except StoreError:
        pass
    if len(data) >= 17:
        try:
            _, vlen, _ = answer_header(data[:17])
            assert vlen <= MAX_VALUE_BYTES
        except StoreError:
            pass


@pytest.fixture(scope="module")
def store_server():  # type: ignore[no-untyped-def]
    server = TCPStoreServer(secret=SECRET, handshake_timeout=2.0)
    yield server
    server.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(
    st.binary(max_size=200),
    st.tuples(st.integers(0, 9), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1),
              st.integers(-(2**63), 2**63 - 1), st.binary(max_size=64)).map(
        lambda t: struct.pack("<BIQQq", *t[:5]) + t[5]),
))
def test_a_member_sending_any_bytes_cannot_hurt_the_store(store_server: TCPStoreServer, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", store_server.port)) as sock:
        client_handshake(sock, SECRET, PURPOSE_STORE)
        sock.sendall(data)
    store = TCPStore("127.0.0.1", store_server.port, SECRET, timeout=10)
    try:
        store.set("alive", b"yes")
        assert store.get("alive") == b"yes"
    finally:
        store.close()


# -- frame headers -----------------------------------------------------------------------------

class ScriptedChannel(Channel):
    """A channel whose peer's byte stream is ``stream``; what we send goes nowhere."""

    def __init__(self, stream: bytes) -> None:
        super().__init__(1, max_frame_bytes=4096)
        self.stream = memoryview(stream)

    def _write_some(self, views: Sequence[memoryview]) -> int:
        return sum(len(v) for v in views)

    def _read_some(self, into: memoryview) -> int:
        n = min(len(into), len(self.stream))
        into[:n] = self.stream[:n]
        self.stream = self.stream[n:]
        return n


frames = st.lists(st.tuples(st.sampled_from([0, 5, 2**64 - 1]), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
                            st.binary(max_size=64)), max_size=6)


@FUZZ
@given(stream=st.one_of(st.binary(max_size=300),
                        frames.map(lambda fs: b"".join(HEADER.pack(t, n, f) + body for t, n, f, body in fs))))
def test_frame_headers_from_a_peer_never_allocate_what_they_announce(stream: bytes) -> None:
    channel = ScriptedChannel(stream)
    out = np.zeros(16, dtype=np.uint8)

    def drive() -> None:
        try:
            channel.irecv(out, 5)
            for _ in range(200):
                if not channel.progress():
                    break
        except TransportError:
            pass

    assert peak_of(drive) < ALLOCATION_BOUND


# -- the object codec ------------------------------------------------------------------------

plain = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20),
              st.binary(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                            st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=20,
)


@FUZZ
@given(obj=plain)
def test_plain_objects_round_trip_through_the_codec(obj: object) -> None:
    assert object_codec.decode(object_codec.encode(obj)) == obj


@FUZZ
@given(data=st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=200).map(lambda b: object_codec.MAGIC + b),
    st.tuples(plain, st.integers(0, 400), st.binary(min_size=1, max_size=9)).map(
        lambda t: _mutate(object_codec.encode(t[0]), t[1], t[2])),
))
def test_the_object_codec_decodes_any_bytes_or_raises_decode_error(data: bytes) -> None:
    def decode() -> None:
        try:
            object_codec.decode(data)
        except DecodeError:
            pass

    assert peak_of(decode) < ALLOCATION_BOUND


def _mutate(encoded: bytes, at: int, junk: bytes) -> bytes:
    at = len(object_codec.MAGIC) + at % max(1, len(encoded) - len(object_codec.MAGIC))
    return encoded[:at] + junk + encoded[at + len(junk):]


def test_announced_lengths_past_the_end_are_refused_before_allocation() -> None:
    lies = [
        object_codec.MAGIC + b"b" + struct.pack("<Q", 2**63),  # 2^63-byte bytes
        object_codec.MAGIC + b"l" + struct.pack("<Q", 2**40),  # 2^40 list items
        object_codec.MAGIC + b"a" + bytes([3]) + b"<f8" + bytes([2]) + struct.pack("<QQ", 2**32, 2**32)
        + b"b" + struct.pack("<Q", 2**63),  # a 2^64-element array
    ]
    for data in lies:
        with pytest.raises(DecodeError):
            object_codec.decode(data)


# -- addresses ranks publish in the store ----------------------------------------------------

@FUZZ
@given(text=st.text(max_size=40))
def test_a_published_address_is_host_port_or_a_connect_error(text: str) -> None:
    try:
        host, port = _split_address(text, 3)
        assert 0 < port < 65536 and host
    except ConnectError:
        pass
