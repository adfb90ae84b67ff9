"""Revocation: a flag in the store, and a thread per member that acts on it at once.

``revoke`` sets ``revoked`` (the first reason wins) and rings every member's ``wake/r``
key; each member's :class:`Watcher` sleeps in a parked ``get`` of its own ``wake`` key, so
the store answers it the moment the key is set, and it revokes its communicator locally:
the communicator is marked revoked, then its transports are closed, which ends any wait
in progress (the waits look at their transport between sleeps of at most 50 ms). The path
does not use the broken collective's connections, only the store. A transport failure
that the revoke itself caused (a peer closed its end) is told apart by looking at the
store's flag before reporting it (``Recoverable._stopped``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ..errors import RendezvousTimeoutError, StoreError
from ..store import Store

logger = logging.getLogger("collectives")

PARK = 24 * 3600.0  # seconds of one parked get; the watcher parks again when one ends unwoken
CLOSED = b"closed"
CLOSE_SECONDS = 2.0
"""The longest ``Watcher.close`` waits on the store, to wake its thread and then for it."""


class Watcher:
    """The thread that waits for this member's ``wake`` key (closed with the communicator)."""

    def __init__(self, store: Store, rank: int, on_revoke: Callable[[str], None], *, ring: Store | None = None) -> None:
        self.store = store  # where the thread parks (a connection of its own where clients serialise)
        self.ring = store if ring is None else ring  # where close() wakes it
        self.rank = rank
        self.on_revoke = on_revoke
        self.store_lost = False  # the store went away: nothing will ring us any more
        self._thread = threading.Thread(target=self._watch, name=f"collectives-revoke-watch-rank{rank}", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        try:
            while True:
                try:
                    why = self.store.get(f"wake/{self.rank}", PARK)
                    break
                except RendezvousTimeoutError:
                    continue
            if why != CLOSED:
                self.on_revoke(self.store.get("revoked", 5.0).decode(errors="replace"))
        except StoreError as exc:
            self.store_lost = True
            logger.debug("rank %d: the revoke watcher lost the store (%s)", self.rank, exc)
        except Exception:  # noqa: BLE001 - a daemon thread must say why it ended
            logger.exception("rank %d: the revoke watcher failed", self.rank)

    def close(self) -> None:
        """Wake the thread and wait for it (it holds a store connection), for at most
        CLOSE_SECONDS: a store whose host has gone (its listener closed: a client retries
        connecting until its own timeout, minutes) must not hold ``close()`` up. The thread
        is a daemon, and its parked get ends with the store, or when the caller closes its
        store client (``TCPStore.close`` ends the requests in flight)."""
        if not self._thread.is_alive():
            return
        ringer = threading.Thread(target=self._ring_closed, name=f"collectives-revoke-close-rank{self.rank}",
                                  daemon=True)
        ringer.start()
        ringer.join(CLOSE_SECONDS)
        if not ringer.is_alive():
            self._thread.join(CLOSE_SECONDS)

    def _ring_closed(self) -> None:
        try:
            self.ring.compare_set(f"wake/{self.rank}", b"", CLOSED)
        except StoreError:
            pass  # the store is gone; the parked get ends with it


def publish(store: Store, size: int, reason: str) -> str:
    """Set the revoked flag (the first reason wins) and ring every member; return the reason held."""
    held = store.compare_set("revoked", b"", reason.encode()).decode(errors="replace")
    for r in range(size):
        store.compare_set(f"wake/{r}", b"", b"revoke")
    return held
