"""Our Store interface over a torch.distributed Store (torchrun's agent store, or the
store torch hands a process-group backend).

Under torchrun, MASTER_PORT is already served by the elastic agent's TCPStore
(TORCHELASTIC_USE_AGENT_STORE=True), so ranks meet there, as torch's own process groups do.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from .._handshake import listen_socket
from .._interfaces import host_port
from ..errors import ConnectError, RendezvousTimeoutError, StoreError
from .base import DEFAULT_TIMEOUT, Store


class TorchStore(Store):
    """Adapter from a ``torch.distributed.Store`` to :class:`Store`. Not private: torch's
    TCPStore lets anyone who can connect read and write every key."""

    def __init__(self, store: Any, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.torch_store = store
        self.timeout = timeout

    @classmethod
    def connect(cls, host: str, port: int, rank: int, size: int, *, is_server: bool, timeout: float) -> TorchStore:
        """Connect to (or, with ``is_server``, host) a torch TCPStore at host:port.

        A server listens on ``host`` only (torch's own would listen on every interface,
        whatever ``host`` says): a socket bound here is handed to it."""
        from torch.distributed import TCPStore

        wait = datetime.timedelta(seconds=timeout)
        if not is_server:
            try:
                return cls(TCPStore(host, port, size, False, timeout=wait, wait_for_workers=False), timeout)
            except RuntimeError as exc:  # torch's DistNetworkError, with a C++ stack trace after its first line
                first = (str(exc).splitlines() or [type(exc).__name__])[0]
                raise ConnectError(
                    f"could not connect to the store at {host_port(host, port)} (torch's TCPStore, MASTER_ADDR and "
                    f"MASTER_PORT) within {timeout:g} s: {first}"
                ) from None
        listener = listen_socket(host, port)
        try:
            store = TCPStore(host, port, size, True, timeout=wait, wait_for_workers=False,
                             master_listen_fd=listener.fileno())
        except BaseException:
            listener.close()
            raise
        listener.detach()  # torch's server owns the descriptor now (and closes it)
        return cls(store, timeout)

    def _with_timeout(self, timeout: float | None) -> None:
        self.torch_store.set_timeout(datetime.timedelta(seconds=self.timeout if timeout is None else timeout))

    def set(self, key: str, value: bytes) -> None:
        self.torch_store.set(key, value)

    def get(self, key: str, timeout: float | None = None) -> bytes:
        self._with_timeout(timeout)
        try:
            return bytes(self.torch_store.get(key))
        except Exception as exc:  # torch raises DistStoreError / RuntimeError on timeout
            if "timeout" in str(exc).lower() or "timed out" in str(exc).lower():
                raise self._timeout_error([key], self.timeout if timeout is None else timeout) from exc
            raise StoreError(f"torch store: get {key!r} failed: {exc}") from exc

    def add(self, key: str, amount: int) -> int:
        return int(self.torch_store.add(key, amount))

    def compare_set(self, key: str, expected: bytes, desired: bytes) -> bytes:
        return bytes(self.torch_store.compare_set(key, expected, desired))

    def check(self, keys: Sequence[str]) -> bool:
        return bool(self.torch_store.check(list(keys)))

    def delete(self, key: str) -> bool:
        return bool(self.torch_store.delete_key(key))

    def wait(self, keys: Sequence[str], timeout: float | None = None) -> None:
        seconds = self.timeout if timeout is None else timeout
        try:
            self.torch_store.wait(list(keys), datetime.timedelta(seconds=seconds))
        except Exception as exc:
            raise RendezvousTimeoutError(
                f"TorchStore: key(s) {', '.join(map(repr, keys))} not set within {seconds:g} s ({exc})"
            ) from exc
