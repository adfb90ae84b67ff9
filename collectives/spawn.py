"""One job of local child processes: a TCP store, a job secret, N children, and their end.

Three places start ranks on this host: the launcher (``collectives-run``,
:mod:`collectives.run`), the test harness (:func:`collectives.testing.run_world` with
processes) and the perf coordinator (``all_reduce_perf --np N``, :mod:`perf.coordinator`).
Each needs the same few things, written here once:

* a :class:`~collectives.store.tcp_store.TCPStoreServer` on loopback (an ephemeral port)
  for the ranks to meet through, guarded by a fresh random job secret;
* children started either as commands (:meth:`Job.popen`, each in its own session, so a
  terminal's Ctrl-C reaches it once, through us, and stopping it stops what it started)
  or as forks of this process (:meth:`Job.fork`, so closures run in the child);
* an environment without the variables of whatever launcher started *us*
  (:func:`collectives.environment.without_launcher`), plus our own for each rank
  (:meth:`Job.rank_env`);
* watching them (:meth:`Job.watch`: the first child to fail stops the others and its
  status is the job's), forwarding SIGINT/SIGTERM (:meth:`Job.forward_signals`), and
  stopping them: SIGTERM (and SIGCONT, so that a frozen child gets it), a grace period,
  then SIGKILL (:meth:`Job.stop`). Closing the job stops what still runs, closes the
  store, and removes the shared-memory segments its dead children could not unlink
  (:func:`collectives.transports.shm_names.sweep`);
* children that die with us: each is tied to its parent with ``PR_SET_PDEATHSIG``
  (:mod:`collectives.lifeline`), so a launcher killed outright takes its ranks with it.

What differs stays with the caller: how output is carried (the launcher's ``[rank N]``
prefixes), how results come back (run_world's pipes, the coordinator's control sockets).
"""

from __future__ import annotations

import abc
import multiprocessing
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import IO, Any

from .environment import without_launcher
from .lifeline import die_with_parent
from .transports.shm_names import sweep

STORE_HOST = "127.0.0.1"
"""Where the job's store listens: loopback, for ranks on this host."""
SECRET_BYTES = 32
"""Random bytes of a job secret (its hex text is twice as long)."""
KILL_GRACE = 5.0
"""Seconds children have to exit after SIGTERM before they get SIGKILL."""
POLL_INTERVAL = 0.05
"""Seconds between two looks at the children while watching them."""

__all__ = ["KILL_GRACE", "STORE_HOST", "Child", "Job", "exit_status"]


