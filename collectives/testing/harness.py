"""Run a function on every rank of a small world and collect the results (tests, examples).

``run_world(fn, 4)`` calls ``fn(comm)`` on four ranks and returns their results in rank
order, the way gloo's ``base_test.h`` spawns ranks: threads over one
:class:`~collectives.store.HashStore` for the ``inproc`` transport, processes for ``shm`` and
``tcp``. Processes are forked (so closures and lambdas work) and meet through a
``TCPStoreServer`` that this process hosts for the job, guarded by a fresh random secret
(:class:`collectives.spawn.Job`, shared with ``collectives-run`` and the perf coordinator).

With ``netns=`` (:mod:`collectives.testing.netns`) each rank runs in the network
namespace of its host and binds that host's address, and the store listens inside the first
rank's namespace: hosts with addresses of their own on one machine.

A failure anywhere surfaces here as :class:`RankError` naming the rank; a rank that hangs is
bounded by ``timeout`` (processes are killed; threads cannot be, they are left behind as
daemons and named in the error).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import pickle
import queue
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import CollectivesError, InvalidArgumentError
from ..spawn import Child, Job
from ..store import HashStore, PrefixStore
from .netns import Host, inside, join

TERMINATE_GRACE = 2.0
"""Seconds a child has to exit after SIGTERM before it is sent SIGKILL."""
FAILURE_GRACE = 5.0
"""Seconds the other ranks get to finish after one rank failed, before they are abandoned
(threads) or killed (processes); the first failure is reported either way."""

_THREAD_TRANSPORTS = ("inproc",)
_PROCESS_TRANSPORTS = ("shm", "tcp", "auto")


class RankError(CollectivesError):
    """A rank of a :func:`run_world` job failed, hung or died.

    Attributes:
        rank: the rank reported (the first to fail; the lowest one still running on timeout).
        ranks: every rank this error is about (several when they timed out together).
        exception_type: qualified name of the exception the rank raised (``"ValueError"``,
            ``"collectives.errors.PeerLostError"``), or None when it hung or died.
        exception: that exception itself when it could be brought back (always for
            threads; for processes when it pickles), else None. Also the ``__cause__``.
        remote_traceback: the traceback text printed where the rank ran ("" if none).
        exitcode: the process exit status for a rank that died without reporting.
    """

    def __init__(
        self,
        message: str,
        *,
        rank: int,
        ranks: Sequence[int] | None = None,
        exception_type: str | None = None,
        exception: BaseException | None = None,
        remote_traceback: str = "",
        exitcode: int | None = None,
    ) -> None:
        super().__init__(message)
        self.rank = rank
        self.ranks = sorted(ranks) if ranks is not None else [rank]
        self.exception_type = exception_type
        self.exception = exception
        self.remote_traceback = remote_traceback
        self.exitcode = exitcode


class RemoteTraceback(Exception):
    """Carries a traceback printed in another process (shown as the ``__cause__`` chain)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n" + self.text


@dataclass
class _Outcome:
    """What one rank reported: a result, or an exception described in words."""

    rank: int
    ok: bool
    value: Any = None
    type_name: str = ""
    short_type: str = ""
    message: str = ""
    traceback_text: str = ""
    exception: BaseException | None = None
    died: bool = False
    """True for a process that exited without reporting; ``value`` is its exit code."""
    at: float = 0.0
    """``time.monotonic()`` when the rank failed (system-wide on Linux, so comparable
    across processes): the root cause is the earliest failure, not the first report, since
    a failing rank closes its communicator before it reports and its peers may report
    their PeerLostError sooner."""


def _describe(rank: int, exc: BaseException, at: float | None = None) -> _Outcome:
    """An exception as an outcome: its type, message and traceback in words, and when it happened."""
    cls = type(exc)
    qualified = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    return _Outcome(
        rank=rank,
        ok=False,
        type_name=qualified,
        short_type=cls.__name__,
        message=str(exc),
        traceback_text="".join(traceback.format_exception(exc)),
        exception=exc,
        at=time.monotonic() if at is None else at,
    )


def _rank_error(outcome: _Outcome) -> RankError:
    """The RankError for a rank that raised, its exception chained."""
    error = RankError(
        f"rank {outcome.rank} raised {outcome.short_type}: {outcome.message}",
        rank=outcome.rank,
        exception_type=outcome.type_name,
        exception=outcome.exception,
        remote_traceback=outcome.traceback_text,
    )
    error.__cause__ = outcome.exception
    return error


