"""The rendezvous key-value store interface (gloo's rendezvous/store.h, torch's c10d Store).

Ranks meet through a store: they publish addresses, host identities and the job's data
secret, and wait for each other's keys. Values are bytes; nothing read from a store is
unpickled.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence

from ..errors import RendezvousTimeoutError

DEFAULT_TIMEOUT = 600.0


class Store(abc.ABC):
    """A key-value store shared by the ranks of one job.

    Every blocking call takes a ``timeout`` in seconds (``None``: the store's default) and
    raises :class:`RendezvousTimeoutError` naming the missing keys when it expires.
    """

    timeout: float = DEFAULT_TIMEOUT
    private: bool = False
    """Whether only processes that hold the job's secret can read or write this store (our
    authenticated TCP store, an in-process one). ``connect()`` then lets the data plane's
    keys come from it; a store anyone can reach (torch's TCPStore, a file) is never trusted
    with them (see SECURITY.md)."""

    @abc.abstractmethod
    def set(self, key: str, value: bytes) -> None:
        """Store ``value`` under ``key``, replacing any earlier value."""

    @abc.abstractmethod
    def get(self, key: str, timeout: float | None = None) -> bytes:
        """Return the value of ``key``, waiting until some rank has set it."""

    @abc.abstractmethod
    def add(self, key: str, amount: int) -> int:
        """Add ``amount`` to the integer counter ``key`` (absent counts as 0); return the sum."""

    @abc.abstractmethod
    def compare_set(self, key: str, expected: bytes, desired: bytes) -> bytes:
        """Set ``key`` to ``desired`` if it holds ``expected`` (or is absent and ``expected`` is
        ``b""``); return the value the key holds afterwards."""

    @abc.abstractmethod
    def check(self, keys: Sequence[str]) -> bool:
        """Whether every key in ``keys`` is present, without waiting."""

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it existed."""

    def wait(self, keys: Sequence[str], timeout: float | None = None) -> None:
        """Wait until every key in ``keys`` is present."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        for key in keys:
            self.get(key, timeout=max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Release connections (a server hosted by this store object stops)."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _timeout_error(self, keys: Sequence[str], timeout: float) -> RendezvousTimeoutError:
        return RendezvousTimeoutError(
            f"{type(self).__name__}: key(s) {', '.join(map(repr, keys))} not set within {timeout:g} s"
        )


class PrefixStore(Store):
    """A view of another store with every key prefixed, so that groups do not collide."""

    def __init__(self, prefix: str, store: Store) -> None:
        self.prefix = prefix
        self.store = store
        self.timeout = store.timeout

    @property
    def private(self) -> bool:  # type: ignore[override]  # a class attribute in the base, read through here
        return self.store.private

    def _k(self, key: str) -> str:
        return f"{self.prefix}/{key}"

    def set(self, key: str, value: bytes) -> None:
        self.store.set(self._k(key), value)

    def get(self, key: str, timeout: float | None = None) -> bytes:
        return self.store.get(self._k(key), timeout)

    def add(self, key: str, amount: int) -> int:
        return self.store.add(self._k(key), amount)

    def compare_set(self, key: str, expected: bytes, desired: bytes) -> bytes:
        return self.store.compare_set(self._k(key), expected, desired)

    def check(self, keys: Sequence[str]) -> bool:
        return self.store.check([self._k(k) for k in keys])

    def delete(self, key: str) -> bool:
        return self.store.delete(self._k(key))

    def wait(self, keys: Sequence[str], timeout: float | None = None) -> None:
        self.store.wait([self._k(k) for k in keys], timeout)
