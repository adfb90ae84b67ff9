"""``collectives`` as a backend of ``ray.util.collective`` (its third-party registry,
``register_collective_backend``, alpha in Ray 2.60).

Ray builds a backend group from ``(world_size, rank, group_name)`` alone, in each member,
so the group finds its peers itself: rank 0 serves a TCP store on its node's address and
puts ``host:port`` and a fresh job secret in Ray's GCS key-value store under the group's
name; the others read it (polling, as Ray's own gloo group does) and connect; rank 0
deletes the key once every member is connected. Then ``collectives.connect`` does what it
does everywhere: shared memory to members on the same host, TCP to the others.

This module imports ``ray.util.collective`` (which imports torch where torch is
installed); only :func:`collectives.ray.register` imports it.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from typing import Any

import numpy as np
from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_get, _internal_kv_put
from ray.util.collective.collective_group.base_collective_group import BaseGroup
from ray.util.collective.types import (
    AllGatherOptions,
    AllReduceOptions,
    BarrierOptions,
    BroadcastOptions,
    RecvOptions,
    ReduceOptions,
    ReduceScatterOptions,
    SendOptions,
)

from ..buffers import as_flat_array
from ..communicator import Communicator
from ..config import Config
from ..connect import connect
from ..errors import ConnectError, InvalidArgumentError, RendezvousTimeoutError, StoreError
from ..store import PrefixStore
from ..store.tcp_store import TCPStore, TCPStoreServer
from ._ray import ray_module

BACKEND = "COLLECTIVES"
KV_NAMESPACE = "collectives"
POLL_SECONDS = 0.05
_OPS = {"SUM": "sum", "PRODUCT": "prod", "MIN": "min", "MAX": "max"}


def _kv_key(group_name: str) -> bytes:
    return f"rendezvous/{group_name}".encode()


def _op(options: Any) -> str:
    return _OPS[options.reduceOp.name]


def _meet(world_size: int, rank: int, group_name: str, config: Config) -> Communicator:
    """Rank 0 serves the store and says where through the GCS; everyone connects."""
    ray = ray_module()
    node_ip = ray.util.get_node_ip_address()
    key = _kv_key(group_name)
    deadline = time.monotonic() + config.timeout
    store: TCPStore | None = None
    try:
        if rank == 0:
            secret = secrets.token_hex(32)
            server = TCPStoreServer(config.socket_addr or node_ip, 0, secret=secret)
            store = TCPStore(server.host, server.port, secret, timeout=config.timeout)
            store.server = server
            _internal_kv_put(key, json.dumps([server.host, server.port, secret]).encode(), overwrite=True,
                             namespace=KV_NAMESPACE)
        else:
            store = _find_store(key, group_name, deadline, config.timeout)
        # Which node addresses the members are on: TCP listeners bind theirs across several.
        store.set(f"ray/ip/{rank}", node_ip.encode())
        ips = {store.get(f"ray/ip/{r}", max(deadline - time.monotonic(), 1e-3)).decode() for r in range(world_size)}
        if len(ips) > 1 and config.socket_addr is None:
            config = dataclasses.replace(config, socket_addr=node_ip)
        comm = connect(rank, world_size, PrefixStore("group", store), config, owned=[store])
    except BaseException:
        if store is not None:
            store.close()
        raise
    finally:
        if rank == 0:
            _internal_kv_del(key, namespace=KV_NAMESPACE)
    return comm


def _find_store(key: bytes, group_name: str, deadline: float, timeout: float) -> TCPStore:
    """Rank 0's store, as the GCS names it; a stale entry (a rank 0 that died) is read again."""
    last: Exception | None = None
    while time.monotonic() < deadline:
        value = _internal_kv_get(key, namespace=KV_NAMESPACE)
        if value is None:
            time.sleep(POLL_SECONDS)
            continue
        host, port, secret = json.loads(value)
        try:
            return TCPStore(host, port, secret, timeout=timeout,
                            connect_timeout=min(2.0, max(deadline - time.monotonic(), 1e-3)))
        except (ConnectError, StoreError) as exc:
            last = exc
            time.sleep(POLL_SECONDS)
    raise RendezvousTimeoutError(
        f"group {group_name!r}: rank 0 did not serve its store within {timeout:g} s"
        + (f" (last try: {last})" if last else " (nothing in the GCS under its name)")
    )


class CollectivesGroup(BaseGroup):
    """A ``ray.util.collective`` group over a ``collectives`` Communicator. Timeouts are
    COLLECTIVES_TIMEOUT's (Ray passes none to third-party backends)."""

    def __init__(self, world_size: int, rank: int, group_name: str) -> None:
        super().__init__(world_size, rank, group_name)
        self.comm = _meet(world_size, rank, group_name, Config.from_env())

    @classmethod
    def backend(cls) -> str:
        return BACKEND

    @classmethod
    def check_backend_availability(cls) -> bool:
        return True

    def destroy_group(self) -> None:
        self.comm.close()

    def allreduce(self, tensors: list[Any], allreduce_options: Any = AllReduceOptions) -> None:
        self.comm.all_reduce(tensors[0], op=_op(allreduce_options))

    def barrier(self, barrier_options: Any = BarrierOptions) -> None:
        self.comm.barrier()

    def reduce(self, tensors: list[Any], reduce_options: Any = ReduceOptions) -> None:
        self.comm.reduce(tensors[0], root=reduce_options.root_rank, op=_op(reduce_options))

    def broadcast(self, tensors: list[Any], broadcast_options: Any = BroadcastOptions) -> None:
        self.comm.broadcast(tensors[0], root=broadcast_options.root_rank)

    def allgather(self, tensor_lists: list[list[Any]], tensors: list[Any],
                  allgather_options: Any = AllGatherOptions) -> None:
        outs = [as_flat_array(t, f"tensor_list[{r}]", writable=True) for r, t in enumerate(tensor_lists[0])]
        gathered = self.comm.all_gather(as_flat_array(tensors[0], "tensor"))
        for out, part in zip(outs, np.split(gathered, len(outs)), strict=True):
            out[...] = part

    def reducescatter(self, tensors: list[Any], tensor_lists: list[list[Any]],
                      reducescatter_options: Any = ReduceScatterOptions) -> None:
        parts = np.concatenate([as_flat_array(t, f"tensor_list[{r}]") for r, t in enumerate(tensor_lists[0])])
        self.comm.reduce_scatter(parts, as_flat_array(tensors[0], "tensor", writable=True),
                                 op=_op(reducescatter_options))

    def send(self, tensors: list[Any], send_options: SendOptions) -> None:
        self.comm.send(tensors[0], send_options.dst_rank)

    def recv(self, tensors: list[Any], recv_options: RecvOptions) -> None:
        self.comm.recv(tensors[0], recv_options.src_rank)


def register() -> None:
    """Register ``"collectives"`` with ``ray.util.collective`` in this process (again: no-op)."""
    from ray.util.collective.backend_registry import _global_registry, register_collective_backend

    if _global_registry.is_registered(BACKEND):
        return
    register_collective_backend(BACKEND, CollectivesGroup)


def communicator_of(group_name: str) -> Communicator:
    """This process's communicator of the ``ray.util.collective`` group ``group_name`` (of
    backend "collectives"; made by Ray's ``create_collective_group`` or ``init_collective_group``)."""
    from ray.util.collective.collective import get_group_handle

    group = get_group_handle(group_name)
    if not isinstance(group, CollectivesGroup):
        raise InvalidArgumentError(f"ray.util.collective group {group_name!r} is of backend "
                                   f"{type(group).__name__}, not {BACKEND!r}")
    return group.comm
