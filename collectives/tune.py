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
where cross-memory copies are refused it says so and keeps the built-in profile's. The profile is
printed and written as JSON; point ``COLLECTIVES_TUNE_FILE`` at it and the tuner uses it.

    collectives-tune                       # shm and tcp, 2 ranks, about a minute
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
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from . import single_copies
from .config import Config, parse_size
from .timing import Case, measure
from .transports import cma
from .transports.progress import usable_cpus
from .tuning import pieces, reads, tuner
from .tuning.machine import Machine, copies_whole, link_of
from .tuning.profile import BETWEEN_HOSTS, DEFAULT_FILE, DEFAULT_MARGIN, ENV, Profile, TransportCosts, load

if TYPE_CHECKING:
    from .testing.netns import Host

SIZES = (8, 4 << 10, 64 << 10, 512 << 10, 4 << 20)
SCHEDULED = ("ring", "tree", "recursive")
BURST_SIZES = (8, 1 << 10)
SPLIT = ("tcp",)
"""The transports whose one-way message α the model splits (``send_overhead``, ``recv_overhead``)."""
DIRECT_COLLECTIVES = ("all_reduce", "all_gather", "broadcast")


def fold_seconds_per_byte(nbytes: int = 4 << 20, repeats: int = 20) -> float:
    """γ: the fastest of ``repeats`` in-place float32 additions of ``nbytes``, per byte."""
    a = np.ones(nbytes // 4, np.float32)
    b = np.ones(nbytes // 4, np.float32)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.add(a, b, out=a)
        best = min(best, time.perf_counter() - start)
    return best / nbytes


def _model_time(case: Case, ranks: int, costs: TransportCosts, whole: bool = False) -> float:
    """The model's time of ``case`` at ``ranks`` ranks with ``costs`` (one call, no core queue;
    ``whole``: receivers copy a message out once all of it is in, ``machine.copies_whole``)."""
    collective, nbytes, algorithm = case
    return tuner.replay_time(collective, algorithm, nbytes, lambda: Machine(
        ranks, ranks, link_of("fit", costs), gamma=costs.gamma, overhead=costs.overhead, whole_messages=whole))


def _features(case: Case, size: int, gamma: float, whole: bool = False) -> tuple[list[float], float]:
    """The model's time of ``case`` as ``features · (overhead, alpha, beta, exchange) + fixed``
    (the replay is linear in the constants while its critical path stays the same)."""
    def at(overhead: float, alpha: float, beta: float, g: float, exchange: float = 0.0) -> float:
        return _model_time(case, size, TransportCosts(overhead, alpha, beta, g, exchange=exchange), whole)

    return [at(1, 0, 0, 0), at(0, 1, 0, 0), at(0, 0, 1, 0), at(0, 0, 0, 0, 1)], at(0, 0, 0, gamma)


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


def reads_allowed() -> bool:
    """Whether the ranks of this machine will exchange by reads of each other's memory."""
    return Config.from_env().cross_memory and cma.allowed_here()


def fit_reads(cases: Sequence[Case], times: Sequence[float], ranks: int, cores: int,
              costs: TransportCosts) -> TransportCosts:
    """``costs`` with ``reads_call``, ``reads_alpha`` and ``reads_beta`` fitted to the calls by
    reads ``cases`` took (``times``, seconds), ``direct_alpha`` and γ kept."""
    rows, targets = [], []
    for (c, n, _), t in zip(cases, times):
        terms = reads.terms(c, n, ranks, cores)
        rows.append([terms.c_calls, terms.copies, terms.moved])
        targets.append(max(t - terms.engine_calls * costs.direct_alpha - terms.reduced * costs.gamma, t * 0.05))
    call, alpha, beta = nonnegative_fit(rows, targets)
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


def split_features(case: Case, costs: TransportCosts) -> tuple[list[float], float]:
    """What 3 ranks cost more than 2 for ``case``, in the model, as ``features ·
    (send_overhead, recv_overhead) + fixed``: linear while both are above 0 and their sum
    within α, so taken from points inside (at 0 the model leaves α unsplit)."""
    def more(send: float, recv: float) -> float:
        split = dataclasses.replace(costs, send_overhead=send, recv_overhead=recv)
        return _model_time(case, 3, split) - _model_time(case, 2, split)

    unit = costs.alpha / 4
    if unit <= 0:
        return [0.0, 0.0], more(0.0, 0.0)
    base = more(unit, unit)
    features = [(more(2 * unit, unit) - base) / unit, (more(unit, 2 * unit) - base) / unit]
    return features, base - unit * sum(features)


def fit_split(transport: str, costs: TransportCosts, rounds: int, log: list[str],
              sizes: Sequence[int] = BURST_SIZES) -> TransportCosts:
    """``costs`` with ``send_overhead`` and ``recv_overhead`` fitted to one-way bursts: tree
    broadcasts and reduces of ``sizes`` at 3 ranks less the same at 2. The root of a broadcast
    at 3 ranks sends twice in a step that receives nothing, so it costs one sender's turn more
    than at 2 (``send_overhead``: after it the sender is free again); the root of a reduce at
    3 finds its second message already there and pays what taking it costs
    (``recv_overhead``). The other constants are kept (fitted before at 2 ranks)."""
    cases: list[Case] = [(c, n, "tree") for c in ("broadcast", "reduce") for n in sizes]
    two = measure(cases, 2, transport, rounds=rounds)
    three = measure(cases, 3, transport, rounds=rounds)
    rows, targets = [], []
    for case, t2, t3 in zip(cases, two, three):
        features, fixed = split_features(case, costs)
        rows.append(features)
        targets.append(t3 - t2 - fixed)
    send, recv = nonnegative_fit(rows, targets, relative=False)
    send = min(send, costs.alpha)
    split = dataclasses.replace(costs, send_overhead=send, recv_overhead=min(recv, costs.alpha - send))
    if split.recv_overhead < recv:  # then it is a bound, not a measurement: say so
        log.append(f"  {transport:<4} recv_overhead capped at alpha - send_overhead ({split.recv_overhead * 1e6:.2f} us;"
                   f" the fit wanted {recv * 1e6:.2f} us): the reduces at 3 ranks cost more than a message's alpha")
    for case, t2, t3 in zip(cases, two, three):
        model = (_model_time(case, 3, split) - _model_time(case, 2, split)) * 1e6
        log.append(f"  {transport:<4} {case[0]:<10} {case[2]:<10} {case[1]:>9} B  3 ranks {t3 * 1e6:8.1f} us"
                   f"  2 ranks {t2 * 1e6:8.1f} us  more {(t3 - t2) * 1e6:7.1f} us  model more {model:7.1f} us")
    return split


def fit_transport(transport: str, sizes: Sequence[int], ranks: int, rounds: int, gamma: float,
                  log: list[str], cores: int = 0, places: Sequence[Host] | None = None) -> TransportCosts:
    """Measure ``transport`` at ``ranks`` ranks and fit its constants; with ``places``, rank
    r on host ``places[r]`` (a network namespace each: the link between hosts)."""
    cases: list[Case] = [("all_reduce", n, a) for a in SCHEDULED for n in sizes]
    allowed = transport == "shm" and reads_allowed()  # then the calls that go by reads fit their terms
    by_reads: list[Case] = [(c, n, "direct") for c in reads.READ_BYTES for n in sizes
                            if allowed and reads.route(c, n, ranks, cores)]
    direct: list[Case] = [(c, n, "direct") for c in DIRECT_COLLECTIVES for n in sizes if transport == "shm"
                          and (c, n, "direct") not in by_reads and not tuner.direct_runs_schedule(c, n, ranks, None, cores)
                          and not pieces.taken(c, n, ranks, cores)]  # a pipeline: not the window's terms
    hosts = [host.name for host in places] if places else None
    times = measure(cases + direct + by_reads, ranks, transport, rounds=rounds, hosts=hosts, netns=places)
    sched_times, direct_times = times[: len(cases)], times[len(cases): len(cases) + len(direct)]
    rows, targets = [], []
    for case, t in zip(cases, sched_times):
        features, fixed = _features(case, ranks, gamma, copies_whole(transport))
        rows.append(features)
        targets.append(max(t - fixed, t * 0.05))
    overhead, alpha, beta, exchange = nonnegative_fit(rows, targets)
    costs = TransportCosts(overhead, alpha, beta, gamma, exchange=exchange)
    if direct:
        d_rows, d_targets = [], []
        for (collective, n, _), t in zip(direct, direct_times):
            moved, reduced = tuner.window_factors(collective, n, ranks, cores)
            d_rows.append([1.0, moved * n])
            d_targets.append(max(t - reduced * n * gamma, t * 0.05))
        fixed, d_beta = nonnegative_fit(d_rows, d_targets)
        costs = dataclasses.replace(costs, direct_alpha=fixed, direct_beta=d_beta)
    if by_reads:
        costs = fit_reads(by_reads, times[len(cases) + len(direct):], ranks, cores, costs)
    if transport == "shm":
        costs = fit_copies(costs, allowed, log)
    name = transport + (BETWEEN_HOSTS if places else "")
    for case, t in zip(cases + direct + by_reads, times):
        predicted = tuner.predict(case[0], case[2], case[1], ranks, transport, 0,
                                  Profile({transport: costs}, cores=cores))
        log.append(f"  {name:<4} {case[0]:<10} {case[2]:<10} {case[1]:>9} B  measured {t * 1e6:10.1f} us"
                   f"  model {predicted * 1e6:10.1f} us  ({(predicted - t) / t * 100:+.0f} %)")
    return costs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="collectives-tune", description=__doc__.splitlines()[0])
    parser.add_argument("--transports", default="shm,tcp", help="comma-separated (default shm,tcp)")
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES), help="bytes per call, e.g. 8,64K,4M")
    parser.add_argument("--ranks", type=int, default=2, help="world size measured (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="batches per case (default 5)")
    parser.add_argument("--out", default=None, help=f"profile file to write (default ${ENV}, else collectives_tune.json)")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                        help="how much faster another algorithm must be predicted before the tuner leaves the"
                             f" measured size rule (1.0: twice as fast; default {DEFAULT_MARGIN})")
    parser.add_argument("--cores", type=int, default=usable_cpus(),
                        help="cores per host to record: more ranks on a host queue for them"
                             " (default: this machine's, %(default)s; 0: not modelled)")
    parser.add_argument("--netns", action="store_true",
                        help="also measure tcp between two hosts (network namespaces joined by a veth pair, a rank"
                             f" on each; root): the profile's tcp{BETWEEN_HOSTS} entry")
    parser.add_argument("--no-split", action="store_true",
                        help="leave tcp's one-way α unsplit (send_overhead, recv_overhead 0) instead of timing"
                             " tree broadcasts and reduces at 3 ranks against 2")
    parser.add_argument("--quiet", action="store_true", help="print the profile only, not every case")
    args = parser.parse_args(argv)
    sizes = [parse_size(s, "--sizes") for s in args.sizes.split(",") if s]
    transports = [t for t in args.transports.split(",") if t]
    out = args.out or os.environ.get(ENV) or "collectives_tune.json"
    gamma = fold_seconds_per_byte()
    log: list[str] = []
    start = time.perf_counter()
    measured = {t: fit_transport(t, sizes, args.ranks, args.rounds, gamma, log, args.cores) for t in transports}
    for t in transports:
        if t in SPLIT and not args.no_split:
            measured[t] = fit_split(t, measured[t], args.rounds, log)
    if args.netns:
        from .testing.netns import two_hosts  # test tooling: only when asked

        with two_hosts() as places:
            measured["tcp" + BETWEEN_HOSTS] = fit_transport("tcp", sizes, 2, args.rounds, gamma, log, args.cores,
                                                            places)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    where = ", tcp also between two hosts (network namespaces)" if args.netns else ""
    profile = Profile(measured, f"collectives-tune {stamp}, {args.ranks} ranks{where}, sizes {args.sizes}",
                      args.margin, args.cores)
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
