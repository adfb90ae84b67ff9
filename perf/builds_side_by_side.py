"""Two checkouts of collectives, side by side: the same harness rows, alternating, as ratios.

    python perf/builds_side_by_side.py --base /path/to/older/checkout --rounds 3

For a change that must not slow anything down: every round runs each (collective, world
size, byte size) row once with the base checkout and once with this one, in alternating
order (so drift on a shared machine hits both alike), each through the harness with
``PYTHONPATH`` pointing at its checkout. It prints each row's median time per call
(in-place and out-of-place, microseconds) and the ratio new / base (< 1: faster now).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
COLLECTIVES = ("all_reduce_perf", "all_gather_perf", "broadcast_perf")
SIZES = ("8", "64K", "1M", "64M")


def run_row(checkout: Path, perf: str, np_: int, size: str, iters: int) -> dict[str, float]:
    """One harness row with ``checkout`` first on the path: {placement: us per call}."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        big = size.endswith("M") and int(size[:-1]) >= 16
        args = [sys.executable, "-m", "perf", perf, "--np", str(np_), "-b", size, "-e", size,
                "-n", str(max(5, iters // 20) if big else iters), "-w", "5" if big else "20", "-c", "0", "-J", str(out)]
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        done = subprocess.run(args, cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(args)} in {checkout} failed:\n{done.stdout}\n{done.stderr}")
        result = json.loads(out.read_text())["results"][0]
    return {"out_of_place": result["out_of_place"]["time"], "in_place": result["in_place"]["time"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the older checkout to compare against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--np", dest="nps", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--collectives", nargs="+", default=list(COLLECTIVES))
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument("--iters", type=int, default=200, help="timed calls per row (a twentieth from 16M)")
    args = parser.parse_args(argv)
    builds = {"base": args.base.resolve(), "new": HERE}
    times: dict[tuple[str, int, str, str], dict[str, list[float]]] = {}
    for r in range(args.rounds):
        order = ("base", "new") if r % 2 == 0 else ("new", "base")
        for perf in args.collectives:
            for np_ in args.nps:
                for size in args.sizes:
                    for build in order:
                        row = run_row(builds[build], perf, np_, size, args.iters)
                        for placement, us in row.items():
                            times.setdefault((perf, np_, size, placement), {}).setdefault(build, []).append(us)
        print(f"# round {r + 1} of {args.rounds} done", file=sys.stderr, flush=True)
    print(f"# base {builds['base']}  new {builds['new']}  rounds {args.rounds} (alternating), median us per call")
    print(f"{'collective':<16}{'np':>3}{'size':>6}  {'placement':<13}{'base':>10}{'new':>10}{'new/base':>9}")
    for (perf, np_, size, placement), by_build in times.items():
        base, new = statistics.median(by_build["base"]), statistics.median(by_build["new"])
        print(f"{perf:<16}{np_:>3}{size:>6}  {placement:<13}{base:>10.1f}{new:>10.1f}{new / base:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
