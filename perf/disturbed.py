"""Validation rows measured beside other work, set aside on request (``--undisturbed``).

A ``perf/validate_model.py --json`` row keeps ``outside_cores``: the cores' worth of CPU work
outside the job that ran while its case was timed (``collectives.timing.measure_outside``).
On this 2-core machine the same code has scored 77 and 29 of 108 rows within 25 % a minute
apart as other sessions' work came and went, so a score means the model only over rows that
ran alone. ``split`` sets aside the rows above a threshold; rows saved before the field existed
are kept and counted as unrecorded, and what is set aside is always counted and printed.
"""

from __future__ import annotations

import argparse
from typing import Any

FIELD = "outside_cores"
"""The row field: cores' worth of CPU work outside the job while the row's case was timed."""

THRESHOLD = 0.5
"""Above this a row is disturbed: half a core. Measured (docs/simulation.md, the forty-sixth
round), tcp and shm runs alone and beside one busy loop pinned to a CPU, alternating: the 708 rows
of the quiet runs read -0.67 to 0.49 cores; of the 1164 beside the loop (median 0.98: its core)
1152 read over 0.5 and measured a median 1.92 times the quiet runs, and the 12 under it 0.87-0.99
times (the loop had not slowed them)."""

Row = dict[str, Any]


def split(rows: list[Row], threshold: float) -> tuple[list[Row], list[Row], int]:
    """The rows kept (at most ``threshold`` cores outside, or not recorded), the rows set aside,
    and how many of the kept ones record nothing."""
    kept = [r for r in rows if r.get(FIELD) is None or r[FIELD] <= threshold]
    aside = [r for r in rows if r.get(FIELD) is not None and r[FIELD] > threshold]
    return kept, aside, sum(r.get(FIELD) is None for r in rows)


def describe(rows: list[Row], aside: list[Row], unrecorded: int, threshold: float, name: str) -> list[str]:
    """What ``split`` did to one file's rows: a count line, then one line per row set aside."""
    head = f"# {name}: {len(aside)} of {len(rows)} rows set aside (over {threshold:g} cores outside the job)"
    if unrecorded:
        head += f"; {unrecorded} record no outside work (kept)"
    return [head] + [f"#   set aside: {r['transport']} {r['ranks']}/{r['ranks_per_host']} {r['collective']}"
                     f" {r['algorithm']} {r['size']} B, {r[FIELD]:.2f} cores outside" for r in aside]


def add_argument(parser: argparse.ArgumentParser) -> None:
    """``--undisturbed [CORES]``: score only rows with at most CORES outside (default ``THRESHOLD``)."""
    parser.add_argument("--undisturbed", type=float, nargs="?", const=THRESHOLD, default=None, metavar="CORES",
                        help=f"set aside rows measured beside more than CORES cores of other work (default"
                             f" {THRESHOLD:g}, measured: perf/disturbed.py); they are counted and printed")
