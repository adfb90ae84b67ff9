"""``collectives-run``: start N local ranks of a script, like ``torchrun --standalone``.

Usage::

    collectives-run -n 4 train.py --lr 0.1       # or: python -m collectives.run -n 4 ...
    collectives-run -n 4 -m mypkg.train --lr 0.1   # a module, as with python -m

The launcher makes a fresh random job secret, hosts a ``TCPStoreServer`` on 127.0.0.1 (an
ephemeral port) for the ranks to meet through, and starts each rank as
``sys.executable script args...`` with this environment added to its own:

=============================== ===============================================
COLLECTIVES_RANK                this rank, 0..N-1
COLLECTIVES_WORLD_SIZE          N
COLLECTIVES_LOCAL_RANK          same as the rank (one host)
COLLECTIVES_LOCAL_WORLD_SIZE    N
COLLECTIVES_STORE_ADDR          ``host:port`` of the launcher's store
COLLECTIVES_SECRET              the job secret (hex), proven on every TCP connection
COLLECTIVES_TIMEOUT             with ``--timeout``
COLLECTIVES_TRANSPORT           with ``--transport``
PYTHONUNBUFFERED                1 (unless set or ``--no-prefix``): lines come as printed
=============================== ===============================================

so ``collectives.init()`` needs no arguments. torchrun's variables (MASTER_ADDR,
MASTER_PORT, RANK, WORLD_SIZE, ...) are deliberately *not* set: the store speaks our
protocol, and a ``torch.distributed`` TCPStore pointed at it would fail confusingly.

Each line a rank prints is forwarded with a ``[rank N] `` prefix (stdout to stdout, stderr
to stderr; ``--no-prefix`` passes the streams through untouched). When a rank exits with a
non-zero status the others are stopped (SIGTERM, then SIGKILL after a grace period) and
that status is the launcher's. SIGINT and SIGTERM sent to the launcher are forwarded to
every rank (a second one sends SIGKILL). Each rank runs in its own session, so a terminal's
Ctrl-C reaches the ranks once, through the launcher, and stopping a rank stops the
processes it started too.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import IO, BinaryIO

from .config import TRANSPORTS

KILL_GRACE = 5.0
"""Seconds ranks have to exit after SIGTERM before they get SIGKILL."""
POLL_INTERVAL = 0.05
STORE_HOST = "127.0.0.1"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collectives-run",
        description="Start N local ranks of a Python script or module (like torchrun --standalone).",
    )
    parser.add_argument("-n", "--nproc", type=_positive_int, default=1, help="number of ranks to start (default 1)")
    parser.add_argument(
        "--timeout", type=_positive_float, default=None,
        help="seconds any blocking wait (rendezvous, collective) may take (sets COLLECTIVES_TIMEOUT)",
    )
    parser.add_argument(
        "--transport", choices=TRANSPORTS, default=None,
        help="force one transport for every peer (sets COLLECTIVES_TRANSPORT); inproc needs -n 1",
    )
    parser.add_argument("--no-prefix", action="store_true", help="do not prefix output lines with [rank N]")
    parser.add_argument("-m", "--module", action="store_true", help="run SCRIPT as a module, like python -m")
    parser.add_argument("script", metavar="SCRIPT", help="the Python script (or module, with -m) each rank runs")
    parser.add_argument("script_args", nargs=argparse.REMAINDER, metavar="ARGS", help="arguments for the script")
    return parser


class _Forwarder:
    """Copies one rank's pipe to our stream line by line, with a prefix, in a thread."""

    def __init__(self, source: IO[bytes], sink: BinaryIO, lock: threading.Lock, prefix: bytes) -> None:
        self.source = source
        self.sink = sink
        self.lock = lock
        self.prefix = prefix
        self.thread = threading.Thread(target=self._run, name="collectives-run-forward", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for line in iter(self.source.readline, b""):
                if not line.endswith(b"\n"):
                    line += b"\n"
                with self.lock:
                    try:
                        self.sink.write(self.prefix + line)
                        self.sink.flush()
                    except (OSError, ValueError):  # our own stream is gone (closed pipe)
                        pass
        finally:
            self.source.close()


def _binary(stream: IO[str]) -> BinaryIO:
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        return buffer  # type: ignore[no-any-return]
    return _TextSink(stream)  # type: ignore[return-value]


class _TextSink:
    """A bytes view of a text stream without ``.buffer`` (a replaced ``sys.stdout``)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, data: bytes) -> int:
        return self.stream.write(data.decode(errors="replace"))

    def flush(self) -> None:
        self.stream.flush()


def _exit_status(returncode: int) -> int:
    """A child's status as a shell would report it (killed by signal N -> 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


class _Ranks:
    """The rank processes of one job and how to stop them."""

    def __init__(self, processes: list[subprocess.Popen[bytes]]) -> None:
        self.processes = processes

    def signal_all(self, signum: int) -> None:
        for p in self.processes:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signum)  # the rank and whatever it started
                except (ProcessLookupError, PermissionError):
                    try:
                        p.send_signal(signum)
                    except ProcessLookupError:
                        pass

    def stop(self, grace: float = KILL_GRACE) -> None:
        """SIGTERM every live rank, then SIGKILL those still running after ``grace``."""
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(p.poll() is None for p in self.processes) and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL)
        self.signal_all(signal.SIGKILL)
        for p in self.processes:
            p.wait()


