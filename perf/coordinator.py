"""``--np N``: the harness process starts the worlds itself and drives them.

Worlds (all alive for the whole run, one active at a time):

* ``collectives``: N processes of ``python -m perf.worker``, meeting through a
  ``TCPStoreServer`` hosted here;
* ``mpi`` (``--vs mpi``): ``mpiexec -n N python -m perf.peers.mpi``;
* ``gloo`` (``--vs gloo``): N processes of ``python -m perf.peers.gloo``
  (``init_method=tcp://127.0.0.1:<free port>``).

Every rank connects back to one loopback listening socket here and then waits, blocked
in a socket read, for commands (protocol in perf.worker). Worker output goes to our
stderr, never into the table on stdout.
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from collectives.mpi import find_mpiexec

from .bench import RankRow, RowSpec
from .report import RankInfo
from .worker import ENV_CONTROL, ENV_STORE_SECRET, ENV_TOKEN, ENV_WORLD, send_msg

START_TIMEOUT = 120.0  # seconds for a world's ranks to connect and say hello
ERROR_GRACE = 5.0  # after one rank fails, how long the others get to answer
KILL_GRACE = 3.0

_LAUNCHER_VARS = ("COLLECTIVES_RANK", "COLLECTIVES_WORLD_SIZE", "COLLECTIVES_LOCAL_RANK",
                  "COLLECTIVES_LOCAL_WORLD_SIZE", "COLLECTIVES_STORE_ADDR", "RANK", "WORLD_SIZE", "LOCAL_RANK",
                  "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "PMI_RANK", "PMI_SIZE", "PMI_FD", "PMI_PORT",
                  "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "COLLECTIVES_PERF_CORRUPT")


class WorldFailed(Exception):
    """A world stopped answering or reported an error; the message says which rank and why."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.closed = False

    def fileno(self) -> int:
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
    """One world of N ranks in child processes."""

    def __init__(self, name: str, nranks: int) -> None:
        self.name = name
        self.nranks = nranks
        self.procs: list[subprocess.Popen[bytes]] = []
        self.conns: dict[int, _Conn] = {}
        self.hellos: dict[int, dict[str, Any]] = {}
        self.failed: str | None = None
        self.dtypes: set[str] = set()
        self.ops: set[str] = set()

    # -- state --------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.failed is None and len(self.hellos) == self.nranks

    def info(self) -> dict[str, Any]:
        return dict(self.hellos[0].get("info", {})) if 0 in self.hellos else {}

    def ranks(self) -> list[RankInfo]:
        return [RankInfo(r, int(h["pid"]), str(h["host"]), int(h.get("device", r)))
                for r, h in sorted(self.hellos.items())]

    def supports(self, dtype: str, op: str | None) -> str | None:
        if dtype not in self.dtypes:
            return f"{self.name} has no {dtype}"
        if op is not None and op not in self.ops and op != "none":
            return f"{self.name} has no {op}"
        return None

    def exit_status(self) -> str:
        codes = [p.poll() for p in self.procs]
        return ", ".join(str(c) for c in codes)

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
        self.request({"cmd": "warmup", "coll": coll, "dtype": dtype, "op": op, "root": root,
                      "minbytes": minbytes, "maxbytes": maxbytes, "iters": iters, "unalign": unalign})

    def row(self, spec: RowSpec) -> list[RankRow]:
        return [RankRow.from_msg(a) for a in self.request(spec.to_msg())]

    # -- life ---------------------------------------------------------------------------

    def fail(self, reason: str) -> None:
        if self.failed is None:
            self.failed = reason
        self.kill()

    def kill(self) -> None:
        for conn in self.conns.values():
            try:
                conn.sock.close()
            except OSError:
                pass
        for p in self.procs:
            if p.poll() is None:
                _signal_group(p, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE
        for p in self.procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(p, signal.SIGKILL)
                p.wait()

    def stop(self) -> None:
        """Ask the ranks to exit, then make sure they did."""
        if self.failed is None and self.conns:
            try:
                self.request({"cmd": "exit"}, timeout=30)
            except WorldFailed:
                pass
        for conn in self.conns.values():
            try:
                conn.sock.close()
            except OSError:
                pass
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(p, signal.SIGTERM)
        self.kill()


def _signal_group(p: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the child's process group (mpiexec's ranks with it)."""
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            p.send_signal(sig)
        except ProcessLookupError:
            pass


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
        self._store: Any = None
        self._pending: list[_Conn] = []

    # -- spawning -----------------------------------------------------------------------

    def _env(self, world: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARS}
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env[ENV_CONTROL] = self.address
        env[ENV_TOKEN] = self.token
        env[ENV_WORLD] = world
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _popen(self, cmd: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        # Worker output goes to our stderr: stdout carries only the table.
        # (file descriptor 2 itself: sys.stderr may be a replacement without one)
        return subprocess.Popen(list(cmd), env=env, stdin=subprocess.DEVNULL, stdout=2, stderr=2,
                                start_new_session=True)

    def start_collectives(self, *, transport: str | None, algorithm: str | None, timeout: float | None,
                          name: str = "collectives") -> RemoteWorld:
        from collectives.store.tcp_store import TCPStoreServer

        secret = secrets.token_hex(16)
        self._store = TCPStoreServer(host="127.0.0.1", port=0, secret=secret)
        env = self._env(name)
        env[ENV_STORE_SECRET] = secret
        world = RemoteWorld(name, self.nranks)
        for r in range(self.nranks):
            cmd = [sys.executable, "-m", "perf.worker", "--rank", str(r), "--size", str(self.nranks),
                   "--store", f"127.0.0.1:{self._store.port}"]
            if transport:
                cmd += ["--transport", transport]
            if algorithm:
                cmd += ["--algo", algorithm]
            if timeout:
                cmd += ["--timeout", str(timeout)]
            world.procs.append(self._popen(cmd, env))
        self.worlds.append(world)
        return world

    def start_mpi(self, name: str = "mpi") -> RemoteWorld:
        launcher = find_mpiexec() or "mpiexec"
        world = RemoteWorld(name, self.nranks)
        cmd = [launcher, "-n", str(self.nranks), sys.executable, "-m", "perf.peers.mpi"]
        world.procs.append(self._popen(cmd, self._env(name)))
        self.worlds.append(world)
        return world

    def start_gloo(self, *, timeout: float | None = None, name: str = "gloo") -> RemoteWorld:
        world = RemoteWorld(name, self.nranks)
        init = f"tcp://127.0.0.1:{_free_port()}"
        env = self._env(name)
        env.setdefault("OMP_NUM_THREADS", "1")
        for r in range(self.nranks):
            cmd = [sys.executable, "-m", "perf.peers.gloo", "--rank", str(r), "--size", str(self.nranks),
                   "--init-method", init]
            if timeout:
                cmd += ["--timeout", str(timeout)]
            world.procs.append(self._popen(cmd, env))
        self.worlds.append(world)
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
        for w in self.worlds:
            if graceful:
                w.stop()
            else:
                w.kill()
        self.listener.close()
        if self._store is not None:
            self._store.close()