def _timeout_error(unfinished: Sequence[int], timeout: float, how: str) -> RankError:
    """The RankError for ranks that did not finish in time."""
    ranks = sorted(unfinished)
    listed = ", ".join(map(str, ranks))
    return RankError(
        f"rank(s) {listed} did not finish within {timeout:g} s ({how})",
        rank=ranks[0],
        ranks=ranks,
    )


def _init_comm(rank: int, size: int, store: Any, transport: str, timeout: float, init_kwargs: dict[str, Any]) -> Any:
    """``collectives.init`` for one rank of the job (its host name, where ``hosts=`` gives one)."""
    import collectives

    init = getattr(collectives, "init", None)
    if init is None:  # the public API is assembled in collectives/__init__.py
        raise CollectivesError("collectives.init is not available (collectives/__init__.py does not export it)")
    kwargs = {"transport": None if transport == "auto" else transport, "timeout": timeout, **init_kwargs}
    hosts = kwargs.pop("hosts", None)
    if hosts is not None:
        kwargs["hostname"] = hosts[rank]
    return init(rank=rank, size=size, store=store, **kwargs)


def _run_rank(rank: int, size: int, store: Any, transport: str, timeout: float,
              init_kwargs: dict[str, Any], fn: Callable[[Any], Any], failed_at: list[float]) -> Any:
    """init, fn(comm), close: the life of one rank (the comm is closed even if fn fails).
    The moment of a failure is appended to ``failed_at``, before anything is closed."""
    try:
        comm = _init_comm(rank, size, store, transport, timeout, init_kwargs)
    except BaseException:
        failed_at.append(time.monotonic())
        raise
    try:
        result = fn(comm)
    except BaseException:
        failed_at.append(time.monotonic())
        try:
            comm.close()
        except BaseException:  # the fn's failure is the story; a close error would hide it
            pass
        raise
    try:
        comm.close()
    except BaseException:
        failed_at.append(time.monotonic())
        raise
    return result


def run_world(
    fn: Callable[[Any], Any],
    world_size: int,
    transport: str = "inproc",
    *,
    timeout: float = 60.0,
    hosts: Sequence[str] | None = None,
    netns: Sequence[Host] | None = None,
    **init_kwargs: Any,
) -> list[Any]:
    """Run ``fn(comm)`` on ``world_size`` ranks and return the results in rank order.

    Args:
        fn: called once per rank with that rank's communicator (closed afterwards). With
            ``shm``/``tcp`` it runs in a forked process and its result must pickle.
        world_size: number of ranks (1 works).
        transport: ``"inproc"`` (threads of this process), ``"shm"`` or ``"tcp"`` (processes),
            or ``"auto"`` (processes; shared memory between ranks of one host, TCP across).
        timeout: seconds the whole job may take; also the communicator's timeout unless
            ``init_kwargs`` says otherwise.
        hosts: the host identity of each rank (``COLLECTIVES_HOSTNAME``), to run a job of
            several hosts on this one: ``hosts=["a", "a", "b", "b"]`` with ``"auto"`` puts
            ranks 0 and 1 on shared memory, and TCP between them and ranks 2 and 3.
        netns: the network namespaces those hosts are (:func:`collectives.testing.netns.two_hosts`),
            one per name in ``hosts``: each rank (a process) joins its host's namespace and
            binds its address, and the job's store listens on rank 0's host's address.
        **init_kwargs: passed on to ``collectives.init`` (``algorithm=...``).

    Returns:
        ``[fn(comm_0), fn(comm_1), ...]``.

    Raises:
        RankError: a rank raised (the first one to fail is reported, the original
            exception chained), died without reporting (its exit code), or the job ran past
            ``timeout`` (the ranks that did not finish are named).
        InvalidArgumentError: bad ``world_size``, ``transport`` or ``timeout``.
    """
    if not isinstance(world_size, int) or world_size < 1:
        raise InvalidArgumentError(f"world_size: must be a positive int, got {world_size!r}")
    if timeout <= 0:
        raise InvalidArgumentError(f"timeout: must be positive, got {timeout!r}")
    if hosts is not None:
        if len(hosts) != world_size or not all(isinstance(h, str) and h for h in hosts):
            raise InvalidArgumentError(f"hosts: expected {world_size} non-empty host names, got {hosts!r}")
        init_kwargs["hosts"] = list(hosts)
    places = _places(hosts, netns, transport)
    init_kwargs.setdefault("timeout", timeout)
    comm_timeout = init_kwargs.pop("timeout")
    if transport in _THREAD_TRANSPORTS:
        return _run_threads(fn, world_size, transport, timeout, comm_timeout, init_kwargs)
    if transport in _PROCESS_TRANSPORTS:
        return _run_processes(fn, world_size, transport, timeout, comm_timeout, init_kwargs, places)
    raise InvalidArgumentError(
        f"transport: {transport!r} is not one of {', '.join(_THREAD_TRANSPORTS + _PROCESS_TRANSPORTS)}"
    )


