"""Run every case of tb_cases.py on this rank (started by torchrun); write the outcome as JSON.

    python -m torch.distributed.run --standalone --nproc-per-node N tb_worker_ops.py OUT_DIR [CASE ...]

The default group is the collectives backend (``init_process_group("collectives")``, env://
through torchrun's store); a gloo group over the same ranks is the reference.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
import traceback
import warnings
from typing import Any

import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import collectives.torch_backend  # noqa: E402,F401 - registers the backend
from tb_cases import CASES, Ctx  # noqa: E402

warnings.filterwarnings("ignore")


def run_cases(out_dir: str, ours: Any, gloo: Any, only: list[str]) -> None:
    """Every case (or those in ``only``) on ``ours`` against ``gloo``; outcomes to OUT_DIR/rank{r}.json."""
    rank, size = dist.get_rank(), dist.get_world_size()
    results: dict[str, dict[str, object]] = {}
    path = os.path.join(out_dir, f"rank{rank}.json")
    for name, fn in CASES.items():
        if only and name not in only:
            continue
        ctx = Ctx(ours, gloo, rank, size)
        started = time.monotonic()
        try:
            fn(ctx)
        except Exception:  # noqa: BLE001 - reported per case
            ctx.problems.append("case raised:\n" + traceback.format_exc()[-3000:])
        results[name] = {"problems": ctx.problems, "checks": ctx.checks, "seconds": time.monotonic() - started}
        with open(path + ".tmp", "w") as f:
            json.dump(results, f)
        os.replace(path + ".tmp", path)
        # a gloo barrier keeps the ranks in step between cases even if a case failed on one rank
        dist.barrier(group=gloo)


def main() -> None:
    timeout = datetime.timedelta(seconds=float(os.environ.get("TB_TIMEOUT", "60")))
    dist.init_process_group("collectives", timeout=timeout)
    run_cases(sys.argv[1], dist.group.WORLD, dist.new_group(backend="gloo", timeout=timeout), sys.argv[2:])
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
