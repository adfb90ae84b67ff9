"""The CUDA device primitives (``transports/device_cuda.py``) on a real GPU (``-m cuda``),
two processes sharing it: torch and cupy buffers (and refusals by name), allocation and
copies on the caller's stream, IPC memory handles opened in the peer, an interprocess event
that orders the peer's read after a slow producer's write, and reductions (with the
average) in every dtype, bfloat16 and float16 included.

Skipped where no CUDA device is visible (CI); the ranks run in fresh interpreters
(``tests/gpu/gpu_primitives_worker.py``), so this process never initialises CUDA."""

from __future__ import annotations

import pytest
from gpu_probe import needs, needs_gpu, run_ranks

pytestmark = [pytest.mark.multiprocess, pytest.mark.cuda]


@needs_gpu
def test_every_primitive_on_the_device() -> None:
    needs("cupy")
    for result in run_ranks("gpu_primitives_worker.py", 2):
        failed = [f"{name} ({detail})" for name, ok, detail in result["checks"] if not ok]
        assert not failed, f"rank {result['rank']}: {failed}"
        assert len(result["checks"]) > 40