def _places(hosts: Sequence[str] | None, netns: Sequence[Host] | None, transport: str) -> list[Host] | None:
    """The namespace of each rank (None without ``netns``), checked against ``hosts``."""
    if netns is None:
        return None
    if hosts is None or transport not in _PROCESS_TRANSPORTS:
        raise InvalidArgumentError(f"netns: needs hosts= and a transport of processes "
                                   f"({', '.join(_PROCESS_TRANSPORTS)}), got hosts={hosts!r}, {transport!r}")
    by_name = {host.name: host for host in netns}
    unknown = sorted(set(hosts) - set(by_name))
    if unknown:
        raise InvalidArgumentError(f"hosts: {unknown[0]!r} is none of the namespaces {sorted(by_name)}")
    return [by_name[name] for name in hosts]


# -- threads ----------------------------------------------------------------------------


def _run_threads(fn: Callable[[Any], Any], size: int, transport: str, timeout: float,
                 comm_timeout: float, init_kwargs: dict[str, Any]) -> list[Any]:
    """Run the ranks as threads of this process over one HashStore (the ``inproc`` transport)."""
    deadline = time.monotonic() + timeout
    store = PrefixStore(f"run_world/{uuid.uuid4().hex}", HashStore(timeout=comm_timeout))
    reports: queue.Queue[_Outcome] = queue.Queue()

    def body(rank: int) -> None:
        failed_at: list[float] = []
        try:
            value = _run_rank(rank, size, store, transport, comm_timeout, init_kwargs, fn, failed_at)
        except BaseException as exc:  # reported to the caller, who re-raises it
            reports.put(_describe(rank, exc, failed_at[0] if failed_at else None))
        else:
            reports.put(_Outcome(rank=rank, ok=True, value=value))

    threads = [threading.Thread(target=body, args=(r,), name=f"run_world-rank{r}", daemon=True) for r in range(size)]
    for thread in threads:
        thread.start()
    outcomes: dict[int, _Outcome] = {}
    stop_at = deadline
    while len(outcomes) < size:
        try:
            outcome = reports.get(timeout=max(0.0, stop_at - time.monotonic()))
        except queue.Empty:
            break
        outcomes[outcome.rank] = outcome
        if not outcome.ok and stop_at == deadline:
            stop_at = min(deadline, time.monotonic() + FAILURE_GRACE)
    failures = [o for o in outcomes.values() if not o.ok]
    if failures:
        raise _rank_error(min(failures, key=lambda o: o.at))
    if len(outcomes) < size:
        unfinished = [r for r in range(size) if r not in outcomes]
        raise _timeout_error(unfinished, timeout, "threads cannot be killed; they are left running as daemons")
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [outcomes[r].value for r in range(size)]


# -- processes --------------------------------------------------------------------------


def _child_main(fn: Callable[[Any], Any], rank: int, size: int, transport: str, host: str, port: int,
                secret: str, comm_timeout: float, init_kwargs: dict[str, Any],
                conn: multiprocessing.connection.Connection, place: Host | None = None) -> None:
    """Body of a forked rank: into its host's namespace (``place``), connect to the parent's
    store, run, report through ``conn``."""
    failed_at: list[float] = []
    try:
        if place is not None:
            join(place)
            init_kwargs = {**init_kwargs, "socket_addr": place.address}
        from ..store.tcp_store import TCPStore

        store = TCPStore(host, port, secret, timeout=comm_timeout)
        try:
            value = _run_rank(rank, size, store, transport, comm_timeout, init_kwargs, fn, failed_at)
        finally:
            store.close()
        payload = pickle.dumps(("ok", value))
    except BaseException as exc:
        out = _describe(rank, exc, failed_at[0] if failed_at else None)
        try:
            pickled = pickle.dumps(exc)
            pickle.loads(pickled)  # must also come back, or the parent learns nothing
            exc_bytes: bytes | None = pickled
        except BaseException:
            exc_bytes = None
        payload = pickle.dumps(
            ("error", out.type_name, out.short_type, out.message, out.traceback_text, exc_bytes, out.at)
        )
    for stream in (sys.stdout, sys.stderr):  # what fn printed comes before the verdict
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    conn.send_bytes(payload)
    conn.close()


