"""transports/base.py (``Channel.irecv_sink``) and shm.py (``ShmChannel._feed_some``): a receive
into a sink hands it the message's bytes in order, whole and exactly once, whether the receive
was posted before or after the message came, and over shm straight from the ring, where they lie.

Ranks are threads of this process over connected transports (``build_world``)."""

from __future__ import annotations

import importlib
import mmap
import random
import secrets
import threading
import time
from collections.abc import Callable

import pytest

from collectives.config import Config
from collectives.errors import MessageMismatchError
from collectives.store import HashStore
from collectives.testing import build_world, make_inproc_world
from collectives.transports.base import FEED_BYTES, Transport
from collectives.transports.progress import ProgressEngine


def _shm(n: int, config: Config | None = None) -> list[Transport]:
    return build_world(importlib.import_module("collectives.transports.shm").ShmTransport, n, config=config)


def _tcp(n: int) -> list[Transport]:
    store = HashStore(timeout=20.0)
    store.set("secret", secrets.token_bytes(32))
    return build_world(importlib.import_module("collectives.transports.tcp").TcpTransport, n, store=store)


WORLDS: dict[str, Callable[[int], list[Transport]]] = {"inproc": make_inproc_world, "shm": _shm, "tcp": _tcp}


class Pieces:
    """A sink that keeps a copy of every piece it is handed, and what each piece was a view of."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.owners: list[object] = []

    def feed(self, data: memoryview) -> None:
        self.pieces.append(bytes(data))
        self.owners.append(data.obj)

    @property
    def got(self) -> bytes:
        return b"".join(self.pieces)


def _wait(transport: Transport, requests: list) -> None:
    ProgressEngine([transport]).wait(requests, time.monotonic() + 20, lambda peers: AssertionError(f"hung on {peers}"))


def _exchange(world: list[Transport], messages: list[bytes], *, post_first: bool) -> list[Pieces]:
    """Rank 0 sends ``messages`` (tags 1, 2, ...) to rank 1, which receives each into a sink,
    posted before the sends start (``post_first``) or only once all are on their way; then
    the world is closed."""
    sinks = [Pieces() for _ in messages]
    posted = threading.Event()
    sent = threading.Event()

    def sender() -> None:
        if post_first:
            posted.wait(10)
        requests = [world[0].channels[1].isend(m, tag) for tag, m in enumerate(messages, 1)]
        sent.set()
        _wait(world[0], requests)

    def receiver() -> None:
        if not post_first:
            sent.wait(10)
            time.sleep(0.05)  # let some of it arrive unexpected
        requests = [world[1].channels[0].irecv_sink(s, len(m), tag) for tag, (s, m) in enumerate(zip(sinks, messages), 1)]
        posted.set()
        _wait(world[1], requests)

    threads = [threading.Thread(target=f) for f in (sender, receiver)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        for transport in world:
            transport.close()
    return sinks


@pytest.mark.parametrize("post_first", [True, False], ids=["posted-first", "posted-late"])
@pytest.mark.parametrize("kind", sorted(WORLDS))
def test_a_sink_is_handed_every_byte_of_its_message_in_order(kind: str, post_first: bool) -> None:
    rng = random.Random(7)
    sizes = [0, 1, 4099, FEED_BYTES + 13, 3 * FEED_BYTES + 5]
    messages = [rng.randbytes(n) for n in sizes]
    world = WORLDS[kind](2)
    sinks = _exchange(world, messages, post_first=post_first)
    assert [s.got for s in sinks] == messages


def test_over_shm_a_sink_is_handed_the_ring_itself_across_its_wrap_at_any_byte() -> None:
    # an odd ring, and an odd message first: the pieces start and wrap off any element's bounds
    world = _shm(2, Config(shm_ring_bytes=100_003))
    messages = [b"x" * 7] + [random.Random(i).randbytes(250_001) for i in range(3)]
    sinks = _exchange(world, messages, post_first=True)
    assert [s.got for s in sinks] == messages
    owners = {type(o) for s in sinks for o in s.owners}
    assert owners == {mmap.mmap}  # not copied out of the ring into a buffer first
    assert any(len(s.pieces) > 2 for s in sinks)  # handed over as the ring turns, not whole


@pytest.mark.parametrize("kind", sorted(WORLDS))
def test_a_sink_receive_of_the_wrong_size_is_a_mismatch(kind: str) -> None:
    world = WORLDS[kind](2)
    try:
        world[0].channels[1].isend(b"abcdef", 5)
        request = world[1].channels[0].irecv_sink(Pieces(), 4, 5)
        with pytest.raises(MessageMismatchError):
            _wait(world[1], [request])
    finally:
        for t in world:
            t.close()
