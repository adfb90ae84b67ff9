"""Predictions against measurements: the cost model's error at the world sizes we can run.

    python perf/validate_model.py --tune                    # fit a profile now, then validate it and the built-in one
    python perf/validate_model.py --profile my.json --ranks 2,4 --transports tcp
    python perf/validate_model.py --hosts 2 --netns --transports tcp   # the two hosts as network namespaces (root)
    python perf/validate_model.py --from docs/perf/validation_calib4.json  # re-predict saved measurements, no measuring
    python perf/validate_model.py --from B.json,C.json --profile old=OLD.json,new=NEW.json --table

Measures our collectives on this machine (``collectives.timing``: the fastest of a few
interleaved batches per call, slowest rank) for every world size, transport, algorithm
and size asked, predicts each with the simulator (``collectives.sim``: this machine's
cores, so that ranks beyond them share a core) under each profile, and prints a table of
measured and predicted µs and the error; ``--json`` keeps the rows, ``--plot`` draws
predicted against measured. ``--hosts 2`` also runs two hosts of p/2 ranks (host identities
on this machine: shared memory within, TCP across); with ``--netns`` the two hosts are
network namespaces joined by a veth pair (``collectives.testing.netns``: each host's ranks
in its namespace, TCP across over the pair's addresses, the store on the first host's
address; rows say ``"netns": true``, and only they are priced by a profile's ``tcp_hosts`` link:
host identities talk over loopback, ``Profile.over_loopback``). ``--from FILE`` measures nothing: it
predicts the rows of a saved ``--json`` again, with the saved profiles (or ``--profile``'s)
and the current model, so a model change is scored against the same measurements.
Each measured row also keeps ``outside_cores``: the cores' worth of CPU work outside the job
that ran while its case was timed (``collectives.timing.measure_outside``; the file's
``outside`` names the counter), so that a row measured beside other work can be set aside
(``perf/disturbed.py``); files saved before it have none and stay readable.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from typing import Any

from collectives.config import parse_size
from collectives.sim.cluster import cluster
from collectives.sim.predict import predict
from collectives.testing.netns import Host, two_hosts
from collectives.timing import machine_cpu, measure_outside
from collectives.tuning.profile import DEFAULT_FILE, Profile, load

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script
from perf.disturbed import FIELD as OUTSIDE  # noqa: E402
from perf.disturbed import THRESHOLD  # noqa: E402
from perf.repeats import agreement  # noqa: E402

ALGORITHMS = {"shm": ("ring", "tree", "recursive", "direct"), "tcp": ("ring", "tree", "recursive")}


def run(args: argparse.Namespace, profiles: dict[str, Profile],
        places: Sequence[Host] | None = None) -> list[dict[str, Any]]:
    """Measure and predict every case; the hosts of the two-host layouts are ``places``'
    namespaces when given, else host identities."""
    rows: list[dict[str, Any]] = []
    cores = args.cores or os.cpu_count() or 1
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    for transport in args.transports.split(","):
        for p in (int(r) for r in args.ranks.split(",")):
            layouts: list[int | None] = [None] + ([p // args.hosts] if args.hosts > 1 and p % args.hosts == 0
                                                  and p // args.hosts > 1 and transport == "tcp" else [])
            for per_host in layouts:
                algos = ALGORITHMS[transport] if per_host is None else ("ring", "tree", "recursive")
                cases = [(c, n, a) for c in args.collectives.split(",") for a in algos for n in sizes
                         if not (a == "direct" and c not in ("all_reduce", "reduce_scatter", "all_gather", "broadcast"))]
                hosts = [places[r // per_host].name if places else f"h{r // per_host}" for r in range(p)] \
                    if per_host else None
                times, outside = measure_outside(cases, p, "auto" if hosts else transport, rounds=args.rounds,
                                                 hosts=hosts, repeats=args.repeats, netns=places if hosts else None)
                for (collective, n, a), ts, cores_outside in zip(cases, times, outside):
                    row: dict[str, Any] = {"transport": transport, "ranks": p, "ranks_per_host": per_host or p,
                                           "collective": collective, "algorithm": a, "size": n,
                                           "measured_us": statistics.median(ts) * 1e6}
                    if per_host and places:
                        row["netns"] = True
                    if len(ts) > 1:
                        row["repeats_us"] = [round(t * 1e6, 2) for t in ts]
                    if cores_outside is not None:
                        row[OUTSIDE] = round(cores_outside, 3)
                    row = repredict([row], profiles, cores)[0]
                    rows.append(row)
                    print(_line(row, profiles), flush=True)
    return rows


def repredict(rows: list[dict[str, Any]], profiles: dict[str, Profile], cores: int) -> list[dict[str, Any]]:
    """Saved rows with every profile's prediction made again by the current model."""
    out = []
    for saved in rows:
        row = {k: v for k, v in saved.items() if not k.endswith("_us") or k in ("measured_us", "repeats_us")}
        p, per_host = row["ranks"], row["ranks_per_host"]
        host_cores = max(1, cores * per_host // p)  # hosts on this machine share its cores
        for name, profile in profiles.items():  # all of them: a host's ranks use the cores the other's leave
            if not row.get("netns"):
                profile = profile.over_loopback()  # host identities: loopback between them, not tcp_hosts's link
            c = cluster(row["transport"], p, per_host if per_host < p else None, profile, host_cores,
                        shared_cores=True)
            row[f"{name}_us"] = predict(row["collective"], row["algorithm"], row["size"], c, row["transport"],
                                        profile) * 1e6
        out.append(row)
    return out


def _line(row: dict[str, Any], profiles: Iterable[str]) -> str:
    text = (f"  {row['transport']:<4} {row['ranks']:>2} ({row['ranks_per_host']:>2}/host) {row['collective']:<11}"
            f" {row['algorithm']:<10} {row['size']:>9} B  measured {row['measured_us']:>10.1f}")
    for name in profiles:
        error = (row[f"{name}_us"] - row["measured_us"]) / row["measured_us"] * 100
        text += f"  {name} {row[f'{name}_us']:>10.1f} ({error:+5.0f} %)"
    if OUTSIDE in row:
        text += f"  outside {row[OUTSIDE]:.2f} cores"
    return text


def relative_errors(rows: list[dict[str, Any]], name: str) -> list[float]:
    """Each row's |predicted - measured| / measured under the profile ``name``."""
    return [abs(r[f"{name}_us"] - r["measured_us"]) / r["measured_us"] for r in rows]


def count_within(rows: list[dict[str, Any]], name: str) -> int:
    """How many rows the profile ``name`` predicts within 25 % of the measurement (a run's score)."""
    return sum(e <= 0.25 for e in relative_errors(rows, name))


def summary(rows: list[dict[str, Any]], profiles: Iterable[str]) -> list[str]:
    repeated = [r["repeats_us"] for r in rows if "repeats_us" in r]
    lines = [agreement(repeated, "cases")] if repeated else []
    outside = sorted(r[OUTSIDE] for r in rows if OUTSIDE in r)
    if outside:
        lines.append(f"# work outside the job: median {statistics.median(outside):.2f} cores, max {outside[-1]:.2f};"
                     f" {sum(o > THRESHOLD for o in outside)} of {len(rows)} rows above {THRESHOLD:g}"
                     " (disturbed: perf/disturbed.py)")
    for name in profiles:
        errors = sorted(relative_errors(rows, name))
        median = errors[len(errors) // 2] if errors else float("nan")
        lines.append(f"# {name}: {count_within(rows, name)} of {len(rows)} predictions within 25 % of the measurement; "
                     f"median |error| {median * 100:.0f} %")
    return lines


def table(rows: list[dict[str, Any]], profiles: Iterable[str]) -> list[str]:
    """Markdown tables of each profile's median error and count within 25 %, by layout and by algorithm."""
    profiles = list(profiles)
    def cells(group: list[dict[str, Any]]) -> str:
        out = []
        for name in profiles:
            errors = sorted((r[f"{name}_us"] - r["measured_us"]) / r["measured_us"] for r in group)
            out.append(f"{errors[len(errors) // 2] * 100:+.0f} % | {sum(abs(e) <= 0.25 for e in errors)}")
        return " | ".join(out)

    heads = "".join(f" {n}: median error | within 25 % |" for n in profiles)
    lines = ["| transport | ranks | hosts | cases |" + heads, "|---|---|---|---|" + "---|---|" * len(profiles)]
    def layout(r: dict[str, Any]) -> tuple[str, int, int]:
        return r["transport"], r["ranks"], r["ranks"] // r["ranks_per_host"]

    for transport, p, hosts in sorted({layout(r) for r in rows}):
        group = [r for r in rows if layout(r) == (transport, p, hosts)]
        lines.append(f"| {transport} | {p} | {hosts} | {len(group)} | {cells(group)} |")
    lines.append(f"| **all** | | | **{len(rows)}** | {cells(rows)} |")
    lines += ["", "| algorithm | cases |" + heads, "|---|---|" + "---|---|" * len(profiles)]
    for algorithm in sorted({r["algorithm"] for r in rows}):
        group = [r for r in rows if r["algorithm"] == algorithm]
        lines.append(f"| {algorithm} | {len(group)} | {cells(group)} |")
    return lines


def plot(rows: list[dict[str, Any]], profiles: Iterable[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=72)
    def layout(r: dict[str, Any]) -> str:
        if r["ranks_per_host"] >= r["ranks"]:
            return r["transport"]
        return f"{r['transport']}, two hosts" + (" (netns)" if r.get("netns") else "")

    markers = {"shm": "o", "tcp": "s", "tcp, two hosts": "^", "tcp, two hosts (netns)": "D"}
    for k, name in enumerate(profiles):
        for j, (kind, marker) in enumerate(markers.items()):
            pts = [(r["measured_us"], r[f"{name}_us"]) for r in rows if layout(r) == kind]
            if pts:
                ax.scatter(*zip(*pts), s=12, marker=marker, alpha=0.7, label=f"{kind}, {name} profile",
                           color=f"C{len(markers) * k + j}")
    low = min(min(r["measured_us"], *(r[f"{n}_us"] for n in profiles)) for r in rows)
    high = max(max(r["measured_us"], *(r[f"{n}_us"] for n in profiles)) for r in rows)
    ax.plot([low, high], [low, high], "k-", lw=0.8)
    ax.plot([low, high], [low * 1.25, high * 1.25], "k:", lw=0.6)
    ax.plot([low, high], [low * 0.75, high * 0.75], "k:", lw=0.6, label="±25 %")
    ax.set(xscale="log", yscale="log", xlabel="measured µs per call", ylabel="predicted µs per call",
           title="cost model: predicted against measured")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None, help="a profile to validate (besides --tune's)")
    parser.add_argument("--from", dest="source", default=None,
                        help="predict the measurements saved by --json again (the current model), measuring nothing")
    parser.add_argument("--tune", action="store_true", help="fit a profile on this machine first (collectives-tune)")
    parser.add_argument("--ranks", default="2,3,4,8")
    parser.add_argument("--transports", default="shm,tcp")
    parser.add_argument("--collectives", default="all_reduce,all_gather,broadcast")
    parser.add_argument("--sizes", default="8,64K,1M,4M")
    parser.add_argument("--hosts", type=int, default=0, help="also run each tcp world as this many hosts")
    parser.add_argument("--netns", action="store_true",
                        help="with --hosts 2: the hosts are two network namespaces joined by a veth pair (root)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure everything this many times over in one run, each case the median of its"
                             " repeats (and print how far repeats 1 and 2 agree)")
    parser.add_argument("--cores", type=int, default=0, help="cores of this machine (default: os.cpu_count())")
    parser.add_argument("--json", default=None)
    parser.add_argument("--plot", default=None)
    parser.add_argument("--baseline", default=None,
                        help="with --from: also score another run's measurement of each case as its prediction")
    parser.add_argument("--table", action="store_true", help="with --from: markdown tables by layout and algorithm,"
                                                             " not every row")
    args = parser.parse_args(argv)
    if args.netns and args.hosts != 2:
        parser.error("--netns makes two hosts: give --hosts 2")
    if args.source:
        return rescore(args)
    profiles = {"built-in": load(args.profile or DEFAULT_FILE)} if not args.profile else {"given": load(args.profile)}
    if args.tune:
        from collectives import tune

        path = os.path.join(tempfile.mkdtemp(), "tuned.json")
        tune.main(["--out", path, "--quiet", "--transports", args.transports])
        profiles["tuned"] = load(path)
    load_before = os.getloadavg()[0]
    with two_hosts() if args.netns else nullcontext() as places:
        rows = run(args, profiles, places)
    print("\n".join(summary(rows, profiles)))
    if args.json:
        with open(args.json, "w") as fh:
            reader = machine_cpu()
            json.dump({"profiles": {n: p.to_json() for n, p in profiles.items()}, "cores": args.cores or os.cpu_count(),
                       "load": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                       "outside": reader[1] if reader else None, "rows": rows}, fh, indent=1)
            fh.write("\n")
    if args.plot:
        plot(rows, profiles, args.plot)
    return 0


def _case(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[k] for k in ("transport", "ranks", "ranks_per_host", "collective", "algorithm", "size"))


def rescore(args: argparse.Namespace) -> int:
    """``--from``: the saved rows (of one run, or several comma-separated) predicted again, with
    the first run's saved profiles, or ``--profile``'s (one file, or NAME=FILE,...)."""
    from collectives.tuning.profile import from_json

    docs = []
    for path in args.source.split(","):
        with open(path) as fh:
            docs.append(json.load(fh))
    if args.profile:
        named = [item.partition("=") for item in args.profile.split(",")]
        profiles = {name if file else "given": load(file or name) for name, _, file in named}
    else:
        profiles = {name: from_json(p, f"{args.source}: {name}") for name, p in docs[0]["profiles"].items()}
    rows = [row for doc in docs
            for row in repredict(doc["rows"], profiles, args.cores or doc.get("cores") or os.cpu_count() or 1)]
    names = list(profiles)
    if args.baseline:  # another run's measurement of each case as its prediction: the runs' own spread
        with open(args.baseline) as fh:
            other = {_case(r): r["measured_us"] for r in json.load(fh)["rows"]}
        rows = [{**row, "baseline_us": other[_case(row)]} for row in rows if _case(row) in other]
        names.append("baseline")
    print("\n".join(table(rows, names)) if args.table else "\n".join(_line(row, names) for row in rows))
    print("\n".join(summary(rows, names)))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"profiles": {n: p.to_json() for n, p in profiles.items()}, "rows": rows}, fh, indent=1)
            fh.write("\n")
    if args.plot:
        plot(rows, names, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
