"""One rank of tests/gpu/test_gpu_collectives.py (started by collectives-run): every device
collective × dtype on torch CUDA tensors or cupy arrays, every rank on this host's GPU
``rank % device_count`` (one GPU: all ranks share it). Prints one ``RESULT {json}`` line:
per case a digest of the result (compared across ranks by the test) and whether it equals
the reference, the rank-order fold computed on the host in the same dtype."""

from __future__ import annotations

import hashlib
import json
import os
import sys

import ml_dtypes
import numpy as np

import collectives
from collectives import ReduceOp
from collectives.ops import finalize, reduce_pair

lib = sys.argv[1]
rank = int(os.environ["COLLECTIVES_RANK"])
if lib == "torch":  # the device is chosen before init(), which binds the communicator to it (as NCCL's)
    import torch

    device = torch.device("cuda", rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
elif lib == "cupy":
    import cupy

    cupy.cuda.Device(rank % cupy.cuda.runtime.getDeviceCount()).use()
comm = collectives.init()
r, p = comm.rank, comm.size
if lib == "torch":
    TORCH = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
             "float64": torch.float64, "int32": torch.int32, "int64": torch.int64}

    def make(values: np.ndarray):
        raw = torch.from_numpy(values.view(np.int16)) if values.dtype.name == "bfloat16" else torch.from_numpy(values)
        return raw.to(device).view(TORCH[values.dtype.name])

    def host(a) -> np.ndarray:
        torch.cuda.current_stream().synchronize()
        if a.dtype == torch.bfloat16:
            return a.view(torch.int16).cpu().numpy().view(ml_dtypes.bfloat16)
        return a.cpu().numpy()

    def on_device(a) -> bool:
        return bool(a.is_cuda)

    dtypes = ["float16", "bfloat16", "float32", "float64", "int32", "int64"]
elif lib == "host":  # COLLECTIVES_DEVICE=host: the same checks on the host device (CI keeps this file working)
    from collectives.transports.device_host import HostDeviceArray

    hd = comm._context.device.device
    make = hd.array

    def host(a) -> np.ndarray:
        return a.get()

    def on_device(a) -> bool:
        return isinstance(a, HostDeviceArray)

    dtypes = ["float16", "bfloat16", "float32", "float64", "int32", "int64"]
else:
    def make(values: np.ndarray):
        return cupy.asarray(values)

    def host(a) -> np.ndarray:
        return cupy.asnumpy(a)  # on the current stream, blocking

    def on_device(a) -> bool:
        return isinstance(a, cupy.ndarray)

    dtypes = ["float16", "float32", "float64", "int32", "int64"]


def inputs(rank: int, count: int, dtype: np.dtype, salt: int) -> np.ndarray:
    rng = np.random.default_rng([rank, count, salt, dtype.itemsize])
    if dtype.kind in "iu":
        return rng.integers(-50, 50, count).astype(dtype)
    return (rng.standard_normal(count) * 3).astype(dtype)


def fold(op: ReduceOp, parts: list[np.ndarray]) -> np.ndarray:
    acc = parts[0].copy()
    for part in parts[1:]:
        reduce_pair(op, acc, part, acc)
    finalize(op, acc, p)
    return acc


cases = []


def check(what: str, got, want: np.ndarray, exact: bool = True, same: bool = True) -> None:
    """``exact``: the result must equal the reference bit for bit (integers, MAX, copies);
    else within rounding (float sums and means: the device's arithmetic, not numpy's).
    ``same``: every rank gets the same result (all but reduce_scatter), compared by digest."""
    assert on_device(got), f"{what}: the result is not on the device"
    mine = host(got)
    close = bool(np.allclose(mine.astype(np.float64), want.astype(np.float64), rtol=2e-2, atol=1e-2))
    digest = hashlib.sha1(mine.tobytes()).hexdigest() if same else ""
    cases.append([what, digest, mine.tobytes() == want.tobytes(), close, exact])


for name in dtypes:
    dtype = np.dtype(ml_dtypes.bfloat16 if name == "bfloat16" else name)
    for count in (0, 7, 150_003):
        what = f"{name}x{count}"
        for op, salt in ((ReduceOp.SUM, 1), (ReduceOp.AVG, 2), (ReduceOp.MAX, 3)):
            parts = [inputs(q, count, dtype, salt) for q in range(p)]
            x = make(parts[r])
            got = comm.all_reduce(x, op) if op is not ReduceOp.AVG else comm.all_reduce(x, op, out=make(parts[r] * 0))
            check(f"all_reduce {op.name} {what}", got, fold(op, parts), exact=dtype.kind in "iu" or op is ReduceOp.MAX)
        k = count // p + 1
        parts = [inputs(q, k * p, dtype, 4) for q in range(p)]
        check(f"reduce_scatter {what}", comm.reduce_scatter(make(parts[r])), fold(ReduceOp.SUM, parts)[r * k : (r + 1) * k],
              exact=dtype.kind in "iu", same=False)
        parts = [inputs(q, count, dtype, 5) for q in range(p)]
        check(f"all_gather {what}", comm.all_gather(make(parts[r])), np.concatenate(parts))
        x = make(inputs(r, count, dtype, 6))
        comm.broadcast(x, root=p - 1)
        check(f"broadcast {what}", x, inputs(p - 1, count, dtype, 6))
        x = make(inputs(r, count, dtype, 7))
        check(f"broadcast out= {what}", comm.broadcast(x, root=0, out=make(inputs(r, count, dtype, 7) * 0)),
              inputs(0, count, dtype, 7))
        check(f"broadcast out= leaves x {what}", x, inputs(r, count, dtype, 7), same=False)
big = [np.full(3 << 20, q + 1, np.float32) for q in range(p)]  # 12 MiB: the scratch grows
check("all_reduce grown", comm.all_reduce(make(big[r])), fold(ReduceOp.SUM, big))
work = comm.all_reduce(make(np.ones(8, np.float32)), async_op=True)
check("all_reduce async", work.wait(), np.full(8, p, np.float32))
result = {
    "rank": r, "lib": lib, "cases": cases,
    "device_path": comm._context.device is not None,
    "staged": comm._note_staged.said,
}
comm.close()
print("RESULT " + json.dumps(result), flush=True)
