"""The fits of ``collectives-tune`` that measure nothing: non-negative least squares, the search of
terms the replay is not linear in, and the fits of the window's, the cache's and the reads' terms to
timed calls (``tune`` times them; here they are priced by ``tuner`` and fitted)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

from . import reads, tuner
from .cache import beyond, footprint
from .profile import Profile, TransportCosts

Case = tuple[str, int, str]
"""A timed call: collective, bytes, algorithm (``timing.Case``)."""

CACHE_CANDIDATES = (1 << 20, 3 << 19, 2 << 20, 3 << 20, 4 << 20, 6 << 20, 8 << 20)
"""The effective last-level caches per host ``fit_cache`` tries (``Profile.cache_bytes``)."""


def nonnegative_fit(rows: Sequence[Sequence[float]], targets: Sequence[float], relative: bool = True) -> list[float]:
    """Least squares in relative error (each row weighted by 1/target; ``relative`` False: in
    absolute error, for targets that are differences and may be near 0), no coefficient below 0."""
    a = np.array(rows, float)
    y = np.array(targets, float)
    if relative:
        a, y = a / y[:, None], np.ones(len(targets))
    free = list(range(a.shape[1]))
    x = np.zeros(a.shape[1])
    while free:
        sol, *_ = np.linalg.lstsq(a[:, free], y, rcond=None)
        if (sol >= 0).all():
            x[:] = 0
            x[free] = sol
            break
        free.pop(int(np.argmin(sol)))
    return [float(v) for v in x]


def fit_reads_call(timed: Sequence[tuple[Case, float]], ranks: int, cores: int, cache_bytes: int,
                   costs: TransportCosts) -> float | None:
    """``reads_call`` from the all-gathers by single copies ``timed`` where they are priced by their
    steps (``reads.once_time``: the C call, then ``peer_alpha``, ``heap_beta`` and ``peer_beta`` as
    ``single_copies`` measured them alone): what the smallest cost beyond its steps, where its bytes
    weigh least (None where there is none; 1.55-1.92 µs in six sweeps here, the built-in 1.25). Fitted
    with the other calls by reads it went to 0 at 2 ranks, and the steps alone priced the 2-rank
    all-gathers of 64 KiB at 0.6 of their time."""
    zero = dataclasses.replace(costs, reads_call=0.0)
    beyond_steps = [(n, t - reads.once_time(n, ranks, zero, beyond(footprint(c, n, ranks, ranks), cache_bytes)))
                    for (c, n, _), t in timed if reads.once_priced(c, ranks, zero, cores)]
    return max(0.0, min(beyond_steps)[1]) if beyond_steps else None


def case_time(case: Case, ranks: int, transport: str, profile: Profile) -> float:
    """The tuner's price of the timed call ``case`` at ``ranks`` ranks on one host under ``profile``."""
    collective, n, algorithm = case
    return tuner.predict(collective, algorithm, n, ranks, transport, 0, profile)


def crowd_error(cases: Sequence[tuple[Case, int]], times: Sequence[float], transport: str,
                profile: Profile) -> float:
    """The mean |log(predicted / measured)| of ``cases`` (each with its world size) under ``profile``."""
    total = 0.0
    for (case, ranks), t in zip(cases, times):
        total += abs(math.log(max(case_time(case, ranks, transport, profile), 1e-9) / t))
    return total / len(cases)


REFINE = ((0.5, 0.7, 0.85, 1.15, 1.4, 2.0), (0.9, 0.95, 1.05, 1.1), (0.97, 0.99, 1.01, 1.03))
"""The factors ``search_terms`` tries around each term's best value, pass by pass after the grid."""


