"""The tcp ring's pipelining step: the ring and the recursive schedule timed at several steps, beside the model's prices.

The ring steps each block in segments of the step (1 MiB, ``collectives.steps``) and every segment is
a lockstep hop; docs/simulation.md's forty-first round measured the ring gaining more from one step a
block than the model prices at 3 and 6 ranks over tcp. This script times, at each world size and
step (``COLLECTIVES_CHUNK_BYTES``, set for a whole world: one pass is a world per world size and
step, the steps alternating within a pass), the all-gather and the reduce-scatter of each size by
the ring and the recursive schedule, and prints each call's time at a step over its time at 1 MiB
in the same pass (the median over passes, with the range), beside the model's same ratio (each
step priced as ``perf/validate_model.py`` prices the call: this machine's cores, shared), so a cost
the model misses per step shows as a measured ratio that falls faster with the step than the priced one.

    python perf/ring_steps.py --json docs/perf/ring_steps_calib20_h22i_tcp.json   # measure (under the lock)
    python perf/ring_steps.py --from docs/perf/ring_steps_calib20_h22i_tcp.json   # price saved rows again
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from collectives.tuning.profile import Profile, load  # noqa: E402
from perf import ring_parts, saved_rows  # noqa: E402

COLLECTIVES = ("all_gather", "reduce_scatter")
ALGORITHMS = ("ring", "recursive")
SIZES = (8 << 20, 32 << 20)
RANKS = (3, 4, 6)
STEPS = (512 << 10, 1 << 20, 4 << 20, 32 << 20)
BASE_STEP = 1 << 20
"""The step each ratio is taken against: the rule's step for these calls (``steps.STEP_BYTES``)."""


def measure(repeats: int, rounds: int, passes: int = 2, ranks_list: tuple[int, ...] = RANKS,
            steps: tuple[int, ...] = STEPS, sizes: tuple[int, ...] = SIZES,
            algorithms: tuple[str, ...] = ALGORITHMS) -> list[dict[str, Any]]:
    """One row per pass, world size, step, size, collective and algorithm over tcp (the median of
    ``repeats`` repeats of ``rounds`` rounds, the slowest rank's; ``ring_parts.measure``'s rows
    with the step, the pass and the load before and after)."""
    parts = [(c, a) for c in COLLECTIVES for a in algorithms]
    kept = os.environ.get("COLLECTIVES_CHUNK_BYTES")
    rows = []
    try:
        for number in range(1, passes + 1):
            for ranks in ranks_list:
                for step in steps:
                    os.environ["COLLECTIVES_CHUNK_BYTES"] = str(step)
                    load_at = os.getloadavg()[0]
                    measured = ring_parts.measure(repeats, rounds, (ranks,), parts, sizes)
                    for row in measured:
                        row.update(chunk=step, load=[load_at, os.getloadavg()[0]])
                        row["pass"] = number
                    rows += measured
    finally:
        if kept is None:
            os.environ.pop("COLLECTIVES_CHUNK_BYTES", None)
        else:
            os.environ["COLLECTIVES_CHUNK_BYTES"] = kept
    return rows


def price(row: dict[str, Any], step: int, profile: Profile, cores: int) -> float:
    """µs of the row's call at ``step`` on ``profile``'s model (``ring_parts.price``)."""
    return ring_parts.price(row, profile, cores, step)


def ratios(rows: list[dict[str, Any]]) -> dict[tuple[int, str, int, str], dict[int, list[float]]]:
    """(ranks, collective, size, algorithm) -> step -> each pass's time at that step over its time
    at ``BASE_STEP`` (passes told apart by their ``run`` and ``pass``; a pass without the base step is left out)."""
    passes: dict[tuple[Any, ...], dict[int, float]] = {}
    for r in rows:
        key = (r["ranks"], r["collective"], r["size"], r["algorithm"], r.get("run", ""), r["pass"])
        passes.setdefault(key, {})[r["chunk"]] = r["measured_us"]
    out: dict[tuple[int, str, int, str], dict[int, list[float]]] = {}
    for key, times in passes.items():
        if BASE_STEP in times:
            for step, t in times.items():
                out.setdefault(key[:4], {}).setdefault(step, []).append(t / times[BASE_STEP])
    return out


def table(rows: list[dict[str, Any]], profile: Profile, cores: int) -> list[str]:
    """A line per call: its median time at the base step, the price there, and per step the
    median measured ratio (range, passes) / the priced ratio."""
    steps = sorted({r["chunk"] for r in rows})
    lines = [f"{'P':>2} {'collective':<15}{'algorithm':<10}{'MiB':>4}{'1M us':>8}{'priced':>8}  "
             + "".join(f"{f'{s >> 10}K: meas/priced':>26}" for s in steps)]
    for (ranks, collective, size, algorithm), by_step in sorted(ratios(rows).items()):
        row = {"ranks": ranks, "collective": collective, "size": size, "algorithm": algorithm}
        base = statistics.median(r["measured_us"] for r in rows if r["chunk"] == BASE_STEP
                                 and (r["ranks"], r["collective"], r["size"], r["algorithm"]) == (ranks, collective,
                                                                                                   size, algorithm))
        priced = price(row, BASE_STEP, profile, cores)
        cells = []
        for step in steps:
            got = by_step.get(step)
            cells.append(f"{'':>26}" if not got else
                         f"{statistics.median(got):>6.2f} ({min(got):.2f}-{max(got):.2f},{len(got)}) /"
                         f"{price(row, step, profile, cores) / priced:>5.2f}")
        lines.append(f"{ranks:>2} {collective:<15}{algorithm:<10}{size >> 20:>4}{base:>8.0f}{priced:>8.0f}  "
                     + "".join(cells))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    saved_rows.add_arguments(parser, repeats=3, rounds=3)
    parser.add_argument("--passes", type=int, default=2)
    args = parser.parse_args(argv)
    profile = load(args.profile)
    rows, cores = saved_rows.rows_and_cores(args, "perf/ring_steps.py",
                                            lambda: measure(args.repeats, args.rounds, args.passes))
    print("\n".join(table(rows, profile, cores)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
