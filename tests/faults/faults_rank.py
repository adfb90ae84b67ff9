"""One rank of a job that the security fault tests watch and attack from outside.

``python faults_rank.py OUT_DIR``; rank and size come from whatever launcher started it
(collectives-run, or a torchrun-style environment). Files in OUT_DIR steer it:

* ``hold-R``: with ``FAULTS_HOLD_RANK=R``, rank R (a slow rank) waits for this file
  before it dials its first TCP peer or maps a peer's shared-memory inbox, after writing
  ``holding-R``: until then the ranks that wait for it keep their data listeners open
  and their segments in /dev/shm, for the test to look at and attack;
* ``stop``: the ranks run checked all_reduces until this file appears (at least
  ``FAULTS_MIN_ROUNDS`` of them), then one more, then close.

Each rank writes ``pid-R`` (its pid and the launcher's store address and secret, where it
has them) when it starts, ``ready-R`` once connected, and ``rankR.json`` at the end: the
number of rounds and whether every result matched the reference.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

import collectives
from collectives.environment import detect_launcher


def wait_for(path: str, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} never appeared")
        time.sleep(0.02)


def hold(out: str, rank: int) -> None:
    """Make this rank slow: before it dials its first TCP peer or maps its first peer's
    shared-memory inbox, it says ``holding-R`` and waits for ``hold-R``."""
    from collectives.transports import shm, tcp

    def held(call):  # type: ignore[no-untyped-def]
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            open(os.path.join(out, f"holding-{rank}"), "w").close()
            wait_for(os.path.join(out, f"hold-{rank}"))
            return call(*args, **kwargs)
        return wrapper

    tcp.TcpTransport._connect = held(tcp.TcpTransport._connect)  # type: ignore[method-assign]
    shm._Segment.open = held(shm._Segment.open)  # type: ignore[method-assign]


def main() -> None:
    out = sys.argv[1]
    rank = int(os.environ.get("COLLECTIVES_RANK", os.environ.get("RANK", "0")))
    with open(os.path.join(out, f"pid-{rank}"), "w") as f:
        json.dump({"pid": os.getpid(), "launcher": detect_launcher(),
                   "store": os.environ.get("COLLECTIVES_STORE_ADDR"), "secret": os.environ.get("COLLECTIVES_SECRET")}, f)
    if os.environ.get("FAULTS_HOLD_RANK") == str(rank):
        hold(out, rank)
    comm = collectives.init()
    open(os.path.join(out, f"ready-{rank}"), "w").close()
    n, size = 1000, comm.size
    expected = sum(np.arange(n, dtype=np.float64) * (r + 1) for r in range(size))
    rounds, ok = 0, True
    min_rounds = int(os.environ.get("FAULTS_MIN_ROUNDS", "3"))
    stop = os.path.join(out, "stop")
    while True:
        # every rank must agree on when to stop: rank 0 decides, everyone learns it in the sum
        done = np.array([1.0 if comm.rank == 0 and rounds >= min_rounds and os.path.exists(stop) else 0.0])
        comm.all_reduce(done)
        x = np.arange(n, dtype=np.float64) * (comm.rank + 1)
        comm.all_reduce(x)
        ok = ok and bool(np.array_equal(x, expected))
        rounds += 1
        if done[0]:
            break
        time.sleep(0.01)
    kinds = sorted(set(comm.transport_names.values()))
    comm.close()
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"rank": rank, "size": size, "rounds": rounds, "ok": ok, "transports": kinds}, f)


if __name__ == "__main__":
    main()
