"""Connecting ranks that meet in a store: transports per peer, then a communicator.

Every rank publishes its host identity; peers on the same host are connected by shared
memory and the others by TCP, unless ``config.transport`` forces one transport for all.
What the plans need (executor, shared windows, the two levels) is built here and handed
to the communicator, with the way it splits (``StoreSplitter``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from . import devices
from ._handshake import resolve_bind_address
from .communicator import Communicator, Splitter
from .config import Config
from .data_key import data_key
from .diagnose import this_machine
from .plans import PlanContext
from .recovery import attach
from .skew import agree_on_settings
from .store import PrefixStore, Store
from .topology import PairPlan, describe, select_transport
from .transports import transport_class
from .transports.base import Transport
from .transports.tcp import TcpTransport

logger = logging.getLogger("collectives")

SPLITTERS: dict[str, Callable[[list[Transport], Store, Config], Splitter | None]] = {}
"""Splitters by forced transport, where splitting through the store will not do: the mpi
transport's is registered by ``collectives.mpi`` (its communicators split through
MPI_Comm_split)."""


def configure_logging(config: Config) -> None:
    if not config.debug:
        return
    level = getattr(logging, config.debug.upper(), None)
    if not isinstance(level, int):
        return
    logger.setLevel(level)
    if not any(getattr(h, "_collectives", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s collectives %(levelname)s %(message)s"))
        handler._collectives = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def host_identity(config: Config) -> str:
    """Who shares this machine's memory: the override, else hostname plus boot id."""
    return config.hostname or this_machine()


def connect(rank: int, size: int, store: Store, config: Config, *, owned: list[Any] | None = None,
            agree: bool = True) -> Communicator:
    """Connect ``rank`` to the other ranks of the job meeting in ``store``. ``agree``: check
    first that every rank runs the same version with the same settings (not needed where
    the ranks of an agreed communicator make another: its levels, its splits)."""
    # Each init of a rank takes the next generation, so that repeated inits on one store
    # (tests, re-creation after a failure) never read each other's keys.
    generation = store.add(f"collectives/init/{rank}", 1)
    cstore = PrefixStore(f"collectives/{generation}", store)
    if agree:
        agree_on_settings(cstore, rank, size, config)  # version or setting skew fails here, on every rank
    me = host_identity(config)
    cstore.set(f"host/{rank}", me.encode())
    hosts = [cstore.get(f"host/{r}", config.timeout).decode() for r in range(size)]
    plan: dict[str, list[int]] = {}
    lines: list[str] = []
    for peer in range(size):
        if peer == rank:
            continue
        if config.transport:
            forced = "forced by transport=/COLLECTIVES_TRANSPORT"
            choice = PairPlan(rank, peer, config.transport, None, None, None, forced)  # type: ignore[arg-type]
        else:  # host buffers; device buffers take the GPU columns of the same table (docs/gpu.md)
            choice = select_transport(rank, peer, my_host=me, peer_host=hosts[peer])
        plan.setdefault(choice.transport, []).append(peer)
        lines.append(describe(choice))
    # Ranks on several machines: TCP must listen where the others can reach it. Identities
    # given by COLLECTIVES_HOSTNAME stand for namespaces or tests on one machine, whose
    # configured address (loopback by default) is kept as it is.
    routable = len(set(hosts)) > 1 and not config.hostname
    if routable and "tcp" in plan:
        # On every rank, before any waits on another: a listener on loopback would be
        # advertised to hosts that cannot reach it (and rank 0, which only connects, would
        # otherwise learn of it by a timeout).
        resolve_bind_address(config, routable=True)
    # TCP carries data on every rank or on none (a rank with a peer on another host means
    # every rank has one), so the key's derivation is collective over all of them.
    key, forget_key = data_key(rank, cstore, config, hosts, config.timeout) if "tcp" in plan else (b"", _nothing)
    try:
        transports = _transports(rank, size, plan, cstore, config, key, routable=routable)
        context = PlanContext.build(rank, size, transports, config, store=cstore, hosts=hosts, connect=_derived)
        try:
            context.device = devices.choose(rank, size, hosts, cstore, config, context.windows, context.label)
        except BaseException:
            context.close(abort=True)
            for t in transports:
                t.close()
            raise
        comm = Communicator(rank, size, transports, config, store=cstore, owned=owned or [], context=context,
                            splitter=_splitter(transports, cstore, config))
        logger.info(
            "rank %d/%d on %s: %s",
            rank,
            size,
            me,
            ", ".join(f"{name} to ranks {peers}" for name, peers in sorted(plan.items())) or "alone",
        )
        for line in lines:
            logger.info("%s", line)
        if size > 1:
            comm._connect_barrier()
    finally:
        forget_key()  # past the barrier every rank holds its key (or the connect failed)
    attach(comm, cstore, connect, me)  # revoke, agree, shrink, grow (collectives/recovery)
    return comm


def _transports(
    rank: int, size: int, plan: dict[str, list[int]], cstore: Store, config: Config, key: bytes, *,
    routable: bool = False,
) -> list[Transport]:
    """One transport per kind in ``plan`` (all closed again if one fails); ``routable``:
    the ranks span several hosts, so TCP listeners must be reachable from the others."""
    transports: list[Transport] = []
    try:
        for name in sorted(plan):  # the same order on every rank
            peers = plan[name]
            if name == "tcp":  # TCP's peer sets differ by rank: it keys its addresses per rank
                transports.append(TcpTransport(rank, size, peers, cstore, config, config.timeout, secret=key,
                                               routable=routable))
            else:  # shm and inproc groups are cliques (one host)
                group_store = PrefixStore(f"{name}/{min(rank, *peers)}", cstore)
                transports.append(transport_class(name)(rank, size, peers, group_store, config, config.timeout))
    except BaseException:
        for t in transports:
            t.close()
        raise
    return transports


def _derived(rank: int, size: int, store: Store, config: Config) -> Communicator:
    """``connect()`` for a communicator that the ranks of an agreed one make (its levels,
    its splits), whose settings were compared already (a level's timeout is what is left
    of its caller's, and differs by rank)."""
    return connect(rank, size, store, config, agree=False)


class StoreSplitter:
    """``Communicator.split`` for communicators that meet in a store: the ranks all-gather
    their (color, key), each color's members connect anew in a part of the store named by
    the split's number (the same count on every rank: split is collective), and a barrier
    of the parent ends it."""

    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config
        self.splits = 0

    def __call__(self, comm: Communicator, color: int, key: int) -> Communicator | None:
        mine = np.array([color, key], dtype=np.int64)
        everyone = comm.all_gather(mine).reshape(comm.size, 2)
        self.splits += 1
        new = None
        if color >= 0:
            members = sorted((int(k), r) for r, (c, k) in enumerate(everyone.tolist()) if c == color)
            new_rank = members.index((key, comm.rank))
            new = _derived(new_rank, len(members), PrefixStore(f"split/{self.splits}/{color}", self.store), self.config)
        # Every new communicator is connected before any rank returns: a rank that went on
        # and closed the parent (whose store the others still meet in) would strand them.
        comm.barrier()
        return new


def _nothing() -> None:
    return None


def _splitter(transports: list[Transport], store: Store, config: Config) -> Splitter:
    special = SPLITTERS.get(config.transport or "")
    return (special and special(transports, store, config)) or StoreSplitter(store, config)