def _rank_env(rank: int, nproc: int, store_addr: str, secret: str, args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        COLLECTIVES_RANK=str(rank),
        COLLECTIVES_WORLD_SIZE=str(nproc),
        COLLECTIVES_LOCAL_RANK=str(rank),
        COLLECTIVES_LOCAL_WORLD_SIZE=str(nproc),
        COLLECTIVES_STORE_ADDR=store_addr,
        COLLECTIVES_SECRET=secret,
    )
    if args.timeout is not None:
        env["COLLECTIVES_TIMEOUT"] = repr(args.timeout)
    if args.transport is not None:
        env["COLLECTIVES_TRANSPORT"] = args.transport
    if not args.no_prefix:  # each rank has its own pipe, read line by line
        env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _say(message: str) -> None:
    print(f"collectives-run: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the launcher; return the exit status (0 if every rank succeeded, else the first
    non-zero status, 128 + N for a rank killed by signal N)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.transport == "inproc" and args.nproc > 1:
        parser.error("--transport inproc connects threads of one process; use shm or tcp with -n > 1")
    if not args.module and not os.path.exists(args.script):
        parser.error(f"no such script: {args.script}")
    command = [sys.executable, *(["-m"] if args.module else []), args.script, *args.script_args]

    from .store.tcp_store import TCPStoreServer

    secret = secrets.token_hex(32)
    server = TCPStoreServer(host=STORE_HOST, port=0, secret=secret)
    store_addr = f"{server.host}:{server.port}"

    pipe = None if args.no_prefix else subprocess.PIPE
    locks = (threading.Lock(), threading.Lock())
    sinks = (_binary(sys.stdout), _binary(sys.stderr))
    forwarders: list[_Forwarder] = []
    processes: list[subprocess.Popen[bytes]] = []
    ranks = _Ranks(processes)
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        ranks.signal_all(signal.SIGKILL if len(received) > 1 else signum)

    previous: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        for rank in range(args.nproc):
            process = subprocess.Popen(
                command,
                env=_rank_env(rank, args.nproc, store_addr, secret, args),
                stdin=subprocess.DEVNULL,
                stdout=pipe,
                stderr=pipe,
                start_new_session=True,
            )
            processes.append(process)
            if pipe is not None:
                prefix = f"[rank {rank}] ".encode()
                assert process.stdout is not None and process.stderr is not None
                forwarders.append(_Forwarder(process.stdout, sinks[0], locks[0], prefix))
                forwarders.append(_Forwarder(process.stderr, sinks[1], locks[1], prefix))
            if received:  # a signal came while we were starting ranks: start no more
                ranks.signal_all(received[-1])
                break
        status = _supervise(ranks)
    finally:
        if any(p.poll() is None for p in processes):
            ranks.stop()
        for forwarder in forwarders:
            forwarder.thread.join(1.0)  # a grandchild may still hold the pipe open
        server.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
    if status == 0 and received:
        status = 128 + received[0]
    return status


def _supervise(ranks: _Ranks) -> int:
    """Wait for every rank; on the first failure stop the others and return its status."""
    processes = ranks.processes
    while True:
        running = False
        for rank, p in enumerate(processes):
            code = p.poll()
            if code is None:
                running = True
            elif code != 0:
                others = [r for r, q in enumerate(processes) if q.poll() is None]
                how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                if others:
                    _say(f"rank {rank} {how}; stopping rank(s) {', '.join(map(str, others))}")
                ranks.stop()
                return _exit_status(code)
        if not running:  # all exited with 0 (or start was cut short by a signal)
            return 0
        time.sleep(POLL_INTERVAL)


if __name__ == "__main__":
    sys.exit(main())
