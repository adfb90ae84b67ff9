"""``collectives-run``: start N local ranks of a script, like ``torchrun --standalone``.

Usage::

    collectives-run -n 4 train.py --lr 0.1       # or: python -m collectives.run -n 4 ...
    collectives-run -n 4 -m mypkg.train --lr 0.1   # a module, as with python -m
    collectives-run -n 4 python train.py --lr 0.1  # as mpiexec users type it: the same

The launcher makes a fresh random job secret, hosts a ``TCPStoreServer`` on 127.0.0.1 (an
ephemeral port) for the ranks to meet through, and starts each rank as
``sys.executable script args...`` (or, when SCRIPT is a Python interpreter as in
``collectives-run -n 4 python train.py``, the command as typed; all of it through
:class:`collectives.spawn.Job`, which the test harness and the perf coordinator share)
with this environment added to its own,
less the variables of any launcher that started *us* (:mod:`collectives.environment`):

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
that status is the launcher's; with ``--keep-going`` they run on (a job that recovers with
``comm.shrink`` needs its survivors, and the launcher's store outlives every rank) and the
first failure's status is the launcher's once all have ended. SIGINT and SIGTERM sent to the launcher are forwarded to
every rank, stopped (frozen) ones included; ranks still running ``--grace`` seconds later
(default 5) get SIGKILL, and so does everything at a second signal. Each rank runs in its
own session, so a terminal's Ctrl-C reaches the ranks once, through the launcher, and
stopping a rank stops the processes it started too. Each rank is also tied to the
launcher (``PR_SET_PDEATHSIG``): a launcher killed outright takes its ranks with it. When
the job ends, shared-memory segments left by ranks stopped during setup are removed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import IO, BinaryIO

from .config import TRANSPORTS
from .spawn import KILL_GRACE, POLL_INTERVAL, STORE_HOST, Child, Job, exit_status

_exit_status = exit_status  # the name this module had for it
__all__ = ["KILL_GRACE", "POLL_INTERVAL", "STORE_HOST", "build_parser", "main"]


def _positive_int(text: str) -> int:
    """argparse type of ``-n``: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    """argparse type of ``--timeout``: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``collectives-run`` (the script's own arguments pass through)."""
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
    parser.add_argument(
        "--grace", type=_positive_float, default=KILL_GRACE,
        help=f"seconds ranks have to exit after SIGTERM before SIGKILL (default {KILL_GRACE:g})",
    )
    parser.add_argument(
        "--keep-going", action="store_true",
        help="when a rank fails, let the others run on (for jobs that recover with comm.shrink; "
             "docs/fault-tolerance.md); the status is still the first failure's",
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
        """Copy lines until the rank closes its end of the pipe."""
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
    """The bytes side of one of our text streams, where ranks' lines are copied to."""
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        return buffer  # type: ignore[no-any-return]
    return _TextSink(stream)  # type: ignore[return-value]


class _TextSink:
    """A bytes view of a text stream without ``.buffer`` (a replaced ``sys.stdout``)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, data: bytes) -> int:
        """Write ``data`` as text (undecodable bytes replaced)."""
        return self.stream.write(data.decode(errors="replace"))

    def flush(self) -> None:
        """Flush the text stream."""
        self.stream.flush()


def _rank_env(job: Job, rank: int, nproc: int, args: argparse.Namespace) -> dict[str, str]:
    """Rank ``rank``'s environment: ours without any outer launcher's variables, the job's
    (:meth:`Job.rank_env`), and what the flags set."""
    extra: dict[str, str] = {}
    if args.timeout is not None:
        extra["COLLECTIVES_TIMEOUT"] = repr(args.timeout)
    if args.transport is not None:
        extra["COLLECTIVES_TRANSPORT"] = args.transport
    env = job.rank_env(rank, nproc, extra)
    if not args.no_prefix:  # each rank has its own pipe, read line by line
        env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _say(message: str) -> None:
    """A line of the launcher's own on stderr."""
    print(f"collectives-run: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the launcher; return the exit status (0 if every rank succeeded, else the first
    non-zero status, 128 + N for a rank killed by signal N)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.transport == "inproc" and args.nproc > 1:
        parser.error("--transport inproc connects threads of one process; use shm or tcp with -n > 1")
    command = _command(parser, args)

    pipe = None if args.no_prefix else subprocess.PIPE
    locks = (threading.Lock(), threading.Lock())
    sinks = (_binary(sys.stdout), _binary(sys.stderr))
    forwarders: list[_Forwarder] = []
    job = Job(host=STORE_HOST)
    try:
        with job.forward_signals(grace=args.grace) as received:
            sys.stdout.flush()
            sys.stderr.flush()
            for rank in range(args.nproc):
                child = job.popen(command, _rank_env(job, rank, args.nproc, args), stdout=pipe, stderr=pipe)
                if pipe is not None:
                    prefix = f"[rank {rank}] ".encode()
                    process = child.process
                    assert process.stdout is not None and process.stderr is not None
                    forwarders.append(_Forwarder(process.stdout, sinks[0], locks[0], prefix))
                    forwarders.append(_Forwarder(process.stderr, sinks[1], locks[1], prefix))
                if received:  # a signal came while we were starting ranks: start no more
                    job.signal_all(received[-1])
                    break
            status = job.watch(_said_failure_keeping if args.keep_going else _said_failure, grace=args.grace,
                               keep_going=args.keep_going)
    finally:
        job.stop(args.grace)
        for forwarder in forwarders:
            forwarder.thread.join(1.0)  # a grandchild may still hold the pipe open
        job.close(args.grace)
    if status == 0 and received:
        status = 128 + received[0]
    return status


_INTERPRETER = re.compile(r"python[0-9.]*")
_OPTIONS_WITH_VALUE = ("-W", "-X", "--check-hash-based-pycs")


def _command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """What each rank runs: ``sys.executable [-m] SCRIPT ARGS``, or, when SCRIPT names a
    Python interpreter (``collectives-run -n 4 python train.py``, as mpiexec is used), that
    interpreter with ARGS. Refuses a script that does not exist."""
    if args.module:
        return [sys.executable, "-m", args.script, *args.script_args]
    if os.path.exists(args.script):
        return [sys.executable, args.script, *args.script_args]
    interpreter = shutil.which(args.script) if _INTERPRETER.fullmatch(os.path.basename(args.script)) else None
    if interpreter is None:
        parser.error(f"no such script: {args.script}")
    rest = list(args.script_args)
    i = 0
    while i < len(rest) and rest[i].startswith("-") and rest[i] not in ("-m", "-c", "-"):
        i += 2 if rest[i] in _OPTIONS_WITH_VALUE else 1
    if i >= len(rest):
        parser.error(f"{args.script} was given no script to run: collectives-run -n N [{args.script}] train.py ...")
    if rest[i] not in ("-m", "-c", "-") and not os.path.exists(rest[i]):
        parser.error(f"no such script: {rest[i]}")
    return [interpreter, *rest]


def _how(failed: Child) -> str:
    code = failed.poll() or 0
    return f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"


def _said_failure(failed: Child, running: list[Child]) -> None:
    """Say which rank failed and which ones are being stopped for it."""
    if running:
        _say(f"rank {failed.rank} {_how(failed)}; stopping rank(s) {', '.join(str(c.rank) for c in running)}")


def _said_failure_keeping(failed: Child, running: list[Child]) -> None:
    """Say which rank failed, and that the others go on (``--keep-going``)."""
    going = f"rank(s) {', '.join(str(c.rank) for c in running)} go on" if running else "no rank is left"
    _say(f"rank {failed.rank} {_how(failed)}; {going} (--keep-going)")


if __name__ == "__main__":
    sys.exit(main())
