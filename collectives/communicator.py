"""The Communicator: a group of ranks and the collectives they run together.

A call validates its arguments locally (nothing is sent for a wrong call), takes the
next sequence number, picks an algorithm, builds the schedule and hands it to the
executor. Every wait is bounded by the communicator's timeout; a timeout or a transport
failure names the collective, its sequence number and the ranks that did not answer,
and leaves the communicator broken (later calls raise CommunicatorBrokenError).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import numpy as np

from .algorithms import barrier as barrier_algorithm
from .algorithms import direct
from .algorithms import recursive as recursive_algorithm
from .algorithms import ring as ring_algorithm
from .algorithms import small
from .algorithms.execute import Executor, KeptSchedule
from .algorithms.registry import SCHEDULES, automatic, schedule_for, select
from .algorithms.schedule import Recv, Schedule, Send, partition
from .buffers import check_count, check_same_dtype, check_same_or_apart, copy_array, plain_tensor_view, same_or_apart
from .config import Config
from .errors import (
    CollectiveTimeoutError,
    CommunicatorBrokenError,
    CommunicatorClosedError,
    InvalidArgumentError,
    RendezvousTimeoutError,
    TransportError,
    UnsupportedError,
)
from .ops import ReduceOp, check_op, finalize
from .staging import DeviceArray, Staging
from .store import PrefixStore, Store
from .topology.hosts import two_level_layout
from .transports import cma
from .transports.base import Transport
from .transports.progress import ProgressEngine
from .work import Work, Worker

logger = logging.getLogger("collectives")

P2P_TAG_BIT = 1 << 62
# Bytes of each rank's block handled per step of the direct all-reduce. Measured on 2 cores
# (2 and 4 ranks, 16 and 64 MiB): 1 MiB beat 64 KiB and 256 KiB by 2-3x (fewer flag waits
# and wake-ups) and 4 MiB by ~15%.
DIRECT_STEP_BYTES = 1 << 20
MAX_SMALL_PLANS = 64  # shapes kept per small collective for the fast path (all dropped beyond)
_PLAN_SERIALS = {small.PipelinedBroadcastPlan: "_broadcast_serial", direct.AllGatherByReads: "_memory_serial"}
"""The counter each kind of kept plan numbers its calls with (the others: ``_small_serial``)."""
CONTROL_TAG_BIT = 1 << 61  # the library's own messages (the connect barrier), outside user numbering
MAX_USER_TAG = (1 << 31) - 1


def _keep(plans: dict[Any, Any], key: Any, plan: Any) -> None:
    """Keep ``plan`` for the fast path; past MAX_SMALL_PLANS shapes, start over."""
    if len(plans) >= MAX_SMALL_PLANS:
        plans.clear()
    plans[key] = plan


def _tensor_views(x: Any, out: Any) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Numpy views of ``x`` and ``out`` (or None) where both are torch tensors the checks
    would take as they are (``buffers.plain_tensor_view``): calls with such tensors then
    take the paths of arrays, fast path included. None otherwise (the full path judges)."""
    xv = plain_tensor_view(x)
    if xv is None:
        return None
    if out is None:
        return xv, None
    ov = plain_tensor_view(out)
    return None if ov is None else (xv, ov)


def _flat(array: np.ndarray) -> np.ndarray:
    return array if array.ndim == 1 else array.reshape(-1)


