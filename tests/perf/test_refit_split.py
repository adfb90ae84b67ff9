"""perf/refit_split.py: the fit of tcp's one-way α split finds the split its rows were priced with."""

from __future__ import annotations

import dataclasses

import pytest

from collectives.tuning.profile import current
from perf import refit_split


def test_the_fit_recovers_the_split_that_priced_the_rows() -> None:
    """Rows priced by the model with send 1.5 µs and receive 2 µs (α 4 µs, so a small grid)
    fit back to that split, every other constant kept."""
    base = current()
    tcp = dataclasses.replace(base.costs("tcp"), alpha=4e-6)
    profile = dataclasses.replace(base, transports={**base.transports, "tcp": tcp})
    truth = refit_split.with_split(profile, 1.5e-6, 2e-6)
    rows = [{"collective": c, "size": n, "algorithm": a, "ranks": r}
            for c, n, a in refit_split.CASES for r in (2, 3)]
    for row in rows:
        row["measured_us"] = refit_split.predicted(row, truth, 2)
    send, recv, _ = refit_split.fit(rows, profile, 2)
    assert (send, recv) == (pytest.approx(1.5e-6), pytest.approx(2e-6))
