"""The choice of plan for a signature: which algorithm, then which way of running it.

The algorithm is the caller's, else COLLECTIVES_ALGO, else automatic
(``algorithms.registry.select`` with the tuner's choice, ``tuning.tuner.choose``); "direct" runs on the shared-window engine,
"hierarchical" in two levels, every other name as a schedule on the executor. Every rank
passes the same signature, so every rank builds the same plan.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from ..algorithms import barrier as barrier_schedule
from ..algorithms import direct_routes, pairwise
from ..algorithms.registry import (DIRECT_ALL_TO_ALL_BYTES, DIRECT_GATHER_BYTES, DIRECT_REDUCE_BYTES, DIRECT_SCATTER_BYTES,
                                   SCHEDULES, schedule_for, select)
from ..algorithms.schedule import partition
from ..engines import exchange_reads, slots, small, tcp_pair
from ..engines.exchange_reads import ALL_TO_ALL, GATHER, SCATTER
from ..engines.windows import SharedWindows
from ..ops import ReduceOp
from ..tags import CONTROL_TAG_BIT
from ..tuning import tuner
from . import scheduled, windowed
from .base import MAX_PLANS, Plan, PlanCache, nothing
from .checked import CheckedPlan
from .signature import FINGERPRINT_WORDS
from .context import PlanContext
from .two_level import TwoLevelAllReduce

logger = logging.getLogger("collectives")


class Planner:
    """Builds and keeps the plans of one communicator."""

    def __init__(self, context: PlanContext) -> None:
        self.context = context
        self.cache = PlanCache()
        self._said: set[tuple[str, str]] = set()  # (collective, algorithm) pairs logged at INFO
        self.chosen: dict[Any, str] = {}  # the algorithm each signature's plan runs (for the flight recorder)
        self._fingerprints: Plan | None = None  # the all-gather of COLLECTIVES_CHECK

    def algorithm(self, collective: str, requested: str | None, nbytes: int) -> str:
        """The algorithm a call of ``nbytes`` takes (raises for a name that cannot run here)."""
        ctx = self.context
        name = select(collective, requested, ctx.default_algorithm, nbytes, ctx.size, ctx.windows is not None,
                      ctx.levels is not None, self.automatic)
        if (collective, name) not in self._said and logger.isEnabledFor(logging.INFO):
            self._said.add((collective, name))
            why = "asked" if requested not in (None, "auto") else (
                "COLLECTIVES_ALGO" if name == ctx.default_algorithm else "automatic")
            logger.info("%s: %s takes %s (%s, first at %d bytes)", ctx.label, collective, name, why, nbytes)
        return name

    def automatic(self, collective: str, nbytes: int, size: int, windows: bool = False, hosts: bool = False) -> str:
        """The tuner's choice for this communicator's transport, layout and cost profile
        (the same on every rank: none of these differ between them)."""
        ctx = self.context
        return tuner.choose(collective, nbytes, size, ctx.transport, windows, ctx.ranks_per_host if hosts else 0,
                            ctx.profile)

    def plan(self, key: tuple[Any, ...], nbytes: int, build: Callable[[str], Plan]) -> Plan:
        """The plan kept under ``key`` (a call's signature: the collective first, the
        requested algorithm last), else ``build(algorithm)``, kept."""
        plan = self.cache.get(key)
        if plan is None:
            algorithm = self.algorithm(key[0], key[-1], nbytes)
            plan = self.checked(key, build(algorithm))
            self.cache.keep(key, plan)
            if len(self.chosen) >= 4 * MAX_PLANS:
                self.chosen.clear()
            self.chosen[key] = algorithm
        return plan

    def checked(self, key: tuple[Any, ...], plan: Plan) -> Plan:
        """``plan``, behind a comparison of the call's signature across the ranks where
        COLLECTIVES_CHECK asks for one (``plans.checked``)."""
        if not self.context.check:
            return plan
        if self._fingerprints is None:  # an all-gather as any other (the small window on shared memory)
            dtype = np.dtype(np.int64)
            nbytes = FINGERPRINT_WORDS * dtype.itemsize * self.context.size
            exchange = self.all_gather(self.algorithm("all_gather", None, nbytes), dtype, FINGERPRINT_WORDS)
            if isinstance(exchange, scheduled.AllGather):
                exchange.tag_bits = CONTROL_TAG_BIT  # the library's own messages, numbered with the call
            self._fingerprints = exchange
        return CheckedPlan(key, plan, self._fingerprints, self.context.size)

    def _segment(self, collective: str, dtype: np.dtype, nbytes: int) -> int:
        """The pipelining step of a ``collective`` of ``nbytes`` in elements of ``dtype``: the
        one rule the tuner prices too (``PlanContext.step_bytes``)."""
        return max(1, self.context.step_bytes(collective, nbytes) // max(1, dtype.itemsize))

    # -- one builder per collective (algorithm resolved) ---------------------------------

    def all_reduce(self, algorithm: str, dtype: np.dtype, count: int, op: ReduceOp) -> Plan:
        ctx = self.context
        nbytes = count * dtype.itemsize
        if count == 0:
            return nothing
        if algorithm == "hierarchical":
            assert ctx.levels is not None  # select() offers it only with levels
            return TwoLevelAllReduce(ctx.levels, op, ctx.size)
        if algorithm == "direct":
            assert ctx.windows is not None  # select() offers it only with windows
            windows = ctx.windows
            def halves(w: Any) -> Any:
                return small.all_reduce_plan(w, dtype, count, op)

            if small.all_reduce_halves_take(nbytes):
                return windowed.SmallReduction(windows, halves, op)
            return windowed.WindowReduction(windows, op, scatter=False, nbytes=nbytes, halves=halves)
        factory = schedule_for("all_reduce", algorithm, nbytes)
        segment = self._segment("all_reduce", dtype, nbytes)
        steps = scheduled.steps_of(factory, ctx.rank, ctx.size, count, segment)
        pair = None
        if algorithm == "recursive" and tcp_pair.takes(ctx.executor.channels, ctx.size, dtype, count, op, segment,
                                                        ctx.in_c):
            channel = next(iter(ctx.executor.channels.values()))
            pair = tcp_pair.PairLoop(channel, ctx.rank, dtype, count, segment,  # type: ignore[arg-type]
                                     ctx.executor.engine.spin_seconds)
        return scheduled.AllReduce(ctx.executor, steps, op, ctx.size, pair)

    def reduce_scatter(self, algorithm: str, dtype: np.dtype, count: int, op: ReduceOp) -> Plan:
        ctx = self.context
        if count == 0:
            return nothing
        if algorithm == "direct":
            assert ctx.windows is not None
            windows = ctx.windows
            def halves(w: Any) -> small.ReduceScatterPlan:
                return small.ReduceScatterPlan(w, dtype, count, op)

            if count * dtype.itemsize <= small.HALF_BYTES:
                return windowed.SmallReduction(windows, halves, op)
            return windowed.WindowReduction(windows, op, scatter=True, nbytes=count * dtype.itemsize, halves=halves)
        blocks = partition(count, ctx.size)
        steps = scheduled.steps_of(SCHEDULES["reduce_scatter"][algorithm], ctx.rank, ctx.size, blocks,
                                   self._segment("reduce_scatter", dtype, count * dtype.itemsize))
        return scheduled.ReduceScatter(ctx.executor, steps, op, ctx.rank, ctx.size, count)

    def all_gather(self, algorithm: str, dtype: np.dtype, count: int) -> Plan:
        ctx = self.context
        if count == 0:
            return nothing

        def by_schedule(name: str) -> Plan:
            blocks = partition(count * ctx.size, ctx.size)
            steps = scheduled.steps_of(SCHEDULES["all_gather"][name], ctx.rank, ctx.size, blocks,
                                       self._segment("all_gather", dtype, count * ctx.size * dtype.itemsize))
            return scheduled.AllGather(ctx.executor, steps, ctx.rank, ctx.size, count)

        if algorithm == "direct":
            assert ctx.windows is not None
            fallback = self.automatic("all_gather", count * ctx.size * dtype.itemsize, ctx.size)  # the same on every rank
            return windowed.WindowAllGather(ctx.windows, dtype, count, lambda: by_schedule(fallback))
        return by_schedule(algorithm)

    def broadcast(self, algorithm: str, dtype: np.dtype, count: int, root: int) -> Plan:
        ctx = self.context
        if ctx.size == 1 or count == 0:
            return nothing

        def by_schedule(name: str) -> Plan:
            factory = SCHEDULES["broadcast"][name]
            steps = scheduled.steps_of(factory, ctx.rank, ctx.size, root, count,
                                       self._segment("broadcast", dtype, count * dtype.itemsize))
            return scheduled.InPlace(ctx.executor, steps)

        if algorithm == "direct":
            assert ctx.windows is not None
            nbytes = count * dtype.itemsize
            if nbytes <= small.PIPELINED_BROADCAST_BYTES:
                return windowed.OneWay(ctx.windows, root, lambda w: slots.PipelinedBroadcastPlan(w, dtype, count))
            fallback = self.automatic("broadcast", nbytes, ctx.size)  # the same on every rank
            return windowed.WindowBroadcast(ctx.windows, root, dtype, count, lambda: by_schedule(fallback))
        return by_schedule(algorithm)

    def reduce(self, algorithm: str, dtype: np.dtype, count: int, op: ReduceOp, root: int) -> Plan:
        ctx = self.context

        def by_schedule(name: str) -> Plan:
            steps = scheduled.steps_of(SCHEDULES["reduce"][name], ctx.rank, ctx.size, root, count,
                                       self._segment("reduce", dtype, count * dtype.itemsize))
            return scheduled.Reduce(ctx.executor, steps, op, ctx.rank, root, ctx.size)

        if algorithm == "direct":
            assert ctx.windows is not None  # select() offers it only with windows
            nbytes = count * dtype.itemsize
            if 0 < nbytes <= DIRECT_REDUCE_BYTES:
                return windowed.OneWay(ctx.windows, root, lambda w: slots.PipelinedReducePlan(w, dtype, count, op),
                                       averages=op is ReduceOp.AVG and ctx.rank == root)
            fallback = self.automatic("reduce", nbytes, ctx.size)  # the same on every rank
            return windowed.LargeReduce(ctx.windows, op, root, dtype, count, lambda: by_schedule(fallback))
        return by_schedule(algorithm)

    def _by_reads_or(self, kind: str, nbytes: int, limit: int,
                     by_reads: Callable[[Any, Any], exchange_reads.ExchangeByReads],
                     within: Callable[[SharedWindows], Plan],
                     beyond: Callable[[str], Plan]) -> Plan:
        """The direct route of an exchange of ``nbytes`` (> 0) of ``kind`` (the collective's name:
        gather, scatter, all_to_all): up to ``limit`` by reads where ``direct_routes`` says they
        suit the ranks' cores, else ``within(windows)``; beyond ``limit`` by reads, else ``beyond``
        with the automatic choice for ``kind`` (the same on every rank)."""
        windows = self.context.windows
        assert windows is not None  # select() offers direct only with windows
        if nbytes <= limit:
            if not direct_routes.exchange_by_reads(kind, nbytes, False):
                return within(windows)
            return windowed.ReadsExchange(windows, by_reads, lambda: within(windows),
                                          suits=lambda w: direct_routes.exchange_by_reads(kind, nbytes, w.oversubscribed))
        fallback = self.automatic(kind, nbytes, self.context.size)
        return windowed.ReadsExchange(windows, by_reads, lambda: beyond(fallback))

    def gather(self, algorithm: str, dtype: np.dtype, count: int, root: int) -> Plan:
        ctx = self.context
        if algorithm == "direct":
            nbytes = count * ctx.size * dtype.itemsize
            if nbytes:
                return self._by_reads_or(
                    GATHER, nbytes, DIRECT_GATHER_BYTES,
                    lambda w, m: exchange_reads.ExchangeByReads(GATHER, w, m, dtype.itemsize, count, root),
                    lambda windows: windowed.SlotExchange(windows, root,
                                                          lambda w: slots.PipelinedGatherPlan(w, dtype, count)),
                    lambda name: self.gather(name, dtype, count, root))
            algorithm = self.automatic("gather", nbytes, ctx.size)  # an empty call: the schedule's
        blocks = partition(count * ctx.size, ctx.size)
        steps = scheduled.steps_of(SCHEDULES["gather"][algorithm], ctx.rank, ctx.size, root, blocks,
                                   self._segment("gather", dtype, count * ctx.size * dtype.itemsize))
        return scheduled.Gather(ctx.executor, steps, ctx.rank, ctx.size, count, dtype)

    def scatter(self, algorithm: str, dtype: np.dtype, count: int, root: int) -> Plan:
        ctx = self.context
        if algorithm == "direct":
            nbytes = count * ctx.size * dtype.itemsize
            total = count * ctx.size
            if nbytes:
                return self._by_reads_or(
                    SCATTER, nbytes, DIRECT_SCATTER_BYTES,
                    lambda w, m: exchange_reads.ExchangeByReads(SCATTER, w, m, dtype.itemsize, total, root),
                    lambda windows: windowed.SlotExchange(windows, root,
                                                          lambda w: slots.PipelinedScatterPlan(w, dtype, total)),
                    lambda name: self.scatter(name, dtype, count, root))
            algorithm = self.automatic("scatter", nbytes, ctx.size)  # an empty call: the schedule's
        blocks = partition(count * ctx.size, ctx.size)
        steps = scheduled.steps_of(SCHEDULES["scatter"][algorithm], ctx.rank, ctx.size, root, blocks,
                                   self._segment("scatter", dtype, count * ctx.size * dtype.itemsize))
        return scheduled.Scatter(ctx.executor, steps, ctx.rank, ctx.size, count)

    def all_to_all(self, algorithm: str, dtype: np.dtype, count: int) -> Plan:
        ctx = self.context
        if count == 0:
            return nothing
        if algorithm == "direct":
            return self._by_reads_or(
                ALL_TO_ALL, count * dtype.itemsize, min(DIRECT_ALL_TO_ALL_BYTES, small.HALF_BYTES),
                lambda w, m: exchange_reads.ExchangeByReads(ALL_TO_ALL, w, m, dtype.itemsize, count),
                lambda windows: windowed.SmallAllToAll(windows, dtype, count),
                lambda name: self.all_to_all(name, dtype, count))
        steps = scheduled.steps_of(SCHEDULES["all_to_all"][algorithm], ctx.rank, ctx.size, partition(count, ctx.size),
                                   self._segment("all_to_all", dtype, count * dtype.itemsize))
        return scheduled.AllToAll(ctx.executor, steps, ctx.rank, ctx.size, count)

    def all_to_all_v(self, sends: list[int], recvs: list[int]) -> Plan:
        """One exchange under every algorithm name (the name is checked by ``algorithm``)."""
        ctx = self.context
        send_blocks, recv_blocks = pairwise.split_blocks(sends), pairwise.split_blocks(recvs)
        steps = scheduled.steps_of(pairwise.all_to_all_v, ctx.rank, ctx.size, send_blocks, recv_blocks)
        return scheduled.AllToAllV(ctx.executor, steps, ctx.rank, ctx.size, send_blocks, recv_blocks)

    def barrier(self, tag_bits: int = 0) -> Plan:
        """The flags of the small window where every rank shares this host, else the
        dissemination schedule; the user's barrier checked like every call (the library's
        own, with ``tag_bits``, run before windows can open and are never checked)."""
        ctx = self.context
        if ctx.windows is not None and not tag_bits and ctx.default_algorithm in (None, "direct"):
            return self.checked(("barrier", None), windowed.SmallBarrier(ctx.windows))
        steps = scheduled.steps_of(barrier_schedule.barrier, ctx.rank, ctx.size)
        plan = scheduled.InPlace(ctx.executor, steps, tag_bits=tag_bits)
        return self.checked(("barrier", None), plan) if not tag_bits else plan
