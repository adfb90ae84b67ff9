"""Every transport against the conformance suite (collectives.testing.conformance).

Ranks are threads of this process for all three transports (shm and tcp work across
threads too), so the suite runs without forking. Also checks that the suite itself can
fail: deliberately broken transports must be caught.
"""

from __future__ import annotations

import importlib
import secrets
from collections.abc import Callable

import pytest

from collectives.errors import PeerLostError
from collectives.store import HashStore
from collectives.testing import CONFORMANCE_CHECKS, build_world, check_transport, make_inproc_world
from collectives.testing.conformance import MakeWorld, check_peer_close, check_size_mismatch
from collectives.transports.base import Transport
from collectives.transports.inproc import InprocChannel, InprocTransport

LARGE_BYTES = 64 << 20


def _shm_world(n: int) -> list[Transport]:
    shm = importlib.import_module("collectives.transports.shm")
    return build_world(shm.ShmTransport, n)


def _tcp_world(n: int) -> list[Transport]:
    tcp = importlib.import_module("collectives.transports.tcp")
    store = HashStore(timeout=20.0)
    store.set("secret", secrets.token_bytes(32))  # what init() does (lowest rank) before building
    return build_world(tcp.TcpTransport, n, store=store)


WORLDS: dict[str, MakeWorld] = {"inproc": make_inproc_world, "shm": _shm_world, "tcp": _tcp_world}


@pytest.fixture(params=sorted(WORLDS))
def make_world(request: pytest.FixtureRequest) -> MakeWorld:
    return WORLDS[request.param]


@pytest.mark.parametrize("check", sorted(CONFORMANCE_CHECKS))
def test_conformance(make_world: MakeWorld, check: str) -> None:
    kwargs = {"large_bytes": LARGE_BYTES} if check == "large_both_ways" else {}
    CONFORMANCE_CHECKS[check](make_world, **kwargs)


def test_check_transport_runs_every_check() -> None:
    check_transport(make_inproc_world, large_bytes=1 << 20)


# -- the suite catches broken transports ------------------------------------------------------


class _NoSizeCheckChannel(InprocChannel):
    """Accepts a message of any size into any receive (truncating or leaving a tail)."""

    def _check_fits(self, op: object, nbytes: int, end: bool) -> None:
        return None


class _DeafChannel(InprocChannel):
    """Never notices that its peer went away: reads and writes just make no progress."""

    def _read_some(self, into: memoryview) -> int:
        try:
            return super()._read_some(into)
        except PeerLostError:
            return 0

    def _write_some(self, views: object) -> int:
        try:
            return super()._write_some(views)  # type: ignore[arg-type]
        except PeerLostError:
            return 0


def _mutant_world(channel_cls: type[InprocChannel]) -> MakeWorld:
    def make(n: int) -> list[Transport]:
        world = make_inproc_world(n)
        for transport in world:
            assert isinstance(transport, InprocTransport)
            for peer, ch in list(transport.channels.items()):
                ch.__class__ = channel_cls
        return world

    return make


@pytest.mark.parametrize(
    ("channel_cls", "check", "expected"),
    [
        (_NoSizeCheckChannel, check_size_mismatch, "the receive completed"),
        (_DeafChannel, check_peer_close, "not done after"),
    ],
    ids=["no-size-check", "deaf-to-close"],
)
def test_suite_catches_broken_transport(
    channel_cls: type[InprocChannel], check: Callable[..., None], expected: str
) -> None:
    with pytest.raises(AssertionError, match=expected):
        check(_mutant_world(channel_cls), timeout=0.5)
