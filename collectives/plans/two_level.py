"""All-reduce in two levels for ranks on several hosts, the same number on each.

A reduce-scatter among this host's ranks (shared memory), an all-reduce of my block with
the ranks that hold the same block on the other hosts, an all-gather among this host's
ranks. Each block is reduced in one place, so every rank gets the same bits. The levels are
communicators of their own, connected through the parent's store on first use, within the
deadline of the call that needs them.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from typing import Any, Protocol

import numpy as np

from ..buffers import copy_array
from ..config import Config
from ..engines.call import Call
from ..errors import CollectiveTimeoutError, RendezvousTimeoutError, TransportError
from ..ops import ReduceOp, finalize
from ..store import PrefixStore, Store
from ..topology.hosts import HostLayout

logger = logging.getLogger("collectives")


class Connect(Protocol):
    """``collectives.connect.connect``: a communicator of ``rank`` of ``size`` meeting in ``store``."""

    def __call__(self, rank: int, size: int, store: Store, config: Config) -> Any: ...


class TwoLevels:
    """The communicators of this host's ranks and of the ranks with my place on the other
    hosts, connected on first use."""

    def __init__(self, rank: int, layout: HostLayout, store: Store, config: Config, connect: Connect, label: str) -> None:
        self.rank = rank
        self.layout = layout
        self.store = store
        self.config = config
        self.connect = connect
        self.label = label
        self.pair: tuple[Any, Any] | None = None  # (within this host, across hosts) once connected

    def members(self, *, within: bool) -> list[int]:
        """The ranks (here) of a level's members, in its rank order: this host's ranks, or
        the ranks with my place on every host."""
        layout = self.layout
        return layout.on_host(layout.host_of[self.rank]) if within else layout.across(self.rank)

    def connected(self, call: Call) -> tuple[Any, Any]:
        """Both levels, connected (collectively, within ``call``'s deadline) if not yet."""
        if self.pair is not None:
            return self.pair
        layout = self.layout
        host, place = layout.host_of[self.rank], layout.local_rank(self.rank)
        config = dataclasses.replace(self.config, timeout=max(call.deadline - time.monotonic(), 1e-3))
        local = None
        try:
            local = self.connect(place, layout.per_host, PrefixStore(f"levels/host/{host}", self.store), config)
            across = self.connect(host, layout.hosts, PrefixStore(f"levels/across/{place}", self.store), config)
        except RendezvousTimeoutError as exc:
            if local is not None:
                local.close()
            others = [r for r in self.members(within=local is None) if r != self.rank]
            raise CollectiveTimeoutError(call.name, call.seq, others, call.timeout) from exc
        except BaseException:
            if local is not None:
                local.close()
            raise
        local.relabel(f"{self.label} (within its host)")
        across.relabel(f"{self.label} (across hosts)")
        local.diagnoses_timeouts = across.diagnoses_timeouts = False  # the whole call's diagnosis: one grace, not three
        self.pair = (local, across)
        logger.info("%s: all_reduce in two levels, %d hosts of %d ranks: within ranks %s, across ranks %s",
                    self.label, layout.hosts, layout.per_host, self.members(within=True), self.members(within=False))
        return self.pair

    def close(self, *, abort: bool) -> None:
        if self.pair is None:
            return
        for level in self.pair:
            if abort:
                level.abort()
            else:
                level.close()


_RANK = re.compile(r"\brank (\d+)\b")


def in_global_ranks(message: str, members: list[int]) -> str:
    """``message`` of a level's communicator, its "rank N" (a rank of that level) said as
    the rank of the whole communicator, ``members[N]``."""

    def global_rank(match: re.Match[str]) -> str:
        level_rank = int(match.group(1))
        return f"rank {members[level_rank]}" if level_rank < len(members) else match.group(0)

    return _RANK.sub(global_rank, message)


class TwoLevelAllReduce:
    """``out`` = the reduction of every rank's ``x`` through ``levels`` (``out`` may be ``x``).
    AVG is summed in the levels and divided once at the end."""

    def __init__(self, levels: TwoLevels, op: ReduceOp, size: int) -> None:
        self.levels = levels
        self.op = op
        self.level_op = ReduceOp.SUM if op is ReduceOp.AVG else op
        self.size = size

    def __call__(self, x: np.ndarray, out: np.ndarray, call: Call) -> None:
        local, across = self.levels.connected(call)
        local.timeout = across.timeout = call.timeout
        n, per_host = out.size, local.size
        padded = -(-n // per_host) * per_host
        if out is not x:
            copy_array(out, x)
        work = out
        if padded != n:  # blocks of equal size: pad with zeros (left out of the result)
            work = np.zeros(padded, dtype=out.dtype)
            work[:n] = out
        block = np.empty(padded // per_host, dtype=out.dtype)
        level = local
        try:
            local.reduce_scatter(work, block, self.level_op)
            level = across
            across.all_reduce(block, self.level_op)
            level = local
            local.all_gather(block, work)
        except (CollectiveTimeoutError, TransportError) as exc:
            within = level is local
            members = self.levels.members(within=within)
            if isinstance(exc, CollectiveTimeoutError):
                raise CollectiveTimeoutError(call.name, call.seq, [members[r] for r in exc.ranks], call.timeout) from exc
            peer = None if exc.peer is None else members[exc.peer]
            where = f"{'within' if within else 'across'} hosts (ranks {', '.join(map(str, members))})"
            raise type(exc)(f"{where}: {in_global_ranks(str(exc), members)}", peer=peer) from exc
        if work is not out:
            out[...] = work[:n]
        finalize(self.op, out, self.size)
