"""One rank of tests/gpu/test_gpu_torch_backend.py (collectives-run): torch.distributed's
collectives on CUDA tensors through the ``collectives`` backend, sync and async, every
rank on the host's GPU ``rank % device_count``. The tensors must stay on the device: no
"copied through host memory" warning may be logged. Prints one ``RESULT {json}`` line."""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys

import torch
import torch.distributed as dist

importlib.import_module("collectives.torch_backend")  # registers the backend

staged: list[str] = []


class _Staged(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if "copied through host memory" in record.getMessage():
            staged.append(record.getMessage())


logging.getLogger("collectives").addHandler(_Staged(logging.WARNING))
r, p = int(os.environ["COLLECTIVES_RANK"]), int(os.environ["COLLECTIVES_WORLD_SIZE"])
dist.init_process_group("collectives", init_method=f"file://{sys.argv[1]}", rank=r, world_size=p)
device = torch.device("cuda", r % torch.cuda.device_count())
torch.cuda.set_device(device)
checks: list[list] = []


def check(name: str, ok: bool) -> None:
    checks.append([name, bool(ok)])


for dtype in (torch.float32, torch.bfloat16, torch.float16):
    x = torch.full((1 << 18,), float(r + 1), dtype=dtype, device=device)
    dist.all_reduce(x)
    check(f"all_reduce {dtype}", x.is_cuda and bool((x == p * (p + 1) / 2).all()))
x = torch.full((1 << 16,), float(r + 1), device=device)
side = torch.cuda.Stream()
with torch.cuda.stream(side):  # the collective is ordered on the issuing thread's current stream
    side.wait_stream(torch.cuda.default_stream())
    x.mul_(2)
    work = dist.all_reduce(x, async_op=True)
work.wait()
torch.cuda.synchronize()
check("async all_reduce on a side stream", bool((x == p * (p + 1)).all()))
out = torch.empty(p * 5, device=device)
dist.all_gather_into_tensor(out, torch.full((5,), float(r), device=device))
check("all_gather_into_tensor", out.cpu().tolist() == [float(q) for q in range(p) for _ in range(5)])
rs = torch.empty(3, device=device)
dist.reduce_scatter_tensor(rs, torch.arange(3 * p, dtype=torch.float32, device=device))
check("reduce_scatter_tensor", rs.cpu().tolist() == [float(p * (3 * r + i)) for i in range(3)])
b = torch.full((7,), float(r), device=device)
dist.broadcast(b, src=p - 1)
check("broadcast", b.cpu().tolist() == [float(p - 1)] * 7)
dist.destroy_process_group()
print("RESULT " + json.dumps({"rank": r, "checks": checks, "staged": staged}), flush=True)
