"""How far the repeats of one measurement run agree (``collectives.timing.measure_repeats``):
the spread no model can beat, measured within the run instead of between runs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def agreement(repeats: Iterable[Sequence[float]], label: str = "cases") -> str:
    """One line: of the cases measured at least twice, how many have their first two repeats
    within 10 % and 25 % of each other (the larger over the smaller), and the median gap."""
    gaps = sorted(max(r[0], r[1]) / min(r[0], r[1]) - 1 for r in repeats if len(r) >= 2 and min(r[0], r[1]) > 0)
    if not gaps:
        return f"# repeats: none of the {label} was measured twice"
    return (f"# repeats 1 and 2 of the same run agree within 10 % at {sum(g <= 0.10 for g in gaps)} and within 25 %"
            f" at {sum(g <= 0.25 for g in gaps)} of {len(gaps)} {label}; median gap {gaps[len(gaps) // 2] * 100:.0f} %")
