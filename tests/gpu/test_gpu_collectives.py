"""Device collectives on a real GPU (``-m cuda``): all_reduce (SUM, AVG, MAX), reduce_scatter,
all_gather and broadcast × every dtype (float16 and bfloat16 included) × 2, 3 and 4
processes sharing this host's GPU (one is enough), on torch CUDA tensors and on cupy
arrays. Each case must stay on the device (``cuda_ipc`` chosen by ``init()``, nothing
staged through the host), give the same bits on every rank, and match the rank-order fold
of the inputs: bit for bit for integers and MAX, within rounding for float sums and means.

Skipped where no CUDA device is visible (CI): the ranks run in fresh interpreters
(``tests/gpu/gpu_collectives_worker.py``); this process never initialises CUDA."""

from __future__ import annotations

import pytest
from gpu_probe import needs, needs_gpu, run_ranks

pytestmark = pytest.mark.multiprocess


def _check(results: list[dict]) -> None:
    for rank, result in enumerate(results):
        assert result["device_path"], f"rank {rank}: init() did not choose cuda_ipc"
        assert not result["staged"], f"rank {rank}: a device buffer was staged through the host"
        far = [c[0] for c in result["cases"] if not c[3]]
        assert not far, f"rank {rank}: results far from the reference: {far}"
        inexact = [c[0] for c in result["cases"] if c[4] and not c[2]]
        assert not inexact, f"rank {rank}: results that should be bit-exact are not: {inexact}"
        assert [c[1] for c in result["cases"]] == [c[1] for c in results[0]["cases"]], f"rank {rank} differs from rank 0"


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("world_size", [2, 3, 4])
@pytest.mark.parametrize("lib", ["torch", "cupy"])
def test_every_collective_and_dtype_on_the_device(lib: str, world_size: int) -> None:
    needs("cupy")
    needs(lib)
    _check(run_ranks("gpu_collectives_worker.py", world_size, lib))


def test_the_worker_keeps_working_on_the_host_device() -> None:
    """The same worker on the host implementation (COLLECTIVES_DEVICE=host), so that what the
    GPU run executes is exercised in CI too."""
    _check(run_ranks("gpu_collectives_worker.py", 2, "host", env_extra={"COLLECTIVES_DEVICE": "host"}))
