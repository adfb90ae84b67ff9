"""Three ranks of a torch job lose rank 0; the survivors shrink a Communicator kept beside
the process group and make a new process group from its numbering (run by
test_recovery_torch.py; prints one JSON line per survivor)."""

import datetime
import json
import multiprocessing
import os
import signal

import torch
import torch.distributed as dist

import collectives
import collectives.torch_backend  # noqa: F401 - registers the "collectives" backend
from collectives.store.torch_store import TorchStore


def rank_main(rank: int, ports: "multiprocessing.Queue[int]", out: "multiprocessing.Queue[str]") -> None:
    store = dist.TCPStore("127.0.0.1", ports.get(timeout=60), 3, False, timeout=datetime.timedelta(seconds=20))
    comm = collectives.init(rank, 3, TorchStore(store.clone(), timeout=5), timeout=5)  # for recovery
    dist.init_process_group("collectives", store=dist.PrefixStore("first", store), rank=rank, world_size=3,
                            timeout=datetime.timedelta(seconds=5))
    t = torch.ones(4)
    dist.all_reduce(t)
    if rank == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    try:
        dist.all_reduce(t)
    except Exception:  # noqa: BLE001 - the failure we recover from, whichever torch wraps it in
        pass
    comm.revoke()
    small = comm.shrink()
    dist.destroy_process_group()
    dist.init_process_group("collectives", store=dist.PrefixStore(f"after-{small.size}", store), rank=small.rank,
                            world_size=small.size, timeout=datetime.timedelta(seconds=5))
    t = torch.full((4,), float(rank))
    dist.all_reduce(t)
    out.put(json.dumps({"rank": rank, "new_rank": small.rank, "size": dist.get_world_size(), "sum": t.tolist()}))
    dist.destroy_process_group()
    small.close()
    comm.close()


if __name__ == "__main__":
    # The ranks are forked before the store server starts its threads: a child forked while a
    # server thread held a lock hung in its own TCPStore (about half the runs).
    fork = multiprocessing.get_context("fork")
    ports, out = fork.Queue(), fork.Queue()
    ranks = [fork.Process(target=rank_main, args=(r, ports, out)) for r in range(3)]
    for p in ranks:
        p.start()
    server = dist.TCPStore("127.0.0.1", 0, 3, True, timeout=datetime.timedelta(seconds=20), wait_for_workers=False)
    for _ in ranks:
        ports.put(server.port)
    for _ in range(2):
        print(out.get(timeout=60))
    for p in ranks:
        p.join(30)
