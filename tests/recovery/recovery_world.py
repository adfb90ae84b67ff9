"""Worlds of forked ranks that may die on purpose, for the recovery tests.

``collectives.testing.run_world`` reports a dead rank as the job's failure; here a death
is an outcome like any other. The store is served by this (the test) process, as the
launcher serves it, so it outlives every rank, rank 0 included.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import time
from collections.abc import Callable
from typing import Any

from collectives.spawn import Job

Outcome = tuple[str, Any]  # ("ok", value) | ("error", "Type: message") | ("died", exit code)


def die() -> None:
    """SIGKILL this process: no cleanup, no goodbye, as a crash."""
    os.kill(os.getpid(), signal.SIGKILL)


def _child(fn: Callable[..., Any], rank: int, size: int | None, transport: str, host: str, port: int, secret: str,
           timeout: float, settings: dict[str, Any], conn: Any) -> None:
    import collectives
    from collectives.store.tcp_store import TCPStore

    store = TCPStore(host, port, secret, timeout=timeout)
    forced = None if transport == "auto" else transport  # auto: shm within a host, tcp across
    try:
        if size is None:  # a joiner
            comm = collectives.join(store, timeout=timeout, transport=forced, **settings)
        else:
            comm = collectives.init(rank, size, store, transport=forced, timeout=timeout, **settings)
        value = fn(comm)
        payload = pickle.dumps(("ok", value))
    except BaseException as exc:  # reported to the test, which asserts on it
        payload = pickle.dumps(("error", f"{type(exc).__name__}: {exc}"))
    conn.send_bytes(payload)
    conn.close()
    os._exit(0)  # leave at once: what fn left open is the test's business, not a hang


def run_ranks(fn: Callable[..., Any], size: int, transport: str, *, joiners: int = 0,
              join_fn: Callable[..., Any] | None = None, timeout: float = 5.0, job_timeout: float = 60.0,
              hosts: list[str] | None = None, **settings: Any) -> dict[int, Outcome]:
    """Run ``fn(comm)`` on ranks ``0..size-1`` (and ``join_fn(comm)`` on ``joiners`` processes
    that call ``collectives.join``, keyed ``size, size+1, ...``); return each one's outcome.
    ``hosts``: each rank's host identity, so that ranks look remote to each other (their
    deaths are then found by silence, not by their pids)."""
    outcomes: dict[int, Outcome] = {}
    with Job() as job:
        readers = {}
        for i in range(size + joiners):
            reader, writer = multiprocessing.get_context("fork").Pipe(duplex=False)
            target, rank_size = (fn, size) if i < size else (join_fn, None)
            mine = {**settings, **({"hostname": hosts[i]} if hosts and i < len(hosts) else {})}
            job.fork(_child, (target, i, rank_size, transport, job.store.host, job.store.port, job.secret, timeout,
                              mine, writer), name=f"recovery-rank{i}")
            writer.close()
            readers[reader] = i
        deadline = time.monotonic() + job_timeout
        while readers and time.monotonic() < deadline:
            for ready in multiprocessing.connection.wait(list(readers), timeout=deadline - time.monotonic()):
                i = readers.pop(ready)  # type: ignore[call-overload]
                try:
                    outcomes[i] = pickle.loads(ready.recv_bytes())  # type: ignore[union-attr]
                except (EOFError, OSError):
                    outcomes[i] = ("died", job.children[i].wait(5.0))
        for i in readers.values():
            outcomes[i] = ("hung", None)
        job.stop(1.0)
    return outcomes
