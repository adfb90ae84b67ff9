"""Point-to-point: sends and receives posted when they are called, finished as their
messages move.

A send or receive goes on its channel's intake at once (``Channel.post_send`` /
``post_recv``: any thread may post), so an ``irecv`` issued before an ``isend`` on both
ranks completes, and messages of one tag between a pair match in the order they were
posted. What drives the channels is whoever holds the communicator's lock: a collective
running (its progress moves these messages too), a synchronous send or receive waiting,
or else one daemon thread of this engine, which finishes the :class:`P2PWork` of each
request as it completes, and fails it once the communicator's timeout has passed.

A receive from any source waits here until some channel ``probe``s a message of its tag
(or this rank sent itself one), then is posted there; receives of that tag posted after it
wait behind it, so matching stays in posting order. Messages to this rank itself are
copied when sent and handed over here.

A collective on the shared-window engine running on another thread does not move these
messages: they go once it ends (the torch backend keeps its point-to-point on a
communicator of its own).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np

from ..errors import CollectiveTimeoutError, MessageMismatchError, PeerLostError, TransportError
from ..transports.base import Request
from ..work import Work
from .call import Call
from .executor import Executor

SLICE = 1e-3  # first sleep slice of the engine's thread, and longest it waits for the lock
IDLE_SLICE = 4e-3
"""Longest slice a waiter sleeps on the transports while nothing moves (the slice doubles
from its first value up to this): a message wakes the sleep at once, so this bounds only
how long another thread waits for the lock the engine's thread holds while it sleeps, and
how late a receive from any source sees a message this rank sent itself from another
thread. A fixed 1 ms slice cost 8-14 % of a core while a peer was late."""
IDLE_EXIT = 1.0  # seconds the thread lingers with nothing to do before it ends
CHECK_PEERS_EVERY = 0.05  # seconds between asking the transports whether awaited peers are gone

Fail = Callable[[str, int, "CollectiveTimeoutError | TransportError"], NoReturn]
"""The communicator's translation of a failure of operation (name, seq): raises the error
its caller sees, and marks the communicator broken."""


class P2PWork(Work):
    """A send or receive. ``source``: the rank a receive's message came from."""

    def __init__(self, name: str, seq: int, peer: int | None, deadline: float, timeout: float,
                 result: Callable[[Any], Any]) -> None:
        super().__init__(name, seq)
        self.source = peer
        self.requests: list[Request] = []
        self.deadline = deadline
        self.timeout = timeout
        self.result_of = result  # called once the bytes are in (device buffers copied back)
        self.tracked = False  # finished by the engine (async), else by ``complete`` (sync)
        self.buffer: np.ndarray | None = None  # a receive's, flat


def sent_work(dst: int, seq: int) -> P2PWork:
    """The finished Work of an asynchronous send whose bytes are in the peer's ring already
    (the express lane, engines/express.py): the buffer may be reused at once."""
    work = P2PWork(f"send to rank {dst}", seq, dst, 0.0, 0.0, lambda _: None)
    work._finish()
    return work


class _Recv:
    """A receive not yet on a channel (from any source, or behind one)."""

    __slots__ = ("work", "buffer", "tag")

    def __init__(self, work: P2PWork, buffer: np.ndarray, tag: int) -> None:
        self.work = work
        self.buffer = buffer
        self.tag = tag


