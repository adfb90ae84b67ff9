"""Train a small model with DDP, FSDP2 and FSDP1 on the collectives backend and on gloo.

    python -m torch.distributed.run --standalone --nproc-per-node N tb_worker_train.py OUT_DIR

The default group is the collectives backend; a gloo group over the same ranks trains an
identical copy of each model on identical data. Every rank writes, per scenario, the
largest difference between the two runs' final parameters (and whether they changed at all)
to OUT_DIR/rank{r}.json.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

import collectives.torch_backend  # noqa: F401 - registers the backend

warnings.filterwarnings("ignore")
STEPS = 6


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5))


def batches(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(100 + rank)
    return [(torch.randn(8, 12, generator=g), torch.randn(8, 5, generator=g)) for _ in range(STEPS)]


def train(model: nn.Module, rank: int, step_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor, int], None]) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for i, (x, y) in enumerate(batches(rank)):
        opt.zero_grad()
        step_fn(model, x, y, i)
        opt.step()


def plain_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, i: int) -> None:
    nn.functional.mse_loss(model(x), y).backward()


def full_params(model: nn.Module) -> list[torch.Tensor]:
    out = []
    for p in model.parameters():
        t = p.detach()
        if hasattr(t, "full_tensor"):
            t = t.full_tensor()
        out.append(t.clone())
    return out


def compare(a: list[torch.Tensor], b: list[torch.Tensor], start: list[torch.Tensor]) -> dict[str, Any]:
    diff = max((x - y).abs().max().item() for x, y in zip(a, b))
    moved = max((x - s).abs().max().item() for x, s in zip(a, start))
    return {"max_diff": diff, "moved": moved}


def ddp(ours: Any, gloo: Any, rank: int, **kwargs: Any) -> dict[str, Any]:
    from torch.nn.parallel import DistributedDataParallel as DDP

    hook = kwargs.pop("hook", None)
    step = kwargs.pop("step", plain_step)
    start = [p.detach().clone() for p in make_model().parameters()]
    results = []
    for group in (ours, gloo):
        model = make_model()
        if rank == 1:  # DDP broadcasts rank 0's parameters at construction
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(1.0)
        wrapped = DDP(model, process_group=group, **kwargs)
        if hook is not None:
            wrapped.register_comm_hook(group, hook)
        train(wrapped, rank, step)
        results.append(full_params(wrapped.module))
    return compare(results[0], results[1], start)


def no_sync_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, i: int) -> None:
    with model.no_sync():
        nn.functional.mse_loss(model(x[:4]), y[:4]).backward()
    nn.functional.mse_loss(model(x[4:]), y[4:]).backward()


def fsdp2(ours: Any, gloo: Any, rank: int, size: int, mixed: bool = False) -> dict[str, Any]:
    from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    start = [p.detach().clone() for p in make_model().parameters()]
    results = []
    for group in (ours, gloo):
        mesh = init_device_mesh("cpu", (size,)) if group is ours else DeviceMesh.from_group(group, "cpu")
        model = make_model()
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if mixed else None
        extra = {"mp_policy": policy} if policy is not None else {}
        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh, **extra)
        fully_shard(model, mesh=mesh, **extra)
        train(model, rank, plain_step)
        results.append(full_params(model))
    return compare(results[0], results[1], start)


def fsdp1(ours: Any, gloo: Any, rank: int) -> dict[str, Any]:
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    start = [p.detach().clone() for p in make_model().parameters()]
    results = []
    for group in (ours, gloo):
        model = FSDP(make_model(), process_group=group, device_id=torch.device("cpu"), use_orig_params=True)
        train(model, rank, plain_step)
        with FSDP.summon_full_params(model):
            results.append([p.detach().clone() for p in model.parameters()])
    return compare(results[0], results[1], start)


def train_all(out_dir: str, ours: Any, gloo: Any) -> None:
    """Every scenario on ``ours`` and on ``gloo``; their differences to OUT_DIR/rank{r}.json."""
    rank, size = dist.get_rank(), dist.get_world_size()
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    scenarios: dict[str, Callable[[], dict[str, Any]]] = {
        "ddp": lambda: ddp(ours, gloo, rank),
        "ddp_small_buckets": lambda: ddp(ours, gloo, rank, bucket_cap_mb=0.001),
        "ddp_allreduce_hook": lambda: ddp(ours, gloo, rank, hook=default_hooks.allreduce_hook),
        "ddp_fp16_compress_hook": lambda: ddp(ours, gloo, rank, hook=default_hooks.fp16_compress_hook),
        "ddp_no_sync": lambda: ddp(ours, gloo, rank, step=no_sync_step),
        "ddp_static_graph": lambda: ddp(ours, gloo, rank, static_graph=True),
        "fsdp2": lambda: fsdp2(ours, gloo, rank, size),
        "fsdp2_bf16_params": lambda: fsdp2(ours, gloo, rank, size, mixed=True),
        "fsdp1": lambda: fsdp1(ours, gloo, rank),
    }
    results: dict[str, Any] = {}
    for name, fn in scenarios.items():
        started = time.monotonic()
        try:
            results[name] = fn()
        except Exception:  # noqa: BLE001
            results[name] = {"error": traceback.format_exc()[-3000:]}
        results[name]["seconds"] = time.monotonic() - started
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(results, f)
        dist.barrier(group=gloo)


def main() -> None:
    dist.init_process_group("collectives", timeout=datetime.timedelta(seconds=120))
    train_all(sys.argv[1], dist.group.WORLD, dist.new_group(backend="gloo"))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