def exit_status(returncode: int) -> int:
    """A child's status as a shell reports it: killed by signal N gives 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


class Child(abc.ABC):
    """One child process of a :class:`Job`, however it was started.

    Return codes follow :class:`subprocess.Popen`: None while running, the exit code,
    or ``-N`` when signal N killed it. ``rank`` is its place in the job's start order.
    """

    def __init__(self, rank: int, pid: int) -> None:
        self.rank = rank
        self.pid = pid

    @abc.abstractmethod
    def poll(self) -> int | None:
        """The return code, or None while it runs."""

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> int | None:
        """Wait until it exits (at most ``timeout`` seconds); its return code, or None
        when it is still running."""

    @abc.abstractmethod
    def signal(self, signum: int) -> None:
        """Send ``signum`` if it still runs (a child gone in between is no error)."""

    @property
    def running(self) -> bool:
        """Whether it has not exited yet."""
        return self.poll() is None


class CommandChild(Child):
    """A command started with :class:`subprocess.Popen` in its own session; signals go to
    its whole process group (the rank and whatever it started, mpiexec's ranks too)."""

    def __init__(self, rank: int, process: subprocess.Popen[bytes]) -> None:
        super().__init__(rank, process.pid)
        self.process = process

    def poll(self) -> int | None:
        return self.process.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def signal(self, signum: int) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            try:
                self.process.send_signal(signum)
            except ProcessLookupError:
                pass


class ForkedChild(Child):
    """A fork of this process (:mod:`multiprocessing`, ``fork`` context); signals go to
    the process itself, which shares our session."""

    def __init__(self, rank: int, process: multiprocessing.process.BaseProcess) -> None:
        super().__init__(rank, int(process.pid or 0))
        self.process = process

    def poll(self) -> int | None:
        return self.process.exitcode

    def wait(self, timeout: float | None = None) -> int | None:
        self.process.join(timeout)
        return self.process.exitcode

    def signal(self, signum: int) -> None:
        if self.process.exitcode is not None:
            return
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass


class Job:
    """The store, the secret and the children of one local job; a context manager.

    Args:
        store: host a TCP store server (False for worlds that meet some other way, such
            as mpiexec's or gloo's; the job still makes a secret and owns the children).
        host: the address the store listens on.

    Attributes:
        secret: the job secret, hex text; the store refuses connections without it.
        store: the store server, or None.
        children: the children started so far, in the order they were started.
    """

    def __init__(self, *, store: bool = True, host: str = STORE_HOST) -> None:
        self.secret = secrets.token_hex(SECRET_BYTES)
        self.store: Any = None
        if store:
            from .store.tcp_store import TCPStoreServer

            self.store = TCPStoreServer(host=host, port=0, secret=self.secret)
        self.children: list[Child] = []
        self._kill_at: float | None = None  # when a forwarded signal's grace period ends

    # -- where the ranks meet -------------------------------------------------------------

    @property
    def store_addr(self) -> str:
        """``host:port`` of the job's store."""
        if self.store is None:
            raise RuntimeError("this job has no store (Job(store=False))")
        return f"{self.store.host}:{self.store.port}"

    def child_env(self, extra: Mapping[str, str] | None = None,
                  base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: our environment) without any launcher's variables, then
        ``extra``: the environment of a child of this job."""
        env = without_launcher(base)
        env.update(extra or {})
        return env

    def rank_env(self, rank: int, size: int, extra: Mapping[str, str] | None = None,
                 base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of rank ``rank`` of ``size``, as ``collectives-run`` sets it:
        COLLECTIVES_RANK, _WORLD_SIZE, _LOCAL_RANK, _LOCAL_WORLD_SIZE (one host), the
        store's address (COLLECTIVES_STORE_ADDR) and the job secret (COLLECTIVES_SECRET),
        so that ``collectives.init()`` needs no arguments; then ``extra``."""
        env = self.child_env(base=base)
        env.update(
            COLLECTIVES_RANK=str(rank),
            COLLECTIVES_WORLD_SIZE=str(size),
            COLLECTIVES_LOCAL_RANK=str(rank),
            COLLECTIVES_LOCAL_WORLD_SIZE=str(size),
            COLLECTIVES_STORE_ADDR=self.store_addr,
            COLLECTIVES_SECRET=self.secret,
        )
        env.update(extra or {})
        return env

    # -- starting ---------------------------------------------------------------------------

    def popen(self, command: Sequence[str], env: Mapping[str, str], *,
              stdout: int | IO[Any] | None = None, stderr: int | IO[Any] | None = None) -> CommandChild:
        """Start ``command`` with exactly ``env``, stdin from /dev/null, in a session of its
        own; ``stdout``/``stderr`` as for :class:`subprocess.Popen`."""
        parent = os.getpid()
        process = subprocess.Popen(list(command), env=dict(env), stdin=subprocess.DEVNULL, stdout=stdout,
                                   stderr=stderr, start_new_session=True,
                                   preexec_fn=lambda: die_with_parent(parent))  # noqa: PLW1509
        child = CommandChild(len(self.children), process)
        self.children.append(child)
        return child

    def fork(self, target: Callable[..., Any], args: Sequence[Any], *, name: str) -> ForkedChild:
        """Run ``target(*args)`` in a forked child (a daemon: it dies with us, even killed)."""
        process = multiprocessing.get_context("fork").Process(
            target=_tied, args=(os.getpid(), target, tuple(args)), name=name, daemon=True)
        process.start()
        child = ForkedChild(len(self.children), process)
        self.children.append(child)
        return child

    # -- watching and stopping --------------------------------------------------------------

    def signal_all(self, signum: int) -> None:
        """Send ``signum`` to every child still running."""
        for child in self.children:
            child.signal(signum)

    def wait_all(self, timeout: float | None = None) -> bool:
        """Wait until every child exited, at most ``timeout`` seconds; whether they all did."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for child in self.children:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if child.wait(left) is None:
                return False
        return True

    def stop(self, grace: float = KILL_GRACE) -> None:
        """SIGTERM every live child (then SIGCONT, so a stopped one receives it), SIGKILL
        those still running after ``grace`` seconds, and reap them all."""
        live = [child for child in self.children if child.running]
        if not live:
            return
        for child in live:
            child.signal(signal.SIGTERM)
            child.signal(signal.SIGCONT)
        deadline = time.monotonic() + grace
        while any(child.running for child in live) and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL)
        for child in live:
            child.signal(signal.SIGKILL)
        for child in live:
            child.wait()

    def watch(self, on_failure: Callable[[Child, list[Child]], None] | None = None,
              grace: float = KILL_GRACE, *, keep_going: bool = False) -> int:
        """Wait for every child; when one fails, stop the others and return its status.

        Returns 0 when every child exited with 0, else the first failure's status as a
        shell reports it (:func:`exit_status`). ``on_failure(child, still_running)`` is
        called before the others are stopped (to say so). With ``keep_going`` the others
        are not stopped (survivors that recover without the failed rank go on; every
        failure is said) and the first failure's status is returned once all have ended.
        Once a signal forwarded by :meth:`forward_signals` has had its grace period, the
        children still running (frozen ones too) get SIGKILL.
        """
        first: int | None = None
        said: set[int] = set()
        while True:
            if self._kill_at is not None and time.monotonic() >= self._kill_at:
                self.signal_all(signal.SIGKILL)
                self._kill_at = None
            running = False
            for child in self.children:
                code = child.poll()
                if code is None:
                    running = True
                elif code != 0 and child.rank not in said:
                    said.add(child.rank)
                    first = code if first is None else first
                    if on_failure is not None:
                        on_failure(child, [c for c in self.children if c.running])
                    if not keep_going:
                        self.stop(grace)
                        return exit_status(code)
            if not running:
                return 0 if first is None else exit_status(first)
            time.sleep(POLL_INTERVAL)

    @contextmanager
    def forward_signals(self, signums: Sequence[int] = (signal.SIGINT, signal.SIGTERM),
                        grace: float = KILL_GRACE) -> Iterator[list[int]]:
        """While inside, SIGINT and SIGTERM sent to us go to every child, followed by
        SIGCONT so that a stopped child receives it too; a second one sends SIGKILL, and
        :meth:`watch` sends SIGKILL to whatever still runs ``grace`` seconds after the
        first. Yields the list of signals received, for the exit status. Outside the main
        thread, where handlers cannot be set, it forwards nothing."""
        received: list[int] = []

        def forward(signum: int, frame: FrameType | None) -> None:
            received.append(signum)
            if len(received) > 1:
                self.signal_all(signal.SIGKILL)
                return
            self._kill_at = time.monotonic() + grace
            self.signal_all(signum)
            self.signal_all(signal.SIGCONT)

        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in signums:
                previous[signum] = signal.signal(signum, forward)
        try:
            yield received
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def close(self, grace: float = KILL_GRACE) -> None:
        """Stop what still runs, close the store, and sweep the shared-memory segments of
        dead processes (a child stopped while it set up shared memory leaves its own)."""
        try:
            self.stop(grace)
        finally:
            if self.store is not None:
                self.store.close()
            sweep()

    def __enter__(self) -> Job:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _tied(parent: int, target: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """A forked child's body: tie its life to ``parent``'s, then run ``target(*args)``."""
    die_with_parent(parent)
    return target(*args)