def _unpickle_result(rank: int, data: bytes) -> _Outcome:
    """What a forked rank reported through its pipe, as an outcome."""
    try:
        message = pickle.loads(data)
    except BaseException as exc:
        return _describe(rank, exc)
    if message[0] == "ok":
        return _Outcome(rank=rank, ok=True, value=message[1])
    _, type_name, short_type, text, tb_text, exc_bytes, at = message
    exception: BaseException | None = None
    if exc_bytes is not None:
        try:
            exception = pickle.loads(exc_bytes)
        except BaseException:
            exception = None
    if exception is not None:
        exception.__cause__ = RemoteTraceback(tb_text)
    else:
        exception = RemoteTraceback(tb_text)
    return _Outcome(rank=rank, ok=False, type_name=type_name, short_type=short_type, message=text,
                    traceback_text=tb_text, exception=exception, at=at)


def _exit_description(code: int | None) -> str:
    """How a process ended, in words (``exited with code 3``, ``was killed by SIGKILL``)."""
    if code is None:
        return "is still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name} (exit code {code})"
    return f"exited with code {code}"


def _run_processes(fn: Callable[[Any], Any], size: int, transport: str, timeout: float,
                   comm_timeout: float, init_kwargs: dict[str, Any], places: list[Host] | None) -> list[Any]:
    """Fork ``size`` ranks of a job (:class:`collectives.spawn.Job`: its store, its secret;
    with ``places``, the store in rank 0's namespace) and gather what each reports through
    its own pipe."""
    deadline = time.monotonic() + timeout
    readers: dict[multiprocessing.connection.Connection, int] = {}
    outcomes: dict[int, _Outcome] = {}
    if places is None:
        job = Job()
    else:
        with inside(places[0]):  # its socket and its serving thread stay there
            job = Job(host=places[0].address)
    with job:
        host, port = job.store.host, job.store.port
        try:
            for rank in range(size):
                # One pipe per child, created just before its fork and closed here right after,
                # so that no other process holds a write end: a child that dies gives EOF.
                reader, writer = multiprocessing.get_context("fork").Pipe(duplex=False)
                job.fork(_child_main, (fn, rank, size, transport, host, port, job.secret, comm_timeout, init_kwargs,
                                       writer, places[rank] if places else None), name=f"run_world-rank{rank}")
                writer.close()
                readers[reader] = rank
            outcomes = _collect(readers, job.children, deadline)
            if len(outcomes) == size and all(o.ok for o in outcomes.values()):
                job.wait_all(TERMINATE_GRACE)  # let them exit on their own
        finally:
            job.stop(TERMINATE_GRACE)
            for reader in readers:
                reader.close()
    failures = [o for o in outcomes.values() if not o.ok]
    if failures:
        # A process that died without a word (SIGKILL, segfault, os._exit) is the likely
        # cause of its peers' PeerLostError, though we only notice its death afterwards.
        first = min(failures, key=lambda o: (not o.died, o.at))
        raise _died(first) if first.died else _rank_error(first)
    unfinished = [r for r in range(size) if r not in outcomes]
    if unfinished:
        raise _timeout_error(unfinished, timeout, "their processes were killed")
    return [outcomes[r].value for r in range(size)]


def _died(outcome: _Outcome) -> RankError:
    """The RankError for a rank that exited without reporting."""
    return RankError(
        f"rank {outcome.rank} {outcome.message} without reporting a result",
        rank=outcome.rank,
        exitcode=outcome.value,
    )


def _collect(readers: dict[multiprocessing.connection.Connection, int], children: Sequence[Child],
             deadline: float) -> dict[int, _Outcome]:
    """Read each child's report as it comes, until all reported, the deadline passed, or
    FAILURE_GRACE after the first failure arrived."""
    outcomes: dict[int, _Outcome] = {}
    waiting = dict(readers)
    stop_at = deadline
    while waiting:
        left = stop_at - time.monotonic()
        if left <= 0:
            break
        for ready in multiprocessing.connection.wait(list(waiting), timeout=left):
            assert isinstance(ready, multiprocessing.connection.Connection)  # we wait on pipes only
            conn = ready
            rank = waiting.pop(conn)
            try:
                outcome = _unpickle_result(rank, conn.recv_bytes())
            except (EOFError, OSError):
                code = children[rank].wait(TERMINATE_GRACE)
                outcome = _Outcome(rank=rank, ok=False, value=code, message=_exit_description(code), died=True,
                                   at=time.monotonic())
            outcomes[rank] = outcome
            if not outcome.ok and stop_at == deadline:
                stop_at = min(deadline, time.monotonic() + FAILURE_GRACE)
    return outcomes
