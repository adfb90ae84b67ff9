"""A rendezvous store bootstrapped over an MPI communicator: no launcher, no environment.

Rank ``root`` of the MPI communicator hosts a :class:`TCPStoreServer` on the address TCP
listeners bind (:func:`collectives._handshake.resolve_bind_address`: loopback unless
COLLECTIVES_SOCKET_ADDR / COLLECTIVES_SOCKET_IFNAME say otherwise, or ``host=``), with a
fresh random secret; it broadcasts ``host``, ``port`` and the secret with MPI, and every
rank (the root too) connects a :class:`TCPStore` client. MPI thus replaces the
environment variables a launcher would set, and the store is a real one (set, get with
waits, add, compare_set) for the rest of the bootstrap.

Nothing is pickled: the broadcast is a length, then UTF-8 JSON, as raw bytes. The
secret travels only through MPI. Construction is collective over the MPI communicator;
afterwards the store is an ordinary one (no MPI calls), kept with the communicator it
bootstrapped (``mpi_comm``) so that the MPI transport can find it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._handshake import WILDCARDS, advertised_host, resolve_bind_address
from ..config import Config
from ..errors import ConnectError, InvalidArgumentError, StoreError
from .base import Store
from .tcp_store import TCPStore, TCPStoreServer


def _bcast_json(mpi_comm: Any, value: Any, root: int) -> Any:
    """Broadcast a JSON-able value from ``root`` as raw bytes (no pickle)."""
    from mpi4py import MPI

    data = json.dumps(value).encode() if mpi_comm.Get_rank() == root else b""
    length = np.array([len(data)], dtype=np.int64)
    mpi_comm.Bcast([length, MPI.INT64_T], root=root)
    buffer = bytearray(data) if data else bytearray(int(length[0]))
    mpi_comm.Bcast([buffer, MPI.BYTE], root=root)
    return json.loads(buffer.decode())


def _all_ok(mpi_comm: Any, ok: bool) -> bool:
    """Whether ``ok`` holds on every rank (a collective AND)."""
    from mpi4py import MPI

    mine = np.array([1 if ok else 0], dtype=np.int32)
    every = np.empty(1, dtype=np.int32)
    mpi_comm.Allreduce([mine, MPI.INT32_T], [every, MPI.INT32_T], op=MPI.MIN)
    return bool(every[0])


class MPIStore(Store):
    """A TCP store whose server rank ``root`` hosts and whose address MPI broadcasts.

    Args:
        mpi_comm: an mpi4py intracommunicator; every rank of it must construct the store.
        config: bind address settings (default: from the environment).
        timeout: default seconds a ``get``/``wait`` may take (default ``config.timeout``).
        host: address the server binds (default :func:`resolve_bind_address`); a wildcard
            (``0.0.0.0``) is published to the other ranks as this host's name.
        root: rank of ``mpi_comm`` that hosts the server.

    Raises:
        InvalidArgumentError: ``mpi_comm`` is not an intracommunicator.
        ConnectError / StoreError: the server could not start, or some rank could not
            reach it (raised on every rank, with the same cause where it is known).
    """

    private = True  # its secret travels only through MPI

    def __init__(
        self,
        mpi_comm: Any,
        config: Config | None = None,
        *,
        timeout: float | None = None,
        host: str | None = None,
        root: int = 0,
    ) -> None:
        from mpi4py import MPI

        if mpi_comm is None or mpi_comm == MPI.COMM_NULL or not isinstance(mpi_comm, MPI.Intracomm):
            raise InvalidArgumentError(f"mpi_comm: expected an mpi4py intracommunicator, got {mpi_comm!r}")
        config = Config.from_env() if config is None else config
        self.mpi_comm = mpi_comm
        self.timeout = config.timeout if timeout is None else timeout
        self.server: TCPStoreServer | None = None
        self._client: TCPStore | None = None
        offer: dict[str, Any]
        if mpi_comm.Get_rank() == root:
            try:
                bind = host or resolve_bind_address(config)
                secret = secrets.token_hex(32)
                self.server = TCPStoreServer(host=bind, port=0, secret=secret, timeout=self.timeout)
                address = advertised_host(bind) if bind in WILDCARDS else self.server.host
                offer = {"host": address, "port": self.server.port, "secret": secret}
            except Exception as exc:  # noqa: BLE001 - every rank must hear why
                offer = {"error": f"{type(exc).__name__}: {exc}"}
        else:
            offer = {}
        offer = _bcast_json(mpi_comm, offer, root)
        if "error" in offer:
            raise ConnectError(f"MPIStore: rank {root} could not start the store server: {offer['error']}")
        failure: BaseException | None = None
        try:
            self._client = TCPStore(offer["host"], int(offer["port"]), offer["secret"], self.timeout)
        except Exception as exc:  # noqa: BLE001 - reported collectively below
            failure = exc
        if not _all_ok(mpi_comm, failure is None):
            self.close()
            where = f"{offer['host']}:{offer['port']}"
            if failure is not None:
                raise ConnectError(f"MPIStore: cannot reach the store at {where}: {failure}") from failure
            raise StoreError(
                f"MPIStore: another rank could not reach the store at {where} (a multi-host job "
                "needs COLLECTIVES_SOCKET_IFNAME or COLLECTIVES_SOCKET_ADDR to bind a reachable address)"
            )

    @property
    def client(self) -> TCPStore:
        if self._client is None:
            raise StoreError("MPIStore is closed")
        return self._client

    def set(self, key: str, value: bytes) -> None:
        self.client.set(key, value)

    def get(self, key: str, timeout: float | None = None) -> bytes:
        return self.client.get(key, timeout)

    def add(self, key: str, amount: int) -> int:
        return self.client.add(key, amount)

    def compare_set(self, key: str, expected: bytes, desired: bytes) -> bytes:
        return self.client.compare_set(key, expected, desired)

    def check(self, keys: Sequence[str]) -> bool:
        return self.client.check(keys)

    def delete(self, key: str) -> bool:
        return self.client.delete(key)

    def wait(self, keys: Sequence[str], timeout: float | None = None) -> None:
        self.client.wait(keys, timeout)

    def close(self) -> None:
        """Close the client, and the server where this rank hosts it. Idempotent; not
        collective (other ranks lose the store once the host closes)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()
        server, self.server = self.server, None
        if server is not None:
            server.close()

    def __repr__(self) -> str:
        where = self._client.where if self._client is not None else "closed"
        return f"<MPIStore {where}{' (hosting the server)' if self.server else ''}>"


__all__ = ["MPIStore"]
