"""all_reduce on ranks spread over several hosts: two levels against the flat algorithms.

    python perf/two_levels_vs_flat.py                         # 4 ranks as 2 hosts of 2
    python perf/two_levels_vs_flat.py --np 6 --per-host 2 --sizes 8,64K,1M,16M

Starts ``--np`` ranks with ``collectives-run``; each claims a host identity
(``COLLECTIVES_HOSTNAME=host<rank // per_host>``), so ranks of one "host" talk over shared
memory and the others over TCP, as on real hosts. Rounds alternate between the automatic
choice (two levels: ``algorithm="hierarchical"``) and the flat algorithm the automatic choice
takes without the layout (recursive below 256 KiB or at 2 ranks, ring above); a round's time
is the slowest rank's, and the table shows the median round per call. Results are checked
against each other once per size.
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


def rank_main(args: argparse.Namespace) -> None:
    rank = int(os.environ["COLLECTIVES_RANK"])
    os.environ["COLLECTIVES_HOSTNAME"] = f"host{rank // args.per_host}"
    import numpy as np

    import collectives
    from collectives.algorithms.registry import SMALL_MESSAGE_BYTES

    comm = collectives.init()
    world = comm.size
    if rank == 0:
        print(f"# {world} ranks as {world // args.per_host} hosts of {args.per_host}, all_reduce SUM float32, "
              f"{args.iters} calls x {args.rounds} rounds each, median round")
        print(f"# {'size':>10} {'flat':>10} {'time':>11} {'two levels':>11} {'speedup':>8}")
    for nbytes in [parse_size(s) for s in args.sizes.split(",")]:
        x = np.ones(max(nbytes // 4, 1), np.float32)
        out = np.empty_like(x)  # out of place: x stays as it is, call after call
        flat = "recursive" if nbytes < SMALL_MESSAGE_BYTES or world <= 2 else "ring"
        check = {}
        for name, algorithm in (("flat", flat), ("two", "hierarchical")):
            y = np.arange(x.size, dtype=np.float32) % 97 + rank
            comm.all_reduce(y, algorithm=algorithm)
            check[name] = y
        if not np.array_equal(check["flat"], check["two"]):
            raise SystemExit(f"results differ at {nbytes} bytes")
        times: dict[str, list[float]] = {"flat": [], "two": []}
        for _ in range(args.rounds):
            for name, algorithm in (("flat", flat), ("two", "hierarchical")):
                comm.barrier()
                start = time.perf_counter()
                for _ in range(args.iters):
                    comm.all_reduce(x, out=out, algorithm=algorithm)
                elapsed = np.array([(time.perf_counter() - start) / args.iters])
                comm.all_reduce(elapsed, op="max")
                times[name].append(float(elapsed[0]))
        if rank == 0:
            f, t = statistics.median(times["flat"]), statistics.median(times["two"])
            print(f"  {nbytes:>10} {flat:>10} {f * 1e6:>8.1f} us {t * 1e6:>8.1f} us {f / t:>7.2f}x", flush=True)
    comm.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--np", type=int, default=4, help="ranks (default 4)")
    parser.add_argument("--per-host", type=int, default=2, help="ranks per emulated host (default 2)")
    parser.add_argument("--sizes", default="8,64K,1M,4M,16M", help="comma-separated message sizes")
    parser.add_argument("--iters", type=int, default=20, help="all_reduce calls per round (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per algorithm, alternating (default 3)")
    parser.add_argument("--rank-main", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.per_host < 2 or args.np % args.per_host or args.np // args.per_host < 2:
        parser.error("--np must be a multiple (at least 2) of --per-host, and --per-host at least 2")
    if args.rank_main:
        rank_main(args)
        return
    env = {k: v for k, v in os.environ.items() if k != "COLLECTIVES_HOSTNAME"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "collectives.run", "-n", str(args.np), str(Path(__file__).resolve()), "--rank-main",
           "--np", str(args.np), "--per-host", str(args.per_host), "--sizes", args.sizes, "--iters", str(args.iters),
           "--rounds", str(args.rounds)]
    sys.exit(subprocess.call(cmd, env=env, cwd=REPO))


if __name__ == "__main__":
    main()
