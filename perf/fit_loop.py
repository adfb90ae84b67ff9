"""Fit the loop model's three constants (``tuning/loop.py``) to one run, score them on others.

    python perf/fit_loop.py docs/perf/validation_calib22_shm.json \\
        --score docs/perf/validation_calib23_shm.json --hold docs/perf/choices_calib.json,...

The loop model prices a short one-way call on shared memory (``loop.priced``) as its ranks' work
on the cores: ``loop_step`` per step, ``loop_send`` / ``loop_recv`` per message. This searches
a grid of the three (``--step``, ``--send``, ``--recv``: µs, start:stop:by) over the rows of the
fitted run that the loop prices (every other row keeps its price), with every other constant of
the start profile kept, and takes the point with the most rows within 25 %, the least mean
|log(predicted / measured)| among those; with ``--hold``, the first such point in that order
that keeps every pick (``perf/hold_picks.py``: no choice run scores fewer, no shm pick at 2-4
ranks moves). Prints the best points and the chosen one's score on the fitted run and on each
``--score`` run (held out), against the start profile's.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import sys
from typing import Any

from collectives.tuning.profile import DEFAULT_FILE, Profile, load

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script
from perf.hold_picks import Hold  # noqa: E402
from perf.validate_model import repredict  # noqa: E402

Point = tuple[float, float, float]


def with_loop(profile: Profile, point: Point) -> Profile:
    """``profile`` with shared memory's ``loop_step``, ``loop_send`` and ``loop_recv`` (seconds)."""
    step, send, recv = point
    costs = dataclasses.replace(profile.costs("shm"), loop_step=step, loop_send=send, loop_recv=recv)
    return dataclasses.replace(profile, transports={**profile.transports, "shm": costs})


def read(path: str) -> tuple[list[dict[str, Any]], int]:
    with open(path) as fh:
        doc = json.load(fh)
    return doc["rows"], doc.get("cores") or os.cpu_count() or 1


def priced_by_loop(rows: list[dict[str, Any]], start: Profile, cores: int) -> list[dict[str, Any]]:
    """The rows whose price the loop's constants change."""
    probe = repredict(rows, {"a": start, "b": with_loop(start, (1e-6, 1e-6, 1e-6))}, cores)
    return [row for row, p in zip(rows, probe) if abs(p["a_us"] - p["b_us"]) > 1e-9]


def score(rows: list[dict[str, Any]], profile: Profile, cores: int) -> tuple[int, float]:
    """Rows within 25 %, and the mean |log(predicted / measured)|."""
    out = repredict(rows, {"p": profile}, cores)
    inside = sum(abs(r["p_us"] / r["measured_us"] - 1) <= 0.25 for r in out)
    return inside, sum(abs(math.log(r["p_us"] / r["measured_us"])) for r in out) / max(1, len(out))


def grid(text: str) -> list[float]:
    """``0:14:0.5`` (µs) as seconds, both ends in."""
    lo, hi, by = (float(x) for x in text.split(":"))
    return [(lo + i * by) * 1e-6 for i in range(int(round((hi - lo) / by)) + 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="the perf/validate_model.py --json run to fit")
    parser.add_argument("--score", default="", help="held-out runs to score, comma-separated")
    parser.add_argument("--start", default=str(DEFAULT_FILE), help="the profile whose other constants are kept")
    parser.add_argument("--step", default="0:14:0.5")
    parser.add_argument("--send", default="0:16:0.5")
    parser.add_argument("--recv", default="0:16:0.5")
    parser.add_argument("--hold", default="", help="perf/tuner_check.py --json choice runs, comma-separated")
    parser.add_argument("--top", type=int, default=10, help="best points to print")
    args = parser.parse_args(argv)
    start = load(args.start)
    rows, cores = read(args.source)
    mine = priced_by_loop(rows, start, cores)
    print(f"# {args.source}: {len(mine)} of {len(rows)} rows priced by the loop; start profile"
          f" {score(mine, start, cores)[0]} within 25 %, mean |log error| {score(mine, start, cores)[1]:.3f}")
    results = sorted(((score(mine, with_loop(start, p), cores), p)
                      for p in itertools.product(grid(args.step), grid(args.send), grid(args.recv)) if any(p)),
                     key=lambda x: (-x[0][0], x[0][1]))
    for (inside, loss), p in results[:args.top]:
        print(f"  step/send/recv {p[0] * 1e6:5.2f} {p[1] * 1e6:5.2f} {p[2] * 1e6:5.2f} us: {inside} within 25 %,"
              f" mean |log error| {loss:.3f}")
    chosen = results[0][1]
    if args.hold:
        hold = Hold(args.hold.split(","), start, ["shm"])
        held = next((p for _, p in results if hold.keeps(with_loop(start, p))), None)
        if held is None:
            print("# no point keeps every pick")
            return 1
        chosen = held
    print(f"# chosen: loop_step {chosen[0] * 1e6:g} us, loop_send {chosen[1] * 1e6:g} us,"
          f" loop_recv {chosen[2] * 1e6:g} us")
    fitted = with_loop(start, chosen)
    for path in [args.source] + [p for p in args.score.split(",") if p]:
        run_rows, run_cores = read(path)
        print(f"# {path}: within 25 %, all {len(run_rows)} rows: start {score(run_rows, start, run_cores)[0]},"
              f" loop {score(run_rows, fitted, run_cores)[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
