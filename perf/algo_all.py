"""``--algo all``: every algorithm at every size in one run, beside the automatic choice.

    all_reduce_perf --np 2 -b 8 -e 64M -f 4 --algo all [--transport tcp]

For each size the world times the automatic choice and every algorithm that can run this
collective here (``collectives.timing``: batches interleaved round by round, the median
batch per call on the slowest rank) and prints, per size, each algorithm's time, the one
the tuner picks, the best measured, and whether the automatic call is within 10 % of the
best (or within 5 µs below 64 KiB): the tuner's acceptance test, measured.
"""

from __future__ import annotations

import json
from typing import Any

from collectives.timing import measure
from collectives.tuning import tuner

from .colls import Collective
from .options import Options
from .progress import note

NAMES = {"alltoall": "all_to_all"}
SMALL = 64 << 10


def sizes(opts: Options) -> list[int]:
    out, n = [], opts.minbytes
    while n <= opts.maxbytes:
        out.append(n)
        n = n * opts.stepfactor if opts.stepfactor > 1 else n + max(1, opts.stepbytes)
        if opts.minbytes == opts.maxbytes:
            break
    return out


def within(auto: float, best: float, nbytes: int) -> bool:
    """The acceptance rule: within 10 % of the best, or within 5 µs below 64 KiB."""
    return auto <= best * 1.10 or (nbytes < SMALL and auto - best <= 5e-6)


def run_all(opts: Options, coll: Collective, launcher: str | None) -> int:
    """Measure and print the comparison; exit status 0, or 6 when it cannot run here."""
    collective = NAMES.get(coll.name, coll.name)
    if collective not in tuner.SCHEDULES or launcher:
        note(f"--algo all: runs {', '.join(sorted(tuner.SCHEDULES))} with --np (not under a launcher)")
        return 6
    ranks = opts.np or 2
    transport = opts.transport or "shm"
    windows = transport == "shm" and ranks > 1
    names = tuner.candidates(collective, windows)
    rows: list[dict[str, Any]] = []
    print(f"# {coll.program} --algo all: {ranks} ranks over {transport}; µs per call (fastest of {max(3, opts.iters)}"
          " batches, slowest rank); auto = the automatic choice, called as such")
    print(f"# {'size':>10} " + " ".join(f"{n:>11}" for n in [*names, "auto"]) + f"  {'picks':>10} {'best':>10}  ok")
    failures = 0
    for nbytes in sizes(opts):
        cases = [(collective, nbytes, a) for a in [*names, "auto"]]
        times = measure(cases, ranks, transport, rounds=max(3, opts.iters))
        measured = dict(zip([*names, "auto"], times))
        pick = tuner.choose(collective, nbytes, ranks, transport, windows)
        best = min(measured, key=lambda a: measured[a])
        ok = within(measured["auto"], measured[best], nbytes)
        failures += not ok
        print(f"  {nbytes:>10} " + " ".join(f"{measured[a] * 1e6:>11.1f}" for a in [*names, "auto"])
              + f"  {pick:>10} {best:>10}  {'yes' if ok else 'NO'}", flush=True)
        rows.append({"collective": collective, "ranks": ranks, "transport": transport, "size": nbytes,
                     "times_us": {a: t * 1e6 for a, t in measured.items()}, "picks": pick, "best": best,
                     "within": ok})
    print(f"# automatic within 10 % of the best (5 µs below 64 KiB) at {len(rows) - failures} of {len(rows)} sizes")
    if opts.json:
        with open(opts.json, "w") as fh:
            json.dump(rows, fh, indent=1)
            fh.write("\n")
    return 0
