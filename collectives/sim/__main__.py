"""``python -m collectives.sim``: predicted times of our schedules on a modelled machine.

    python -m collectives.sim all_reduce --ranks 4096 --transport nvlink --algo all --sizes 8,1M,64M
    python -m collectives.sim all_gather --ranks 4 --transport tcp --sizes 8,64K,4M --json rows.json

Prints an nccl-tests-style table (size, count, type, algorithm, predicted time, algbw,
busbw) per algorithm and size, with the algorithm the tuner would pick marked; ``--json``
writes the rows as a list of {"collective", "ranks", "size", "algorithm", "time_us"}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from ..config import parse_size
from ..names import ALGORITHMS
from ..tuning import tuner
from ..tuning.profile import current, load
from .cluster import TRANSPORTS, cluster
from .predict import BUS_FACTOR, COLLECTIVES, algorithms, pick, predict


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m collectives.sim", description=__doc__.splitlines()[0])
    parser.add_argument("collective", choices=COLLECTIVES)
    parser.add_argument("--ranks", type=int, required=True, help="world size")
    parser.add_argument("--ranks-per-host", type=int, default=None,
                        help="ranks on each host (default: one host for shm and tcp, 8 for nvlink)")
    parser.add_argument("--transport", choices=TRANSPORTS, default="shm",
                        help="shm or tcp (this machine's, from the profile), or nvlink (8-GPU nodes, 400 Gb/s NICs)")
    parser.add_argument("--profile", default=None, help="cost profile (default COLLECTIVES_TUNE_FILE, else built in)")
    parser.add_argument("--algo", default="auto", help="an algorithm, auto (the tuner's pick) or all")
    parser.add_argument("--sizes", default="8,1M,64M", help="bytes per call, comma-separated (8,64K,1M,64M)")
    parser.add_argument("--cores", type=int, default=None,
                        help="cores per host (shm, tcp): ranks beyond them queue for the cores"
                             " (default: the profile's cores; 0: not modelled)")
    parser.add_argument("--hosts-per-leaf", type=int, default=None, help="hosts under one leaf switch (fat tree)")
    parser.add_argument("--json", default=None, help="write the rows here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    algo = args.algo.lower()
    if algo not in (*ALGORITHMS, "auto", "all"):
        print(f"--algo: {args.algo!r} is not one of {', '.join(ALGORITHMS)}, auto, all", file=sys.stderr)
        return 2
    if args.ranks < 1:
        print("--ranks: must be at least 1", file=sys.stderr)
        return 2
    profile = load(args.profile) if args.profile else current()
    sizes = [parse_size(s, "--sizes") for s in args.sizes.split(",") if s]
    cores = profile.cores if args.cores is None else args.cores  # as the tuner prices: the profile's machine
    c = cluster(args.transport, args.ranks, args.ranks_per_host, profile, cores, args.hosts_per_leaf)
    names = algorithms(args.collective, c, args.transport)
    if algo not in ("auto", "all") and algo not in names:
        print(f"--algo: {algo!r} does not run {args.collective} on this machine (here: {', '.join(names)})",
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    print(f"# {c.describe()}")
    print(f"# {args.collective}, float32, predicted by replaying every rank's schedule (sizes counted, not moved)")
    print(f"# {'size':>12} {'count':>12} {'type':>6} {'algorithm':>12} {'time(us)':>12} {'algbw(GB/s)':>12}"
          f" {'busbw(GB/s)':>12}  tuner")
    rows = []
    for nbytes in sizes:
        times: dict[str, float] = {}
        skipped: list[str] = []
        for name in names:
            try:
                times[name] = predict(args.collective, name, nbytes, c, args.transport, profile)
            except tuner.TooLarge:
                skipped.append(name)
        chosen = pick(args.collective, nbytes, times, c, args.transport, profile) if times else ""
        shown = names if algo == "all" else [chosen if algo == "auto" else algo]
        for name in shown:
            if name not in times:
                print(f"  {nbytes:>12} {'':>12} {'':>6} {name:>12} {'skipped: too many events to replay':>38}")
                continue
            t = times[name]
            algbw = nbytes / t / 1e9 if t > 0 else 0.0
            busbw = algbw * BUS_FACTOR[args.collective](args.ranks)
            mark = "<- picks" if name == chosen else ""
            print(f"  {nbytes:>12} {max(1, nbytes // 4):>12} {'float':>6} {name:>12} {t * 1e6:>12.2f}"
                  f" {algbw:>12.3f} {busbw:>12.3f}  {mark}")
            rows.append({"collective": args.collective, "ranks": args.ranks, "size": nbytes, "algorithm": name,
                         "time_us": t * 1e6})
        if skipped and algo != "all":
            print(f"# {nbytes} B: not replayed (too many events): {', '.join(skipped)}")
    print(f"# simulated in {time.perf_counter() - start:.1f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
