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

TIMEOUT = 1.0
"""The communicators' timeout in these tests (seconds): short, so the suite stays fast (a
frozen rank is waited out; a killed one is seen at once). The diagnosis after it keeps
its own grace of up to 1 s for the survivors to say they are in the operation."""
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
