"""The device engine's protocol (``engines/device_direct.py`` over ``transports/cuda_ipc.py``)
between real processes, on the host implementation of the device primitives
(``COLLECTIVES_DEVICE=host``): every collective × dtype (float16 and bfloat16 included) ×
one-shot and two-shot sizes × 2, 3 and 4 ranks, each result bitwise equal on every rank
and to the rank-order fold it is defined as. The host streams run asynchronously, so a
missing event wait in the protocol shows here as wrong data."""

from __future__ import annotations

import hashlib

import ml_dtypes
import numpy as np
import pytest

from collectives import ReduceOp
from collectives.engines.device_direct import ONE_SHOT_BYTES
from collectives.errors import CollectiveTimeoutError, InvalidArgumentError
from collectives.ops import finalize, reduce_pair
from collectives.testing import run_world

pytestmark = pytest.mark.multiprocess

DTYPES = [np.dtype(d) for d in (np.float16, ml_dtypes.bfloat16, np.float32, np.float64, np.int32, np.int64)]
COUNTS = [0, 7, (ONE_SHOT_BYTES // 2) + 3]  # the last is two-shot for every dtype but one-shot for none


def _input(rank: int, count: int, dtype: np.dtype, salt: int) -> np.ndarray:
    rng = np.random.default_rng([rank, count, salt, dtype.itemsize, dtype.kind == "f"])
    if dtype.kind in "iu":
        return rng.integers(-50, 50, count).astype(dtype)
    return (rng.standard_normal(count) * 3).astype(dtype)


def _fold(op: ReduceOp, parts: list[np.ndarray], world: int) -> np.ndarray:
    """What the device collectives are defined to give: rank 0 op rank 1 op ... in the dtype."""
    acc = parts[0].copy()
    for part in parts[1:]:
        reduce_pair(op, acc, part, acc)
    finalize(op, acc, world)
    return acc


def _digest(a: np.ndarray) -> str:
    return hashlib.sha1(a.tobytes()).hexdigest()


def _every_collective(comm) -> list[tuple[str, str, bool]]:
    """(what, digest of my result, whether it equals the reference bit for bit)."""
    device = comm._context.device.device
    p, r = comm.size, comm.rank
    results = []
    for dtype in DTYPES:
        for count in COUNTS:
            what = f"{dtype.name}×{count}"
            for op, salt in ((ReduceOp.SUM, 1), (ReduceOp.AVG, 2), (ReduceOp.MAX, 3)):
                parts = [_input(q, count, dtype, salt) for q in range(p)]
                x = device.array(parts[r])
                if op is ReduceOp.AVG:  # out given, x left as it was
                    out = comm.all_reduce(x, op, out=device.empty(count, dtype))
                    assert x.get().tobytes() == parts[r].tobytes(), "all_reduce with out= changed x"
                else:
                    out = comm.all_reduce(x, op)
                got = out.get()
                results.append((f"all_reduce {op.name} {what}", _digest(got), got.tobytes() == _fold(op, parts, p).tobytes()))
            k = count // p + 1
            parts = [_input(q, k * p, dtype, 4) for q in range(p)]
            got = comm.reduce_scatter(device.array(parts[r]), op=ReduceOp.SUM).get()
            want = _fold(ReduceOp.SUM, parts, p)[r * k : (r + 1) * k]
            results.append((f"reduce_scatter {what}", "", got.tobytes() == want.tobytes()))
            parts = [_input(q, count, dtype, 5) for q in range(p)]
            got = comm.all_gather(device.array(parts[r])).get()
            results.append((f"all_gather {what}", _digest(got), got.tobytes() == np.concatenate(parts).tobytes()))
            root = p - 1
            x = device.array(_input(r, count, dtype, 6))
            comm.broadcast(x, root=root)
            got = x.get()
            results.append((f"broadcast {what}", _digest(got), got.tobytes() == _input(root, count, dtype, 6).tobytes()))
            x = device.array(_input(r, count, dtype, 7))  # into out: x read on the root only, left as it was
            got = comm.broadcast(x, root=0, out=device.empty(count, dtype)).get()
            results.append((f"broadcast out= {what}", _digest(got), got.tobytes() == _input(0, count, dtype, 7).tobytes()
                            and x.get().tobytes() == _input(r, count, dtype, 7).tobytes()))
    return results


@pytest.mark.parametrize("size", [2, 3, 4])
def test_every_collective_and_dtype_gives_the_same_bits_on_every_rank(size):
    results = run_world(_every_collective, size, "shm", timeout=240, device="host")
    for r, mine in enumerate(results):
        wrong = [what for what, _, ok in mine if not ok]
        assert not wrong, f"rank {r} of {size}: wrong results for {wrong}"
        assert [d for _, d, _ in mine] == [d for _, d, _ in results[0]], f"rank {r} differs from rank 0"


def _the_rest(comm) -> dict[str, object]:
    device = comm._context.device.device
    r = comm.rank
    seen: dict[str, object] = {}
    work = comm.all_reduce(device.array(np.full(5, r + 1, np.float32)), async_op=True)
    seen["async"] = work.wait().get().tolist()
    host = np.full(3, r + 1.0)
    comm.all_reduce(host)  # host arrays keep the host path on the same communicator
    seen["host"] = host.tolist()
    try:
        comm.all_reduce(device.array(np.ones(4, np.float32)), out=device.empty(4, np.float64))
    except InvalidArgumentError as exc:
        seen["wrong out"] = str(exc)
    try:
        comm.reduce_scatter(device.array(np.ones(5, np.float32)))
    except InvalidArgumentError as exc:
        seen["not a multiple"] = str(exc)
    big = device.array(np.full(3 << 20, r, np.uint8))  # grows every rank's scratch past its first size
    seen["grown"] = int(comm.all_reduce(big, "max").get().min())
    return seen


def test_async_calls_host_arrays_wrong_outputs_and_growth_on_the_device_path():
    results = run_world(_the_rest, 2, "shm", timeout=120, device="host")
    for seen in results:
        assert seen["async"] == [3.0] * 5
        assert seen["host"] == [3.0] * 3
        assert "out: dtype float64 differs from x's float32" in str(seen["wrong out"])
        assert "not a multiple of the world size 2" in str(seen["not a multiple"])
        assert seen["grown"] == 1


def test_a_rank_that_never_calls_times_the_device_collective_out_by_name(arrivals):
    def fn(comm) -> str:
        device = comm._context.device.device
        if comm.rank == 1:
            arrivals.wait(1)  # alive, never calling, until rank 0's wait for its flag timed out
            return ""
        comm.timeout = 0.5
        try:
            comm.all_reduce(device.array(np.ones(4, np.float32)))
        except CollectiveTimeoutError as exc:
            return f"{exc} | ranks {exc.ranks}"
        finally:
            arrivals.arrive()
        return "no timeout"

    said = run_world(fn, 2, "shm", timeout=60, device="host")[0]
    assert "all_reduce" in said and "ranks [1]" in said, said
