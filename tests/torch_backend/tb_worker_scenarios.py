"""One rank of a scenario that needs its own processes: rendezvous methods, timeouts, lost peers.

    python tb_worker_scenarios.py RANK WORLD SCENARIO OUT_DIR INIT_METHOD

(test_torch_scenarios.py forks the ranks from a process that imported this module instead:
``main(argv)`` with the same arguments, tb_zygote.py.)

INIT_METHOD is passed to ``init_process_group`` as it is (``tcp://...``, ``file://...``), or
``env`` for env:// with MASTER_ADDR/MASTER_PORT from the environment. The rank records what
happened (results, the error it saw, how long it took) in OUT_DIR/rank{RANK}.json.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
import traceback
from typing import Any

import torch
import torch.distributed as dist

import collectives.torch_backend as tb

# This rank's arguments (set by main) and what it records.
rank, world, scenario, out_dir, init = 0, 0, "", "", ""
record: dict[str, Any] = {}


def save() -> None:
    with open(os.path.join(out_dir, f"rank{rank}.json.tmp"), "w") as f:
        json.dump(record, f)
    os.replace(os.path.join(out_dir, f"rank{rank}.json.tmp"), os.path.join(out_dir, f"rank{rank}.json"))


def init_group(timeout: float) -> None:
    kwargs: dict[str, Any] = {"rank": rank, "world_size": world, "timeout": datetime.timedelta(seconds=timeout)}
    if init != "env":
        kwargs["init_method"] = init
    dist.init_process_group("collectives", **kwargs)


def attempt(name: str, fn: Any) -> None:
    """Run ``fn``; record its result or the exception it raised, and how long it took."""
    started = time.monotonic()
    try:
        value = fn()
        record[name] = {"ok": True, "value": value}
    except Exception as exc:  # noqa: BLE001
        record[name] = {"ok": False, "type": type(exc).__name__, "mro": [c.__name__ for c in type(exc).__mro__],
                        "message": str(exc), "trace": traceback.format_exc()[-2000:]}
    record[name]["seconds"] = time.monotonic() - started
    save()


def rendezvous() -> None:
    init_group(60)
    t = torch.full((3,), float(rank + 1))
    dist.all_reduce(t)
    b = torch.arange(4.0) if rank == 0 else torch.zeros(4)
    dist.broadcast(b, 0)
    sub = dist.new_group([0, world - 1])
    s = torch.ones(2)
    if rank in (0, world - 1):
        dist.all_reduce(s, group=sub)
    record["all_reduce"] = t.tolist()
    record["broadcast"] = b.tolist()
    record["sub"] = s.tolist()
    record["backend"] = dist.get_backend()
    dist.destroy_process_group()
    save()


def wait_for_rank0(limit: float = 20.0) -> None:
    """Stay alive (and silent) until rank 0 has recorded that it is done."""
    path = os.path.join(out_dir, "rank0.json")
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                if json.load(f).get("done"):
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)


def wait_gone(peer: int, limit: float = 20.0) -> None:
    """Return once rank ``peer`` has saved its record (with its pid) and exited: its process
    is gone or a zombie (the launcher reaps the ranks in order), its sockets closed."""
    path = os.path.join(out_dir, f"rank{peer}.json")
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                pid = json.load(f)["pid"]
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return
        except FileNotFoundError as exc:
            if exc.filename.startswith("/proc/"):
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.01)


def end_after_rank0() -> None:
    """Rank 0 records that it is done; every other rank stays alive until it has (an exit
    before would be a lost peer in rank 0's record); then each saves its record and exits."""
    if rank == 0:
        record["done"] = True
        save()
    else:
        wait_for_rank0()
    save()
    os._exit(0)


SHORT_TIMEOUT = 0.5
"""Seconds of the timeouts scenario's timeouts (recorded: the test checks each wait lasted that long)."""


def timeouts() -> None:
    """Rank 1 never joins: rank 0's operations raise after their timeout, naming it.

    ``dist.barrier(timeout=SHORT_TIMEOUT)`` on a group whose default is 60 s, then an
    all_reduce on a group created with that timeout, then a recv on that group."""
    init_group(60)
    record["timeout"] = SHORT_TIMEOUT
    dist.all_reduce(torch.ones(1))  # a first one that works
    group = dist.new_group(timeout=datetime.timedelta(seconds=SHORT_TIMEOUT))
    if rank == 0:
        attempt("barrier", lambda: dist.barrier(timeout=datetime.timedelta(seconds=SHORT_TIMEOUT)))
        attempt("all_reduce", lambda: dist.all_reduce(torch.ones(4), group=group))
        attempt("after", lambda: dist.all_reduce(torch.ones(4), group=group))
        attempt("recv", lambda: dist.recv(torch.ones(2), src=1, group=group))
    end_after_rank0()


def lost_peer() -> None:
    """Rank 1 dies after a first all_reduce: rank 0's next operations fail fast, naming it."""
    init_group(60)
    dist.all_reduce(torch.ones(1))
    from torch.nn.parallel import DistributedDataParallel as DDP

    ddp_group = dist.new_group()
    torch.manual_seed(0)
    model = DDP(torch.nn.Linear(4, 2), process_group=ddp_group)
    model(torch.ones(3, 4)).sum().backward()  # one step that works
    if rank == 1:
        record["pid"] = os.getpid()
        save()
        os._exit(0)
    wait_gone(1)
    attempt("all_reduce", lambda: dist.all_reduce(torch.ones(1 << 16)))
    attempt("recv", lambda: dist.recv(torch.ones(2), src=1))
    # DDP fails in its next step: the forward (bucket broadcast) or backward (all_reduce)
    attempt("ddp_backward", lambda: model(torch.ones(3, 4)).sum().backward())
    save()
    os._exit(0)


def monitored() -> None:
    """monitored_barrier: every rank arrives; then rank 2 does not; then ranks 1 and 2 do not
    (they wait for rank 0's record, so its last wait needs no margin for late arrivals)."""
    init_group(60)
    attempt("all_arrive", lambda: tb.monitored_barrier(timeout=datetime.timedelta(seconds=10)))
    if rank != 2:
        attempt("two_missing", lambda: tb.monitored_barrier(timeout=datetime.timedelta(seconds=1.5)))
    if rank == 0:
        attempt("all_missing",
                lambda: tb.monitored_barrier(timeout=datetime.timedelta(seconds=0.5), wait_all_ranks=True))
    try:
        dist.monitored_barrier()
    except Exception as exc:  # noqa: BLE001
        record["torch_refuses"] = str(exc)
    end_after_rank0()


def size_mismatch() -> None:
    """Ranks disagree on a message size: an error naming the sizes, not a hang or garbage."""
    init_group(20)
    if rank == 0:
        dist.send(torch.ones(5), dst=1)
    else:
        attempt("recv", lambda: dist.recv(torch.ones(3), src=0))
    dist.barrier()
    attempt("after", lambda: (lambda t: (dist.all_reduce(t), t.tolist())[1])(torch.ones(2)))
    dist.destroy_process_group()
    save()


SCENARIOS = {
    "rendezvous": rendezvous,
    "timeouts": timeouts,
    "lost_peer": lost_peer,
    "monitored": monitored,
    "size_mismatch": size_mismatch,
}

def main(argv: list[str]) -> None:
    """Run scenario ``argv[2]`` as rank ``argv[0]`` of ``argv[1]`` (OUT_DIR, INIT_METHOD follow)."""
    global rank, world, scenario, out_dir, init, record
    rank, world, scenario, out_dir, init = int(argv[0]), int(argv[1]), argv[2], argv[3], argv[4]
    record = {"rank": rank}
    try:
        SCENARIOS[scenario]()
    except Exception:  # noqa: BLE001
        record["crash"] = traceback.format_exc()
        save()
        raise


if __name__ == "__main__":
    main(sys.argv[1:])
