"""all_reduce through ``torch.distributed``: the collectives backend and gloo, side by side.

    python perf/torch_backend_vs_gloo.py                 # 16 MiB float32, 2 ranks
    python perf/torch_backend_vs_gloo.py --np 3 --sizes 1M,16M,64M --iters 20 --rounds 5

Starts ``--np`` ranks with torchrun. In every rank the default group is
``init_process_group("collectives")`` and a second group over the same ranks is gloo; both
all-reduce the same float32 tensor with ``dist.all_reduce`` (synchronous, as a training
loop calls it). Rounds alternate between the backends, so that both see the same machine
state; a round's time is the slowest rank's, and the table shows the median round per
iteration, with the algorithm and bus bandwidth as nccl-tests defines them
(busbw = algbw · 2(n-1)/n). Results are checked against each other once per size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from collectives.config import parse_size  # noqa: E402


def human(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:g} {unit}"
    return f"{nbytes} B"


def rank_main(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    import collectives.torch_backend  # noqa: F401 - registers "collectives"

    dist.init_process_group("collectives")
    rank, world = dist.get_rank(), dist.get_world_size()
    groups = {"collectives": dist.group.WORLD, "gloo": dist.new_group(backend="gloo")}
    gloo = groups["gloo"]
    torch.set_num_threads(1)
    if rank == 0:
        print(f"# torch {torch.__version__}, {world} ranks, all_reduce SUM float32, {args.iters} iterations "
              f"x {args.rounds} rounds per backend, median round")
        print(f"# {'size':>10} {'backend':>12} {'time/iter':>11} {'algbw':>10} {'busbw':>10}")
    for nbytes in [parse_size(s) for s in args.sizes.split(",")]:
        count = nbytes // 4
        x = torch.full((count,), float(rank + 1))
        # correctness once: both backends give the same sum
        check = {}
        for name, group in groups.items():
            t = torch.arange(count, dtype=torch.float32) % 97 + rank
            dist.all_reduce(t, group=group)
            check[name] = t
        if not torch.equal(check["collectives"], check["gloo"]):
            raise SystemExit(f"results differ at {human(nbytes)}")
        times: dict[str, list[float]] = {name: [] for name in groups}
        for name, group in groups.items():  # warm up both
            for _ in range(args.warmup):
                dist.all_reduce(x, group=group)
        for _ in range(args.rounds):
            for name, group in groups.items():
                dist.barrier(group=gloo)
                start = time.perf_counter()
                for _ in range(args.iters):
                    dist.all_reduce(x, group=group)
                elapsed = torch.tensor([(time.perf_counter() - start) / args.iters], dtype=torch.float64)
                dist.all_reduce(elapsed, op=dist.ReduceOp.MAX, group=gloo)
                times[name].append(elapsed.item())
        if rank == 0:
            for name in groups:
                t = statistics.median(times[name])
                algbw = nbytes / t / 1e9
                busbw = algbw * 2 * (world - 1) / world
                print(f"  {human(nbytes):>10} {name:>12} {t * 1e3:>8.2f} ms {algbw:>6.2f} GB/s {busbw:>6.2f} GB/s")
            ours, ref = statistics.median(times["collectives"]), statistics.median(times["gloo"])
            print(f"  {'':>10} {'speedup':>12} {ref / ours:>8.2f}x  (gloo time / collectives time)")
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--np", type=int, default=2, help="ranks (default 2)")
    parser.add_argument("--sizes", default="16M", help="comma-separated message sizes (default 16M)")
    parser.add_argument("--iters", type=int, default=20, help="all_reduce calls per round (default 20)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per backend, alternating (default 5)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per backend and size (default 5)")
    parser.add_argument("--rank-main", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank_main:
        rank_main(args)
        return
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.np}",
           str(Path(__file__).resolve()), "--rank-main", "--sizes", args.sizes, "--iters", str(args.iters),
           "--rounds", str(args.rounds), "--warmup", str(args.warmup)]
    sys.exit(subprocess.call(cmd, env=env, cwd=REPO))


if __name__ == "__main__":
    main()
