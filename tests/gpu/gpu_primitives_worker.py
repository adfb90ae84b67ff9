"""One rank of tests/gpu/test_gpu_primitives.py (collectives-run, 2 ranks sharing the GPU):
each primitive of ``transports/device_cuda.py`` on the device. Host collectives (numpy
buffers) move the handles. Prints one ``RESULT {json}`` line: [check, passed, detail]."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import torch

import collectives
from collectives import ReduceOp
from collectives.errors import InvalidArgumentError
from collectives.ops import finalize, reduce_pair
from collectives.transports.device_cuda import CudaDevice, visible_device
from collectives.transports.device_memory import Span

comm = collectives.init(device="off")
r, p = comm.rank, comm.size
torch.cuda.set_device(0)
dev = CudaDevice(0)
stream = torch.cuda.current_stream().cuda_stream
checks: list[list] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    checks.append([name, bool(ok), detail])


def span_of(t: torch.Tensor) -> Span:
    b = dev.buffer(t, "t")
    assert b is not None
    return b.span


def exchange(handle: bytes) -> list[bytes]:
    mine = np.frombuffer(handle, dtype=np.uint8).copy()
    every = comm.all_gather(mine).reshape(p, -1)
    return [bytes(row) for row in every]


visible = visible_device()
check("visible_device names cuda:0 and a bus id", visible is not None and visible[0] == 0 and ":" in visible[1], str(visible))

# buffers: torch and cupy, refusals by name
t = torch.arange(10, dtype=torch.float32, device="cuda")
b = dev.buffer(t, "x")
check("a torch tensor is a device buffer", b is not None and b.count == 10 and b.dtype == np.float32 and b.stream == stream)
check("a CPU tensor is not", dev.buffer(t.cpu(), "x") is None)
try:
    dev.buffer(t[::2], "x")
    check("a strided tensor is refused", False)
except InvalidArgumentError as exc:
    check("a strided tensor is refused", "x: the tensor is not contiguous" in str(exc), str(exc))
import cupy  # noqa: E402

c = cupy.arange(6, dtype=cupy.int64)
cb = dev.buffer(c, "y")
check("a cupy array is a device buffer", cb is not None and cb.count == 6 and cb.dtype == np.int64)
check("new_like keeps the library", isinstance(dev.new_like(c, 3), cupy.ndarray) and dev.new_like(t, 3).is_cuda)

# memory: allocate, copy on a stream, export and open in the peer, events across processes
n = 1 << 20
mem = dev.allocate(n * 4)
src = torch.full((n,), float(r + 1), device="cuda")
zero = torch.zeros(n, device="cuda")
dev.copy(mem.sub(0, n * 4), span_of(zero), stream)
torch.cuda.synchronize()
event = dev.event()
handles = exchange(dev.export(mem))
event_handles = exchange(dev.export_event(event))
peer = (r + 1) % p
theirs = dev.open(handles[peer], n * 4, peer)
their_event = dev.open_event(event_handles[peer], peer)
comm.barrier()
if r == 0:  # the producer: a long wait on the device, then the write, then the record
    torch.cuda._sleep(200_000_000)
    dev.copy(mem.sub(0, n * 4), span_of(src), stream)
    dev.record(event, stream)
comm.barrier()  # rank 1 waits on the record made before this point
if r == 1:
    got = torch.empty(n, device="cuda")
    dev.wait(stream, their_event)
    dev.copy(span_of(got), theirs.sub(0, n * 4), stream)
    dev.synchronize(stream)
    check("an IPC event orders a peer's read after the producer's write", bool((got == 1.0).all()),
          f"saw {got[:4].tolist()}")
torch.cuda.synchronize()
comm.barrier()
dev.close(theirs)
dev.destroy_event(their_event)
comm.barrier()
dev.destroy_event(event)
dev.free(mem)

# reductions in the buffers' own dtypes, and the average
TORCH = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64,
         "int32": torch.int32, "int64": torch.int64, "uint8": torch.uint8}
rng = np.random.default_rng(7)
for name, tdtype in TORCH.items():
    dtype = np.dtype(ml_dtypes.bfloat16 if name == "bfloat16" else name)
    a = (rng.standard_normal(4099) * 4).astype(dtype) if dtype.kind == "f" or name == "bfloat16" else rng.integers(0, 9, 4099).astype(dtype)
    bb = (rng.standard_normal(4099) * 4).astype(dtype) if dtype.kind == "f" or name == "bfloat16" else rng.integers(0, 9, 4099).astype(dtype)

    def put(values: np.ndarray) -> torch.Tensor:
        raw = torch.from_numpy(values.view(np.int16)) if name == "bfloat16" else torch.from_numpy(values)
        return raw.cuda().view(tdtype)

    def get(x: torch.Tensor) -> np.ndarray:
        torch.cuda.synchronize()
        return x.view(torch.int16).cpu().numpy().view(dtype) if name == "bfloat16" else x.cpu().numpy()

    ops = [ReduceOp.SUM, ReduceOp.PROD, ReduceOp.MIN, ReduceOp.MAX, ReduceOp.AVG]
    if dtype.kind in "iu" and name != "bfloat16":
        ops += [ReduceOp.BAND, ReduceOp.BOR, ReduceOp.BXOR]
    for op in ops:
        ta, tb, out = put(a), put(bb), put(a * 0)
        dev.reduce(op, dtype, span_of(out), span_of(ta), span_of(tb), stream)
        if op is ReduceOp.AVG:
            dev.average(dtype, span_of(out), 3, stream)
        want = np.empty_like(a)
        reduce_pair(op, a, bb, want)
        finalize(op, want, 3)
        mine = get(out)
        exact = mine.tobytes() == want.tobytes()
        close = np.allclose(mine.astype(np.float64), want.astype(np.float64), rtol=1e-2, atol=1e-2, equal_nan=True)
        required = dtype.kind in "iu" or op in (ReduceOp.MIN, ReduceOp.MAX)
        check(f"reduce {op.name} {name}", exact if required else close, "bit-exact" if exact else "within rounding")

print("RESULT " + json.dumps({"rank": r, "checks": checks}), flush=True)
comm.close()