def search_terms(terms: Sequence[str], scales: dict[str, float], error: Callable[[TransportCosts], float],
                 costs: TransportCosts, passes: int = 3) -> TransportCosts:
    """``costs`` with each of ``terms`` set in turn to the value of least ``error``: first on a grid
    of 0 and ``scales[term]`` times powers of two (1/8 to 64), then by ``REFINE``'s factors around the best
    (as ``perf/fit_profile.py`` searches, in a library module: the replay of crowded worlds is not
    linear in these terms, a rank's place in the cores' queue moves with them)."""
    best = error(costs)
    for round_ in range(passes):
        for term in terms:
            now = getattr(costs, term)
            if round_ == 0:
                trials = [0.0] + [scales[term] * 2.0 ** k for k in range(-3, 7)]
            else:
                factors = REFINE[min(round_, len(REFINE)) - 1]
                trials = [now * f for f in factors] if now else [scales[term] / 16]
            for value in trials:
                trial = dataclasses.replace(costs, **{term: value})
                e = error(trial)
                if e < best - 1e-12:
                    best, costs = e, trial
    return costs


def fit_window(timed: Sequence[tuple[Case, float]], ranks: int, cores: int, gamma: float,
               costs: TransportCosts) -> TransportCosts:
    """``costs`` with ``direct_alpha`` and ``direct_beta`` fitted to the direct engine's calls through
    its windows (``timed``), every one of them, the folds priced at ``gamma``: the fold in the cache
    (``tune.FOLD_BYTES``), as an all-reduce's window folds its blocks. With γ a numpy fold of 4 MiB,
    beyond the cache, the all-reduces pulled β down (0.019-0.026 ns/B), and without them the broadcasts
    alone said 0.062-0.065 and priced the direct all-reduces of 64 KiB at 3-8 ranks 1.4-1.6 times their
    time, moving the tuner's picks off them (docs/simulation.md, the fifty-fourth round)."""
    def rows(pairs: Sequence[tuple[Case, float]]) -> tuple[list[list[float]], list[float]]:
        features, targets = [], []
        for (collective, n, _), t in pairs:
            moved, reduced = tuner.window_factors(collective, n, ranks, cores)
            features.append([1.0, moved * n])
            targets.append(max(t - reduced * n * gamma, t * 0.05))
        return features, targets

    fixed, d_beta = nonnegative_fit(*rows(timed))
    return dataclasses.replace(costs, direct_alpha=fixed, direct_beta=d_beta)


def in_cache(case: Case, ranks: int) -> bool:
    """Whether the buffers of ``case`` at ``ranks`` ranks fit the smallest cache ``fit_cache`` tries."""
    return footprint(case[0], case[1], ranks, ranks) <= CACHE_CANDIDATES[0]


def fit_cache(timed: Sequence[tuple[Case, float]], ranks: int, transport: str, cores: int, calls: int,
              costs: TransportCosts, log: list[str]) -> tuple[TransportCosts, int]:
    """``costs`` with ``cache_beta``, and the effective cache per host (``Profile.cache_bytes``), of
    least mean |log error| over the schedules' calls ``timed``, every other constant kept (β fitted
    to the calls that fit the smallest cache tried, ``in_cache``): for each of ``CACHE_CANDIDATES``
    ``cache_beta`` by ``search_terms``. Without them a β fitted across 8 B - 4 MiB priced the 2-rank
    calls of 4 MiB at 0.5-0.7 of their time in the quiet validation runs."""
    def error(trial: TransportCosts, cache_bytes: int) -> float:
        return crowd_error([(case, ranks) for case, _ in timed], [t for _, t in timed], transport,
                           Profile({transport: trial}, cores=cores, calls=calls, cache_bytes=cache_bytes))

    best = (error(costs, 0), costs, 0)
    for cache_bytes in CACHE_CANDIDATES:
        fitted = search_terms(("cache_beta",), {"cache_beta": 0.01e-9},
                              lambda trial: error(trial, cache_bytes), costs, passes=4)
        best = min(best, (error(fitted, cache_bytes), fitted, cache_bytes), key=lambda b: b[0])
    _, fitted, cache_bytes = best
    log.append(f"# {transport} cache: {cache_bytes >> 10} KiB a host, cache_beta {fitted.cache_beta * 1e9:.4f} ns/B"
               f" (of {', '.join(str(c >> 10) for c in CACHE_CANDIDATES)} KiB; mean |log error| {error(costs, 0):.3f}"
               f" without -> {best[0]:.3f})")
    return fitted, cache_bytes
