"""Device buffers staged through host memory on a real GPU (COLLECTIVES_DEVICE=off: the
path where cuda_ipc does not apply): torch CUDA tensors and cupy arrays through every
collective, between 2, 3 and 4 processes sharing the machine's GPUs (one GPU is enough).

Skipped where no CUDA device is visible (CI, most sessions): the check runs in a child
process, so this process never initialises CUDA (a forked or later-spawned rank could not
use it then). Each world is started by ``collectives-run``, a fresh interpreter per rank.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from collectives.testing.devices import cuda_devices as _cuda_devices

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.multiprocess, pytest.mark.cuda]




needs_gpu = pytest.mark.skipif(_cuda_devices() == 0, reason="no CUDA device visible (torch.cuda.is_available() is False)")

SCRIPT = """
import sys
import numpy as np
import collectives

lib = sys.argv[1]
comm = collectives.init()
r, p = comm.rank, comm.size
if lib == "torch":
    import torch
    device = torch.device("cuda", r % torch.cuda.device_count())
    torch.cuda.set_device(device)
    def make(values, dtype="float32"):
        return torch.as_tensor(np.asarray(values, dtype=dtype), device=device)
    def host(a):
        return a.cpu().numpy()
    is_device = lambda a: a.is_cuda
else:
    import cupy
    cupy.cuda.Device(r % cupy.cuda.runtime.getDeviceCount()).use()
    make = lambda values, dtype="float32": cupy.asarray(np.asarray(values, dtype=dtype))
    host = cupy.asnumpy
    is_device = lambda a: isinstance(a, cupy.ndarray)

def vals(n, rank=r):
    return np.arange(n, dtype=np.float64) * (rank + 1) + rank

x = make(vals(1 << 20))
assert comm.all_reduce(x) is x
assert np.array_equal(host(x), sum(vals(1 << 20, q) for q in range(p)).astype(np.float32))
rs = comm.reduce_scatter(make(vals(4 * p)))
assert is_device(rs) and np.array_equal(host(rs), sum(vals(4 * p, q) for q in range(p))[4 * r : 4 * r + 4])
ag = comm.all_gather(make(vals(3), "int64"))
assert is_device(ag) and host(ag).tolist() == np.concatenate([vals(3, q) for q in range(p)]).tolist()
b = make(vals(5))
comm.broadcast(b, root=p - 1)
assert host(b).tolist() == vals(5, p - 1).tolist()
half = make(vals(37) / 3, "float16")
comm.all_reduce(half)
on_host = np.asarray(vals(37) / 3, np.float16)
comm.all_reduce(on_host)  # the same inputs as host arrays: the same bits
assert host(half).tobytes() == on_host.tobytes()
work = comm.all_reduce(make(np.ones(8)), async_op=True)
assert host(work.wait()).tolist() == [float(p)] * 8
comm.barrier()
print(f"rank {r}: {lib} staging ok")
"""


@needs_gpu
@pytest.mark.parametrize("world_size", [2, 3, 4])
@pytest.mark.parametrize("lib", ["torch", "cupy"])
def test_device_buffers_through_every_collective_on_a_gpu(tmp_path: Path, lib: str, world_size: int) -> None:
    if importlib.util.find_spec(lib) is None:
        pytest.skip(f"{lib} is not installed")
    script = tmp_path / "staging.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTIVES_")}
    env["PYTHONPATH"] = str(REPO)
    env["COLLECTIVES_DEVICE"] = "off"  # staging itself; tests/gpu covers the device path (cuda_ipc)
    done = subprocess.run(
        [sys.executable, "-m", "collectives.run", "-n", str(world_size), str(script), lib],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(f"{lib} staging ok") == world_size, done.stdout
