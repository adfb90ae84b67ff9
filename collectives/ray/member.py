"""The actor's side of a group: what the driver runs on each member through
``actor.__ray_call__`` (so actors need no special base class or method), and
:func:`get_communicator` for the actor's own code.

A process keeps its groups here, by name. Rank 0 hosts the group's TCP store (on the
address the driver picked), every member connects to it with the job secret the driver
handed out, and ``collectives.connect`` does the rest: shared memory to members on the
same host, TCP to the others. The communicator owns the store (and rank 0's server), so
closing it leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Any

from ..communicator import Communicator
from ..config import Config
from ..connect import connect
from ..errors import InvalidArgumentError
from ..store.tcp_store import TCPStore, TCPStoreServer
from ._ray import ray_module

_groups: dict[str, Communicator] = {}
_servers: dict[str, TCPStoreServer] = {}  # rank 0's store, between hosting it and joining
_secrets: dict[str, str] = {}  # the secret of the create_group that made each of the above
_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Place:
    """Where a member runs, as the driver needs it to plan the rendezvous."""

    node_id: str
    node_ip: str
    pid: int
    socket_addr: str | None  # COLLECTIVES_SOCKET_ADDR set in the actor's environment


def where(_actor: Any) -> Place:
    """This actor's Ray node (id and address) and process."""
    ray = ray_module()
    config = Config.from_env()
    return Place(ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address(), os.getpid(),
                 config.socket_addr)


def host_store(_actor: Any, name: str, address: str, secret: str) -> tuple[str, int]:
    """Rank 0: serve group ``name``'s store on ``address`` (port chosen by the kernel, so
    no port race); return where it listens."""
    with _lock:
        if name in _groups:
            raise InvalidArgumentError(f"this actor is already in group {name!r}; destroy_group({name!r}) first")
        old = _servers.pop(name, None)
        if old is not None:  # a create_group that failed before this rank joined
            old.close()
        server = TCPStoreServer(address, 0, secret=secret)
        _servers[name] = server
        _secrets[name] = secret
    return server.host, server.port


def join(_actor: Any, name: str, rank: int, size: int, store_at: tuple[str, int], secret: str,
         settings: dict[str, Any]) -> None:
    """Connect this actor as ``rank`` of ``size`` in group ``name``; ``settings`` are
    ``Config`` fields on top of this process's environment (timeout, transport,
    hostname, socket_addr)."""
    with _lock:
        if name in _groups:
            raise InvalidArgumentError(
                f"this actor is already rank {_groups[name].rank} of group {name!r}; destroy_group({name!r}) first"
            )
        server = _servers.pop(name, None) if rank == 0 else None
    config = dataclasses.replace(Config.from_env(), **settings)
    store: TCPStore | None = None
    try:
        store = TCPStore(store_at[0], store_at[1], secret, timeout=config.timeout)
        store.server = server
        comm = connect(rank, size, store, config, owned=[store])
    except BaseException:
        if store is not None:
            store.close()  # and rank 0's server with it
        elif server is not None:
            server.close()
        raise
    with _lock:
        _groups[name] = comm
        _secrets[name] = secret


def leave(_actor: Any, name: str, *, abort: bool = False, secret: str | None = None) -> bool:
    """Close this actor's communicator of group ``name`` (and the store it owns); False if
    it had none. With ``secret``, only what the ``create_group`` of that secret made: the
    clean-up of a failed attempt must not end a group of the same name it collided with."""
    with _lock:
        if secret is not None and _secrets.get(name) != secret:
            return False
        _secrets.pop(name, None)
        comm = _groups.pop(name, None)
        server = _servers.pop(name, None)
    if server is not None:
        server.close()
    if comm is None:
        return server is not None
    if abort:
        comm.abort()
    else:
        comm.close()
    return True


def run_fn(_actor: Any, name: str, fn: Any, args: tuple[Any, ...]) -> Any:
    """``fn(comm, *args)`` with this actor's communicator of group ``name``."""
    return fn(get_communicator(name), *args)


def get_communicator(name: str = "default") -> Communicator:
    """This actor's communicator of group ``name`` (made by ``create_group`` on the driver).

    Raises:
        InvalidArgumentError: this process is in no group of that name.
    """
    with _lock:
        comm = _groups.get(name)
        known = sorted(_groups)
    if comm is None:
        raise InvalidArgumentError(
            f"no group {name!r} in this process (groups here: {', '.join(map(repr, known)) or 'none'}); "
            "create it from the driver with collectives.ray.create_group(actors, name=...)"
        )
    return comm
