"""The ops cases (tb_worker_ops.py), then the training scenarios (tb_worker_train.py), in
one torchrun launch: the ranks start (and import torch) once for both.

    python -m torch.distributed.run --standalone --nproc-per-node N tb_worker_both.py OUT_DIR

Outcomes go to OUT_DIR/ops/rank{r}.json and OUT_DIR/train/rank{r}.json, as each worker
alone writes them. The default group is the collectives backend; one gloo group over the
same ranks is the reference for both.
"""

from __future__ import annotations

import datetime
import os
import sys

import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tb_worker_ops import run_cases  # noqa: E402
from tb_worker_train import train_all  # noqa: E402


def main() -> None:
    timeout = datetime.timedelta(seconds=120)
    dist.init_process_group("collectives", timeout=timeout)
    gloo = dist.new_group(backend="gloo", timeout=timeout)
    run_cases(os.path.join(sys.argv[1], "ops"), dist.group.WORLD, gloo, [])
    train_all(os.path.join(sys.argv[1], "train"), dist.group.WORLD, gloo)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
