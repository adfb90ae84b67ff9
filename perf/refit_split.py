"""Refit tcp's one-way α split (``send_overhead``, ``recv_overhead``) from a measurement of this machine.

``collectives-tune`` fits the split (``tune.fit_split``) from tree broadcasts and reduces at 3
ranks set against the same at 2, pricing both without the cores: on a machine of two cores the
third rank's queue for them lands in the split. This script measures the same one-way calls
(``--json``: tree broadcasts and reduces at 2 and 3 ranks over tcp) and fits the two overheads
to all of them, in relative error, on a grid with the model the tuner uses (``sim.predict`` on ``sim.cluster``, this machine's
cores, every other constant of the profile kept), so the queue is priced by the model and not
folded into the overheads; ``--from`` fits saved rows again, measuring nothing.

    python perf/refit_split.py --json docs/perf/split_calib30_tcp.json   # measure (under the lock), then fit
    python perf/refit_split.py --from docs/perf/split_calib30_tcp.json   # fit the saved rows
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from collectives.sim.cluster import cluster  # noqa: E402
from collectives.sim.predict import predict  # noqa: E402
from collectives.timing import measure_repeats  # noqa: E402
from collectives.tuning.profile import Profile, load  # noqa: E402
from perf import saved_rows  # noqa: E402

CASES = [(c, n, "tree") for c in ("broadcast", "reduce") for n in (8, 1 << 10, 64 << 10)]
STEP = 0.5e-6


def measured(repeats: int, rounds: int) -> list[dict[str, Any]]:
    """The one-way calls at 2 and 3 ranks over tcp: one row per case and world size."""
    rows = []
    for ranks in (2, 3):
        for (collective, size, algorithm), times in zip(CASES, measure_repeats(
                CASES, ranks, "tcp", rounds=rounds, repeats=repeats)):
            times = sorted(times)
            rows.append({"collective": collective, "size": size, "algorithm": algorithm, "ranks": ranks,
                         "measured_us": times[len(times) // 2] * 1e6, "repeats_us": [t * 1e6 for t in times]})
    return rows


def with_split(profile: Profile, send: float, recv: float) -> Profile:
    tcp = dataclasses.replace(profile.costs("tcp"), send_overhead=send, recv_overhead=recv)
    return dataclasses.replace(profile, transports={**profile.transports, "tcp": tcp})


def predicted(row: dict[str, Any], profile: Profile, cores: int) -> float:
    c = cluster("tcp", row["ranks"], None, profile, cores, shared_cores=True)
    return predict(row["collective"], row["algorithm"], row["size"], c, "tcp", profile) * 1e6


def fit(rows: list[dict[str, Any]], profile: Profile, cores: int) -> tuple[float, float, list[str]]:
    """The grid point (send, recv; steps of 0.5 µs within α) whose predictions of the rows
    are nearest their measurements (least squares in relative error), and the table of both."""
    alpha = profile.costs("tcp").alpha
    best: tuple[float, float, float] | None = None
    steps = int(round(alpha / STEP))
    for i in range(steps + 1):
        for j in range(steps + 1 - i):
            p = with_split(profile, i * STEP, j * STEP)
            err = sum((predicted(r, p, cores) / r["measured_us"] - 1) ** 2 for r in rows)
            if best is None or err < best[0]:
                best = (err, i * STEP, j * STEP)
    assert best is not None
    _, send, recv = best
    lines = []
    for name, p in (("profile", profile), ("fitted", with_split(profile, send, recv))):
        for r in rows:
            lines.append(f"  {name:<8} {r['collective']:<10} {r['size']:>6} B  {r['ranks']} ranks  measured"
                         f" {r['measured_us']:8.1f} us  model {predicted(r, p, cores):8.1f} us")
    return send, recv, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    saved_rows.add_arguments(parser, repeats=5, rounds=20)
    args = parser.parse_args(argv)
    profile = load(args.profile)
    rows, cores = saved_rows.rows_and_cores(args, "perf/refit_split.py", lambda: measured(args.repeats, args.rounds))
    tcp = profile.costs("tcp")
    send, recv, lines = fit(rows, profile, cores)
    print("\n".join(lines))
    print(f"# profile: send_overhead {tcp.send_overhead * 1e6:.2f} us, recv_overhead {tcp.recv_overhead * 1e6:.2f} us"
          f" (alpha {tcp.alpha * 1e6:.2f} us)")
    print(f"# fitted:  send_overhead {send * 1e6:.2f} us, recv_overhead {recv * 1e6:.2f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
