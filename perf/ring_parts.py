"""A large tcp all-reduce taken apart: the ring's two halves and the recursive schedule, measured and priced.

The 3-rank tcp all-reduce of 32 MiB is priced on the ring about as fast as on the recursive
schedule while measured 20-25 % slower (docs/performance.md, "Twenty-ninth round"). This script
measures, at 2 and 3 ranks over tcp, the ring all-reduce beside its two halves run alone (the
ring reduce-scatter, which folds, and the ring all-gather, which does not: a reduce-scatter of
N bytes and an all-gather into N bytes move what the all-reduce's two phases move, though called
alone each runs its own plan, out of place), the recursive all-reduce. At 2 ranks a ring step sends and receives over one socket (both directions at
once); at 3 ranks each of a rank's two sockets carries one direction. Every row is priced by the tuner's model as
``perf/validate_model.py`` prices it (this machine's cores, the hosts' cores shared), and once
more replayed in full (``replayed``: not on the line through 8 and 16 MiB that ``predict``
draws beyond ``tuner.LINEAR_BYTES``).

    python perf/ring_parts.py --json docs/perf/ring_parts_calib33_tcp.json   # measure (under the lock)
    python perf/ring_parts.py --from docs/perf/ring_parts_calib33_tcp.json   # price saved rows again
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from typing import Any, Iterator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from collectives.sim.cluster import cluster  # noqa: E402
from collectives.sim.predict import predict  # noqa: E402
from collectives.tuning import tuner  # noqa: E402
from collectives.tuning.profile import Profile, load  # noqa: E402
from perf import saved_rows  # noqa: E402

CASES = [("all_reduce", "ring"), ("reduce_scatter", "ring"), ("all_gather", "ring"), ("all_reduce", "recursive")]
SIZES = (4 << 20, 32 << 20)
RANKS = (2, 3)


def measure(repeats: int, rounds: int, ranks_list: tuple[int, ...] = RANKS,
            parts: list[tuple[str, str]] = CASES, sizes: tuple[int, ...] = SIZES) -> list[dict[str, Any]]:
    """Every case of ``parts`` (collective, algorithm) at every size and world size over tcp
    (by default the ring's, at 2 and 3 ranks): one row each."""
    from collectives.timing import measure_repeats

    rows = []
    for ranks in ranks_list:
        cases = [(c, n, a) for n in sizes for c, a in parts]
        started = time.strftime("%H:%M:%S", time.gmtime())
        for (collective, size, algorithm), times in zip(cases, measure_repeats(cases, ranks, "tcp", rounds=rounds,
                                                                               repeats=repeats)):
            times = sorted(t * 1e6 for t in times)
            rows.append({"collective": collective, "algorithm": algorithm, "size": size, "ranks": ranks,
                         "measured_us": times[len(times) // 2], "repeats_us": times, "utc": started})
    return rows


@contextlib.contextmanager
def replayed_in_full() -> Iterator[None]:
    """``predict`` replays every step of calls beyond ``tuner.LINEAR_BYTES`` instead of drawing its line."""
    kept = tuner.LINEAR_BYTES
    tuner.LINEAR_BYTES = 1 << 62
    try:
        yield
    finally:
        tuner.LINEAR_BYTES = kept


def price(row: dict[str, Any], profile: Profile, cores: int, step: int = 0) -> float:
    """µs of the row's call on ``profile``'s model, as ``perf/validate_model.py`` prices it (in
    steps of ``step``; 0: the rule's)."""
    c = cluster("tcp", row["ranks"], None, profile, cores, shared_cores=True)
    return predict(row["collective"], row["algorithm"], row["size"], c, "tcp", profile, step=step) * 1e6


def table(rows: list[dict[str, Any]], profile: Profile, cores: int) -> list[str]:
    lines = [f"{'P':>2} {'collective':<15}{'algorithm':<10}{'MiB':>4}  {'meas us':>9}{'model':>9}{'ratio':>7}"
             f"{'replayed':>10}{'ratio':>7}"]
    for r in sorted(rows, key=lambda r: (r["ranks"], r["size"])):
        model = price(r, profile, cores)
        with replayed_in_full():
            full = price(r, profile, cores)
        lines.append(f"{r['ranks']:>2} {r['collective']:<15}{r['algorithm']:<10}{r['size'] >> 20:>4}  "
                     f"{r['measured_us']:>9.0f}{model:>9.0f}{r['measured_us'] / model:>7.2f}"
                     f"{full:>10.0f}{r['measured_us'] / full:>7.2f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    saved_rows.add_arguments(parser, repeats=3, rounds=5)
    args = parser.parse_args(argv)
    profile = load(args.profile)
    rows, cores = saved_rows.rows_and_cores(args, "perf/ring_parts.py", lambda: measure(args.repeats, args.rounds))
    print("\n".join(table(rows, profile, cores)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
