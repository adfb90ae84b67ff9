"""The tuner's picks a refitted profile must keep (perf/grid_profile.py, perf/fit_profile.py --hold).

A lower error can still move the tuner's picks, which depend on fine differences between
algorithms (docs/simulation.md). ``Hold`` says whether a profile keeps them: no choice run
(``perf/tuner_check.py --json``) scores fewer picks than under the start profile, and no pick
of the transports held, in the worlds held (2, 3 and 4 ranks on one host unless told), at every
power of two from 8 B to 64 MiB, differs from the start profile's: between the choice runs'
sizes, and beyond their worlds, nothing was measured to support a move.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from collectives.timing import COLLECTIVES
from collectives.tuning import tuner
from collectives.tuning.profile import Profile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script
from perf.tuner_check import score  # noqa: E402

Pick = tuple[str, str, int, int, int]
World = tuple[int, int]
"""Ranks, and ranks per host (0: one host)."""

WORLDS: list[World] = [(2, 0), (3, 0), (4, 0)]


def parse_worlds(text: str) -> list[World]:
    """``2,3,8:4``: 2 and 3 ranks on one host, 8 ranks as hosts of 4."""
    worlds = []
    for item in text.split(","):
        ranks, _, per_host = item.partition(":")
        worlds.append((int(ranks), int(per_host or 0)))
    return worlds


def picks(profile: Profile, transports: list[str], worlds: list[World] = WORLDS) -> dict[Pick, str]:
    """The tuner's pick per (transport, collective, ranks, ranks per host, bytes), 8 B to 64 MiB by 2
    (several hosts over tcp only)."""
    return {(t, c, p, k, 1 << e): tuner.choose(c, 1 << e, p, t, t == "shm" and not k, k, profile)
            for t in transports for p, k in worlds if t == "tcp" or not k
            for c in COLLECTIVES for e in range(3, 27)}


class Hold:
    """What ``start`` picks, for ``keeps`` to compare other profiles with."""

    def __init__(self, choice_files: list[str], start: Profile, transports: list[str],
                 worlds: list[World] = WORLDS) -> None:
        self.runs: list[list[dict[str, Any]]] = []
        for path in choice_files:
            with open(path) as fh:
                self.runs.append(json.load(fh)["rows"])
        self.transports, self.worlds = transports, worlds
        self.floor = self.scores(start)
        self.held = picks(start, transports, worlds)

    def scores(self, profile: Profile) -> list[int]:
        """Picks within 10 % of the best (5 µs below 64 KiB), per choice run."""
        return [score(rows, profile)[1] for rows in self.runs]

    def moved(self, profile: Profile) -> list[Pick]:
        """The held picks ``profile`` changes."""
        return [k for k, v in picks(profile, self.transports, self.worlds).items() if self.held[k] != v]

    def keeps(self, profile: Profile) -> bool:
        return all(s >= f for s, f in zip(self.scores(profile), self.floor)) and not self.moved(profile)
