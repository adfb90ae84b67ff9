"""Import torch once, then fork the ranks of every scenario asked for (tb_launch.Zygote).

    python tb_zygote.py MODULE

Importing torch takes each fresh rank 1.5 s or more of CPU, and a 2-core machine runs the
ranks' imports nearly one after the other: most of a scenario's time. This process imports
MODULE (which imports torch, torch.distributed and the backend, and starts no thread) once
and forks each rank from it. A rank is still a process of its own, in a session of its own,
with its own stdout and stderr (a file), meeting its peers through the scenario's init
method; only the interpreter's start is shared.

Protocol, one JSON line each way: a request ``{"world", "args", "env", "timeout", "logs"}``
runs ``MODULE.main([rank, world, *args])`` in ``world`` forked ranks with ``env`` added to
their environment, output to ``logs/rank{r}.log``; the answer is
``[{"returncode", "timed_out"}, ...]`` by rank once all have exited (those still running at
``timeout`` are killed, process group and all). "ready" is written once MODULE is imported.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any


def _rank(module: Any, rank: int, request: dict[str, Any]) -> None:
    """Body of a forked rank: never returns."""
    status = 1
    try:
        os.setsid()
        log = os.open(os.path.join(request["logs"], f"rank{rank}.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.environ.update(request["env"])
        module.main([str(rank), str(request["world"]), *request["args"]])
        status = 0
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported through the rank's log and exit status
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)


def _run(module: Any, request: dict[str, Any]) -> list[dict[str, Any]]:
    """Fork the ranks, wait for all (killing those past the timeout), report each one's end."""
    sys.stdout.flush()
    pids = []
    for rank in range(request["world"]):
        pid = os.fork()
        if pid == 0:
            _rank(module, rank, request)
        pids.append(pid)
    outcomes: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + request["timeout"]
    while len(outcomes) < len(pids):
        for pid in pids:
            if pid in outcomes:
                continue
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                outcomes[pid] = {"returncode": os.waitstatus_to_exitcode(status), "timed_out": False}
        if len(outcomes) < len(pids) and time.monotonic() >= deadline:
            for pid in pids:
                if pid not in outcomes:
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    os.waitpid(pid, 0)
                    outcomes[pid] = {"returncode": -9, "timed_out": True}
        time.sleep(0.01)
    return [outcomes[pid] for pid in pids]


def main(name: str) -> None:
    module = importlib.import_module(name)
    threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else threading.active_count()
    assert threads == 1, f"{threads} threads after importing {name}: fork() would copy them in a state they cannot leave"
    print("ready", flush=True)
    for line in sys.stdin:
        print(json.dumps(_run(module, json.loads(line))), flush=True)
    os._exit(0)  # nothing to clean up: skip the half second of unloading torch


if __name__ == "__main__":
    main(sys.argv[1])
