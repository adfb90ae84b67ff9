"""Issue 18's targets, measured: repeated harness runs against MPICH (and gloo over TCP), medians.

    python perf/targets.py --rounds 3                        # every group below
    python perf/targets.py --rounds 5 --groups small2,small4 # some of them
    python perf/targets.py --rounds 3 --groups others2,others4,otherslarge2,otherslarge4  # the rooted ones, all-to-all
    python perf/targets.py --rounds 3 --groups p2p2,p2p4,p2plarge2,p2plarge4  # sendrecv_perf, hypercube_perf

Each group is one or more harness invocations (``python -m perf <coll>_perf --np N ... --vs
PEER --json``); every round runs every invocation once, in an order that alternates from
round to round so that drift on a shared machine hits all alike. For each cell (collective,
ranks, size) it prints the median over rounds of the harness's own ratio column (the peer's
time over ours, out-of-place and in-place added: > 1, we are faster), the rounds' range, and
whether the median meets the target the group states.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
FOUR = ("all_reduce", "all_gather", "reduce_scatter", "broadcast")
OTHERS = ("reduce", "alltoall", "gather", "scatter")  # the "every collective": the harness's other rows
P2P = ("sendrecv", "hypercube")  # point to point: our harness backend runs them by blocking send and recv


@dataclass(frozen=True)
class Group:
    """Harness runs of some collectives at one world size, and the ratio their cells must reach."""

    name: str
    collectives: tuple[str, ...]
    ranks: int
    sizes: tuple[str, str, str]  # -b, -e, -f
    peer: str
    target: float  # the least median ratio (peer time / ours) that meets the target
    iters: int
    transport: str = "shm"
    env: tuple[tuple[str, str], ...] = ()


GROUPS = {g.name: g for g in [
    Group("small2", FOUR, 2, ("8", "1K", "2"), "mpi", 1 / 1.2, 200),
    Group("small4", FOUR, 4, ("8", "1K", "2"), "mpi", 1.0, 100),
    Group("barrier", ("barrier",), 2, ("0", "0", "1"), "mpi", 1 / 1.5, 2000),
    Group("barrier4", ("barrier",), 4, ("0", "0", "1"), "mpi", 1 / 1.5, 1000),
    Group("large2", FOUR, 2, ("64K", "64M", "4"), "mpi", 1.0, 20),
    Group("large4", FOUR, 4, ("64K", "64M", "4"), "mpi", 1.0, 20),
    Group("others2", OTHERS, 2, ("8", "1K", "2"), "mpi", 1 / 1.2, 200),
    Group("others4", OTHERS, 4, ("8", "1K", "2"), "mpi", 1.0, 100),
    Group("otherslarge2", OTHERS, 2, ("64K", "64M", "4"), "mpi", 1.0, 20),
    Group("otherslarge4", OTHERS, 4, ("64K", "64M", "4"), "mpi", 1.0, 20),
    Group("p2p2", P2P, 2, ("8", "1K", "2"), "mpi", 1 / 1.2, 200),
    Group("p2p4", P2P, 4, ("8", "1K", "2"), "mpi", 1.0, 100),
    Group("p2plarge2", P2P, 2, ("64K", "64M", "4"), "mpi", 1.0, 20),
    Group("p2plarge4", P2P, 4, ("64K", "64M", "4"), "mpi", 1.0, 20),
    Group("tcp2", ("all_reduce",), 2, ("1M", "64M", "2"), "gloo", 1.5, 20, "tcp"),
    Group("np8", FOUR, 8, ("8", "64M", "8"), "mpi", 1.0, 20),
    # MPICH made to yield the core at every poll of its busy wait (MPIR_CVAR_POLLS_BEFORE_YIELD,
    # 1000 polls by default): its setting for hosts with more ranks than cores.
    Group("np8yield", FOUR, 8, ("8", "64M", "8"), "mpi", 1.0, 20, env=(("MPIR_CVAR_POLLS_BEFORE_YIELD", "1"),)),
]}


def run_once(group: Group, collective: str, keep: list[dict] | None = None) -> dict[int, float]:
    """One harness invocation: {size: ratio} for the group's peer; its rows (both libraries' µs out
    of place and in place) appended to ``keep`` where given."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.json"
        b, e, f = group.sizes
        args = [sys.executable, "-m", "perf", f"{collective}_perf", "--np", str(group.ranks), "-b", b, "-e", e,
                "-f", f, "-n", str(group.iters), "-c", "0", "--vs", group.peer, "--transport", group.transport,
                "--json", str(out), "--progress", "off"]
        done = subprocess.run(args, cwd=HERE, env={**os.environ, **dict(group.env)}, capture_output=True, text=True,
                              timeout=900)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        rows = json.loads(out.read_text())["results"]
    if keep is not None:
        keep.append({"group": group.name, "collective": collective, "rows": [
            {"size": int(r["size"]), "ours": [r["out_of_place"]["time"], r["in_place"]["time"]],
             "peer": [r["peers"][group.peer]["out_of_place"]["time"], r["peers"][group.peer]["in_place"]["time"]],
             "ratio": r["peers"][group.peer]["ratio"]} for r in rows if r.get("peers", {}).get(group.peer)]})
    return cells(rows, group.peer, collective)


def cells(rows: list[dict], peer: str, collective: str) -> dict[int, float]:
    """{size: ratio} of a harness run's rows that time a call: a data collective's row of 0 bytes
    (sizes that trim to no element at this world size, e.g. a 4-rank scatter of 8 B) times two
    empty loops, neither library calling anything, so it is left out; a barrier's 0 B is its call."""
    return {int(r["size"]): r["peers"][peer]["ratio"] for r in rows
            if r.get("peers", {}).get(peer) and (int(r["size"]) > 0 or collective == "barrier")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--groups", default=",".join(GROUPS), help=f"some of {','.join(GROUPS)}")
    parser.add_argument("--json", default="", help="keep every run's rows (both libraries' µs) here")
    args = parser.parse_args(argv)
    keep: list[dict] | None = [] if args.json else None
    runs = [(GROUPS[g], c) for g in args.groups.split(",") for c in GROUPS[g].collectives]
    ratios: dict[tuple[str, str, int], list[float]] = {}
    for round_ in range(args.rounds):
        for group, collective in runs if round_ % 2 == 0 else runs[::-1]:
            for size, ratio in run_once(group, collective, keep).items():
                ratios.setdefault((group.name, collective, size), []).append(ratio)
            print(f"# round {round_ + 1}: {group.name} {collective} done", file=sys.stderr, flush=True)
    print(f"# median over {args.rounds} rounds of the harness ratio (peer time / ours; > 1: we are faster)")
    print(f"{'group':<9} {'collective':<15} {'size':>10} {'median':>7} {'range':>13} {'target':>7}  met")
    for (name, collective, size), values in ratios.items():
        group = GROUPS[name]
        median = statistics.median(values)
        met = "yes" if median >= group.target else "NO"
        print(f"{name:<9} {collective:<15} {size:>10} {median:>7.2f} {min(values):>6.2f}-{max(values):<6.2f} "
              f"{group.target:>7.2f}  {met}")
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": sys.argv[1:], "runs": keep}, indent=1))


if __name__ == "__main__":
    main()