class Communicator:
    """Ranks ``0..size-1`` connected by transports; create it with ``collectives.init()``."""

    def __init__(
        self,
        rank: int,
        size: int,
        transports: Sequence[Transport],
        config: Config,
        *,
        store: Store | None = None,
        owned: Sequence[Any] = (),
        hosts: Sequence[str] | None = None,
    ) -> None:
        self.rank = rank
        self.store = store
        self.size = size
        self.config = config
        self.timeout = config.timeout
        self.transports = list(transports)
        channels = {peer: ch for t in self.transports for peer, ch in t.channels.items()}
        self._executor = Executor(channels, ProgressEngine(self.transports))
        self._owned = list(owned)  # stores/servers to close with us
        # Operation numbers (for errors and diagnostics): next() on a count is atomic under
        # the GIL, so threads issuing at once never share a number, and no lock is taken.
        self._collective_numbers = itertools.count(1)
        self._p2p_numbers = itertools.count(1)
        self._run_lock = threading.RLock()
        self._worker: Worker | None = None
        self._broken: BaseException | None = None
        self._closed = False
        # Shared windows exist when one shared-memory transport reaches every peer.
        self._window_transport = next(
            (t for t in self.transports if t.name == "shm" and len(t.channels) == size - 1), None
        )
        self._windows: list[Any] = []  # id 0: the scratch window (None until first use); then comm.alloc's
        self._window_serial = 0
        self._small_window: Any = None  # small all-reduces: two halves, one flag per call
        self._small_serial = 0
        self._broadcast_serial = 0  # pipelined small broadcasts: their own count (small.PipelinedBroadcastPlan)
        self._memory: Any = None  # cma.PeerMemory once probed and allowed
        self._memory_probed = False
        self._read_piece: np.ndarray | None = None
        # The repeated small all_reduce (a loss, a flag, a norm) skips the general path:
        # the shapes (dtype, size, op) already checked by a full call, with their plans
        # (through the small window, or a kept schedule where there is none).
        self._small_plans: dict[tuple[np.dtype, int, Any], small.AllReducePlan | KeptSchedule] = {}
        self._gather_plans: dict[tuple[np.dtype, int], small.AllGatherPlan | direct.AllGatherByReads] = {}  # all_gather
        self._scatter_plans: dict[tuple[np.dtype, int, Any], small.ReduceScatterPlan] = {}  # and reduce_scatter
        self._broadcast_plans: dict[tuple[np.dtype, int], small.PipelinedBroadcastPlan] = {}  # and broadcast
        self._memory_serial = 0
        self._warned_staging = False  # device buffers staged through the host: said once
        self._plan_call: tuple[str, int] = ("", 0)  # the operation _run_plan is running
        self._splits = 0  # split() calls so far: names each split's meeting place in the store
        self._algorithms_said: set[tuple[str, str]] = set()  # (collective, algorithm) pairs logged at INFO
        self._label = f"rank {rank}"  # who speaks in log lines
        self._layout = two_level_layout(hosts) if hosts is not None else None
        self._levels: tuple[Communicator, Communicator] | None = None  # (this host's ranks, my place on the others)
        self._chunk_bytes = config.chunk_bytes or min((t.chunk_bytes for t in self.transports), default=1 << 20)

    # -- state ----------------------------------------------------------------------------

    @property
    def transport_names(self) -> dict[int, str]:
        """Which transport carries traffic to each peer."""
        return {peer: t.name for t in self.transports for peer in t.channels}

    def __repr__(self) -> str:
        names = ",".join(sorted({t.name for t in self.transports})) or "none"
        state = "CLOSED" if self._closed else ("BROKEN" if self._broken else "OPEN")
        return f"<Communicator rank={self.rank}/{self.size} transports={names} {state}>"

    def __enter__(self) -> Communicator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Finish queued operations, then release transports and memory. Idempotent."""
        if self._closed:
            return
        if self._worker is not None:
            self._worker.stop(timeout=self.timeout)
        with self._run_lock:
            self._release()

    def abort(self) -> None:
        """Tear down at once, from any thread: blocked and later operations fail."""
        if self._closed:
            return
        self._broken = self._broken or CommunicatorClosedError("the communicator was aborted")
        self._release()

    def _release(self) -> None:
        self._closed = True
        for transport in self.transports:
            try:
                transport.close()
            except Exception:  # noqa: BLE001 - closing must go on for the others
                logger.exception("closing %s failed", transport)
        self._executor.release_scratch()
        for window in self._windows:
            if window is not None:
                window.close()
        self._windows.clear()
        self._small_plans.clear()
        self._gather_plans.clear()
        self._scatter_plans.clear()
        self._broadcast_plans.clear()
        if self._small_window is not None:
            self._small_window.close()
        if self._levels is not None:
            for level in self._levels:
                if self._broken is not None:
                    level.abort()
                else:
                    level.close()
        for resource in self._owned:
            try:
                resource.close()
            except Exception:  # noqa: BLE001
                logger.exception("closing %s failed", resource)
        if self._worker is not None:
            self._worker.stop(timeout=0)

    # -- dispatch -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._broken is not None:
            if isinstance(self._broken, CommunicatorClosedError):
                raise CommunicatorClosedError(str(self._broken))
            raise CommunicatorBrokenError(
                f"an earlier failure left this communicator unusable ({self._broken}); create a new one"
            ) from self._broken
        if self._closed:
            raise CommunicatorClosedError("the communicator is closed")

    def _issue(self, name: str, body: Callable[[int, float], Any], async_op: bool, *, p2p: bool = False) -> Any:
        """Number the operation, then run it now or queue it behind earlier async work."""
        self._check_open()
        seq = next(self._p2p_numbers if p2p else self._collective_numbers)

        def run() -> Any:
            return self._run(name, seq, body)

        if async_op or (self._worker is not None and self._worker.pending):
            if self._worker is None:
                self._worker = Worker(f"collectives-rank{self.rank}")
            work = self._worker.submit(Work(name, seq), run)
            return work if async_op else work.wait()
        return run()

    def _run(self, name: str, seq: int, body: Callable[[int, float], Any]) -> Any:
        with self._run_lock:
            self._check_open()
            deadline = time.monotonic() + self.timeout
            try:
                return body(seq, deadline)
            except (CollectiveTimeoutError, TransportError) as exc:
                self._fail(name, seq, exc)

    def _fail(self, name: str, seq: int, exc: CollectiveTimeoutError | TransportError) -> NoReturn:
        """Raise what a timeout or transport failure inside operation ``seq`` means for the
        caller, marking the communicator broken (call from an ``except`` block)."""
        if self._closed:  # abort() from another thread tore the transports down
            raise CommunicatorClosedError(f"{name} #{seq} was interrupted: the communicator was aborted") from exc
        if isinstance(exc, CollectiveTimeoutError):
            self._broken = exc
            self._diagnose_timeout(exc)
            raise exc
        error = type(exc)(f"{name} #{seq}: {exc}", peer=exc.peer)
        self._broken = error
        raise error from exc

    def _diagnose_timeout(self, exc: CollectiveTimeoutError, grace: float = 1.0) -> None:
        """Ask the store which ranks are stuck in the same operation: those that never say
        so did not join it (or already left it). Only runs after a timeout."""
        if self.store is None or self.size == 1:
            return
        key = f"stuck/{exc.collective}/{exc.seq}"
        try:
            self.store.set(f"{key}/{self.rank}", b"1")
            deadline = time.monotonic() + min(grace, self.timeout)
            absent = list(range(self.size))
            while absent and time.monotonic() < deadline:
                absent = [r for r in absent if not self.store.check([f"{key}/{r}"])]
                time.sleep(0.05)
        except Exception:  # noqa: BLE001 - a dead store must not hide the timeout itself
            return
        exc.absent = absent
        if absent:
            exc.args = (
                f"{exc.args[0]}; rank(s) {', '.join(map(str, absent))} never reported being in "
                f"{exc.collective} #{exc.seq} (not joined, or already finished it)",
            )

    def _execute(
        self,
        name: str,
        seq: int,
        deadline: float,
        steps: Schedule,
        buffers: Sequence[np.ndarray],
        op: ReduceOp | None = None,
        tag: int | None = None,
    ) -> None:
        self._executor.run(
            steps, buffers, op=op, tag=seq if tag is None else tag, deadline=deadline,
            on_timeout=self._timeout_for(name, seq),
        )

    # -- argument checks ------------------------------------------------------------------

    def _staging(self) -> Staging:
        """The host stand-ins for one call's device buffers (see ``staging``)."""
        return Staging(self._note_staged)

    def _note_staged(self, device: DeviceArray, name: str) -> None:
        """Say once per communicator that device buffers go through host memory, and by
        which host transport to each peer (``shm_staged``, ``tcp_staged`` in docs/gpu.md)."""
        if self._warned_staging:
            return
        self._warned_staging = True
        by_transport: dict[str, list[int]] = {}
        for peer, transport in sorted(self.transport_names.items()):
            by_transport.setdefault(transport, []).append(peer)
        routes = "; ".join(f"{t}_staged to ranks {peers}" for t, peers in sorted(by_transport.items()))
        logger.warning(
            "rank %d: %s is a %s; device buffers are copied through host memory (%s): no device "
            "transport is built yet, see docs/gpu.md", self.rank, name, device.description, routes or "no peers",
        )

    def _check_rank(self, value: object, name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InvalidArgumentError(f"{name}: expected a rank (int), got {type(value).__name__}")
        if not 0 <= int(value) < self.size:
            raise InvalidArgumentError(f"{name}: rank {value} is out of range for world size {self.size}")
        return int(value)

    def _algorithm(self, collective: str, requested: str | None, nbytes: int) -> str:
        windows = self._window_transport is not None and self.size > 1
        algorithm = select(collective, requested, self.config.algorithm, nbytes, self.size, windows,
                           self._layout is not None)
        if (collective, algorithm) not in self._algorithms_said and logger.isEnabledFor(logging.INFO):
            self._algorithms_said.add((collective, algorithm))
            why = "asked" if requested not in (None, "auto") else (
                "COLLECTIVES_ALGO" if algorithm == self.config.algorithm else "automatic")
            logger.info("%s: %s takes %s (%s, first at %d bytes)", self._label, collective, algorithm, why, nbytes)
        return algorithm

    # -- two levels: within hosts, then across ----------------------------------------------

    def _two_levels(self, seq: int, deadline: float) -> tuple[Communicator, Communicator]:
        """The communicators of this host's ranks and of the ranks with my place on the
        other hosts, connected (collectively, through the store, within the current
        operation's deadline) on first use."""
        if self._levels is None:
            from ._init import connect  # (the module that builds communicators imports this one)

            layout = self._layout
            assert layout is not None and self.store is not None
            host, place = layout.host_of[self.rank], layout.local_rank(self.rank)
            config = dataclasses.replace(self.config, timeout=max(deadline - time.monotonic(), 1e-3))
            local = None
            try:
                local = connect(place, layout.per_host, PrefixStore(f"levels/host/{host}", self.store), config)
                across = connect(host, layout.hosts, PrefixStore(f"levels/across/{place}", self.store), config)
            except RendezvousTimeoutError as exc:
                if local is not None:
                    local.close()
                others = [r for r in self._level_members(within=local is None) if r != self.rank]
                raise CollectiveTimeoutError("all_reduce", seq, others, self.timeout) from exc
            except BaseException:
                if local is not None:
                    local.close()
                raise
            self._levels = (local, across)
            local._label, across._label = f"{self._label} (within its host)", f"{self._label} (across hosts)"
            logger.info("%s: all_reduce in two levels, %d hosts of %d ranks: within ranks %s, across ranks %s",
                        self._label, layout.hosts, layout.per_host, self._level_members(within=True),
                        self._level_members(within=False))
        return self._levels

    def _level_members(self, *, within: bool) -> list[int]:
        """My ranks of the members of a level (in its rank order): this host's ranks, or the
        ranks with my place on every host."""
        layout = self._layout
        assert layout is not None
        return layout.on_host(layout.host_of[self.rank]) if within else layout.across(self.rank)

    def _hierarchical_all_reduce(self, x: np.ndarray, out: np.ndarray, op: ReduceOp, seq: int, deadline: float) -> None:
        """``out`` = the reduction of every rank's ``x``, in two levels: a reduce-scatter among
        this host's ranks (shared memory), an all-reduce of my block with the ranks that hold
        the same block on the other hosts, an all-gather among this host's ranks. Each block is
        reduced in one place, so every rank gets the same bits. AVG is summed here and
        divided by the caller."""
        local, across = self._two_levels(seq, deadline)
        local.timeout = across.timeout = self.timeout
        n, per_host = out.size, local.size
        padded = -(-n // per_host) * per_host
        if out is not x:
            copy_array(out, x)
        work = out
        if padded != n:  # blocks of equal size: pad with zeros (left out of the result)
            work = np.zeros(padded, dtype=out.dtype)
            work[:n] = out
        block = np.empty(padded // per_host, dtype=out.dtype)
        level_op = ReduceOp.SUM if op is ReduceOp.AVG else op
        level = local
        try:
            local.reduce_scatter(work, block, level_op)
            level = across
            across.all_reduce(block, level_op)
            level = local
            local.all_gather(block, work)
        except (CollectiveTimeoutError, TransportError) as exc:
            members = self._level_members(within=level is local)
            if isinstance(exc, CollectiveTimeoutError):
                raise CollectiveTimeoutError("all_reduce", seq, [members[r] for r in exc.ranks], self.timeout) from exc
            peer = None if exc.peer is None else members[exc.peer]
            raise type(exc)(f"{'within' if level is local else 'across'} hosts: {exc}", peer=peer) from exc
        if work is not out:
            out[...] = work[:n]

    # -- shared windows -----------------------------------------------------------------

    def _open_window(self, name: str, nbytes: int, window_id: int, seq: int, deadline: float) -> Any:
        """Collectively create a shared window of ``nbytes`` per rank: create my segment,
        all-gather the names over the channels, map the peers', then unlink mine once
        every rank has mapped it."""
        from .transports.shm_window import NAME_BYTES, ShmWindow

        window = ShmWindow(self._window_transport, self.rank, list(range(self.size)), nbytes, window_id)
        try:
            names = np.zeros(NAME_BYTES * self.size, dtype=np.uint8)
            names[self.rank * NAME_BYTES : (self.rank + 1) * NAME_BYTES] = np.frombuffer(window.name(), np.uint8)
            blocks = partition(names.size, self.size)
            tag = CONTROL_TAG_BIT | seq
            self._execute(name, seq, deadline, ring_algorithm.all_gather(self.rank, self.size, blocks, names.size), [names], tag=tag)
            window.attach({r: names[r * NAME_BYTES : (r + 1) * NAME_BYTES].tobytes() for r in range(self.size)})
            empty = np.empty(0, dtype=np.uint8)
            self._execute(name, seq, deadline, barrier_algorithm.barrier(self.rank, self.size), [empty], tag=tag)
        except BaseException:
            window.close()
            raise
        window.unlink_own()
        return window

    def _scratch_window(self, nbytes: int, seq: int, deadline: float) -> Any:
        """The scratch window, grown (collectively: every rank asks for the same size) to
        hold ``nbytes``."""
        current = self._windows[0] if self._windows else None
        if current is not None and current.nbytes >= nbytes:
            return current
        capacity = 1 << max(20, (max(nbytes, 1) - 1).bit_length())
        window = self._open_window("all_reduce", capacity, 0, seq, deadline)
        if current is not None:
            current.close()
        if self._windows:
            self._windows[0] = window
        else:
            self._windows.append(window)
        self._window_serial = 0
        return window

    def alloc(self, shape: int | tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        """A zeroed array in shared memory registered with this communicator (like
        ncclMemAlloc + window registration): collectives on it copy nothing in or out.

        Collective: every rank calls it with the same shape and dtype, in the same order.
        Without shared windows (ranks on several hosts) it returns an ordinary array.
        """
        dt = np.dtype(dtype)
        shape_t = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        count = int(np.prod(shape_t, dtype=np.int64))
        if self._window_transport is None or self.size == 1:
            return np.zeros(shape_t, dtype=dt)

        def body(seq: int, deadline: float) -> np.ndarray:
            if not self._windows:
                self._windows.append(None)  # id 0 is kept for the scratch window
            window = self._open_window("alloc", count * dt.itemsize, len(self._windows), seq, deadline)
            self._windows.append(window)
            array = window.data(self.rank)[: count * dt.itemsize].view(dt).reshape(shape_t)
            array[...] = 0
            return array

        return self._issue("alloc", body, False)

    def _direct(
        self,
        algorithm: Any,
        name: str,
        arr: np.ndarray,
        op: ReduceOp,
        seq: int,
        deadline: float,
        out: np.ndarray | None = None,
    ) -> None:
        """Run a direct (shared-window) algorithm of ``algorithms/direct.py`` on ``arr``."""
        if not self._windows:
            self._windows.append(None)  # id 0 is the scratch window
        # Every rank asks for the same size (even one whose input lives in a registered
        # window and needs no scratch), so all agree on when the scratch grows.
        scratch = self._scratch_window(arr.nbytes, seq, deadline)
        buffers = (arr,) if out is None else (arr, out)
        step = max(1, DIRECT_STEP_BYTES // arr.itemsize)
        self._window_serial = algorithm(
            scratch, self._windows, *buffers, op, step, self._window_serial, deadline, self._timeout_for(name, seq)
        )

    def _small(self, name: str, seq: int, deadline: float) -> Any:
        """The small window (created collectively on first use): small all-reduces and the
        flags of single-copy reads."""
        if self._small_window is None:
            self._small_window = self._open_window(
                name, small.window_bytes(), -1, seq, deadline
            )
        return self._small_window

    def _timeout_for(self, name: str, seq: int) -> Callable[[list[int]], BaseException]:
        def on_timeout(ranks: list[int]) -> BaseException:
            return CollectiveTimeoutError(name, seq, ranks, self.timeout)

        return on_timeout

    def _peer_memory(self, name: str, seq: int, deadline: float) -> Any:
        """Reads of peers' memory (process_vm_readv) if the kernel allows them between all
        of us, else None; probed collectively on first use, so every rank agrees."""
        if self._memory_probed:
            return self._memory
        window = self._small(name, seq, deadline)
        memory = None
        if self.config.cross_memory and cma.AVAILABLE:
            cma.allow_peers()
            candidate = cma.PeerMemory(self._window_transport.peer_pids())
            probe = np.frombuffer(secrets.token_bytes(8), dtype=np.uint8).copy()
            ok, self._memory_serial = direct.probe_peer_memory(
                window, candidate, probe, self._memory_serial, deadline, self._timeout_for(name, seq)
            )
            memory = candidate if ok else None
            logger.info(
                "%s: single-copy reads of peers' memory %s", self._label,
                "work (process_vm_readv)" if ok else "are refused by the kernel; copying through shared memory",
            )
        self._memory_probed, self._memory = True, memory
        return memory

    def _segment(self, array: np.ndarray) -> int:
        return max(1, self._chunk_bytes // max(1, array.itemsize))

    def _reduction(self, op: object, array: np.ndarray, name: str = "op") -> ReduceOp:
        parsed = ReduceOp.parse(op, name)
        check_op(parsed, array.dtype, name)
        return parsed

    # -- collectives ----------------------------------------------------------------------

    def all_reduce(
        self,
        x: Any,
        op: ReduceOp | str = ReduceOp.SUM,
        *,
        out: Any = None,
        algorithm: str | None = None,
        async_op: bool = False,
    ) -> Any:
        """Reduce ``x`` across all ranks; every rank ends with the same bits, in ``x`` itself
        or, given ``out`` (same size and dtype; like MPI_Allreduce's recvbuf), in ``out``
        with ``x`` left as it was.

        Returns the result (or a Work whose ``wait()`` returns it, with ``async_op=True``).
        """
        if not async_op and type(x) is not np.ndarray and (views := _tensor_views(x, out)) is not None:
            self.all_reduce(views[0], op, out=views[1], algorithm=algorithm)
            return x if out is None else out
        if (
            algorithm is None
            and not async_op
            and type(x) is np.ndarray
            and self._worker is None
            and (out is None or type(out) is np.ndarray)
        ):
            plan = self._small_plans.get((x.dtype, x.size, op)) if isinstance(op, (ReduceOp, str)) else None
            if plan is not None and x.flags.c_contiguous and self._small_output_ok(x, out):
                result = x if out is None else out
                if type(plan) is KeptSchedule:
                    self._run_kept("all_reduce", plan, _flat(x), _flat(result))
                    return result
                self._run_plan("all_reduce", plan, _flat(x), _flat(result))
                if plan.averages:
                    finalize(ReduceOp.AVG, result, self.size)
                return result
        stage = self._staging()
        xa = stage.flat(x, "x", writable=out is None)
        rop = self._reduction(op, xa)
        result = x if out is None else out
        arr = xa if out is None else stage.flat(out, "out", writable=True, load=False)
        if out is not None:
            check_same_dtype(xa, arr, "x", "out")
            check_count(arr, xa.size, "out", "all_reduce's result is the size of x")
            check_same_or_apart(xa, arr, "x", "out")
        algo = self._algorithm("all_reduce", algorithm, arr.nbytes)

        def body(seq: int, deadline: float) -> Any:
            if arr.size == 0:  # nothing to move (NCCL and MPI return at once too)
                return result
            if algo == "hierarchical":
                self._hierarchical_all_reduce(xa, arr, rop, seq, deadline)
                finalize(rop, arr, self.size)
                return result
            if self.size > 1 and algo == "direct" and arr.nbytes >= direct.READS_FROM_BYTES:
                if self._by_reads("all_reduce", direct.all_reduce_by_reads, xa, arr, rop, seq, deadline):
                    finalize(rop, arr, self.size)
                    return result
            if self.size > 1 and algo == "direct" and arr.nbytes <= small.HALF_BYTES:
                window = self._small("all_reduce", seq, deadline)
                plan = self._plan(self._small_plans, (xa.dtype, xa.size, op),
                                  lambda: small.AllReducePlan(window, xa.dtype, xa.size, rop), algorithm is None)
                self._call_plan("all_reduce", plan, xa, arr, seq, deadline)
            else:
                if arr is not xa:
                    copy_array(arr, xa)
                if self.size > 1 and algo == "direct":
                    self._direct(direct.all_reduce, "all_reduce", arr, rop, seq, deadline)
                elif self.size > 1:
                    schedule = schedule_for("all_reduce", algo, arr.nbytes)
                    args = (self.rank, self.size, arr.size, self._segment(arr))
                    if schedule is recursive_algorithm.all_reduce_short and algorithm is None:  # kept for the fast path
                        steps = self._plan(self._small_plans, (xa.dtype, xa.size, op),
                                           lambda: KeptSchedule(tuple(schedule(*args)), rop), True).steps
                    else:
                        steps = schedule(*args)
                    self._execute("all_reduce", seq, deadline, steps, [arr], rop)
            finalize(rop, arr, self.size)
            return result

        return self._issue("all_reduce", stage.wrap(body), async_op)

    @staticmethod
    def _small_output_ok(x: np.ndarray, out: np.ndarray | None) -> bool:
        """Whether the fast path may write the result: into ``x`` (writable), or into an
        ``out`` that passes every check the full path makes."""
        if out is None:
            return x.flags.writeable
        return (
            out.dtype == x.dtype
            and out.size == x.size
            and out.flags.c_contiguous
            and out.flags.writeable
            and same_or_apart(x, out)
        )

    def _plan(self, plans: dict[Any, Any], key: Any, make: Callable[[], Any], keep: bool) -> Any:
        """The plan kept under ``key``, else a new one from ``make()``, kept for the fast
        path when ``keep`` (the call took the default route for its shape)."""
        plan = plans.get(key)
        if plan is None:
            plan = make()
            if keep:
                _keep(plans, key, plan)
        return plan

    def _run_plan(self, name: str, plan: Any, x: np.ndarray, second: Any) -> None:
        """Run a kept plan (``plan(x, second, serial, deadline, on_timeout)``) on
        arguments already checked (flat, C-contiguous, outputs writable and of the right
        dtype and size, the operator valid for the dtype), with nothing queued before it:
        what ``_issue``/``_run`` do, inline, without their general dispatch, which was half
        the per-call time of an 8-byte all-reduce. Each kind of plan counts its calls
        with its own serial (``_PLAN_SERIALS``)."""
        lock = self._run_lock
        lock.acquire()  # (not ``with``: half the cost; this path is counted in hundreds of ns)
        try:
            if self._closed or self._broken is not None:
                self._check_open()
            seq = next(self._collective_numbers)
            self._plan_call = (name, seq)  # for _plan_timed_out, the only time they are needed
            serial = _PLAN_SERIALS.get(type(plan), "_small_serial")
            try:
                setattr(self, serial, plan(x, second, getattr(self, serial), time.monotonic() + self.timeout,
                                           self._plan_timed_out))
            except (CollectiveTimeoutError, TransportError) as exc:
                self._fail(name, seq, exc)
        finally:
            lock.release()

    def _plan_timed_out(self, ranks: list[int]) -> BaseException:
        """The timeout error of the plan ``_run_plan`` is running (``_timeout_for`` without
        a closure made per call)."""
        name, seq = self._plan_call
        return CollectiveTimeoutError(name, seq, ranks, self.timeout)

    def _call_plan(self, name: str, plan: Any, x: np.ndarray, second: Any, seq: int, deadline: float) -> None:
        """Call ``plan`` as operation ``seq``, counting with its kind's serial (``_PLAN_SERIALS``)."""
        serial = _PLAN_SERIALS.get(type(plan), "_small_serial")
        setattr(self, serial, plan(x, second, getattr(self, serial), deadline, self._timeout_for(name, seq)))

    def _run_kept(self, name: str, plan: KeptSchedule, x: np.ndarray, out: np.ndarray) -> None:
        """Run a kept reduction schedule on arguments already checked (as ``_run_plan``),
        into ``out`` (``x`` copied there first unless it is ``x``), and finish the result."""
        def body(seq: int, deadline: float) -> None:
            if out is not x:  # only once the call runs: a closed communicator leaves out alone
                copy_array(out, x)
            self._execute(name, seq, deadline, plan.steps, [out], plan.op)

        self._run(name, next(self._collective_numbers), body)
        finalize(plan.op, out, self.size)

    @staticmethod
    def _plain_output_ok(x: np.ndarray, out: np.ndarray, count: int) -> bool:
        """Whether the fast path may take ``x`` and write ``out``: C-contiguous, of one
        dtype, ``out`` writable and of ``count`` elements (as the full path checks)."""
        return (
            out.dtype == x.dtype
            and out.size == count
            and x.flags.c_contiguous
            and out.flags.c_contiguous
            and out.flags.writeable
        )

    def _by_reads(
        self, name: str, algorithm: Callable[..., int], x: np.ndarray, out: np.ndarray, op: ReduceOp, seq: int,
        deadline: float,
    ) -> bool:
        """Run ``direct.all_reduce_by_reads`` or ``direct.reduce_scatter_by_reads`` if the
        kernel allows reads of peers' memory and no rank's buffers live in a registered
        window (those take the window scheme, which copies nothing, where reads of shared
        mappings are slow: 16 MiB, 2 ranks, 7.9 ms by reads against 2.2 ms). Returns
        whether it ran; every rank gets the same answer."""
        memory = self._peer_memory(name, seq, deadline)
        if memory is None:
            return False
        registered = bool(self._windows) and any(direct.locate(a, self._windows)[0] for a in (x, out))
        ok, self._memory_serial = direct.agree(
            self._small_window, not registered, self._memory_serial, deadline, self._timeout_for(name, seq)
        )
        if not ok:
            return False
        if self._read_piece is None:
            self._read_piece = np.empty(DIRECT_STEP_BYTES, dtype=np.uint8)
        reads = direct.Reads(self._small_window, memory, self._read_piece, deadline, self._timeout_for(name, seq))
        self._memory_serial = algorithm(reads, x, out, op, self._memory_serial)
        return True

    def reduce_scatter(
        self,
        x: Any,
        out: Any = None,
        op: ReduceOp | str = ReduceOp.SUM,
        *,
        algorithm: str | None = None,
        async_op: bool = False,
    ) -> Any:
        """Reduce ``x`` (size·k elements) across ranks; rank r receives block r (k
        elements) in ``out``. Returns ``out`` (allocated when None)."""
        if not async_op and out is not None and type(x) is not np.ndarray and (views := _tensor_views(x, out)):
            self.reduce_scatter(views[0], views[1], op, algorithm=algorithm)
            return out
        if algorithm is None and not async_op and type(x) is np.ndarray and type(out) is np.ndarray and self._worker is None:
            plan = self._scatter_plans.get((x.dtype, x.size, op)) if isinstance(op, (ReduceOp, str)) else None
            if plan is not None and self._plain_output_ok(x, out, x.size // self.size):
                self._run_plan("reduce_scatter", plan, _flat(x), _flat(out))
                if plan.averages:
                    finalize(ReduceOp.AVG, out, self.size)
                return out
        stage = self._staging()
        xa = stage.flat(x, "x")
        if xa.size % self.size:
            raise InvalidArgumentError(
                f"x: holds {xa.size} elements, not a multiple of the world size {self.size}"
            )
        k = xa.size // self.size
        rop = self._reduction(op, xa)
        if out is None:
            out = stage.new_like(x, k, xa.dtype)
        oa = stage.flat(out, "out", writable=True, load=False)
        check_same_dtype(xa, oa, "x", "out")
        check_count(oa, k, "out", f"x holds {xa.size} elements for {self.size} ranks")
        algo = self._algorithm("reduce_scatter", algorithm, xa.nbytes)

        def body(seq: int, deadline: float) -> Any:
            if xa.size == 0:  # nothing to move (NCCL and MPI return at once too)
                return out
            if self.size > 1 and algo == "direct":
                if xa.nbytes <= small.HALF_BYTES:
                    window = self._small("reduce_scatter", seq, deadline)
                    plan = self._plan(self._scatter_plans, (xa.dtype, xa.size, op),
                                      lambda: small.ReduceScatterPlan(window, xa.dtype, xa.size, rop), algorithm is None)
                    self._call_plan("reduce_scatter", plan, xa, oa, seq, deadline)
                elif not (
                    xa.nbytes >= direct.READS_FROM_BYTES
                    and self._by_reads("reduce_scatter", direct.reduce_scatter_by_reads, xa, oa, rop, seq, deadline)
                ):
                    self._direct(direct.reduce_scatter, "reduce_scatter", xa, rop, seq, deadline, out=oa)
                finalize(rop, oa, self.size)
                return out
            blocks = partition(xa.size, self.size)
            work = xa.copy()
            if self.size > 1:
                steps = SCHEDULES["reduce_scatter"][algo](self.rank, self.size, blocks, self._segment(xa))
                self._execute("reduce_scatter", seq, deadline, steps, [work], rop)
            offset, length = blocks[self.rank]
            oa[...] = work[offset : offset + length]
            finalize(rop, oa, self.size)
            return out

        return self._issue("reduce_scatter", stage.wrap(body), async_op)

    def all_gather(self, x: Any, out: Any = None, *, algorithm: str | None = None, async_op: bool = False) -> Any:
        """Gather every rank's ``x`` (k elements) into ``out`` (size·k, in rank order) on
        every rank. Returns ``out`` (allocated when None)."""
        if not async_op and out is not None and type(x) is not np.ndarray and (views := _tensor_views(x, out)):
            self.all_gather(views[0], views[1], algorithm=algorithm)
            return out
        if algorithm is None and not async_op and type(x) is np.ndarray and type(out) is np.ndarray and self._worker is None:
            plan = self._gather_plans.get((x.dtype, x.size))
            if plan is not None and self._plain_output_ok(x, out, x.size * self.size):
                self._run_plan("all_gather", plan, _flat(x), _flat(out))
                return out
        stage = self._staging()
        xa = stage.flat(x, "x")
        k = xa.size
        if out is None:
            out = stage.new_like(x, k * self.size, xa.dtype)
        oa = stage.flat(out, "out", writable=True, load=False)
        check_same_dtype(xa, oa, "x", "out")
        check_count(oa, k * self.size, "out", f"world size {self.size} × {k} elements of x")
        algo = self._algorithm("all_gather", algorithm, oa.nbytes)

        def body(seq: int, deadline: float) -> Any:
            if xa.size == 0:  # nothing to move (NCCL and MPI return at once too)
                return out
            schedule = algo
            fits_window = (
                self.size > 1
                and algo == "direct"
                and xa.nbytes <= small.GATHER_BYTES  # the window's limit at most: no window made for more
                and xa.nbytes <= small.gather_bytes(self._small("all_gather", seq, deadline))
            )
            memory = None
            if fits_window and small.gather_prefers_reads(xa.nbytes):
                memory = self._peer_memory("all_gather", seq, deadline)
            if fits_window and memory is None:
                plan = self._plan(self._gather_plans, (xa.dtype, xa.size),
                                  lambda: small.AllGatherPlan(self._small_window, xa.dtype, xa.size), algorithm is None)
                self._call_plan("all_gather", plan, xa, oa, seq, deadline)
                return out
            if self.size > 1 and algo == "direct":
                memory = memory or self._peer_memory("all_gather", seq, deadline)
                if memory is not None:
                    plan = self._plan(self._gather_plans, (xa.dtype, xa.size),
                                      lambda: direct.AllGatherByReads(self._small_window, memory, xa.itemsize, xa.size),
                                      algorithm is None)
                    self._call_plan("all_gather", plan, xa, oa, seq, deadline)
                    return out
                schedule = automatic("all_gather", oa.nbytes, self.size)  # the same on every rank
            blocks = partition(oa.size, self.size)
            offset, length = blocks[self.rank]
            oa[offset : offset + length] = xa
            if self.size > 1:
                steps = SCHEDULES["all_gather"][schedule](self.rank, self.size, blocks, self._segment(xa))
                self._execute("all_gather", seq, deadline, steps, [oa])
            return out

        return self._issue("all_gather", stage.wrap(body), async_op)

    def broadcast(self, x: Any, root: int = 0, *, algorithm: str | None = None, async_op: bool = False) -> Any:
        """Copy the root's ``x`` into every rank's ``x``. Returns ``x``."""
        if not async_op and type(x) is not np.ndarray and (view := plain_tensor_view(x)) is not None:
            self.broadcast(view, root, algorithm=algorithm)
            return x
        if algorithm is None and not async_op and type(x) is np.ndarray and type(root) is int and self._worker is None:
            plan = self._broadcast_plans.get((x.dtype, x.size))
            if plan is not None and 0 <= root < self.size and x.flags.c_contiguous and (x.flags.writeable or root == self.rank):
                self._run_plan("broadcast", plan, _flat(x), root)
                return x
        root = self._check_rank(root, "root")
        stage = self._staging()
        arr = stage.flat(x, "x", writable=self.rank != root)
        algo = self._algorithm("broadcast", algorithm, arr.nbytes)

        def body(seq: int, deadline: float) -> Any:
            if self.size == 1 or arr.size == 0:  # nothing to move (NCCL and MPI return at once too)
                return x
            schedule = algo
            if algo == "direct" and arr.nbytes <= small.PIPELINED_BROADCAST_BYTES:
                window = self._small("broadcast", seq, deadline)
                plan = self._plan(self._broadcast_plans, (arr.dtype, arr.size),
                                  lambda: small.PipelinedBroadcastPlan(window, arr.dtype, arr.size), algorithm is None)
                self._call_plan("broadcast", plan, arr, root, seq, deadline)
                return x
            if algo == "direct" and arr.nbytes <= small.BROADCAST_BYTES:
                plan = small.BroadcastPlan(self._small("broadcast", seq, deadline), arr.dtype, arr.size)
                self._call_plan("broadcast", plan, arr, root, seq, deadline)
                return x
            if algo == "direct":
                memory = self._peer_memory("broadcast", seq, deadline)
                if memory is not None:
                    window = self._small_window
                    self._memory_serial = direct.broadcast(
                        window, memory, arr.view(np.uint8), root, self._memory_serial, deadline,
                        self._timeout_for("broadcast", seq), root_writes=not window.oversubscribed,
                    )
                    return x
                schedule = automatic("broadcast", arr.nbytes, self.size)  # the same on every rank
            steps = SCHEDULES["broadcast"][schedule](self.rank, self.size, root, arr.size, self._segment(arr))
            self._execute("broadcast", seq, deadline, steps, [arr])
            return x

        return self._issue("broadcast", stage.wrap(body), async_op)

    def reduce(
        self,
        x: Any,
        root: int = 0,
        op: ReduceOp | str = ReduceOp.SUM,
        *,
        algorithm: str | None = None,
        async_op: bool = False,
    ) -> Any:
        """Reduce ``x`` across ranks into the root's ``x``; other ranks' ``x`` is unchanged."""
        root = self._check_rank(root, "root")
        stage = self._staging()
        arr = stage.flat(x, "x", writable=self.rank == root)
        rop = self._reduction(op, arr)
        algo = self._algorithm("reduce", algorithm, arr.nbytes)

        def body(seq: int, deadline: float) -> Any:
            work = arr if self.rank == root else arr.copy()
            if self.size > 1:
                steps = SCHEDULES["reduce"][algo](self.rank, self.size, root, arr.size, self._segment(arr))
                self._execute("reduce", seq, deadline, steps, [work], rop)
            if self.rank == root:
                finalize(rop, arr, self.size)
            return x

        return self._issue("reduce", stage.wrap(body), async_op)

    def gather(
        self, x: Any, out: Any = None, root: int = 0, *, algorithm: str | None = None, async_op: bool = False
    ) -> Any:
        """Gather every rank's ``x`` into the root's ``out`` (size·k, rank order).
        Returns ``out`` on the root (allocated when None) and None elsewhere."""
        root = self._check_rank(root, "root")
        stage = self._staging()
        xa = stage.flat(x, "x")
        k = xa.size
        oa: np.ndarray | None = None
        if self.rank == root:
            if out is None:
                out = stage.new_like(x, k * self.size, xa.dtype)
            oa = stage.flat(out, "out", writable=True, load=False)
            check_same_dtype(xa, oa, "x", "out")
            check_count(oa, k * self.size, "out", f"world size {self.size} × {k} elements of x")
        algo = self._algorithm("gather", algorithm, k * self.size * xa.itemsize)

        def body(seq: int, deadline: float) -> Any:
            work = oa if oa is not None else np.empty(k * self.size, dtype=xa.dtype)
            blocks = partition(work.size, self.size)
            offset, length = blocks[self.rank]
            work[offset : offset + length] = xa
            if self.size > 1:
                steps = SCHEDULES["gather"][algo](self.rank, self.size, root, blocks, self._segment(xa))
                self._execute("gather", seq, deadline, steps, [work])
            return out if self.rank == root else None

        return self._issue("gather", stage.wrap(body), async_op)

    def scatter(
        self, x: Any, out: Any, root: int = 0, *, algorithm: str | None = None, async_op: bool = False
    ) -> Any:
        """Split the root's ``x`` (size·k elements) into blocks; rank r receives block r in
        ``out`` (k elements). ``x`` is ignored (may be None) on other ranks. Returns ``out``."""
        root = self._check_rank(root, "root")
        stage = self._staging()
        oa = stage.flat(out, "out", writable=True, load=False)
        k = oa.size
        xa: np.ndarray | None = None
        if self.rank == root:
            xa = stage.flat(x, "x")
            check_same_dtype(oa, xa, "out", "x")
            check_count(xa, k * self.size, "x", f"world size {self.size} × {k} elements of out")
        algo = self._algorithm("scatter", algorithm, k * self.size * oa.itemsize)

        def body(seq: int, deadline: float) -> Any:
            blocks = partition(k * self.size, self.size)
            offset, length = blocks[self.rank]
            if xa is not None:
                source = xa.copy() if np.shares_memory(xa, oa) else xa
                work = np.empty(0, dtype=oa.dtype)
                if self.size > 1:
                    steps = SCHEDULES["scatter"][algo](self.rank, self.size, root, blocks, self._segment(oa))
                    self._execute("scatter", seq, deadline, steps, [work, source])
                oa[...] = source[offset : offset + length]
            else:
                work = np.empty(k * self.size, dtype=oa.dtype)
                steps = SCHEDULES["scatter"][algo](self.rank, self.size, root, blocks, self._segment(oa))
                self._execute("scatter", seq, deadline, steps, [work, work])
                oa[...] = work[offset : offset + length]
            return out

        return self._issue("scatter", stage.wrap(body), async_op)

    def all_to_all(self, x: Any, out: Any = None, *, algorithm: str | None = None, async_op: bool = False) -> Any:
        """Rank r sends block j of ``x`` (size·k elements) to rank j, which stores it as
        block r of ``out``. Returns ``out`` (allocated when None)."""
        stage = self._staging()
        xa = stage.flat(x, "x")
        if xa.size % self.size:
            raise InvalidArgumentError(
                f"x: holds {xa.size} elements, not a multiple of the world size {self.size}"
            )
        if out is None:
            out = stage.new_like(x, xa.size, xa.dtype)
        oa = stage.flat(out, "out", writable=True, load=False)
        check_same_dtype(xa, oa, "x", "out")
        check_count(oa, xa.size, "out", "all_to_all output is as large as its input")
        algo = self._algorithm("all_to_all", algorithm, xa.nbytes)

        def body(seq: int, deadline: float) -> Any:
            source = xa.copy() if np.shares_memory(xa, oa) else xa
            blocks = partition(xa.size, self.size)
            offset, length = blocks[self.rank]
            oa[offset : offset + length] = source[offset : offset + length]
            if self.size > 1:
                steps = SCHEDULES["all_to_all"][algo](self.rank, self.size, blocks, self._segment(xa))
                self._execute("all_to_all", seq, deadline, steps, [oa, source])
            return out

        return self._issue("all_to_all", stage.wrap(body), async_op)

    def barrier(self, *, async_op: bool = False) -> Any:
        """Return once every rank has entered the barrier (dissemination, ceil(lg p) rounds)."""
        empty = np.empty(0, dtype=np.uint8)

        def body(seq: int, deadline: float) -> None:
            self._execute("barrier", seq, deadline, barrier_algorithm.barrier(self.rank, self.size), [empty])

        return self._issue("barrier", body, async_op)

    def split(self, color: int | None, key: int | None = None) -> Communicator | None:
        """A new communicator of the ranks that pass the same ``color``, ranked by ``key``
        (this rank's number here when None) and then by rank here: ``MPI_Comm_split``,
        ``ncclCommSplit``. Collective: every rank calls it. A rank passing ``color=None``
        or a negative color (``MPI_UNDEFINED``, ``NCCL_SPLIT_NOCOLOR``) joins none and gets
        None. The new communicator has its own transports and operation numbers, meets
        through this one's store (over the mpi transport: through ``MPI_Comm_split``), and
        is closed on its own; this one stays usable."""
        for name, value in (("color", color), ("key", key)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
                raise InvalidArgumentError(f"{name}: expected an int or None, got {type(value).__name__}")
        over_mpi = next((t for t in self.transports if t.name == "mpi"), None)
        if over_mpi is not None:
            return self._split_through_mpi(over_mpi.comm, color, key)
        if self.store is None:
            raise UnsupportedError("split: this communicator has no store to meet in")
        mine = np.array([-1 if color is None or color < 0 else int(color), self.rank if key is None else int(key)],
                        dtype=np.int64)
        everyone = self.all_gather(mine).reshape(self.size, 2)
        self._splits += 1  # the same count on every rank: split is collective
        if mine[0] < 0:
            return None
        members = sorted((int(k), r) for r, (c, k) in enumerate(everyone.tolist()) if c == mine[0])
        new_rank = members.index((int(mine[1]), self.rank))
        from ._init import connect  # (the module that builds communicators imports this one)

        store = PrefixStore(f"split/{self._splits}/{int(mine[0])}", self.store)
        return connect(new_rank, len(members), store, self.config)

    def _split_through_mpi(self, mpi_comm: Any, color: int | None, key: int | None) -> Communicator | None:
        """``split`` of a communicator over the mpi transport: ``Split`` of its MPI
        communicator, and a communicator over the mpi transport on that."""
        from mpi4py import MPI

        from .mpi import _connect

        sub = mpi_comm.Split(MPI.UNDEFINED if color is None or color < 0 else int(color),
                             self.rank if key is None else int(key))
        if sub == MPI.COMM_NULL:
            return None
        try:
            return _connect(MPI, sub, self.config)  # the transport takes a duplicate of its own
        finally:
            sub.Free()

    def _connect_barrier(self) -> None:
        """A barrier that proves every channel works, before the user's first operation
        (it takes no sequence number, so the user's first collective is #1)."""
        empty = np.empty(0, dtype=np.uint8)

        def body(seq: int, deadline: float) -> None:
            steps = barrier_algorithm.barrier(self.rank, self.size)
            self._execute("connect barrier", 0, deadline, steps, [empty], tag=CONTROL_TAG_BIT)

        self._run("connect barrier", 0, body)

    # -- point to point -------------------------------------------------------------------

    def _p2p_tag(self, tag: object) -> int:
        if isinstance(tag, bool) or not isinstance(tag, (int, np.integer)) or not 0 <= int(tag) <= MAX_USER_TAG:
            raise InvalidArgumentError(f"tag: expected an int in 0..{MAX_USER_TAG}, got {tag!r}")
        return P2P_TAG_BIT | int(tag)

    def _p2p_peer(self, peer: object, name: str) -> int:
        peer = self._check_rank(peer, name)
        if peer == self.rank:
            raise InvalidArgumentError(f"{name}: rank {peer} is this rank; send/recv need another rank")
        return peer

    def send(self, x: Any, dst: int, *, tag: int = 0, async_op: bool = False) -> Any:
        """Send ``x`` to rank ``dst``; matched in order with ``recv`` of the same tag there."""
        dst = self._p2p_peer(dst, "dst")
        stage = self._staging()
        arr = stage.flat(x, "x")
        wire_tag = self._p2p_tag(tag)

        def body(seq: int, deadline: float) -> None:
            self._execute(f"send to rank {dst}", seq, deadline, iter([(Send(dst, 0, arr.size),)]), [arr], tag=wire_tag)

        return self._issue("send", stage.wrap(body), async_op, p2p=True)

    def recv(self, x: Any, src: int, *, tag: int = 0, async_op: bool = False) -> Any:
        """Receive into ``x`` from rank ``src``; the message must have ``x``'s size. Returns ``x``."""
        src = self._p2p_peer(src, "src")
        stage = self._staging()
        arr = stage.flat(x, "x", writable=True, load=False)
        wire_tag = self._p2p_tag(tag)

        def body(seq: int, deadline: float) -> Any:
            self._execute(f"recv from rank {src}", seq, deadline, iter([(Recv(src, 0, arr.size),)]), [arr], tag=wire_tag)
            return x

        return self._issue("recv", stage.wrap(body), async_op, p2p=True)
