"""Worlds of transports in one process, for the conformance suite and for tests.

:func:`build_world` connects one transport per rank, ranks being threads of this process
(the suite's :data:`MakeWorld` factories are built on it); :func:`make_inproc_world` is
the one for the in-process transport; :class:`ShmPair` is two ranks' shared-memory channels to
each other on fresh inboxes, so that a test decides when each side writes and reads. Apart from :mod:`collectives.testing.conformance`
so that the suite reads as its checks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from ..config import Config
from ..store import HashStore, Store
from ..transports.base import Transport

__all__ = ["DEFAULT_TIMEOUT", "MakeWorld", "ShmPair", "build_world", "make_inproc_world"]

MakeWorld = Callable[[int], list[Transport]]
"""``make_world(n)`` returns ``[transport of rank 0, ..., transport of rank n-1]``, connected."""

DEFAULT_TIMEOUT = 20.0
"""Seconds any single check may wait before it calls the transport hung."""


def build_world(
    transport_cls: Callable[..., Transport],
    n: int,
    *,
    store: Store | None = None,
    config: Config | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[Transport]:
    """Construct ``transport_cls(rank, n, peers, store, config, timeout)`` for every rank, in
    concurrent threads (construction is collective), and return them in rank order.

    ``store`` defaults to a fresh :class:`HashStore`; put whatever the transport needs
    beforehand (``store.set("secret", ...)`` for TCP). If any rank fails, the transports
    that were built are closed and the first error is re-raised.
    """
    store = HashStore(timeout=timeout) if store is None else store
    config = Config() if config is None else config
    built: list[Transport | None] = [None] * n
    errors: list[tuple[int, BaseException]] = []

    def construct(rank: int) -> None:
        peers = [p for p in range(n) if p != rank]
        try:
            built[rank] = transport_cls(rank, n, peers, store, config, timeout)
        except BaseException as exc:
            errors.append((rank, exc))

    threads = [threading.Thread(target=construct, args=(r,), daemon=True) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 5.0)
    hung = [r for r, t in enumerate(threads) if t.is_alive()]
    if errors or hung:
        for transport in built:
            if transport is not None:
                transport.close()
        if errors:
            rank, exc = errors[0]
            raise exc
        raise AssertionError(f"constructing {getattr(transport_cls, '__name__', transport_cls)} hung on rank(s) {hung}")
    return [t for t in built if t is not None]


def make_inproc_world(n: int) -> list[Transport]:
    """A world of :class:`InprocTransport` over a fresh HashStore (a :data:`MakeWorld`)."""
    from ..transports.inproc import InprocTransport

    return build_world(InprocTransport, n)


class ShmPair:
    """Rank 0's shared-memory channel to rank 1 (``a``) and rank 1's to rank 0 (``b``), both in
    this process, over two fresh inboxes whose rings hold ``capacity`` bytes (unlinked at once:
    nothing is left behind); ``close``, or leaving a ``with`` block, releases them."""

    def __init__(self, capacity: int, max_frame_bytes: int = 64 << 20) -> None:
        from ..transports.shm import ShmChannel, _Segment

        self.segments = [_Segment.create(0, [1], capacity), _Segment.create(1, [0], capacity)]
        self.a = ShmChannel(0, 1, self.segments[0], self.segments[1], max_frame_bytes)
        self.b = ShmChannel(1, 0, self.segments[1], self.segments[0], max_frame_bytes)
        for segment in self.segments:
            segment.unlink()

    def close(self) -> None:
        self.a.close()
        self.b.close()
        for segment in self.segments:
            segment.release()

    def __enter__(self) -> ShmPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def message(n: int, seed: int) -> np.ndarray:
        """``n`` bytes of a pattern that differs by ``seed``: a byte out of place, or one of another
        message, shows."""
        return ((np.arange(n, dtype=np.int64) * 7 + seed) % 251).astype(np.uint8)

    @staticmethod
    def tail(channel: Any) -> int:
        """The tail of ``channel``'s ring out (bytes written since the start, restarts' skips included)."""
        assert channel._out is not None
        return int(channel._out.tail.value)

    @staticmethod
    def head(channel: Any) -> int:
        """The head of ``channel``'s ring out, as its reader left it."""
        assert channel._out is not None
        return int(channel._out.head.value)
