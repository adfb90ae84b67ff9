"""torch.distributed on CUDA tensors through the ``collectives`` backend on a real GPU
(``-m cuda``): all_reduce (float32, bfloat16, float16), an asynchronous all_reduce issued
on a side stream, all_gather_into_tensor, reduce_scatter_tensor and broadcast, 2 and 4
processes sharing the GPU; the tensors stay on the device (cuda_ipc), nothing is staged
through the host. Skipped without a CUDA device, or where torch is older than the
backend needs (2.13)."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest
from gpu_probe import needs, needs_gpu, run_ranks

pytestmark = [pytest.mark.multiprocess, pytest.mark.cuda]


@needs_gpu
@pytest.mark.parametrize("world_size", [2, 4])
def test_cuda_tensors_stay_on_the_device_through_the_backend(tmp_path: Path, world_size: int) -> None:
    needs("cupy")
    major, minor = (int(part) for part in version("torch").split(".")[:2])
    if (major, minor) < (2, 13):
        pytest.skip(f"the collectives torch backend needs torch >= 2.13 (this is {version('torch')})")
    for result in run_ranks("gpu_torch_backend_worker.py", world_size, str(tmp_path / "rendezvous")):
        failed = [name for name, ok in result["checks"] if not ok]
        assert not failed, f"rank {result['rank']}: {failed}"
        assert not result["staged"], f"rank {result['rank']}: {result['staged']}"
