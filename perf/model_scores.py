"""The cost model's scores on the saved runs under one profile: the tuner's picks and the predictions.

    python perf/model_scores.py                                   # the built-in profile
    python perf/model_scores.py --profile tuned.json              # another profile
    python perf/model_scores.py --choices docs/perf/choices_calib8.json \\
        --validation docs/perf/validation_calib21_reduces.json    # other runs than the scored sets

A choice run (``perf/tuner_check.py --json``) scores the rows where the tuner's pick under the
profile is within 10 % of the fastest algorithm measured (5 µs below 64 KiB;
``perf.tuner_check.score``, as ``tuner_check.py --from`` prints it); a validation run
(``perf/validate_model.py --json``) scores the rows the model predicts within 25 % of the
measurement (``validate_model.py --from FILE --profile``, the run's own cores). Without
``--choices`` and ``--validation`` it scores the sets docs/simulation.md quotes: choice runs 1–14
and validation runs F–V. Each run is printed with its count, then each set's counts on one line
with their sum. Nothing is measured: picks and predictions are pure functions of profile and model.
With ``--undisturbed`` the validation rows measured beside other work (``perf/disturbed.py``) are
set aside: each run's count is then of the rows kept, and the rows set aside are counted and printed.
``--picks`` scores the validation runs as choice runs too: a validation run times every algorithm of
each case, so the tuner's pick there is scored as a choice run's is (``validation_picks``), on the
machine state the run measured; a profile that prices the rows closer can still pick worse.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from collectives.tuning import tuner
from collectives.tuning.profile import DEFAULT_FILE, Profile, load

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script
from perf import disturbed  # noqa: E402
from perf.tuner_check import score  # noqa: E402
from perf.validate_model import count_within, repredict  # noqa: E402

RUNS = Path(__file__).resolve().parent.parent / "docs" / "perf"
CHOICE_RUNS = {str(n): f"choices_calib{s}.json" for n, s in
               [(1, ""), *((n, n) for n in range(2, 10)), (10, "10_netns"), *((n, n) for n in range(11, 15))]}
"""Choice runs 1–14 as docs/simulation.md numbers them."""
VALIDATION_RUNS = dict(zip("FGHIJKLMNOPQRSTUV", (
    f"validation_calib{s}.json" for s in ("6", "7", "8", "9_netns", "10_netns", "11", "12", "13", "15_shm", "16",
                                          "17_tcp", "18_shm", "19_tcp", "20_shm", "21_reduces", "22_shm", "23_shm"))))
"""Validation runs F–V as docs/simulation.md names them (A–E were of the model before its crowd terms)."""


def _rows(path: Path) -> tuple[list[dict[str, Any]], int | None]:
    with open(path) as fh:
        doc = json.load(fh)
    return doc["rows"], doc.get("cores")


def choice_score(path: Path, profile: Profile) -> tuple[int, int]:
    """Rows of a choice run whose pick is within 10 % of the best, and the run's rows."""
    rows, _ = _rows(path)
    return score(rows, profile)[1], len(rows)


def validation_score(path: Path, profile: Profile, cores: int = 0, undisturbed: float | None = None,
                     aside: list[str] | None = None) -> tuple[int, int]:
    """Rows of a validation run predicted within 25 %, and the run's rows (``cores``: instead of
    the run's own). With ``undisturbed``, of the rows kept by ``disturbed.split`` at that
    threshold, what was set aside described in ``aside``."""
    rows, saved_cores = _rows(path)
    if undisturbed is not None:
        kept, set_aside, unrecorded = disturbed.split(rows, undisturbed)
        if aside is not None:
            aside += disturbed.describe(rows, set_aside, unrecorded, undisturbed, path.name)
        rows = kept
    predicted = repredict(rows, {"p": profile}, cores or saved_cores or os.cpu_count() or 1)
    return count_within(predicted, "p"), len(rows)


