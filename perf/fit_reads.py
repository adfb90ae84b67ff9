"""Fit the cost of the calls by single-copy reads (``reads_call``, ``reads_alpha``, ``reads_beta``) to measurements.

    for p in 2 3 4; do for c in alltoall gather scatter; do
        python -m perf ${c}_perf --np $p -b 256K -e 64M -f 4 -n 20 --algo all --json r_${c}_$p.json
    done; done
    python perf/fit_reads.py r_*.json --merge reads.json              # one file, each time the median
    python perf/fit_reads.py reads.json --out fitted.json            # fit, print, write the profile
    python perf/fit_reads.py reads.json --out fitted.json --reads-call 6.499   # reads_call held (µs)
    python perf/fit_reads.py reads.json --profile fitted.json        # predicted against measured, no fit

Reads the rows ``--algo all --json`` (or ``perf/tuner_check.py --json``) writes and keeps the
direct engine's times over shared memory of the calls it runs by reads of peers' memory
(``collectives/tuning/reads.py``: ``route``, on a host of the profile's cores). The same case
in several files counts once, at the median.
The fit searches a grid of the three constants for the least mean |log(predicted / measured)|,
the profile's ``direct_alpha``, γ and ``cores`` kept; it measures nothing, so run it on a machine
where the reads were allowed (the harness logs it under COLLECTIVES_DEBUG=INFO).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
from typing import Any

import numpy as np

from collectives.tuning import reads
from collectives.tuning.profile import Profile, current, load

CALLS = [i * 0.25e-6 for i in range(41)]  # 0 .. 10 µs per C call
ALPHAS = [i * 0.25e-6 for i in range(161)]  # 0 .. 40 µs per read of a peer
BETAS = [i * 0.001e-9 for i in range(10, 201)]  # 0.01 .. 0.2 ns/B


def load_rows(paths: list[str]) -> list[dict[str, Any]]:
    """Rows of every file (a list, or ``{"rows": [...]}``), one per case: times the median over
    the files, ``repeats_us`` every file's time (as ``perf/tuner_check.py --repeats`` keeps them)."""
    seen: dict[tuple[str, int, str, int], list[dict[str, float]]] = {}
    for path in paths:
        with open(path) as fh:
            doc = json.load(fh)
        for r in doc["rows"] if isinstance(doc, dict) else doc:
            seen.setdefault((r["transport"], r["ranks"], r["collective"], r["size"]), []).append(r["times_us"])
    rows = []
    for (transport, ranks, collective, size), times in seen.items():
        names = [a for a in times[0] if all(a in t for t in times)]
        row: dict[str, Any] = {"transport": transport, "ranks": ranks, "collective": collective, "size": size,
                               "times_us": {a: statistics.median(t[a] for t in times) for a in names}}
        row["repeats_us"] = {a: [round(t[a], 2) for t in times] for a in names}
        rows.append(row)
    return rows


def by_reads(rows: list[dict[str, Any]], cores: int) -> list[tuple[str, int, int, float]]:
    """(collective, ranks, bytes, seconds) of the direct calls that went by reads on a host of
    ``cores`` (``reads.route``)."""
    return sorted((r["collective"], r["ranks"], r["size"], r["times_us"]["direct"] * 1e-6) for r in rows
                  if r["transport"] == "shm" and "direct" in r["times_us"]
                  and reads.route(r["collective"], r["size"], r["ranks"], cores))


def mean_log_error(points: list[tuple[str, int, int, float]], profile: Profile) -> float:
    costs = profile.costs("shm")
    return statistics.fmean(abs(math.log(reads.reads_time(c, n, p, costs, profile.cores) / t)) for c, p, n, t in points)


def fit(points: list[tuple[str, int, int, float]], profile: Profile, calls: list[float] | None = None) -> Profile:
    """``profile`` with the reads' constants (``reads_call``, ``reads_alpha``, ``reads_beta``) of
    the grid that predicts ``points`` best, ``direct_alpha`` and γ kept; ``calls``: the values of
    ``reads_call`` to try (default ``CALLS``; one value holds it)."""
    shm = profile.costs("shm")
    terms = np.array([reads.terms(c, n, p, profile.cores) for c, p, n, _ in points])
    fixed = terms[:, 0] * shm.direct_alpha + terms[:, 4] * shm.gamma
    measured = np.log([t for *_, t in points])[:, None]
    betas = np.array(BETAS)
    best = (math.inf, 0.0, 0.0, 0.0)
    for call in calls or CALLS:
        for alpha in ALPHAS:
            predicted = (fixed + terms[:, 1] * call + terms[:, 2] * alpha)[:, None] + terms[:, 3:4] * betas[None, :]
            errors = np.abs(np.log(np.maximum(predicted, 1e-12)) - measured).mean(axis=0)
            i = int(np.argmin(errors))
            if errors[i] < best[0]:
                best = (float(errors[i]), call, alpha, BETAS[i])
    costs = dataclasses.replace(shm, reads_call=best[1], reads_alpha=best[2], reads_beta=best[3])
    return dataclasses.replace(profile, transports={**profile.transports, "shm": costs})


def table(points: list[tuple[str, int, int, float]], profile: Profile) -> list[str]:
    costs = profile.costs("shm")
    lines = ["| collective | ranks | size | measured µs | predicted µs | error |", "|---|---|---|---|---|---|"]
    inside = 0
    for c, p, n, t in points:
        predicted = reads.reads_time(c, n, p, costs, profile.cores)
        inside += abs(predicted / t - 1) <= 0.25
        lines.append(f"| {c} | {p} | {n >> 10} KiB | {t * 1e6:.0f} | {predicted * 1e6:.0f} | {(predicted / t - 1) * 100:+.0f} % |")
    return lines + [f"# within 25 %: {inside} of {len(points)}; mean |log error| {mean_log_error(points, profile):.3f};"
                    f" reads_call {costs.reads_call * 1e6:.2f} us, reads_alpha {costs.reads_alpha * 1e6:.2f} us,"
                    f" reads_beta {costs.reads_beta * 1e9:.4f} ns/B,"
                    f" direct_alpha {costs.direct_alpha * 1e6:.2f} us, cores {profile.cores}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="JSON rows of --algo all or tuner_check")
    parser.add_argument("--profile", default=None, help="start from (or, without --out, score) this profile")
    parser.add_argument("--out", default=None, help="fit, and write the profile with the fitted constants here")
    parser.add_argument("--reads-call", type=float, default=None,
                        help="with --out: hold reads_call at this many µs instead of fitting it")
    parser.add_argument("--merge", default=None, help="only write the files' rows as one file (tuner_check --from reads it)")
    args = parser.parse_args(argv)
    rows = load_rows(args.files)
    if args.merge:
        with open(args.merge, "w") as fh:
            json.dump({"rows": rows}, fh, indent=1)
            fh.write("\n")
        print(f"# {len(rows)} rows written to {args.merge}")
        return 0
    profile = load(args.profile) if args.profile else current()
    points = by_reads(rows, profile.cores)
    if not points:
        print("no direct call over shm that goes by reads in these files", file=sys.stderr)
        return 2
    if args.out:
        profile = fit(points, profile, None if args.reads_call is None else [args.reads_call * 1e-6])
        profile.save(args.out)
    print("\n".join(table(points, profile)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
