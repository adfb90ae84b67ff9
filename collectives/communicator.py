"""The Communicator: a group of ranks and the collectives they run together.

A call checks its arguments locally (nothing is sent for a wrong call), finds the plan for
its signature (``collectives.plans``) and runs it as the next numbered operation, inline or
behind earlier asynchronous work. A timeout or transport failure names the collective, its
number and the ranks that did not answer, and leaves the communicator broken.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NoReturn

import numpy as np

from . import _device_path as device_path
from . import _fast_path as fast_path
from . import arguments as check
from .buffers import overlap
from .config import Config
from .diagnose import abandon, explain
from .engines import express
from .engines.call import Call
from .engines.point_to_point import PointToPoint, sent_work
from .exchanges import Exchanges
from .errors import (CollectiveTimeoutError, CommunicatorBrokenError, CommunicatorClosedError, CommunicatorRevokedError,
                     TransportError, UnsupportedError)
from .flight_recorder import ENDED, TRACE_MASK, Traced
from .ops import ReduceOp
from .plans import Plan, PlanContext, Planner, nothing
from .recovery.mixin import Recoverable
from .staging import NoteStaged, Staging
from .stall import watch
from .store import Store
from .tags import CONTROL_TAG_BIT
from .timeouts import Timeouts
from .transports.base import Transport
from .work import Work, Worker

logger = logging.getLogger("collectives")
_NO_DATA = np.empty(0, dtype=np.uint8)  # a barrier's data
_BARRIER = ("barrier", None)  # a barrier's plan key

Splitter = Callable[["Communicator", int, int], "Communicator | None"]
"""How a communicator splits (made by ``connect()``): ``splitter(comm, color or -1, key)``."""


class Communicator(Traced, Recoverable, Timeouts, Exchanges):
    """Ranks ``0..size-1`` connected by transports; create it with ``collectives.init()``."""

    diagnoses_timeouts = True
    """False for a level of a two-level plan: the call running it diagnoses its timeouts (diagnose.explain)."""

    def __init__(self, rank: int, size: int, transports: Sequence[Transport], config: Config, *,
                 store: Store | None = None, owned: Sequence[Any] = (), context: PlanContext | None = None,
                 splitter: Splitter | None = None) -> None:
        self.rank, self.size, self.store, self.config = rank, size, store, config
        self.transports = list(transports)
        self.timeout = config.timeout  # the group's: seconds any wait of an operation may take (timeouts.py)
        self._call = Call(config.timeout)  # the operation under way, as its waits name it
        self._context = context or PlanContext.build(rank, size, self.transports, config, store=store)
        self._planner = Planner(self._context)
        self._plans, self._fast = self._planner.cache.plans, fast_path.paths(config.pure_python)  # the fast path reads
        self._barrier = self._planner.barrier()
        self._splitter = splitter
        self._owned = list(owned)  # stores/servers to close with us
        self._collective_numbers, self._p2p_numbers = itertools.count(1), itertools.count(1)  # next(): atomic, no lock
        self._run_lock = threading.RLock()
        self._p2p = PointToPoint(rank, self._context.executor, self._run_lock, self._fail, lambda: self._closed)
        self._express = express.lane(self._p2p, size, self._p2p_numbers, config)  # blocking send/recv over shm in C
        self._worker: Worker | None = None
        self._broken: BaseException | None = None  # the failure that left this communicator unusable
        self._closed = False
        self._note_staged = NoteStaged(self)  # device buffers staged through the host: said once
        self._start_trace(rank, size, store, config, self._planner.chosen)
        self._kept_run = fast_path.kept_run(self)  # _run_kept's steps in C, for the C fast path
        watch(self)  # stall warnings, and where this process runs for diagnosis (stall.py)

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
        aborted = self._broken is not None
        # (the engine's thread first, then the lane: it holds the rings mapped)
        closes = [self._p2p.close, self._express.close] + [t.close for t in self.transports]
        for close in closes + [lambda: self._context.close(abort=aborted)] + [o.close for o in self._owned]:
            try:
                close()
            except Exception:  # noqa: BLE001 - closing must go on for the others
                logger.exception("closing failed (%s)", close)
        self._planner.cache.clear()
        if self._worker is not None:
            self._worker.stop(timeout=0)

    def relabel(self, label: str) -> None:
        """Speak as ``label`` in log lines (the levels of a two-level communicator)."""
        self._context.relabel(label)

    # -- running operations ---------------------------------------------------------------

    def _check_open(self) -> None:
        if self._broken is not None:
            if isinstance(self._broken, (CommunicatorClosedError, CommunicatorRevokedError)):
                raise type(self._broken)(str(self._broken))
            raise CommunicatorBrokenError(
                f"an earlier failure left this communicator unusable ({self._broken}); create a new one"
            ) from self._broken
        if self._closed:
            raise CommunicatorClosedError("the communicator is closed")

    def _issue(self, key: tuple[Any, ...], body: Callable[[Call], Any], async_op: bool) -> Any:
        """Number the operation (``key``: its signature), then run it now or queue it behind earlier async work."""
        self._check_open()
        seq = next(self._collective_numbers)
        if async_op or (self._worker is not None and self._worker.pending):
            if self._worker is None:
                self._worker = Worker(f"collectives-rank{self.rank}")
            self._trace.issue(key, seq)
            work = self._worker.submit(Work(key[0], seq), self._carried(lambda: self._run(key, seq, body)))
            return work if async_op else work.wait()
        return self._run(key, seq, body)

    def _run(self, key: tuple[Any, ...], seq: int, body: Callable[[Call], Any]) -> Any:
        with self._run_lock:
            self._check_open()
            call = self._call
            call.name, call.seq, call.timeout = key[0], seq, self.timeout
            call.deadline = (now := time.monotonic()) + self.timeout
            slot = self._trace.start(key, seq, now)
            try:
                result = body(call)
            except BaseException as exc:
                self._failed(key[0], seq, exc)
            slot[ENDED] = time.monotonic()
            return result

    def _run_kept(self, key: tuple[Any, ...], plan: Plan, x: np.ndarray, out: Any) -> None:
        """Run a kept plan on arguments the fast path checked, nothing queued before it: ``_issue``/``_run``
        inline, without their general dispatch. The C fast path takes these steps in ``_kept_run.h``:
        change both alike (tests/collectives/test_kept_run.py)."""
        if plan is nothing:  # no elements: nothing to number, record or wait for (NCCL and MPI return at once too)
            return self._check_open()
        lock = self._run_lock
        lock.acquire()  # (not ``with``: half the cost; this path is counted in hundreds of ns)
        try:
            if self._closed or self._broken is not None:
                self._check_open()
            call = self._call
            call.name = key[0]
            call.seq = seq = next(self._collective_numbers)
            call.timeout = timeout = self.timeout if self._open_blocks else self._group_timeout  # (timeout: a property, 60 ns)
            call.deadline = (now := time.monotonic()) + timeout
            slot = self._trace_slots[seq & TRACE_MASK]  # the flight recorder, inline (~0.1 us)
            if (last := self._trace_slots[(seq - 1) & TRACE_MASK][0]) == key:  # one key object for a repeated call
                key = last  # (the ring would keep a new tuple per call: work for the garbage collector, _kept_run.h)
            slot[0], slot[1], slot[2] = key, seq, now
            try:
                plan(x, out, call)
            except BaseException as exc:
                self._failed(key[0], seq, exc)
            slot[ENDED] = time.monotonic()
        finally:
            lock.release()

    def _fail(self, name: str, seq: int, exc: CollectiveTimeoutError | TransportError) -> NoReturn:
        """Raise what a timeout or transport failure inside operation ``seq`` means for the
        caller, marking the communicator broken (call from an ``except`` block)."""
        if (stopped := self._stopped(name, seq, exc)) is not None:  # aborted, or revoked (recovery/mixin.py)
            raise stopped from exc
        # The root cause the first rank to fail recorded; leaving wakes the ranks waiting on us.
        error = explain(self.store, self.rank, self.size, name, seq, exc, min(1.0, self.timeout), lambda: self._closed,
                        diagnose_timeout=self.diagnoses_timeouts)
        if self._closed and (stopped := self._stopped(name, seq, exc)) is not None:  # aborted meanwhile
            raise stopped from exc
        self._broken = error
        abandon(self.transports)
        if error is exc:
            raise exc
        raise error from exc

    def _planned(self, key: tuple[Any, ...], nbytes: int, build: Callable[[str], Plan], x: Any, out: Any,
                 stage: Staging, result: Any, async_op: bool) -> Any:
        """Issue the plan of signature ``key`` (``build(algorithm)`` makes it once) on checked buffers."""
        return self._issue(key, stage.wrap_plan(self._planner.plan(key, nbytes, build), x, out, result), async_op)

    # -- collectives ----------------------------------------------------------------------

    def all_reduce(self, x: Any, op: ReduceOp | str = ReduceOp.SUM, *, out: Any = None,
                   algorithm: str | None = None, async_op: bool = False) -> Any:
        """Reduce ``x`` across all ranks; every rank ends with the same bits, in ``x`` itself
        or, given ``out`` (same size and dtype; like MPI_Allreduce's recvbuf), in ``out``
        with ``x`` left as it was.

        Returns the result (or a Work whose ``wait()`` returns it, with ``async_op=True``).
        """
        if not async_op and self._worker is None and (
                done := self._fast.all_reduce(self, x, op, out, algorithm)) is not None:
            return done
        if self._context.device and (done := device_path.run(self, "all_reduce", x, out, op, async_op)) is not None:
            return done
        stage = Staging(self._note_staged)
        xa = stage.flat(x, "x", writable=out is None)
        rop = check.reduction(op, xa)
        result = x if out is None else out
        arr = xa if out is None else check.same_shape_out(stage, out, xa, "all_reduce's result is the size of x")
        key = ("all_reduce", xa.dtype, xa.size, op if isinstance(op, (ReduceOp, str)) else rop, algorithm)
        build = partial(self._planner.all_reduce, dtype=xa.dtype, count=xa.size, op=rop)
        return self._planned(key, arr.nbytes, build, xa, arr, stage, result, async_op)

    def reduce_scatter(self, x: Any, out: Any = None, op: ReduceOp | str = ReduceOp.SUM, *,
                       algorithm: str | None = None, async_op: bool = False) -> Any:
        """Reduce ``x`` (size·k elements) across ranks; rank r receives block r (k
        elements) in ``out``. Returns ``out`` (allocated when None)."""
        if not async_op and self._worker is None and out is not None and self._fast.reduce_scatter(
                self, x, out, op, algorithm):
            return out
        if self._context.device and (done := device_path.run(self, "reduce_scatter", x, out, op, async_op)) is not None:
            return done
        stage = Staging(self._note_staged)
        xa = stage.flat(x, "x")
        k = check.per_rank(xa, "x", self.size)
        rop = check.reduction(op, xa)
        out, oa = check.output(stage, out, x, xa, k, f"x holds {xa.size} elements for {self.size} ranks")
        key = ("reduce_scatter", xa.dtype, xa.size, op if isinstance(op, (ReduceOp, str)) else rop, algorithm)
        build = partial(self._planner.reduce_scatter, dtype=xa.dtype, count=xa.size, op=rop)
        return self._planned(key, xa.nbytes, build, xa, oa, stage, out, async_op)

    def all_gather(self, x: Any, out: Any = None, *, algorithm: str | None = None, async_op: bool = False) -> Any:
        """Gather every rank's ``x`` (k elements) into ``out`` (size·k, in rank order) on
        every rank. Returns ``out`` (allocated when None)."""
        if not async_op and self._worker is None and out is not None and self._fast.all_gather(
                self, x, out, algorithm):
            return out
        if self._context.device and (done := device_path.run(self, "all_gather", x, out, None, async_op)) is not None:
            return done
        stage = Staging(self._note_staged)
        xa = stage.flat(x, "x")
        k = xa.size
        out, oa = check.output(stage, out, x, xa, k * self.size, f"world size {self.size} × {k} elements of x")
        return self._planned(("all_gather", xa.dtype, k, algorithm), oa.nbytes,
                             partial(self._planner.all_gather, dtype=xa.dtype, count=k), xa, oa, stage, out, async_op)

    def broadcast(self, x: Any, root: int = 0, *, out: Any = None, algorithm: str | None = None,
                  async_op: bool = False) -> Any:
        """Copy the root's ``x`` into every rank's ``x``, or, given ``out`` (the size and dtype
        of ``x`` on every rank; ncclBroadcast's recvbuff), into every rank's ``out``, reading
        ``x`` on the root only. Returns ``x`` or ``out``."""
        if not async_op and self._worker is None and self._fast.broadcast(self, x, root, out, algorithm):
            return x if out is None else out
        if self._context.device and (done := device_path.run(self, "broadcast", x, out, root, async_op)) is not None:
            return done
        root = check.rank_in(root, "root", self.size)
        stage = Staging(self._note_staged)
        arr = check.broadcast_buffer(stage, x, out, self.rank == root)
        build = partial(self._planner.broadcast, dtype=arr.dtype, count=arr.size, root=root)
        return self._planned(("broadcast", arr.dtype, arr.size, root, algorithm), arr.nbytes, build, arr, None, stage,
                             x if out is None else out, async_op)

    def reduce(self, x: Any, root: int = 0, op: ReduceOp | str = ReduceOp.SUM, *, out: Any = None,
               algorithm: str | None = None, async_op: bool = False) -> Any:
        """Reduce ``x`` across ranks into the root's ``x``, or, given ``out`` (MPI_Reduce's recvbuf, used
        on the root only), into the root's ``out`` with ``x`` left as it was. Other ranks' ``x`` is unchanged."""
        if not async_op and self._worker is None and (
                done := self._fast.reduce(self, x, root, op, out, algorithm)) is not None:
            return done
        root = check.rank_in(root, "root", self.size)
        stage = Staging(self._note_staged)
        arr = check.reduce_buffer(stage, x, out, self.rank == root)
        rop = check.reduction(op, arr)
        key = ("reduce", arr.dtype, arr.size, op if isinstance(op, (ReduceOp, str)) else rop, root, algorithm)
        build = partial(self._planner.reduce, dtype=arr.dtype, count=arr.size, op=rop, root=root)
        result = out if out is not None and self.rank == root else x
        return self._planned(key, arr.nbytes, build, arr, None, stage, result, async_op)

    def barrier(self, *, async_op: bool = False) -> Any:
        """Return once every rank has entered the barrier (a flag each in a shared window, else dissemination)."""
        if not async_op and self._worker is None:
            if (runner := self._kept_run) is not None:  # _run_kept's steps in C
                return runner(self, _BARRIER, self._barrier, _NO_DATA, None)
            return self._run_kept(_BARRIER, self._barrier, _NO_DATA, None)
        return self._issue(_BARRIER, partial(self._barrier, _NO_DATA, None), async_op)

    def alloc(self, shape: int | tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        """A zeroed array in shared memory registered with this communicator (ncclMemAlloc and
        window registration): collectives on it copy nothing in or out. Collective (same shape
        and dtype on every rank, in the same order); an ordinary array without shared windows."""
        windows = self._context.windows
        if windows is None:
            return np.zeros(shape, dtype=dtype)
        array: np.ndarray = self._issue(("alloc",), lambda call: windows.alloc_array(shape, np.dtype(dtype), call), False)
        return array

    def split(self, color: int | None, key: int | None = None) -> Communicator | None:
        """A new communicator of the ranks that pass the same ``color``, ranked by ``key`` (this rank's
        number here when None), then by rank here: ``MPI_Comm_split``, ``ncclCommSplit``. Collective.
        ``color=None`` or negative (``MPI_UNDEFINED``) joins none and gets None. The new communicator has
        its own transports and operation numbers (over mpi, ``MPI_Comm_split``); this one stays usable."""
        check.color_or_key("color", color)
        check.color_or_key("key", key)
        if self._splitter is None:
            raise UnsupportedError("split: this communicator has no store to meet in")
        return self._splitter(self, -1 if color is None or color < 0 else int(color),
                              self.rank if key is None else int(key))

    def _connect_barrier(self) -> None:
        """A barrier proving every channel works, numbered 0 (the user's first collective is #1)."""
        plan = self._planner.barrier(tag_bits=CONTROL_TAG_BIT)
        self._run(("connect barrier",), 0, lambda call: plan(np.empty(0, dtype=np.uint8), None, call))

    # -- point to point -------------------------------------------------------------------

    def send(self, x: Any, dst: int, *, tag: int = 0, async_op: bool = False) -> Any:
        """Send ``x`` to ``dst`` (matched in order by its ``recv`` of this tag), posted at once; async_op: a Work."""
        if self._broken is None and (seq := self._express.send(x, dst, tag)):  # in the ring already
            return sent_work(dst, seq) if async_op else None
        work = self._post_send(x, dst, tag, async_op, async_op)
        return self._p2p.track(work) if async_op else self._p2p.run(work)

    def recv(self, x: Any, src: int | None = None, *, tag: int = 0, async_op: bool = False) -> Any:
        """Receive into ``x`` (the message's size) from rank ``src``, or any rank's first of
        ``tag`` (None). Returns ``x``, or a Work returning it whose ``source`` is the sender."""
        if not async_op and src is not None and self._broken is None and self._express.recv(x, src, tag):
            return x
        work = self._post_recv(x, src, tag, async_op, async_op)
        return self._p2p.track(work) if async_op else self._p2p.run(work)

    def _post_send(self, x: Any, dst: int, tag: int, async_op: bool, tracked: bool, apart_from: Any = None) -> Any:
        dst, wire_tag = check.peer_and_tag(dst, "dst", tag, self.rank, self.size, async_op=async_op)
        self._check_open()
        arr = Staging(self._note_staged).flat(x, "x")
        aside = apart_from is not None and overlap(arr, apart_from)  # (the receive overwrites it)
        return self._p2p.post_send(arr, dst, wire_tag, next(self._p2p_numbers), self.timeout, tracked, aside)

    def _post_recv(self, x: Any, src: int | None, tag: int, async_op: bool, tracked: bool) -> Any:
        src, wire_tag = check.source_and_tag(src, tag, self.rank, self.size, async_op=async_op)
        self._check_open()
        stage = Staging(self._note_staged)
        arr, done = stage.flat(x, "x", writable=True, load=False), stage.wrap(lambda c: x)  # (flat first)
        return self._p2p.post_recv(arr, src, wire_tag, next(self._p2p_numbers), self.timeout, done, tracked)

    def sendrecv(self, x: Any, dst: int, out: Any, src: int | None, *, tag: int = 0) -> Any:
        """Send ``x`` to ``dst`` and receive into ``out`` from ``src`` (None: any rank) at once, as
        ``MPI_Sendrecv`` does: a ring shift or a swap with a peer never deadlocks, whatever the
        size, and both directions copy at the same time. ``x`` and ``out`` may be the same buffer
        (``MPI_Sendrecv_replace``). Returns ``out``."""
        moved = self._express.sendrecv(x, dst, out, src, tag) if self._broken is None else False
        if moved is True:
            return out
        if isinstance(moved, tuple):  # part moved by the lane: the engine finishes the rest
            sent, received = moved
            works = [] if received else [self._post_recv(out, src, tag, True, False)]
            if sent is not None:
                works.append(self._p2p.adopt_send(sent, dst, next(self._p2p_numbers), self.timeout))
            self._p2p.run(*works)
            return out
        # The receive first, so that a large message of the peer's finds it posted (it is then
        # copied once, transports/single_copy.py); both are driven on this thread.
        received = self._post_recv(out, src, tag, True, False)  # (async_op: either may be this rank)
        return self._p2p.run(self._post_send(x, dst, tag, True, False, apart_from=received.buffer), received)
