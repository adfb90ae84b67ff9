"""One rank of the object-collective checks (tests/faults/test_faults_objects.py).

``python faults_objects_worker.py RANK WORLD PORT OUT_DIR``: joins a ``collectives``
process group over the torchrun-style environment, then

* sends every type the safe codec carries through each torch object collective and
  records what arrived;
* checks that a gloo group in the same job still pickles (a class instance round-trips);
* rank 1 plays a hostile peer: with COLLECTIVES_OBJECT_CODEC=pickle (its own choice) it
  sends an object whose ``__reduce__`` would create a file on rank 0; rank 0 records what
  happened under the default codec, then once more after opting in to pickle (the
  positive control: the same payload does run there);
* an all_reduce after all that shows the group still works.

Writes ``rankN.json``.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import numpy as np
import torch
import torch.distributed as dist

import collectives.torch_backend

assert collectives.torch_backend.BACKEND_NAME == "collectives"  # importing it registers the backend


class Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # what a hostile peer puts in a pickle
        return (open, (self.path, "w"))


class Point:  # a plain class: fine for pickle (gloo), not for the safe codec
    def __init__(self, x: int) -> None:
        self.x = x


def payload(rank: int) -> dict:
    return {
        "none": None, "bool": True, "int": 10**30 + rank, "float": 1.5 + rank, "str": f"rank {rank} é",
        "bytes": bytes([rank, 255]), "list": [1, [2, 3]], "tuple": (rank, "t"), "set": {1, 2},
        "nested": {"a": [{"b": (None, 2.0)}]}, "array": np.arange(6, dtype=np.float32).reshape(2, 3) + rank,
        "tensor": torch.arange(4, dtype=torch.int64) * (rank + 1), "bf16": torch.ones(3, dtype=torch.bfloat16),
        "pad": "x" * (100 * rank),  # sizes differ by rank: torch pads every encoding to the largest
    }


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def attempt(fn) -> str:
    try:
        fn()
        return "ok"
    except Exception as exc:  # noqa: BLE001 - recorded for the test
        return f"{type(exc).__name__}: {exc}"


def main() -> None:
    rank, world, port, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group("collectives", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    result: dict = {"rank": rank}
    mine = payload(rank)
    # round trips through every object collective, safe codec
    gathered = [None] * world
    dist.all_gather_object(gathered, mine)
    result["all_gather_object"] = all(same(gathered[r], payload(r)) for r in range(world))
    objs = [payload(0), "x"] if rank == 0 else [None, None]
    dist.broadcast_object_list(objs, src=0)
    result["broadcast_object_list"] = same(objs, [payload(0), "x"])
    out = [None] * world if rank == 0 else None
    dist.gather_object(mine, out, dst=0)
    result["gather_object"] = rank != 0 or all(same(out[r], payload(r)) for r in range(world))
    got = [None]
    dist.scatter_object_list(got, [payload(r) for r in range(world)] if rank == 0 else None, src=0)
    result["scatter_object_list"] = same(got[0], payload(rank))
    if rank == 0:
        dist.send_object_list([mine, {"k": 1}], dst=1)
        result["send_object_list"] = True
    elif rank == 1:
        box = [None, None]
        dist.recv_object_list(box, src=0)
        result["send_object_list"] = same(box, [payload(0), {"k": 1}])
    # what the safe codec refuses to send, named on the sender
    result["refuses_class"] = attempt(lambda: dist.broadcast_object_list([Point(1)] if rank == 0 else [None], src=0)
                                      if rank == 0 else None)
    dist.barrier()
    # torch's own groups still pickle
    gloo = dist.new_group(backend="gloo")
    points = [None] * world
    dist.all_gather_object(points, Point(rank), group=gloo)
    result["gloo_pickles"] = [p.x for p in points] == list(range(world))
    # the hostile peer
    target, control = os.path.join(out_dir, "pwned"), os.path.join(out_dir, "pwned-with-opt-in")
    if rank == 1:
        os.environ["COLLECTIVES_OBJECT_CODEC"] = "pickle"
        dist.broadcast_object_list([Evil(target)], src=1)
        dist.send_object_list([Evil(target)], dst=0)
        dist.send_object_list([Evil(control)], dst=0)
    elif rank == 0:
        box = [None]
        result["attack_broadcast"] = attempt(lambda: dist.broadcast_object_list(box, src=1))
        result["attack_recv"] = attempt(lambda: dist.recv_object_list(box, src=1))
        result["file_after_attack"] = os.path.exists(target)
        os.environ["COLLECTIVES_OBJECT_CODEC"] = "pickle"  # the explicit opt-in
        result["opt_in_recv"] = attempt(lambda: dist.recv_object_list(box, src=1))
        result["file_after_opt_in"] = os.path.exists(control)
    t = torch.arange(5, dtype=torch.float64) + rank
    dist.all_reduce(t)
    result["all_reduce_after"] = torch.equal(t, sum(torch.arange(5, dtype=torch.float64) + r for r in range(world)))
    dist.destroy_process_group()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
