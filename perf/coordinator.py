"""``--np N``: the harness process starts the worlds itself and drives them.

Worlds (all alive for the whole run, one active at a time):

* ``collectives``: N processes of ``python -m perf.worker``, meeting through a
  ``TCPStoreServer`` hosted here;
* ``mpi`` (``--vs mpi``): ``mpiexec -n N python -m perf.peers.mpi``;
* ``gloo`` (``--vs gloo``): N processes of ``python -m perf.peers.gloo``
  (``init_method=tcp://127.0.0.1:<free port>``).

Each world is a :class:`collectives.spawn.Job` (the spawner ``collectives-run`` and
``run_world`` use too): its processes, its store where it has one, and no variable of a
launcher that started us in the processes' environment.

Every rank connects back to one loopback listening socket here and then waits, blocked
in a socket read, for commands (protocol in perf.worker). Worker output goes to our
stderr, never into the table on stdout.
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

from collectives.mpi import find_mpiexec
from collectives.spawn import Child, Job

from .bench import RankRow, RowSpec
from .report import RankInfo
from .worker import ENV_CONTROL, ENV_STORE_SECRET, ENV_TOKEN, ENV_WORLD, send_msg

START_TIMEOUT = 120.0  # seconds for a world's ranks to connect and say hello
ERROR_GRACE = 5.0  # after one rank fails, how long the others get to answer
KILL_GRACE = 3.0  # after SIGTERM, how long ranks get before SIGKILL
EXIT_WAIT = 10.0  # after "exit", how long ranks get to leave on their own

_NOT_INHERITED = ("COLLECTIVES_PERF_CORRUPT",)
"""Our test hook, read here and handed to ranks per row; never inherited by them. (The
launchers' variables are removed by collectives.spawn.Job.child_env.)"""


class WorldFailed(Exception):
    """A world stopped answering or reported an error; the message says which rank and why."""


def _free_port() -> int:
    """A TCP port free on loopback now (for gloo's tcp:// init)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Conn:
    """One rank's control connection: a socket and the bytes of a message not yet complete."""
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.closed = False

    def fileno(self) -> int:
        """The socket's descriptor (for selectors)."""
        return self.sock.fileno()

    def read_some(self) -> list[dict[str, Any]]:
        """Read what is there; return the complete messages (EOF sets ``closed``)."""
        try:
            data = self.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return []
        self.buf += data
        messages = []
        while b"\n" in self.buf:
            line, _, rest = bytes(self.buf).partition(b"\n")
            self.buf = bytearray(rest)
            messages.append(json.loads(line))
        return messages


class RemoteWorld:
    """One world of N ranks in child processes, started and stopped through its
    :class:`collectives.spawn.Job` (which hosts the world's store where it needs one)."""

    def __init__(self, name: str, nranks: int, job: Job) -> None:
        self.name = name
        self.nranks = nranks
        self.job = job
        self.conns: dict[int, _Conn] = {}
        self.hellos: dict[int, dict[str, Any]] = {}
        self.failed: str | None = None
        self.started_as: tuple[Any, ...] = (name,)  # how it was started: a kept world is reused only alike
        self.dtypes: set[str] = set()
        self.ops: set[str] = set()

    # -- state --------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether every rank said hello and none failed."""
        return self.failed is None and len(self.hellos) == self.nranks

    def info(self) -> dict[str, Any]:
        """What rank 0 said about its library in its hello."""
        return dict(self.hellos[0].get("info", {})) if 0 in self.hellos else {}

    def ranks(self) -> list[RankInfo]:
        """Rank, pid, host and device of every rank, for the table's device lines."""
        return [RankInfo(r, int(h["pid"]), str(h["host"]), int(h.get("device", r)))
                for r, h in sorted(self.hellos.items())]

    def supports(self, dtype: str, op: str | None) -> str | None:
        """Why this world cannot run ``dtype``/``op``, or None when it can."""
        if dtype not in self.dtypes:
            return f"{self.name} has no {dtype}"
        if op is not None and op not in self.ops and op != "none":
            return f"{self.name} has no {op}"
        return None

    @property
    def procs(self) -> list[Child]:
        """The world's processes (one ``mpiexec`` for the mpi world)."""
        return self.job.children

    def exit_status(self) -> str:
        """The processes' return codes, for messages (None: still running)."""
        return ", ".join(str(child.poll()) for child in self.procs)

    # -- commands -----------------------------------------------------------------------

    def request(self, msg: dict[str, Any], timeout: float | None = None) -> list[dict[str, Any]]:
        """Send ``msg`` to every rank and wait for every answer (rank order)."""
        if self.failed:
            raise WorldFailed(self.failed)
        for rank, conn in self.conns.items():
            try:
                send_msg(conn.sock, msg)
            except OSError as exc:
                self.fail(f"rank {rank}: control connection lost ({exc})")
                raise WorldFailed(self.failed) from None
        answers: dict[int, dict[str, Any]] = {}
        errors: list[str] = []
        deadline = None if timeout is None else time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        for rank, conn in self.conns.items():
            sel.register(conn.sock, selectors.EVENT_READ, rank)
        try:
            while len(answers) < len(self.conns):
                wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
                for key, _ in sel.select(wait):
                    rank = key.data
                    conn = self.conns[rank]
                    for answer in conn.read_some():
                        answers[rank] = answer
                        if "error" in answer:
                            errors.append(f"rank {rank}: {answer['error'].rstrip()}")
                            if deadline is None or deadline > time.monotonic() + ERROR_GRACE:
                                deadline = time.monotonic() + ERROR_GRACE
                    if conn.closed and rank not in answers:
                        answers[rank] = {"error": "exited"}
                        errors.append(f"rank {rank} exited ({self.exit_status()})")
                        sel.unregister(conn.sock)
                        deadline = min(deadline or float("inf"), time.monotonic() + ERROR_GRACE)
                if deadline is not None and time.monotonic() >= deadline and len(answers) < len(self.conns):
                    missing = sorted(set(self.conns) - set(answers))
                    errors.append(f"ranks {missing} did not answer")
                    break
        finally:
            sel.close()
        if errors:
            self.fail("; ".join(errors))
            raise WorldFailed(self.failed)
        return [answers[r] for r in sorted(answers)]

    def warmup(self, coll: str, dtype: str, op: str, root: int, minbytes: int, maxbytes: int, iters: int,
               unalign: int = 0) -> None:
        """Warm every rank up over the sizes of the sweep."""
        self.request({"cmd": "warmup", "coll": coll, "dtype": dtype, "op": op, "root": root,
                      "minbytes": minbytes, "maxbytes": maxbytes, "iters": iters, "unalign": unalign})

    def row(self, spec: RowSpec) -> list[RankRow]:
        """Run one row on every rank; each rank's times and error counts."""
        return [RankRow.from_msg(a) for a in self.request(spec.to_msg())]

    # -- life ---------------------------------------------------------------------------

    def fail(self, reason: str) -> None:
        """Mark the world failed (the first reason stays) and kill it."""
        if self.failed is None:
            self.failed = reason
        self.kill()

    def _close_conns(self) -> None:
        """Close every control connection (a rank then reads EOF and exits)."""
        for conn in self.conns.values():
            try:
                conn.sock.close()
            except OSError:
                pass

    def kill(self) -> None:
        """Stop the processes now: SIGTERM to each process group, SIGKILL after KILL_GRACE."""
        self._close_conns()
        self.job.stop(KILL_GRACE)

    def stop(self) -> None:
        """Ask the ranks to exit, then make sure they did."""
        if self.failed is None and self.conns:
            try:
                self.request({"cmd": "exit"}, timeout=30)
            except WorldFailed:
                pass
        self._close_conns()
        self.job.wait_all(EXIT_WAIT)
        self.kill()

    def close(self) -> None:
        """Kill what still runs and close the world's store."""
        self.kill()
        self.job.close(KILL_GRACE)


class Coordinator:
    """Owns the control listener, the store and the worlds."""

    def __init__(self, nranks: int, *, timeout: float | None = None) -> None:
        self.nranks = nranks
        self.timeout = timeout
        self.token = secrets.token_hex(16)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(256)
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.worlds: list[RemoteWorld] = []

    # -- spawning -----------------------------------------------------------------------

    def _env(self, job: Job, world: str) -> dict[str, str]:
        """A rank's environment: ours less any launcher's variables and our test hook,
        the repository on PYTHONPATH, and how to reach this coordinator."""
        env = {k: v for k, v in job.child_env().items() if k not in _NOT_INHERITED}
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env[ENV_CONTROL] = self.address
        env[ENV_TOKEN] = self.token
        env[ENV_WORLD] = world
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    @staticmethod
    def _popen(job: Job, cmd: Sequence[str], env: dict[str, str]) -> None:
        """Start one process of ``job``. Worker output goes to our stderr: stdout carries
        only the table (file descriptor 2 itself: sys.stderr may be a replacement
        without one)."""
        job.popen(cmd, env, stdout=2, stderr=2)

    def _kept(self, name: str, started_as: tuple[Any, ...]) -> RemoteWorld | None:
        """The world ``name`` this coordinator still runs from an earlier run (perf.kept),
        when it was started alike and is well; one that differs or failed is stopped."""
        for world in [w for w in self.worlds if w.name == name]:
            if world.started_as == started_as and world.ready and all(p.poll() is None for p in world.procs):
                return world
            world.stop()
            world.close()
            self.worlds.remove(world)
        return None

    def drop_failed(self) -> None:
        """Close and forget the worlds that failed (the others stay for the next run)."""
        for world in [w for w in self.worlds if not w.ready]:
            world.close()
            self.worlds.remove(world)

    def start_collectives(self, *, transport: str | None, algorithm: str | None, timeout: float | None,
                          name: str = "collectives") -> RemoteWorld:
        """Start our world: N ``perf.worker`` processes meeting in the job's store."""
        started_as = (name, transport, algorithm, timeout)
        kept = self._kept(name, started_as)
        if kept is not None:
            return kept
        job = Job()
        world = RemoteWorld(name, self.nranks, job)
        world.started_as = started_as
        self.worlds.append(world)
        env = self._env(job, name)
        env[ENV_STORE_SECRET] = job.secret
        for r in range(self.nranks):
            cmd = [sys.executable, "-m", "perf.worker", "--rank", str(r), "--size", str(self.nranks),
                   "--store", job.store_addr]
            if transport:
                cmd += ["--transport", transport]
            if algorithm:
                cmd += ["--algo", algorithm]
            if timeout:
                cmd += ["--timeout", str(timeout)]
            self._popen(job, cmd, env)
        return world

    def start_mpi(self, name: str = "mpi") -> RemoteWorld:
        """Start the MPI peer world: one ``mpiexec -n N`` (MPI's ranks meet through it)."""
        kept = self._kept(name, (name,))
        if kept is not None:
            return kept
        launcher = find_mpiexec() or "mpiexec"
        job = Job(store=False)
        world = RemoteWorld(name, self.nranks, job)
        self.worlds.append(world)
        cmd = [launcher, "-n", str(self.nranks), sys.executable, "-m", "perf.peers.mpi"]
        self._popen(job, cmd, self._env(job, name))
        return world

    def start_gloo(self, *, timeout: float | None = None, name: str = "gloo") -> RemoteWorld:
        """Start the gloo peer world: N processes meeting at torch's ``tcp://`` init."""
        kept = self._kept(name, (name, timeout))
        if kept is not None:
            return kept
        job = Job(store=False)
        world = RemoteWorld(name, self.nranks, job)
        world.started_as = (name, timeout)
        self.worlds.append(world)
        init = f"tcp://127.0.0.1:{_free_port()}"
        env = self._env(job, name)
        env.setdefault("OMP_NUM_THREADS", "1")
        for r in range(self.nranks):
            cmd = [sys.executable, "-m", "perf.peers.gloo", "--rank", str(r), "--size", str(self.nranks),
                   "--init-method", init]
            if timeout:
                cmd += ["--timeout", str(timeout)]
            self._popen(job, cmd, env)
        return world

    # -- meeting ------------------------------------------------------------------------

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Accept connections until every world has all its hellos, failed, or timed out."""
        by_name = {w.name: w for w in self.worlds}
        deadline = time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, None)
        try:
            while any(w.failed is None and not w.ready for w in self.worlds):
                now = time.monotonic()
                if now >= deadline:
                    for w in self.worlds:
                        if w.failed is None and not w.ready:
                            w.fail(f"only {len(w.hellos)} of {w.nranks} ranks started within {timeout:.0f} s")
                    break
                for w in self.worlds:
                    if w.failed is None and not w.ready and any(p.poll() not in (None, 0) for p in w.procs):
                        w.fail(f"a process exited before its world was ready (status {w.exit_status()})")
                for key, _ in sel.select(min(0.5, deadline - now)):
                    if key.data is None:
                        sock, _ = self.listener.accept()
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        conn = _Conn(sock)
                        sel.register(sock, selectors.EVENT_READ, conn)
                        continue
                    conn = key.data
                    for hello in conn.read_some():
                        sel.unregister(conn.sock)
                        self._accept_hello(conn, hello, by_name)
                        break
                    else:
                        if conn.closed:
                            sel.unregister(conn.sock)
                            conn.sock.close()
        finally:
            sel.close()

    def _accept_hello(self, conn: _Conn, hello: dict[str, Any], by_name: dict[str, RemoteWorld]) -> None:
        """Take a new connection's hello: file it under its world and rank, or refuse it."""
        world = by_name.get(str(hello.get("hello")))
        if hello.get("token") != self.token or world is None:
            conn.sock.close()
            return
        if "error" in hello:
            world.conns[int(hello.get("rank", -1))] = conn
            world.fail(f"rank {hello.get('rank')} could not start: {hello['error'].rstrip()}")
            return
        rank = int(hello["rank"])
        if int(hello.get("size", world.nranks)) != world.nranks:
            world.fail(f"rank {rank} reports world size {hello.get('size')}, expected {world.nranks}")
            return
        world.conns[rank] = conn
        world.hellos[rank] = hello
        world.dtypes = set(hello.get("dtypes", []))
        world.ops = set(hello.get("ops", []))

    def close(self, graceful: bool = True) -> None:
        """Stop every world: ask the ranks to exit (``graceful``), else kill them at once."""
        try:
            for w in self.worlds:
                if graceful:
                    w.stop()
                w.close()
        finally:
            self.listener.close()
