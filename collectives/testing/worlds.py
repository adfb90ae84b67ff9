"""Worlds of transports in one process, for the conformance suite and for tests.

:func:`build_world` connects one transport per rank, ranks being threads of this process
(the suite's :data:`MakeWorld` factories are built on it); :func:`make_inproc_world` is
the one for the in-process transport. Apart from :mod:`collectives.testing.conformance`
so that the suite reads as its checks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..config import Config
from ..store import HashStore, Store
from ..transports.base import Transport

__all__ = ["DEFAULT_TIMEOUT", "MakeWorld", "build_world", "make_inproc_world"]

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
