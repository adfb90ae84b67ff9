"""``collectives-tune``: measure the cost model's constants on this machine and write a profile.

A short sweep over the real transports: for each, all-reduces of a few sizes by every schedule
(ring, tree, recursive) and, over shared memory, by the direct engine, timed by
``collectives.timing``; then a least-squares fit, in relative error, of the constants of
``collectives.tuning`` (per-call overhead, α per message, β per byte, the extra cost of a step
that sends and receives at once; γ per reduced byte from a timed numpy fold on one core), and
records this machine's cores. Over tcp it then splits a one-way message's α (``send_overhead``,
``recv_overhead``: ``fit_split``) from tree broadcasts and reduces at 3 ranks set against the
same at 2, every other constant kept; shared memory stays unsplit. Over shared memory, where the
kernel lets ranks read each other's memory (``cma.allowed_here``, and COLLECTIVES_CROSS_MEMORY
not 0), the direct engine's calls that go by such reads (all-to-alls, gathers and scatters
beyond its small window, all-gathers and all-reduces from their sizes: ``reads.route``) fit
their cost per peer and per byte (``tuning/reads.py``) and the others the engine's window terms;
elsewhere the reads' terms stay 0, and the tuner prices those calls as the routes taken without
them. There it also times the single copies of the direct all-gather alone (``single_copies``: two
processes, a core each, a ``memcpy``, a ``process_vm_readv`` and a ``process_vm_writev`` of blocks of
8-128 KiB, 0.3-2 s) for ``peer_alpha``, ``peer_beta`` and ``heap_beta`` (``reads.once_time``);
where cross-memory copies are refused it says so and keeps the built-in profile's. Over shared memory
it adds all-reduces of 16 MiB and fits the cache (``fit_cache``: ``cache_bytes``, ``cache_beta``); it
times a local copy for ``copy_beta``; then worlds of more ranks than cores (``fit_crowd``) for
``crowd_wake``, ``crowd_beta`` and ``direct_sync``, which two ranks with a core each cannot show (with
``--sleep`` after the opt-in ``sleep_wake``: ``fit_sleep``). Every case is timed with the other work beside
it read, and one timed beside over half a core of it is timed again or left out (``measure_quiet``); a part
of the sweep left with too few keeps the built-in profile's constants and says so. The profile (``calls`` 2:
the sweep times loops of calls, as the harness does) is printed and written as JSON; point
``COLLECTIVES_TUNE_FILE`` at it and the tuner uses it.

    collectives-tune                       # shm and tcp, 2 ranks and the crowded worlds, under a minute
    collectives-tune --out my.json --transports tcp --sizes 8,64K,1M,8M
    collectives-tune --netns                         # and tcp between two hosts (network namespaces; root)

With ``--netns`` it also sweeps tcp with its two ranks on two hosts made of network
namespaces joined by a veth pair (:mod:`collectives.testing.netns`), a rank on each, and
keeps that fit as the profile's ``tcp_hosts`` entry: what a message between hosts costs,
which the model prices apart from loopback's (``Profile.between_hosts``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from . import single_copies, sleep_wakes
from .config import Config, parse_size
from .errors import CollectivesError
from .timing import Case, measure, measure_outside
from .transports import cma
from .transports.progress import usable_cpus
from .tuning import pieces, reads, tuner
from .tuning.fitting import (case_time, crowd_error, fit_cache, fit_reads_call, fit_window, in_cache, nonnegative_fit,
                              search_terms)
from .tuning.machine import Machine, copies_whole, link_of
from .tuning.profile import BETWEEN_HOSTS, DEFAULT_FILE, ENV, Profile, TransportCosts, load

if TYPE_CHECKING:
    from .testing.netns import Host

SIZES = (8, 4 << 10, 64 << 10, 512 << 10, 4 << 20)
SCHEDULED = ("ring", "tree", "recursive")
BURST_SIZES = (8, 1 << 10)
LEAST_SEND = 1 / 64
"""The least ``send_overhead`` ``fit_split`` writes, a share of α: the bursts can say the sender goes on at once
(the fit at 0), but at 0 the model leaves α whole, the other end of the split."""
SPLIT_PASSES = 3
"""How many times ``fit_split`` draws its line again about the split it fitted (2 converged in a crowded world)."""
CROWD_SPLIT_PASSES = 2
"""How many times ``main`` fits the crowded terms (``fit_crowd``) and then the split (``fit_split``) in turn, to
timings taken once: the first crowded fit prices a one-way message with α unsplit, the split not yet known; the
second, with the first's split, gives the true terms back (docs/simulation.md, the sixty-seventh round)."""
SPLIT = ("tcp",)
"""The transports whose one-way message α the model splits (``send_overhead``, ``recv_overhead``)."""
DIRECT_COLLECTIVES = ("all_reduce", "all_gather", "broadcast")
CROWD_SIZES = (8, 64 << 10, 1 << 20)
"""Bytes per call of the crowded sweep (``fit_crowd``): a wake's cost shows at the small ones, a byte's at 1 MiB."""
CROWD_SCHEDULES = (("all_reduce", "ring"), ("all_reduce", "tree"), ("all_reduce", "recursive"),
                   ("all_gather", "ring"), ("broadcast", "tree"))
