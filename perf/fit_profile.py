"""Fit every constant of a cost profile to saved measurements at many world sizes.

    python perf/fit_profile.py docs/perf/validation_calib.json --out fitted.json
    python perf/validate_model.py --from OTHER.json --profile fitted.json     # score it on other data

``collectives-tune`` fits overhead, α and β to 2-rank all-reduces. This fits every constant
(the direct engine's, ``exchange``, and the ones only larger worlds show: ``wake``,
``crowd_wake``, ``crowd_beta``, ``mixed_wait``, ``split_wait``) to the rows a ``perf/validate_model.py
--json`` run kept: every collective, algorithm, size, world size and layout it measured. It
searches each constant in turn by factors (log scale, no derivatives: the replay with
queueing cores is not linear in them), minimising the mean |log(predicted / measured)|,
which the outliers of a shared machine cannot drag as they drag squares; in stages
(``STAGES``). Shared memory first (its rows), then TCP (its rows, the two-host ones too,
with shared memory as fitted). Prints the profile and the score before and after; ``--out``
writes it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from typing import Any

from collectives.tuning.profile import Profile, from_json, load

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script
from perf import disturbed  # noqa: E402
from perf.hold_picks import WORLDS, Hold, parse_worlds  # noqa: E402
from perf.validate_model import repredict, summary  # noqa: E402

STAGES = (
    ("worlds within the cores", ("overhead", "alpha", "beta", "exchange", "direct_alpha", "direct_beta"),
     (4.0, 2.0, 1.4, 1.15, 1.05)),
    ("every world", ("wake", "crowd_wake", "crowd_beta", "mixed_wait", "split_wait", "cache_beta", "copy_beta",
                     "direct_sync"),
     (4.0, 2.0, 1.4, 1.15, 1.05)),
    ("every world, all together", ("overhead", "alpha", "beta", "exchange", "wake", "crowd_wake", "crowd_beta",
                                   "mixed_wait", "split_wait", "direct_alpha", "direct_beta", "cache_beta",
                                   "copy_beta", "direct_sync"),
     (1.15, 1.05)),
)
"""What is searched, on which rows, by which factors: first what a world with a core per rank
shows (so that α does not absorb the cost of queueing for cores), then what only larger
worlds and two hosts show (``direct_sync`` among them; ``cache_beta`` only where the profile
has ``cache_bytes``), then everything a little."""
ONLY = {"shm": {"mixed_wait", "split_wait"}, "tcp": {"direct_alpha", "direct_beta", "direct_sync"}}
"""Constants a transport does not use (shared memory has no other hosts; TCP no direct engine)."""
SPLIT = ("send_overhead", "recv_overhead")
"""A one-way message's α split (``collectives-tune``'s ``fit_split``, tcp): searched with the first and
last stages where the start profile splits it (0 there means not split, not a split of 0)."""
FLOOR = {"beta": 1e-12, "direct_beta": 1e-12, "crowd_beta": 1e-12, "cache_beta": 1e-12, "copy_beta": 1e-12}
"""Where a constant at 0 starts its search (1 µs, or these per byte)."""


def loss(rows: list[dict[str, Any]], profile: Profile, cores: int) -> float:
    """Mean |log(predicted / measured)| of ``rows`` under ``profile``."""
    out = repredict(rows, {"p": profile}, cores)
    return sum(abs(math.log(max(r["p_us"], 1e-3) / r["measured_us"])) for r in out) / max(1, len(out))


def fit(rows: list[dict[str, Any]], profile: Profile, transport: str, cores: int, log: list[str],
        keep: frozenset[str] = frozenset(), hold: Hold | None = None) -> Profile:
    """``profile`` with ``transport``'s constants searched, stage by stage, to minimise ``loss``
    (those named ``transport.constant`` in ``keep`` left as they are; with ``hold``, a step
    that would move the tuner's picks is not taken)."""

    def with_value(p: Profile, name: str, value: float) -> Profile:
        costs = dataclasses.replace(p.costs(transport), **{name: value})
        return dataclasses.replace(p, transports={**p.transports, transport: costs})

    for stage, names, factors in STAGES:
        mine = [r for r in rows if r["transport"] == transport
                and (stage != STAGES[0][0] or r["ranks"] == r["ranks_per_host"] <= cores)]
        split = SPLIT if profile.costs(transport).send_overhead > 0 and "alpha" in names else ()
        free = [n for n in (*names, *split) if n not in ONLY[transport] and f"{transport}.{n}" not in keep]
        best = loss(mine, profile, cores)
        log.append(f"# {transport}, {stage}: {len(mine)} rows, mean |log error| {best:.3f} at the start")
        for factor in factors:
            improved = True
            while improved:
                improved = False
                for name in free:
                    value = getattr(profile.costs(transport), name)
                    tries = [value * factor, value / factor] if value > 0 else [FLOOR.get(name, 1e-6)]
                    if value > 0 and factor == factors[0] and name not in SPLIT:
                        tries.append(0.0)
                    for v in tries:
                        candidate = with_value(profile, name, v)
                        score = loss(mine, candidate, cores)
                        if score < best - 1e-4 and (hold is None or hold.keeps(candidate)):
                            best, profile, improved = score, candidate, True
                            break
            log.append(f"#   factor {factor:g}: mean |log error| {best:.3f}")
    return profile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a perf/validate_model.py --json file (or several, comma-separated)")
    parser.add_argument("--start", default=None, help="the profile to start from (default: the file's 'tuned' one)")
    parser.add_argument("--transports", default="shm,tcp")
    parser.add_argument("--cores", type=int, default=0, help="cores of the measured machine (default: the file's)")
    parser.add_argument("--calls", type=int, default=0,
                        help="price calls back to back, per call of this many (default: the start profile's)")
    parser.add_argument("--keep", default="", help="constants not to fit, as transport.constant, comma-separated"
                                                   " (e.g. shm.beta)")
    parser.add_argument("--set", default="", help="start values, as transport.constant=seconds, comma-separated"
                                                  " (e.g. shm.wake=0,shm.crowd_wake=1e-5)")
    parser.add_argument("--cache-bytes", type=int, default=None,
                        help="the last-level cache to model, in bytes (default: the start profile's; 0: none)")
    parser.add_argument("--hold", default=None,
                        help="perf/tuner_check.py --json runs, comma-separated: take no step under which one of"
                             " them scores fewer picks or a pick of the fitted transports moves (perf/hold_picks.py)")
    parser.add_argument("--hold-worlds", type=parse_worlds, default=WORLDS,
                        help="with --hold: the worlds whose picks stay, as ranks or ranks:per_host, comma-separated"
                             " (default 2,3,4)")
    parser.add_argument("--out", default=None)
    disturbed.add_argument(parser)
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    cores = args.cores
    docs = []
    for path in args.source.split(","):
        with open(path) as fh:
            doc = json.load(fh)
        docs.append(doc)
        mine = doc["rows"]
        if args.undisturbed is not None:
            mine, aside, unrecorded = disturbed.split(mine, args.undisturbed)
            print("\n".join(disturbed.describe(doc["rows"], aside, unrecorded, args.undisturbed, path)))
        rows += mine
        cores = cores or doc.get("cores", 0)
    cores = cores or os.cpu_count() or 1
    profile = load(args.start) if args.start else from_json(docs[0]["profiles"]["tuned"], f"{args.source}: tuned")
    if args.calls:
        profile = dataclasses.replace(profile, calls=args.calls)
    if args.cache_bytes is not None:
        profile = dataclasses.replace(profile, cache_bytes=args.cache_bytes)
    for item in (i for i in args.set.split(",") if i):
        name, _, value = item.partition("=")
        transport, _, constant = name.partition(".")
        costs = dataclasses.replace(profile.costs(transport), **{constant: float(value)})
        profile = dataclasses.replace(profile, transports={**profile.transports, transport: costs})
    start = profile
    log: list[str] = []
    hold = Hold(args.hold.split(","), start, args.transports.split(","), args.hold_worlds) if args.hold else None
    for transport in args.transports.split(","):
        profile = fit(rows, profile, transport, cores, log, frozenset(k for k in args.keep.split(",") if k), hold)
    profile = dataclasses.replace(profile, source=f"perf/fit_profile.py {time.strftime('%Y-%m-%d')}: fitted to"
                                  f" {args.source} ({len(rows)} measurements, {cores} cores), from {start.source}")
    print("\n".join(log))
    print("\n".join(profile.describe()))
    print("\n".join(summary(repredict(rows, {"start": start, "fitted": profile}, cores),
                            {"start": start, "fitted": profile})))
    if args.out:
        profile.save(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