class PointToPoint:
    """Sends and receives of one communicator over its channels (see the module doc)."""

    def __init__(self, rank: int, executor: Executor, lock: Any, fail: Fail, closed: Callable[[], bool]) -> None:
        self.rank = rank
        self.channels = executor.channels
        self.progress = executor.engine
        self.lock = lock  # the communicator's: held by whoever drives the channels
        self._fail = fail
        self.closed = closed  # whether the communicator was closed (fails what is left)
        self._cv = threading.Condition()
        self._works: list[P2PWork] = []  # unfinished, in posting order
        self._held: dict[int, deque[_Recv]] = {}  # by tag
        self._loopback: dict[int, deque[np.ndarray]] = {}  # messages to this rank, by tag
        self._thread: threading.Thread | None = None
        self._stopping = False  # the communicator closes: the thread fails what is left and ends
        self._aside: np.ndarray | None = None  # kept for sendrecv in place (``_set_aside``)

    @property
    def held(self) -> dict[int, deque[_Recv]]:
        """The receives waiting behind one from any source, by wire tag (the express lane,
        engines/express.py, leaves a tag alone while any are held)."""
        return self._held

    # -- posting (any thread) -------------------------------------------------------------

    def _set_aside(self, x: np.ndarray) -> tuple[np.ndarray, Callable[[Any], None]]:
        """A copy of ``x`` in a buffer kept between calls, and what gives the buffer back once
        the send is done: a fresh buffer of some MiB would cost its page faults on every call
        (two threads at once: the second takes a fresh one)."""
        flat = x.reshape(-1).view(np.uint8)
        kept, self._aside = self._aside, None
        if kept is None or kept.nbytes < flat.nbytes:
            kept = np.empty(flat.nbytes, np.uint8)
        np.copyto(kept[: flat.nbytes], flat)

        def give_back(_: Any) -> None:
            self._aside = kept
        return kept[: flat.nbytes], give_back

    def post_send(self, x: np.ndarray, dst: int, tag: int, seq: int, timeout: float, tracked: bool = False,
                  aside: bool = False) -> P2PWork:
        """Post ``x`` to ``dst``: the Work, for ``track`` (``tracked``) or ``run``. A large
        message to a peer on this host may be copied by the receiver straight out of ``x``
        (transports/single_copy.py). ``aside``: send a copy of ``x`` instead (a receive is about
        to overwrite it: ``sendrecv`` in place)."""
        done: Callable[[Any], None] = lambda _: None  # noqa: E731
        if aside:
            x, done = self._set_aside(x)
        work = P2PWork(f"send to rank {dst}", seq, dst, time.monotonic() + timeout, timeout, done)
        work.tracked = tracked
        if dst == self.rank:
            with self._cv:
                self._loopback.setdefault(tag, deque()).append(x.copy())
                self._cv.notify_all()
            self._finish(work)
            self._post_held(tag, driving=False)
            return work
        try:
            work.requests.append(self.channels[dst].post_send(x, tag, single_copy=True))
        except TransportError as exc:  # the channel failed earlier
            self._fail(work.name, seq, exc)
        return work

    def adopt_send(self, request: Request, dst: int, seq: int, timeout: float) -> P2PWork:
        """The Work of a send to ``dst`` the express lane began (its RTS written, ``request`` on
        the channel awaiting the answer: engines/express.py), for ``run``."""
        work = P2PWork(f"send to rank {dst}", seq, dst, time.monotonic() + timeout, timeout, lambda _: None)
        work.requests.append(request)
        return work

    def post_recv(self, x: np.ndarray, src: int | None, tag: int, seq: int, timeout: float,
                  result: Callable[[Any], Any], tracked: bool = False) -> P2PWork:
        """Post a receive into ``x`` from ``src`` (None: any rank): the Work, for ``track``
        (``tracked``) or ``run``."""
        who = "any rank" if src is None else f"rank {src}"
        work = P2PWork(f"recv from {who}", seq, src, time.monotonic() + timeout, timeout, result)
        work.tracked = tracked
        work.buffer = x
        with self._cv:
            held = self._held.get(tag)
            if src is None or src == self.rank or held:
                self._held.setdefault(tag, deque()).append(_Recv(work, x, tag))
            else:
                try:
                    work.requests.append(self.channels[src].post_recv(x, tag))
                except TransportError as exc:  # the channel failed earlier
                    self._fail(work.name, seq, exc)
        if src is None or src == self.rank:
            self._post_held(tag, driving=False)
        return work

    def track(self, work: P2PWork) -> P2PWork:
        """Keep ``work`` until it finishes, moving it at once where the lock is free."""
        work.tracked = True
        if work.is_completed():
            return work
        with self._cv:
            self._works.append(work)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"collectives-p2p-rank{self.rank}",
                                                daemon=True)
                self._thread.start()
            self._cv.notify()
        if self.lock.acquire(blocking=False):
            try:
                self._step()
            finally:
                self.lock.release()
        return work

    # -- matching -------------------------------------------------------------------------

    def _post_held(self, tag: int, *, driving: bool) -> bool:
        """Post the held receives of ``tag`` that can go now, in order; return whether any
        did. Receives from any source probe channels: only while ``driving`` them."""
        moved = False
        with self._cv:
            queue = self._held.get(tag)
            while queue:
                held = queue[0]
                work = held.work
                if work.is_completed():  # timed out while held
                    queue.popleft()
                    continue
                if work.source is None or work.source == self.rank:
                    mine = self._loopback.get(tag)
                    if mine:
                        queue.popleft()
                        self._take_loopback(held, mine.popleft(), tag)
                        moved = True
                        continue
                    if work.source == self.rank or not driving:
                        break
                    found = next((p for p, c in self.channels.items() if c.error is None and c.probe(tag)), None)
                    if found is None:
                        break
                    work.source = found
                queue.popleft()
                moved = True
                try:
                    work.requests.append(self.channels[work.source].post_recv(held.buffer, tag))
                except TransportError as exc:  # the channel failed earlier
                    work._finish(error=self._failed(work, exc) if work.tracked else exc)
            if queue is not None and not queue:
                del self._held[tag]
            if not self._loopback.get(tag, True):
                del self._loopback[tag]
        return moved

    def _take_loopback(self, held: _Recv, message: np.ndarray, tag: int) -> None:
        work = held.work
        work.source = self.rank
        out = held.buffer.reshape(-1).view(np.uint8)
        if message.nbytes != out.nbytes:
            error = MessageMismatchError(
                f"message tag {tag:#x} from rank {self.rank} (this rank) has {message.nbytes} bytes but the "
                f"receive posted for it has {out.nbytes} (the sizes differ)", peer=self.rank)
            work._finish(error=self._failed(work, error) if work.tracked else error)
            return
        out[...] = message.reshape(-1).view(np.uint8)
        self._finish(work)

    # -- driving (with the lock) ----------------------------------------------------------

    def _step(self) -> bool:
        """Progress every channel once, post what held receives can, finish what is done."""
        try:
            moved = self.progress.progress()
        except TransportError:
            moved = True  # the channel failed: its requests carry the error, which _reap hands on
        for tag in list(self._held):
            moved = self._post_held(tag, driving=True) or moved
        self._reap()
        return moved

    def _reap(self) -> None:
        """Finish every Work whose requests are done, failed, or past their deadline."""
        with self._cv:
            works = self._works
            if not works:
                return
            now = time.monotonic()
            closed = self.closed()
            still: list[P2PWork] = []
            ended: list[tuple[P2PWork, BaseException | None]] = []
            for work in works:
                if work.is_completed():
                    continue
                error = next((r.error for r in work.requests if r.error is not None), None)
                if error is not None:
                    ended.append((work, error))
                elif work.requests and all(r.done for r in work.requests):
                    ended.append((work, None))
                elif closed:
                    ended.append((work, TransportError("the communicator was closed")))
                elif now >= work.deadline:
                    peers = [work.source] if work.source is not None else sorted(self.channels)
                    ended.append((work, CollectiveTimeoutError(work.name, work.seq, peers, work.timeout)))
                else:
                    still.append(work)
            self._works = still
        for work, error in ended:
            if error is None:
                self._finish(work)
            else:
                work._finish(error=self._failed(work, error))

    def _failed(self, work: P2PWork, error: BaseException) -> BaseException:
        """What an asynchronous Work fails with: the communicator's translation of ``error``."""
        if not isinstance(error, (CollectiveTimeoutError, TransportError)):
            error = TransportError(str(error))
        try:
            self._fail(work.name, work.seq, error)
        except BaseException as translated:  # noqa: BLE001 - what _fail raises is the answer
            return translated

    def _finish(self, work: P2PWork) -> None:
        try:
            result = work.result_of(None)
        except BaseException as exc:  # noqa: BLE001 - a failed copy back is the Work's error
            work._finish(error=exc)
        else:
            work._finish(result)

    def close(self) -> None:
        """End the engine's thread now (the communicator is closing or aborting; ``closed()``
        already says so, so whatever is unfinished fails)."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)  # it takes the lock for at most SLICE, then sees the flag

    def _loop(self) -> None:
        """The engine's thread: drive the channels while Works are unfinished."""
        checked = time.monotonic()
        nap = SLICE
        while True:
            with self._cv:
                idle = not self._stopping and not self._works
                if idle and not self._cv.wait_for(lambda: bool(self._works) or self._stopping, IDLE_EXIT):
                    self._thread = None
                    return
                if self._stopping:
                    self._thread = None
            if self._stopping:
                self._reap()  # fails what is left: the communicator is closed
                return
            if not self.lock.acquire(timeout=SLICE):
                self._reap()  # a collective holds the lock and drives the channels meanwhile
                nap = SLICE
                continue
            try:
                nap = self._step_or_sleep(nap)
                if time.monotonic() - checked > CHECK_PEERS_EVERY:
                    checked = time.monotonic()
                    self._check_peers()
            finally:
                self.lock.release()
            time.sleep(0)  # let a thread waiting for the lock take it

    def _check_peers(self) -> None:
        """Fail the Works that wait on a rank whose process is gone (a dead process closes
        nothing: only the transport's ``check_peers`` can tell)."""
        with self._cv:
            peers = {w.source for w in self._works if w.source is not None and w.source != self.rank}
        for transport in self.progress.transports:
            mine = {p for p in peers if p in transport.channels}
            if not mine:
                continue
            try:
                transport.check_peers(mine)
            except PeerLostError as exc:
                self._lost({exc.peer} if exc.peer is not None else mine, exc)
            except TransportError as exc:
                self._lost(mine, exc)

    def _lost(self, peers: set[int], exc: TransportError) -> None:
        with self._cv:
            lost = [w for w in self._works if w.source in peers]
            self._works = [w for w in self._works if w.source not in peers]
        for work in lost:
            work._finish(error=self._failed(work, exc))

    def _step_or_sleep(self, nap: float, deadline: float = float("inf"), first: float = SLICE) -> float:
        """Step once; if nothing moved, sleep up to ``nap`` (not past ``deadline``) on the
        transports' OS primitives (a futex, a socket selector). Returns the next nap:
        ``first`` after movement, else twice this one up to IDLE_SLICE."""
        transports = self.progress.transports
        # Wake-up tokens are taken before the look, so that a wake-up arriving between the
        # look and the sleep is not lost.
        tokens = [t.activity_token() for t in transports]
        if self._step():
            return first
        sleep = max(0.0, min(nap, deadline - time.monotonic()))
        if not transports:
            with self._cv:  # a world of one: only a message to itself can come (it notifies)
                self._cv.wait(sleep)
        for transport, token in zip(transports, tokens):
            transport.wait_for_activity(sleep / len(transports), token)
        return min(2 * nap, IDLE_SLICE)

    # -- synchronous calls ----------------------------------------------------------------

    def run(self, *works: P2PWork) -> Any:
        """Wait for synchronous ``works`` on this thread, driving the channels under the lock
        (all of them move at once: a send and a receive posted together never wait on each
        other); return the last one's result or raise the communicator's error."""
        result = None
        with self.lock:
            for work in works:
                call = Call(work.timeout)
                call.name, call.seq, call.deadline = work.name, work.seq, work.deadline
                try:
                    result = self.complete(work, call)
                except (CollectiveTimeoutError, TransportError) as exc:
                    self._fail(work.name, work.seq, exc)
        return result

    def complete(self, work: P2PWork, call: Call) -> Any:
        """Drive the channels until ``work`` (not tracked) is done, the caller holding the
        lock; return its result, or raise what failed it, as ``call`` names it."""
        nap = SLICE / 4
        while not work.requests and not work.is_completed():  # held: from any source, or behind one
            if time.monotonic() >= call.deadline:
                raise call.timed_out(sorted(self.channels) if work.source is None else [work.source])
            nap = self._step_or_sleep(nap, call.deadline, first=SLICE / 4)
        if not work.is_completed():
            self.progress.wait(work.requests, call.deadline, call.timed_out)
            self._finish(work)
        return work.wait()