CROWD_DIRECT = (("all_reduce", 8), ("all_reduce", 64 << 10), ("all_gather", 8), ("all_gather", 64 << 10))
"""Direct calls through the window at the crowded worlds (shm): every rank waits for every peer, ``direct_sync``."""
CROWD_TERMS = ("crowd_wake", "crowd_beta")
"""The constants the crowded sweep fits, and over shared memory ``direct_sync`` too."""
CALLS = 2
"""The profile's ``calls``: the sweep times loops of calls, in which a rank done with one starts the next, as
the harness and the validation runs do; the built-in profile's, and the constants are fitted under it."""
CACHE_SIZES = (16 << 20,)
"""Bytes per call of the shm all-reduces added to the sweep for the cache (``fit_cache``): beyond any candidate."""
CROWD_REPEATS = 3
"""Each crowded case is the median of this many repeats: ranks queued for the cores measured up to twice
as slow from one repeat to the next (4 tcp ranks, 64 KiB-1 MiB), as the validation runs' repeats do."""
CROWD_SCALES = {"crowd_wake": 1e-6, "crowd_beta": 0.005e-9, "direct_sync": 1e-6}
"""The unit of each crowded term's search grid (``search_terms``: 0, then 1/8 to 64 of it)."""
MAX_CROWD_RANKS = 8
"""No crowded sweep where twice the cores is more ranks than this (the sweep would take minutes)."""
SLEEP_PROBED = ("shm",)
"""The transports whose ``sleep_wake`` the sleep probe times (``fit_sleep``): over tcp on 2 cores no crowded wait
stays within the yield window, so no yielding wake to set a sleeping one against (docs/simulation.md, the sixty-sixth
round)."""
Bursts = tuple[list[float], list[float]]
"""``fit_split``'s timings (``split_bursts``): its bursts at 2 ranks and at 3, seconds per call."""
CrowdSweep = tuple[list[tuple[Case, int]], list[float], list[bool]]
"""``fit_crowd``'s timings (``crowd_sweep``): each crowded case with its world size, its seconds per call and
whether it ran undisturbed."""


MARGIN = 0.0
"""The profile's ``margin``: the tuner takes the algorithm the model prices fastest, as under the built-in
profile. Fitted at 2 ranks alone the sweep wrote 1.25 (the rule's choice stood unless another was priced 2.25
times as fast), which left every pick to the size rule; with the crowded worlds fitted too, margin 0 picks
better on this machine's choice runs (docs/simulation.md, the fifty-fourth round)."""


DISTURBED_CORES = 0.5
"""Above this many cores' worth of CPU work outside the sweep's ranks while a case was timed, the
case was disturbed (``perf/disturbed.py``'s threshold, measured in docs/simulation.md, the
forty-sixth round: quiet rows read at most 0.49 cores, rows beside a busy loop over 0.5 and about
twice as slow)."""
RETRIES = 8
"""How many times over the disturbed cases of a world are timed again before they are left out."""
RETRY_PAUSE = 5.0
"""Seconds to wait before timing disturbed cases again: other work on a shared machine comes and goes."""


def measure_quiet(cases: Sequence[Case], ranks: int, transport: str, rounds: int, log: list[str],
                  hosts: Sequence[str] | None = None, places: Sequence[Host] | None = None,
                  retries: int | None = None, pause: float | None = None,
                  repeats: int = 1) -> tuple[list[float], list[bool]]:
    """Seconds per call of each of ``cases`` (``measure_outside``, the median of ``repeats``) and whether
    it ran undisturbed (at most ``DISTURBED_CORES`` outside the job, or not readable here): the disturbed ones are timed
    again up to ``retries`` times (default ``RETRIES``), ``pause`` seconds apart (``RETRY_PAUSE``), and
    a ``# `` line of ``log`` says how many stayed disturbed. On a shared machine other work slows the
    ranks' calls, the crowded ones most (on 2 cores, 3-4 tcp ranks measured 1.5-2.8 times a quiet
    run's beside another session's work), and a constant fitted to such a call prices that work, not
    the machine."""
    retries = RETRIES if retries is None else retries
    pause = RETRY_PAUSE if pause is None else pause
    timed, outside = measure_outside(cases, ranks, transport, rounds=rounds, hosts=hosts, netns=places,
                                     repeats=repeats)
    times = [statistics.median(r) for r in timed]
    quiet = [o is None or o <= DISTURBED_CORES for o in outside]
    for _ in range(retries):
        again = [i for i, q in enumerate(quiet) if not q]
        if not again:
            break
        time.sleep(pause)
        timed, outside = measure_outside([cases[i] for i in again], ranks, transport, rounds=rounds, hosts=hosts,
                                         netns=places, repeats=repeats)
        for i, r, o in zip(again, timed, outside):
            if o is None or o <= DISTURBED_CORES:
                times[i], quiet[i] = statistics.median(r), True
    left = len(quiet) - sum(quiet)
    if left:
        log.append(f"# {transport} at {ranks} ranks: {left} of {len(cases)} calls disturbed (over {DISTURBED_CORES:g}"
                   f" cores of other work beside them, {retries + 1} tries), left out of the fit")
    return times, quiet


