"""DDP, FSDP2 (fully_shard) and FSDP1 train the same small model on the collectives backend
and on gloo, under torchrun with 2 and 3 ranks; final parameters must agree within 1e-5.
The launch per world size (the ``launched`` fixture) runs the ops cases of test_torch_ops.py
first."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.multiprocess
WORLDS = [2, 3]
SCENARIOS = [
    "ddp",
    "ddp_small_buckets",
    "ddp_allreduce_hook",
    "ddp_fp16_compress_hook",
    "ddp_no_sync",
    "ddp_static_graph",
    "fsdp2",
    "fsdp2_bf16_params",
    "fsdp1",
]
TOLERANCE = 1e-5
# fp16-compressed gradients are summed in fp16; with 3 ranks the summation order (ours vs
# gloo's ring) changes the last fp16 bit, which the optimizer carries into the parameters
FP16_TOLERANCE = 1e-4


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_training_matches_gloo(launched, world: int, scenario: str) -> None:
    per_rank, launch_output = launched(world, "train")
    tolerance = FP16_TOLERANCE if "fp16" in scenario else TOLERANCE
    for rank, results in enumerate(per_rank):
        result = results.get(scenario)
        assert result is not None, f"rank {rank}: {scenario} did not run\n{launch_output}"
        assert "error" not in result, f"rank {rank}: {result['error']}"
        assert result["moved"] > 1e-3, f"rank {rank}: the parameters did not change ({result})"
        assert result["max_diff"] <= tolerance, f"rank {rank}: differs from gloo by {result['max_diff']:.3g}"
