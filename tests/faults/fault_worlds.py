"""What the fault tests share: a world whose rank ``victim`` is killed (SIGKILL) or frozen
(SIGSTOP) by a timer thread of its own while every rank runs all_reduce in a loop, and the
reports each rank writes about the error it raised.

Reports travel through files, not through ``run_world``'s results: a killed rank reports
nothing, so ``run_world`` raises for it, and the survivors' accounts would be lost. No
survivor leaves before every survivor has reported (a store hosted by a rank closes with
it); then the last one continues (SIGCONT) a frozen rank, so that it too fails, reports
and exits, and ``run_world`` returns: every process ends.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

import collectives
from collectives.transports.shm import ShmTransport, _process_gone

TIMEOUT = 1.0
"""The communicators' timeout in these tests (seconds): short, so the suite stays fast (a
frozen rank is waited out; a killed one is seen at once). The diagnosis after it keeps
its own grace of up to 1 s for the survivors to say they are in the operation, which ends
once only the frozen rank, seen stopped, and survivors that timed out in another operation
are missing."""
BOUND = TIMEOUT + 5.0
"""What the guarantee allows: every survivor raises within the timeout + 5 s."""
ELEMENTS = 1 << 15  # 256 KiB of float64: several steps per all_reduce on every transport


def _write(path: Path, value: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)  # a reader never sees half a report


def describe(exc: BaseException, event_at: float) -> dict[str, Any]:
    """What a rank saw: the error's type, peer, absent ranks, message, and how long after
    the victim's signal it was raised."""
    return {
        "type": type(exc).__name__,
        "peer": getattr(exc, "peer", None),
        "absent": getattr(exc, "absent", None),
        "message": str(exc),
        "after": time.monotonic() - event_at,  # CLOCK_MONOTONIC is one clock for the whole machine
    }


def signalled_loop(folder: Path, victim: int, sig: int, delay: float = 0.3) -> Any:
    """The ``fn`` for ``run_world``: all_reduce until an error; ``victim`` signals itself
    ``delay`` seconds into the loop; every rank writes ``rank<r>.json``."""

    def fn(comm: collectives.Communicator) -> str:
        pids = comm.all_gather(np.array([os.getpid()], dtype=np.int64)).tolist()
        survivors = [r for r in range(comm.size) if r != victim]
        event = folder / "event.json"
        if comm.rank == victim:
            (folder / "victim.pid").write_text(str(os.getpid()))

            def fire() -> None:
                _write(event, time.monotonic())
                os.kill(os.getpid(), sig)

            threading.Timer(delay, fire).start()
        comm.timeout = TIMEOUT
        x = np.ones(ELEMENTS)
        try:
            while True:
                comm.all_reduce(x)
        except collectives.CollectivesError as exc:
            while not event.exists():  # (it exists: the victim wrote it before it stopped)
                time.sleep(0.01)
            _write(folder / f"rank{comm.rank}.json", describe(exc, json.loads(event.read_text())))
        if comm.rank != victim:
            # No survivor leaves before all have told their story (and a continued victim
            # too): the rank that hosts the store (rank 0 under mpiexec) takes it along.
            _wait_for(folder, survivors)
            if sig == signal.SIGSTOP:
                if comm.rank == survivors[-1]:
                    os.kill(pids[victim], signal.SIGCONT)
                _wait_for(folder, [victim])
        return "raised"

    return fn


def posted_then_killed_loop(folder: Path, victim: int, calls: int, timeout: float) -> Any:
    """The ``fn`` for ``run_world`` (shared memory): all_reduce of 8 KiB (the small window's
    halves) until an error, with ``timeout``. ``victim`` completes ``calls`` calls, the last one
    a second late, and kills itself (SIGKILL) at once after it: the others are already
    waiting for its last post then. Each survivor's first liveness check of ``victim`` in
    that call is held until the victim is gone, as if the survivor were preempted between
    reading the victim's flag (not posted yet) and checking its process: the check then
    sees it dead and the flag posted, so the wait returns what it waited for, and it is
    the *next* call's wait that must name the victim. Every rank writes
    ``rank<r>.json`` (with ``held``: whether the check was held, the case under test)."""

    def fn(comm: collectives.Communicator) -> str:
        pids = comm.all_gather(np.array([os.getpid()], dtype=np.int64)).tolist()
        comm.timeout = timeout
        x = np.ones(1024)
        event = folder / "event.json"
        if comm.rank == victim:
            (folder / "victim.pid").write_text(str(os.getpid()))
            for _ in range(calls - 1):
                comm.all_reduce(x)
            time.sleep(1.0)  # the survivors wait for the last call's post meanwhile
            comm.all_reduce(x)
            _write(event, time.monotonic())
            os.kill(os.getpid(), signal.SIGKILL)
        held: list[bool] = []
        done: list[int] = []  # one entry per call completed
        check = ShmTransport.check_peers

        def late_check(transport: ShmTransport, peers: Any, **how: Any) -> None:
            peers = list(peers)
            if len(done) >= calls - 1 and victim in peers and not held:
                held.append(True)
                until = time.monotonic() + 10.0
                while _process_gone(int(pids[victim]), None) is None and time.monotonic() < until:
                    time.sleep(0.005)
            check(transport, peers, **how)

        ShmTransport.check_peers = late_check  # type: ignore[method-assign]  # (this forked rank only)
        try:
            while True:
                comm.all_reduce(x)
                done.append(1)
        except collectives.CollectivesError as exc:
            while not event.exists():
                time.sleep(0.01)
            _write(folder / f"rank{comm.rank}.json",
                   {**describe(exc, json.loads(event.read_text())), "held": bool(held), "calls": len(done)})
        _wait_for(folder, [r for r in range(comm.size) if r != victim])
        return "raised"

    return fn


def _wait_for(folder: Path, ranks: list[int], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not all((folder / f"rank{r}.json").exists() for r in ranks) and time.monotonic() < deadline:
        time.sleep(0.01)


def sweep_victim(folder: Path) -> None:
    """Remove the shared memory a killed victim could not (sweeping segments of dead owners
    at startup is the launcher's job, not this test's)."""
    pid = (folder / "victim.pid").read_text()
    for name in os.listdir("/dev/shm"):
        if name.startswith("collectives-") and f"-{pid}-" in name:
            try:
                os.unlink(os.path.join("/dev/shm", name))
            except FileNotFoundError:
                pass


def reports(folder: Path, ranks: list[int]) -> dict[int, dict[str, Any]]:
    return {r: json.loads((folder / f"rank{r}.json").read_text()) for r in ranks}


def seq_named(message: str, op: str = "all_reduce") -> int:
    """The sequence number of ``op`` a message names (the first one)."""
    found = re.search(rf"{op} #(\d+)", message)
    assert found, f"no {op} #<seq> in: {message}"
    return int(found.group(1))


def figure(label: str, seconds: list[float]) -> None:
    """Print a measured figure (seen with ``pytest -s``; docs/reliability.md quotes them)."""
    print(f"\nFIGURE {label}: {min(seconds):.2f}-{max(seconds):.2f} s")