def validation_picks(path: Path, profile: Profile, undisturbed: float | None = None) -> tuple[int, int]:
    """Cases of a validation run (collective, size, layout; every algorithm timed) where the tuner's
    pick under ``profile`` is within 10 % of the fastest algorithm timed (5 µs below 64 KiB), and the
    cases scored: with ``undisturbed``, those none of whose rows ``disturbed.split`` sets aside; a
    case whose pick the run did not time is not scored."""
    rows, _ = _rows(path)
    aside: list[dict[str, Any]] = []
    if undisturbed is not None:
        rows, aside, _ = disturbed.split(rows, undisturbed)

    def case(r: dict[str, Any]) -> tuple[str, str, int, int, int]:
        return r["transport"], r["collective"], r["size"], r["ranks"], r.get("ranks_per_host", r["ranks"])

    left_out = {case(r) for r in aside}
    times: dict[tuple[str, str, int, int, int], dict[str, float]] = {}
    for r in rows:
        if case(r) not in left_out:
            times.setdefault(case(r), {})[r["algorithm"]] = r["measured_us"]
    cases = []
    for (transport, collective, size, ranks, per_host), measured in times.items():
        k = 0 if per_host >= ranks else per_host  # choice runs say 0 for one host
        windows = transport == "shm" and not k
        if tuner.choose(collective, size, ranks, transport, windows, k, profile) in measured:
            cases.append({"transport": transport, "collective": collective, "size": size, "ranks": ranks,
                          "ranks_per_host": k, "times_us": measured})
    return score(cases, profile)[1], len(cases)


def report(title: str, scores: dict[str, tuple[int, int]], files: dict[str, Path]) -> list[str]:
    """One line per run, then the set's counts in order and their sum."""
    lines = [f"# {title}"]
    lines += [f"  {label:>3}  {n:>4} of {total:<4} {files[label].name}" for label, (n, total) in scores.items()]
    counts = [n for n, _ in scores.values()]
    rows = sum(total for _, total in scores.values())
    lines.append(f"{title}: {' '.join(map(str, counts))} (sum {sum(counts)} of {rows})")
    return lines


def _named(text: str | None, default: dict[str, str]) -> dict[str, Path]:
    if text is None:
        return {label: RUNS / name for label, name in default.items()}
    return {str(i): Path(p) for i, p in enumerate((p for p in text.split(",") if p), 1)}  # labelled in order


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=str(DEFAULT_FILE), help="the profile to score (default: the built-in one)")
    parser.add_argument("--choices", default=None,
                        help="perf/tuner_check.py runs, comma-separated (default: choice runs 1-14; '' for none)")
    parser.add_argument("--validation", default=None,
                        help="perf/validate_model.py runs, comma-separated (default: runs F-V; '' for none)")
    parser.add_argument("--cores", type=int, default=0, help="instead of each validation run's own cores")
    disturbed.add_argument(parser)
    parser.add_argument("--picks", action="store_true",
                        help="score the tuner's picks against the validation runs' times of every algorithm too")
    args = parser.parse_args(argv)
    profile = load(args.profile)
    print(f"# profile {args.profile}; margin {profile.margin:g}, cores {profile.cores or 'not modelled'}")
    choices = _named(args.choices, CHOICE_RUNS)
    validations = _named(args.validation, VALIDATION_RUNS)
    if choices:
        title = "choice runs 1-14" if args.choices is None else "choice runs"
        scored = {label: choice_score(path, profile) for label, path in choices.items()}
        print("\n".join(report(f"{title} (tuner within 10 % of the best)", scored, choices)))
    if validations:
        title = "validation F-V" if args.validation is None else "validation runs"
        aside: list[str] = []
        scored = {label: validation_score(path, profile, args.cores, args.undisturbed, aside)
                  for label, path in validations.items()}
        if args.undisturbed is not None:
            title += f", undisturbed (at most {args.undisturbed:g} cores outside)"
            print("\n".join(aside))
        print("\n".join(report(f"{title} (predictions within 25 %)", scored, validations)))
        if args.picks:
            picked = {label: validation_picks(path, profile, args.undisturbed) for label, path in validations.items()}
            print("\n".join(report(f"{title} as choice runs (tuner within 10 % of the best timed)", picked,
                                    validations)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