FOLD_BYTES = 512 << 10
"""Bytes of the timed fold for γ (``fold_seconds_per_byte``): the model's γ is a fold in the cache, raised
beyond it by ``cache_beta`` (``cache.fold_gamma``); here a numpy fold ran at 0.021 ns/B at 256-512 KiB, 0.031-0.036
at 1 MiB and 0.068 from 2 MiB, out of the cores' 2 MiB L2 (docs/simulation.md, the fifty-fourth round)."""


def fold_seconds_per_byte(nbytes: int = FOLD_BYTES, repeats: int = 20) -> float:
    """γ: the fastest of ``repeats`` in-place float32 additions of ``nbytes``, per byte."""
    a = np.ones(nbytes // 4, np.float32)
    b = np.ones(nbytes // 4, np.float32)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.add(a, b, out=a)
        best = min(best, time.perf_counter() - start)
    return best / nbytes


COPY_BYTES = 1 << 20
"""Bytes of the timed local copy for ``copy_beta`` (``copy_seconds_per_byte``): the model's rate is the
cache's (``cache.spilled`` adds ``cache_beta`` beyond it); here a numpy copy ran at 0.022 ns/B at 256 KiB,
0.036 at 1 MiB (the built-in profile's fitted 0.039-0.05) and 0.067 from 4 MiB, out of the cores' 2 MiB L2."""


def copy_seconds_per_byte(nbytes: int = COPY_BYTES, repeats: int = 20) -> float:
    """``copy_beta``: the fastest of ``repeats`` numpy copies of ``nbytes`` into another buffer, per
    byte: the copies a rank makes within its own memory around a schedule (``tuning/copies.py``:
    an all-gather's input into its block of the output), which the transports' sweeps, all-reduces
    in place, never make."""
    a = np.ones(nbytes // 4, np.float32)
    b = np.zeros(nbytes // 4, np.float32)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - start)
    return best / nbytes


def _model_time(case: Case, ranks: int, costs: TransportCosts, whole: bool = False, calls: int = 1) -> float:
    """The model's time of ``case`` at ``ranks`` ranks with ``costs`` (no core queue; ``whole``:
    receivers copy a message out once all of it is in, ``machine.copies_whole``), per call of
    ``calls`` back to back (``Profile.calls``)."""
    collective, nbytes, algorithm = case
    return tuner.replay_time(collective, algorithm, nbytes, lambda: Machine(
        ranks, ranks, link_of("fit", costs), gamma=costs.gamma, overhead=costs.overhead, whole_messages=whole), calls)


def _features(case: Case, size: int, gamma: float, whole: bool = False, calls: int = 1) -> tuple[list[float], float]:
    """The model's time of ``case`` as ``features · (overhead, alpha, beta, exchange) + fixed``
    (the replay is linear in the constants while its critical path stays the same)."""
    def at(overhead: float, alpha: float, beta: float, g: float, exchange: float = 0.0) -> float:
        return _model_time(case, size, TransportCosts(overhead, alpha, beta, g, exchange=exchange), whole, calls)

    return [at(1, 0, 0, 0), at(0, 1, 0, 0), at(0, 0, 1, 0), at(0, 0, 0, 0, 1)], at(0, 0, 0, gamma)


def reads_allowed() -> bool:
    """Whether the ranks of this machine will exchange by reads of each other's memory."""
    return Config.from_env().cross_memory and cma.allowed_here()


def fit_reads(cases: Sequence[Case], times: Sequence[float], ranks: int, cores: int,
              costs: TransportCosts, call: float | None = None) -> TransportCosts:
    """``costs`` with ``reads_call``, ``reads_alpha`` and ``reads_beta`` fitted to the calls by
    reads ``cases`` took (``times``, seconds), ``direct_alpha`` and γ kept; with ``call``, that
    ``reads_call`` (measured apart, ``fit_reads_call``: at 2 ranks every call by reads makes one C
    call and one copy of a peer, so the fit cannot tell the two apart) and the other two fitted."""
    rows, targets = [], []
    for (c, n, _), t in zip(cases, times):
        terms = reads.terms(c, n, ranks, cores)
        rows.append([terms.c_calls, terms.copies, terms.moved] if call is None else [terms.copies, terms.moved])
        fixed = terms.engine_calls * costs.direct_alpha + terms.reduced * costs.gamma
        targets.append(max(t - fixed - (terms.c_calls * call if call is not None else 0.0), t * 0.05))
    if call is None:
        call, alpha, beta = nonnegative_fit(rows, targets)
    else:
        alpha, beta = nonnegative_fit(rows, targets)
    return dataclasses.replace(costs, reads_call=call, reads_alpha=alpha, reads_beta=beta)


def fit_copies(costs: TransportCosts, allowed: bool, log: list[str]) -> TransportCosts:
    """``costs`` with ``peer_alpha``, ``peer_beta`` and ``heap_beta`` measured by timing the single
    copies alone (``single_copies.measure``), or, where cross-memory copies are not ``allowed`` or
    cannot be timed, the built-in profile's; either way says which in a ``# `` line of ``log``."""
    why = None if allowed else "cross-memory copies are not allowed here (COLLECTIVES_CROSS_MEMORY=0 or ptrace refused)"
    began = time.perf_counter()
    if why is None:
        try:
            steps, _ = single_copies.measure()
        except single_copies.CopiesRefused as exc:
            why = str(exc)
        else:
            if min(steps) <= 0:
                why = (f"a line came out at or below 0 ({steps.peer_alpha * 1e6:.2f} us, {steps.peer_beta * 1e9:.4f}"
                       f" and {steps.heap_beta * 1e9:.4f} ns/B): too noisy to keep")
    if why is not None:
        built_in = load(DEFAULT_FILE).costs("shm")
        log.append(f"# shm single copies not measured: {why}; peer_alpha {built_in.peer_alpha * 1e6:.2f} us, peer_beta"
                   f" {built_in.peer_beta * 1e9:.4f} ns/B and heap_beta {built_in.heap_beta * 1e9:.4f} ns/B kept"
                   " from the built-in profile")
        return dataclasses.replace(costs, peer_alpha=built_in.peer_alpha, peer_beta=built_in.peer_beta,
                                   heap_beta=built_in.heap_beta)
    sizes = single_copies.STEP_SIZES
    log.append(f"# shm single copies measured (two processes, a core each, blocks of {sizes[0] >> 10}-{sizes[-1] >> 10}"
               f" KiB, medians of 5 lines): peer_alpha {steps.peer_alpha * 1e6:.2f} us, peer_beta"
               f" {steps.peer_beta * 1e9:.4f} ns/B, heap_beta {steps.heap_beta * 1e9:.4f} ns/B"
               f" ({time.perf_counter() - began:.1f} s)")
    return dataclasses.replace(costs, **steps._asdict())


def three_less_two(case: Case, transport: str, profile: Profile) -> float:
    """What ``case`` costs at 3 ranks more than at 2 under ``profile``: what ``fit_split``'s bursts measure."""
    return case_time(case, 3, transport, profile) - case_time(case, 2, transport, profile)


def split_features(case: Case, costs: TransportCosts, transport: str = "tcp", cores: int = 0, calls: int = 1,
                   cache_bytes: int = 0) -> tuple[list[float], float]:
    """What 3 ranks cost more than 2 for ``case``, in the model (on hosts of ``cores``, with the crowded
    terms of ``costs``: 3 ranks on 2 cores queue for them), as ``features · (send_overhead,
    recv_overhead) + fixed`` about the split of ``costs`` (its ``send_overhead`` and ``recv_overhead``,
    at least ``LEAST_SEND`` of α each: at 0 the model leaves α unsplit), a line through points a
    quarter of each beyond it (the queue and the loop of calls bend the model at other points)."""
    def more(send: float, recv: float) -> float:
        return three_less_two(case, transport, Profile(
            {transport: dataclasses.replace(costs, send_overhead=send, recv_overhead=recv)},
            cores=cores, calls=calls, cache_bytes=cache_bytes))

    least = costs.alpha * LEAST_SEND
    if least <= 0:
        return [0.0, 0.0], more(0.0, 0.0)
    send, recv = max(costs.send_overhead, least), max(costs.recv_overhead, least)
    base = more(send, recv)
    features = [(more(send * 1.25, recv) - base) / (send / 4), (more(send, recv * 1.25) - base) / (recv / 4)]
    return features, base - features[0] * send - features[1] * recv


def split_cases(sizes: Sequence[int] = BURST_SIZES) -> list[Case]:
    """``fit_split``'s bursts: tree broadcasts and reduces of ``sizes``."""
    return [(c, n, "tree") for c in ("broadcast", "reduce") for n in sizes]


def split_bursts(transport: str, rounds: int, sizes: Sequence[int] = BURST_SIZES) -> Bursts:
    """``fit_split``'s timings: its bursts (``split_cases``) at 2 ranks and at 3, seconds per call."""
    cases = split_cases(sizes)
    return measure(cases, 2, transport, rounds=rounds), measure(cases, 3, transport, rounds=rounds)


def fit_split(transport: str, costs: TransportCosts, rounds: int, log: list[str],
              sizes: Sequence[int] = BURST_SIZES, cores: int = 0, calls: int = 1,
              cache_bytes: int = 0, bursts: Bursts | None = None) -> TransportCosts:
    """``costs`` with ``send_overhead`` and ``recv_overhead`` fitted to one-way bursts: tree
    broadcasts and reduces of ``sizes`` at 3 ranks less the same at 2. The root of a broadcast
    at 3 ranks sends twice in a step that receives nothing, so it costs one sender's turn more
    than at 2 (``send_overhead``: after it the sender is free again); the root of a reduce at
    3 finds its second message already there and pays what taking it costs
    (``recv_overhead``). The other constants are kept (fitted before at 2 ranks and, with
    ``cores``, in the crowded worlds: 3 ranks on 2 cores wait for a core, which a fit without the
    crowded terms put in ``recv_overhead``, capped at α less ``send_overhead`` in most sweeps). The
    model bends with the queue and the loop of ``calls``, so the line is drawn again about each fit,
    ``SPLIT_PASSES`` times, from a quarter of α each. With ``bursts`` (``split_bursts``' timings of
    ``sizes``) it fits those and times nothing."""
    cases = split_cases(sizes)
    two, three = bursts if bursts is not None else split_bursts(transport, rounds, sizes)
    split = dataclasses.replace(costs, send_overhead=costs.alpha / 4, recv_overhead=costs.alpha / 4)
    for _ in range(SPLIT_PASSES):
        rows, targets = [], []
        for case, t2, t3 in zip(cases, two, three):
            features, fixed = split_features(case, split, transport, cores, calls, cache_bytes)
            rows.append(features)
            targets.append(t3 - t2 - fixed)
        send, recv = nonnegative_fit(rows, targets, relative=False)
        send = min(max(send, costs.alpha * LEAST_SEND), costs.alpha)  # at 0 the model would leave α unsplit
        split = dataclasses.replace(costs, send_overhead=send, recv_overhead=min(recv, costs.alpha - send))
    if split.recv_overhead < recv:  # then it is a bound, not a measurement: say so
        log.append(f"  {transport:<4} recv_overhead capped at alpha - send_overhead ({split.recv_overhead * 1e6:.2f} us;"
                   f" the fit wanted {recv * 1e6:.2f} us): the reduces at 3 ranks cost more than a message's alpha")
    profile = Profile({transport: split}, cores=cores, calls=calls, cache_bytes=cache_bytes)
    for case, t2, t3 in zip(cases, two, three):
        model = three_less_two(case, transport, profile) * 1e6
        log.append(f"  {transport:<4} {case[0]:<10} {case[2]:<10} {case[1]:>9} B  3 ranks {t3 * 1e6:8.1f} us"
                   f"  2 ranks {t2 * 1e6:8.1f} us  more {(t3 - t2) * 1e6:7.1f} us  model more {model:7.1f} us")
    return split


def crowd_worlds(cores: int) -> list[int]:
    """The world sizes of the crowded sweep on a host of ``cores`` cores: one rank more than the
    cores, and two a core (3 and 4 ranks on 2 cores); none where the cores are not counted or
    two a core would be more than ``MAX_CROWD_RANKS``."""
    return [cores + 1, 2 * cores] if 0 < cores and 2 * cores <= MAX_CROWD_RANKS else []


def crowd_cases(transport: str) -> list[Case]:
    """The crowded sweep's calls over ``transport``: schedules of every shape at ``CROWD_SIZES``
    and, over shared memory, direct calls through the window."""
    cases: list[Case] = [(c, n, a) for c, a in CROWD_SCHEDULES for n in CROWD_SIZES]
    if transport == "shm":
        cases += [(c, n, "direct") for c, n in CROWD_DIRECT]
    return cases


def fit_sleep(transport: str, costs: TransportCosts, cores: int, log: list[str]) -> TransportCosts:
    """``costs`` with ``sleep_wake`` timed by ``sleep_wakes`` at the crowded sweep's larger world (``crowd_worlds``):
    a sleeping rank's wake less a yielding one's; where there is no such world, it fails, or too few waits of either
    kind came back, the built-in profile's, and the log says why."""
    worlds = crowd_worlds(cores)
    if not worlds:
        return built_in_terms(transport, ("sleep_wake",), costs, f"no sleep probe ({cores} cores counted)", log)
    ranks = worlds[-1]
    try:
        measured = sleep_wakes.run(ranks, transport)
    except CollectivesError as exc:  # a world that cannot run (a rank's failure, a timeout): said, not fitted
        return built_in_terms(transport, ("sleep_wake",), costs, f"sleep probe failed ({exc})", log)
    fitted = sleep_wakes.fit(measured)
    if fitted is None:
        return built_in_terms(transport, ("sleep_wake",), costs,
                              f"sleep probe at {ranks} ranks: too few slept and yielded waits", log)
    sleep_wake, slept, yielded = fitted
    log.append(f"# {transport} sleep probe ({ranks} ranks on {cores} cores): sleep_wake {sleep_wake * 1e6:.1f} us"
               f" ({slept} waits slept, {yielded} yielded: the median wakes' difference)")
    return dataclasses.replace(costs, sleep_wake=sleep_wake)


def crowd_sweep(transport: str, cores: int, rounds: int, log: list[str]) -> CrowdSweep:
    """``fit_crowd``'s timings: every crowded case with its world size (``crowd_worlds``, ``crowd_cases``),
    its seconds per call and whether it ran undisturbed (``measure_quiet``); none where no world is crowded."""
    every: list[tuple[Case, int]] = []
    measured: list[float] = []
    quiet: list[bool] = []
    for ranks in crowd_worlds(cores):
        cases = crowd_cases(transport)
        times, kept = measure_quiet(cases, ranks, transport, rounds, log, repeats=CROWD_REPEATS)
        every += [(case, ranks) for case in cases]
        measured += times
        quiet += kept
    return every, measured, quiet


def fit_crowd(transport: str, costs: TransportCosts, cores: int, rounds: int, log: list[str],
              cache_bytes: int = 0, calls: int = 1, sweep: CrowdSweep | None = None) -> TransportCosts:
    """``costs`` with ``crowd_wake`` and ``crowd_beta`` (and over shared memory ``direct_sync``)
    fitted to worlds with more ranks than the host's ``cores`` (``crowd_worlds``), every constant
    measured at 2 ranks kept: two ranks with a core each show none of them, so a profile without
    this sweep prices every crowded call as if each rank had a core of its own. With ``sweep``
    (``crowd_sweep``'s timings on these ``cores``) it fits those and times nothing."""
    worlds = crowd_worlds(cores)
    if not worlds:
        log.append(f"# {transport} crowded sweep not run: {cores} cores counted (it runs where 2 x cores is 1 to"
                   f" {MAX_CROWD_RANKS // 2}); crowd_wake, crowd_beta and direct_sync stay 0")
        return costs
    every, measured, quiet = sweep if sweep is not None else crowd_sweep(transport, cores, rounds, log)
    at = [pair for pair, q in zip(every, quiet) if q]
    times = [t for t, q in zip(measured, quiet) if q]
    terms = CROWD_TERMS + (("direct_sync",) if transport == "shm" else ())
    if len(at) < len(every) // 2:
        fitted = built_in_terms(transport, terms, costs,
                                f"crowded sweep: only {len(at)} of {len(every)} calls undisturbed", log)
    else:
        def error(trial: TransportCosts) -> float:
            return crowd_error(at, times, transport, Profile({transport: trial}, cores=cores, calls=calls,
                                                             cache_bytes=cache_bytes))

        fitted = search_terms(terms, CROWD_SCALES, error, costs)
        without = dataclasses.replace(costs, **{t: 0.0 for t in terms})  # as before any pass of this fit
        values = ", ".join(f"{t} {getattr(fitted, t) * 1e9:.4f} ns/B" if t.endswith("beta")
                           else f"{t} {getattr(fitted, t) * 1e6:.2f} us" for t in terms)
        log.append(f"# {transport} crowded sweep ({', '.join(str(r) for r in worlds)} ranks on {cores} cores,"
                   f" {len(at)} calls undisturbed): {values}; mean |log error| {error(without):.3f}"
                   f" -> {error(fitted):.3f}")
    profile = Profile({transport: fitted}, cores=cores, calls=calls, cache_bytes=cache_bytes)
    for ((collective, n, algorithm), ranks), t, q in zip(every, measured, quiet):
        predicted = case_time((collective, n, algorithm), ranks, transport, profile)
        log.append(f"  {transport:<4} {collective:<10} {algorithm:<10} {n:>9} B  {ranks} ranks  measured"
                   f" {t * 1e6:10.1f} us  model {predicted * 1e6:10.1f} us  ({(predicted - t) / t * 100:+.0f} %)"
                   + ("" if q else "  disturbed"))
    return fitted


def undisturbed(timed: list[tuple[Case, float]], quiet: Sequence[bool], least: int) -> list[tuple[Case, float]] | None:
    """The ``timed`` cases that ran undisturbed, or None where fewer than half of them or than
    ``least`` (a fit's unknowns) did: a fit to the rest would price the other work, not the machine."""
    kept = [pair for pair, q in zip(timed, quiet) if q]
    return kept if len(kept) >= max(least, (len(timed) + 1) // 2) else None


def built_in_terms(transport: str, names: Sequence[str], costs: TransportCosts, why: str,
                   log: list[str]) -> TransportCosts:
    """``costs`` with ``names`` from the built-in profile's ``transport``, and a ``# `` line of ``log`` saying so."""
    built_in = load(DEFAULT_FILE).costs(transport)
    log.append(f"# {transport}: {why}; {', '.join(names)} kept from the built-in profile")
    return dataclasses.replace(costs, **{n: getattr(built_in, n) for n in names})


def fit_transport(transport: str, sizes: Sequence[int], ranks: int, rounds: int, gamma: float,
                  log: list[str], cores: int = 0, places: Sequence[Host] | None = None,
                  calls: int = 1) -> tuple[TransportCosts, int]:
    """Measure ``transport`` at ``ranks`` ranks and fit its constants; with ``places``, rank
    r on host ``places[r]`` (a network namespace each: the link between hosts). Over shared memory
    on one host also the cache (``fit_cache``): the constants, and the cache per host found (0: none)."""
    cached = transport == "shm" and not places
    cases: list[Case] = [("all_reduce", n, a) for a in SCHEDULED
                         for n in list(sizes) + [n for n in CACHE_SIZES if cached and n not in sizes]]
    allowed = transport == "shm" and reads_allowed()  # then the calls that go by reads fit their terms
    by_reads: list[Case] = [(c, n, "direct") for c in reads.READ_BYTES for n in sizes
                            if allowed and reads.route(c, n, ranks, cores)]
    direct: list[Case] = [(c, n, "direct") for c in DIRECT_COLLECTIVES for n in sizes if transport == "shm"
                          and (c, n, "direct") not in by_reads and not tuner.direct_runs_schedule(c, n, ranks, None, cores)
                          and not pieces.taken(c, n, ranks, cores)]  # a pipeline: not the window's terms
    hosts = [host.name for host in places] if places else None
    times, quiet = measure_quiet(cases + direct + by_reads, ranks, transport, rounds, log, hosts, places)
    parts = (slice(0, len(cases)), slice(len(cases), len(cases) + len(direct)), slice(len(cases) + len(direct), None))
    sched, window, reads_part = (undisturbed(list(zip((cases + direct + by_reads)[p], times[p])), quiet[p], least)
                                 for p, least in zip(parts, (4, 2, 3)))
    disturbed = f"too few calls undisturbed at {ranks} ranks"
    cache_bytes = 0
    costs = TransportCosts(0.0, 0.0, 0.0, gamma)
    fitted = [pair for pair in sched or [] if not cached or in_cache(pair[0], ranks)]
    if len(fitted) >= 4:
        rows, targets = [], []
        for case, t in fitted:
            features, fixed = _features(case, ranks, gamma, copies_whole(transport), calls)
            rows.append(features)
            targets.append(max(t - fixed, t * 0.05))
        overhead, alpha, beta, exchange = nonnegative_fit(rows, targets)
        costs = TransportCosts(overhead, alpha, beta, gamma, exchange=exchange)
    else:
        costs = built_in_terms(transport, ("overhead", "alpha", "beta", "exchange"), costs, disturbed, log)
    if window:
        costs = fit_window(window, ranks, cores, gamma, costs)
    elif direct:
        costs = built_in_terms(transport, ("direct_alpha", "direct_beta"), costs, disturbed, log)
    if cached and sched is not None and len(fitted) >= 4:
        costs, cache_bytes = fit_cache(sched, ranks, transport, cores, calls, costs, log)
    elif cached:
        costs = built_in_terms(transport, ("cache_beta",), costs, disturbed, log)
        cache_bytes = load(DEFAULT_FILE).cache_bytes
    if transport == "shm":
        costs = fit_copies(costs, allowed, log)
    if reads_part:
        call = fit_reads_call(reads_part, ranks, cores, cache_bytes, costs)
        others = [(case, t) for case, t in reads_part if not reads.once_priced(case[0], ranks, costs, cores)]
        costs = fit_reads([c for c, _ in others or reads_part], [t for _, t in others or reads_part], ranks, cores,
                          costs, call if others else None)
    elif by_reads:
        costs = built_in_terms(transport, ("reads_call", "reads_alpha", "reads_beta"), costs, disturbed, log)
    name = transport + (BETWEEN_HOSTS if places else "")
    fitted_profile = Profile({transport: costs}, cores=cores, calls=calls, cache_bytes=cache_bytes)
    for case, t, q in zip(cases + direct + by_reads, times, quiet):
        predicted = case_time(case, ranks, transport, fitted_profile)
        log.append(f"  {name:<4} {case[0]:<10} {case[2]:<10} {case[1]:>9} B  measured {t * 1e6:10.1f} us"
                   f"  model {predicted * 1e6:10.1f} us  ({(predicted - t) / t * 100:+.0f} %)"
                   + ("" if q else "  disturbed"))
    return costs, cache_bytes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="collectives-tune", description=__doc__.splitlines()[0])
    parser.add_argument("--transports", default="shm,tcp", help="comma-separated (default shm,tcp)")
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES), help="bytes per call, e.g. 8,64K,4M")
    parser.add_argument("--ranks", type=int, default=2, help="world size measured (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="batches per case (default 5)")
    parser.add_argument("--out", default=None, help=f"profile file to write (default ${ENV}, else collectives_tune.json)")
    parser.add_argument("--margin", type=float, default=MARGIN,
                        help="how much faster another algorithm must be predicted before the tuner leaves the"
                             f" measured size rule (1.0: twice as fast; default {MARGIN:g})")
    parser.add_argument("--cores", type=int, default=usable_cpus(),
                        help="cores per host to record: more ranks on a host queue for them"
                             " (default: this machine's, %(default)s; 0: not modelled)")
    parser.add_argument("--netns", action="store_true",
                        help="also measure tcp between two hosts (network namespaces joined by a veth pair, a rank"
                             f" on each; root): the profile's tcp{BETWEEN_HOSTS} entry")
    parser.add_argument("--no-split", action="store_true",
                        help="leave tcp's one-way α unsplit (send_overhead, recv_overhead 0) instead of timing"
                             " tree broadcasts and reduces at 3 ranks against 2")
    parser.add_argument("--calls", type=int, default=CALLS,
                        help="price a call as the mean of this many back to back, as the sweep (and the harness)"
                             " times loops of calls (default %(default)s, as the built-in profile)")
    parser.add_argument("--no-crowd", action="store_true",
                        help="leave crowd_wake, crowd_beta and direct_sync 0 instead of timing worlds of more ranks"
                             " than cores (cores + 1 and 2 x cores ranks)")
    parser.add_argument("--sleep", action="store_true",
                        help="time the wake of a rank that slept through a long wait against one that yielded (2 x"
                             " cores ranks) and write it as sleep_wake; off by default, sleep_wake then the built-in"
                             " profile's (0): the term alone, without the rota, prices the quiet runs worse")
    parser.add_argument("--quiet", action="store_true", help="print the profile only, not every case")
    args = parser.parse_args(argv)
    sizes = [parse_size(s, "--sizes") for s in args.sizes.split(",") if s]
    transports = [t for t in args.transports.split(",") if t]
    out = args.out or os.environ.get(ENV) or "collectives_tune.json"
    gamma = fold_seconds_per_byte(FOLD_BYTES)
    copy_beta = copy_seconds_per_byte()
    log: list[str] = []
    start = time.perf_counter()
    measured, cache_bytes = {}, 0
    for t in transports:
        measured[t], found = fit_transport(t, sizes, args.ranks, args.rounds, gamma, log, args.cores, calls=args.calls)
        measured[t] = dataclasses.replace(measured[t], copy_beta=copy_beta)
        cache_bytes = found or cache_bytes  # shared memory's: the transport whose copies it measures
    for t in transports:  # the crowded terms first: the split's bursts at 3 ranks are crowded on 2 cores
        if t in SLEEP_PROBED and args.sleep:  # before the crowd's fit, which then prices the calls' sleeps
            measured[t] = fit_sleep(t, measured[t], args.cores, log)
        crowd = crowd_sweep(t, args.cores, args.rounds, log) if not args.no_crowd else None
        bursts = split_bursts(t, args.rounds) if t in SPLIT and not args.no_split else None
        passes = CROWD_SPLIT_PASSES if crowd and crowd[0] and bursts else 1  # each fit with the other's: timed once
        for k in range(passes):
            said = log if k == passes - 1 else []  # the last pass's fits are the ones written
            if crowd is not None:
                measured[t] = fit_crowd(t, measured[t], args.cores, args.rounds, said, cache_bytes, args.calls,
                                        sweep=crowd)
            if bursts is not None:
                measured[t] = fit_split(t, measured[t], args.rounds, said, cores=args.cores, calls=args.calls,
                                        cache_bytes=cache_bytes, bursts=bursts)
    if args.netns:
        from .testing.netns import two_hosts  # test tooling: only when asked

        with two_hosts() as places:
            measured["tcp" + BETWEEN_HOSTS], _ = fit_transport("tcp", sizes, 2, args.rounds, gamma, log, args.cores,
                                                               places, args.calls)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    where = ", tcp also between two hosts (network namespaces)" if args.netns else ""
    profile = Profile(measured, f"collectives-tune {stamp}, {args.ranks} ranks{where}, sizes {args.sizes}",
                      args.margin, args.cores, args.calls, cache_bytes)
    profile.save(out)
    print("\n".join(profile.describe()))
    notes = [line for line in log if line.startswith("# ")]  # what was measured apart, or not: always said
    if notes:
        print("\n".join(notes))
    if not args.quiet:
        print("# fit, case by case:")
        print("\n".join(line for line in log if line not in notes))
    print(f"# written to {out} in {time.perf_counter() - start:.0f} s; use it with {ENV}={out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
