"""The tuner: the algorithm the cost model predicts fastest for a call.

``predict`` prices one algorithm for (collective, bytes, world size, layout, transport):
schedules (ring, tree, recursive) are replayed on a modelled machine of this layout
(``events.replay`` on ``machine.Machine``) with the profile's α, β, γ; the direct engine
(loads from shared windows, no messages) and the two-level all-reduce are priced by their
byte counts (where the engine reads peers' memory instead, by the reads' terms: ``reads``); with the profile's ``cores``, ranks beyond a host's cores queue for them; beyond the cache a schedule of one host takes
at least its ranks' streams to memory (``memory``), and its folds into a rank's buffer beyond the cache pay
more than γ (``cache.fold_gamma``).
``choose`` takes the cheapest of the algorithms that can run here where it beats the
measured size rule's choice by more than the profile's margin, else the rule's. Every
input is the same on every rank (the profile is one file, or the built-in one), so every rank
chooses the same algorithm, which the collective needs: ranks that ran different schedules
would never match their messages. The schedules are priced with the steps that run
(``steps.step_bytes``, the rule the plans ask: 1 MiB, larger for large all-reduces over tcp;
not COLLECTIVES_CHUNK_BYTES) and 4-byte elements, whatever the call's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

from ..algorithms import direct_routes
from ..algorithms.registry import (DIRECT, DIRECT_LIMITS, DIRECT_REDUCE_BYTES, HIERARCHICAL, SCHEDULES, automatic,
                                   schedule_for)
from ..algorithms.schedule import PENDING_COPY_BYTES, Step, partition
from ..steps import STEP_BYTES, step_bytes
from . import memory, pieces, reads
from .cache import beyond, fold_gamma, fold_spilled, footprint, read_once, read_spilled, spilled, windowed
from .copies import PENDING_RANKS, copy_time, third_buffer_folds
from .events import largest_to_a_peer, replay_calls
from .machine import LinkClass, Machine, link_of, lockstep_bytes, traits_of
from .profile import BETWEEN_HOSTS, DEFAULT_MARGIN, Profile, TransportCosts, current
from .symmetry import ROTATION, chain_time, lockstep_time, symmetry_of

ITEMSIZE = 4
"""Bytes per element of the modelled calls (float32, the harness's default)."""

SEGMENT_BYTES = STEP_BYTES
"""The schedules' pipelining step where no transport names a larger one (``steps.STEP_BYTES``)."""

FLAT = ("ring", "tree", "recursive")

MARGIN = DEFAULT_MARGIN
"""The default of ``Profile.margin`` for a profile that names none (``collectives-tune``'s, fitted
at 2 ranks): the size rule (``registry.automatic``, set by measurement on one machine) keeps its
choice unless another algorithm is predicted faster by more than this share (1.25: 2.25 times
as fast). The built-in profile, fitted at 2-8 ranks, says 0: its picks measured closer to the
best than the rule's (docs/simulation.md)."""


def schedules(collective: str, algorithm: str, nbytes: int, size: int, segment_bytes: int = SEGMENT_BYTES,
              only: int | None = None) -> list[Iterator[Step]]:
    """Every rank's schedule of ``algorithm`` for a ``collective`` of ``nbytes`` (root 0), or
    rank ``only``'s alone."""
    count = -(-nbytes // ITEMSIZE)
    segment = max(1, segment_bytes // ITEMSIZE)
    name = "all_to_all" if collective == "all_to_all_v" else collective
    factory = schedule_for(name, algorithm, nbytes)
    ranks = range(size) if only is None else [only]
    if name == "all_reduce":
        return [factory(r, size, count, segment) for r in ranks]
    if name in ("broadcast", "reduce"):
        return [factory(r, size, 0, count, segment) for r in ranks]
    blocks = partition(-(-count // size) * size, size)  # one block per rank, of equal size, as the calls pass
    if name in ("gather", "scatter"):
        return [factory(r, size, 0, blocks, segment) for r in ranks]
    return [factory(r, size, blocks, segment) for r in ranks]


REPLAY_RANKS = 16
"""Above this many ranks, symmetric schedules (rings, recursive halving and doubling on powers
of two) are priced from rank 0's steps alone (``symmetry``); the others are replayed in full
while that stays affordable."""

REPLAY_EVENTS = 3_000_000
"""The most steps a full replay may take (rank 0's steps times the ranks, an upper bound for
the trees, whose root does the most); beyond it an algorithm is not priced."""


LINEAR_BYTES = 16 << 20
"""Above this size a call is priced by extending the line through the prices at half this size
and at this size: by then a schedule is many segments long and its time grows linearly with
the bytes (the pipeline is full), and replaying every segment of a 1 GiB call would take seconds."""


class TooLarge(Exception):
    """Replaying this schedule at this scale would take too long (more than REPLAY_EVENTS steps)."""


def local_copy_time(collective: str, algorithm: str, nbytes: int, size: int, link: LinkClass) -> float:
    """Seconds of one call's local copies (``copies.copy_time``) and, where its work buffers
    pend, of the folds that read the input (``copies.third_buffer_folds``), of the rank that folds
    most, at ``link``'s ``copy_beta`` (0: not modelled)."""
    if not link.copy_beta:
        return 0.0
    return copy_time(collective, nbytes, size, link) + pending_folds(collective, algorithm, nbytes, size) * link.copy_beta


@functools.lru_cache(maxsize=1024)
def pending_folds(collective: str, algorithm: str, nbytes: int, size: int) -> int:
    """Bytes the rank that folds most from its input folds so in one call (0 below
    ``PENDING_COPY_BYTES``); beyond REPLAY_RANKS, of three ranks (the first non-root, the middle
    and the last one)."""
    if nbytes < PENDING_COPY_BYTES or size <= 1 or collective not in PENDING_RANKS or algorithm not in FLAT:
        return 0
    ranks = range(size) if size <= REPLAY_RANKS else sorted({1, size // 2, size - 1})
    pending = [r for r in ranks if PENDING_RANKS[collective](r)]
    return max((third_buffer_folds(schedules(collective, algorithm, nbytes, size, only=r)[0], ITEMSIZE)
                for r in pending), default=0)


@functools.lru_cache(maxsize=1024)
def streamed(collective: str, algorithm: str, nbytes: int, size: int) -> int:
    """Bytes a one-host call of ``algorithm`` streams to and from memory, all ranks together
    (``memory.streamed``)."""
    return memory.streamed(schedules(collective, algorithm, nbytes, size), ITEMSIZE)


def memory_floor(collective: str, algorithm: str, nbytes: int, size: int, link: LinkClass, share: float) -> float:
    """Seconds under which a schedule of one host cannot run for its ranks' streams to memory
    (``memory.floor_time``; 0 beyond REPLAY_RANKS, where the replay prices one rank's steps)."""
    if algorithm not in FLAT or size <= 1 or size > REPLAY_RANKS or not share or not link.cache_beta:
        return 0.0
    return memory.floor_time(streamed(collective, algorithm, nbytes, size), link, share)


def beyond_the_cache(collective: str, algorithm: str, nbytes: int, size: int, intra: LinkClass, gamma: float,
                     share: float, cache_bytes: int) -> tuple[float, float]:
    """A one-host call's terms beyond the cache: (the floor of its ranks' streams to memory,
    ``memory_floor``; γ raised for folds into a rank's buffer beyond the cache, ``fold_gamma``)."""
    return (memory_floor(collective, algorithm, nbytes, size, intra, share),
            fold_gamma(gamma, intra.cache_beta, nbytes, cache_bytes))


def on_the_line(nbytes: int, price: Callable[[int], float]) -> float:
    """The price of ``nbytes`` beyond LINEAR_BYTES on the line through ``price`` at half of
    LINEAR_BYTES and at LINEAR_BYTES: large calls cost in proportion, and replaying them would
    cost the model as much."""
    half, full = price(LINEAR_BYTES // 2), price(LINEAR_BYTES)
    return full + (full - half) * (nbytes - LINEAR_BYTES) / (LINEAR_BYTES // 2)


KEEPS_ALWAYS, KEEPS_NEVER = 0, 1 << 62
"""``Machine.lockstep_bytes`` that keeps a tcp call's ranks to their cores whatever it sends a
peer, and that never does: what the ends of a call's line are replayed with (``line_lockstep``)."""


def line_lockstep(collective: str, algorithm: str, nbytes: int, size: int, step: int, bound: int) -> int:
    """The ``lockstep_bytes`` with which the two ends of the line that prices a call of ``nbytes``
    are replayed: the call's own rule (it keeps its cores where it sends one peer more than
    ``machine.lockstep_bytes``), not each end's, so that the line's slope does not carry a switch
    of the rule between its ends (a 3-rank tcp all-gather by Bruck's steps sends each peer 2.7 MiB
    at 8 MiB, on the shared pool, and 5.3 MiB at 16 MiB, kept); ``bound``: the machine's
    ``lockstep_bytes``; -1 where no rule by size applies (``bound`` 0, or one rank's steps priced)."""
    if not bound or size > REPLAY_RANKS:
        return -1
    steps = [list(s) for s in schedules(collective, algorithm, nbytes, size, step)]
    return KEEPS_ALWAYS if largest_to_a_peer(steps, ITEMSIZE) > bound else KEEPS_NEVER


def replay_time(collective: str, algorithm: str, nbytes: int, make: Callable[[], Machine], calls: int = 1,
                transport: str = "shm", step: int = 0, lockstep: int = -1) -> float:
    """Seconds ``algorithm`` takes on the machine ``make()`` builds (the slowest rank), with
    the per-call overhead: per call of ``calls`` made back to back (up to REPLAY_RANKS ranks;
    beyond, one call), in the steps a call of ``nbytes`` over ``transport`` runs (``step``, else
    ``steps.step_bytes``; a call priced on the line keeps its own step and its own rule of
    cores, ``line_lockstep``, at the line's ends; ``lockstep`` >= 0 replaces the machine's
    ``lockstep_bytes``). Raises TooLarge where the replay would be too long."""
    step = step or step_bytes(transport, collective, nbytes, make().ranks)
    if nbytes > LINEAR_BYTES:
        machine = make()
        kept = line_lockstep(collective, algorithm, nbytes, machine.ranks, step, machine.lockstep_bytes)
        return on_the_line(nbytes, lambda n: replay_time(collective, algorithm, n, make, calls, transport, step, kept))
    machine = make()
    if lockstep >= 0:
        machine.lockstep_bytes = lockstep
    size = machine.ranks
    if size <= 1 or nbytes <= 0:
        return machine.overhead
    if size > REPLAY_RANKS:
        if machine.oversubscribed:  # one rank's steps priced for all: the cores shared evenly
            machine = machine.evenly_shared()
            make = machine.evenly_shared
        kind = symmetry_of(collective, algorithm, size)
        count = -(-nbytes // ITEMSIZE)
        if kind == ROTATION and algorithm == "ring" and count < size:  # the real blocks go hop by hop
            passes = 2 if collective == "all_reduce" else 1
            return machine.overhead + chain_time(passes, ITEMSIZE, collective != "all_gather", make)
        first = list(schedules(collective, algorithm, nbytes, size, step, only=0)[0])
        if kind is not None:
            return machine.overhead + lockstep_time(first, kind, make, ITEMSIZE)
        if len(first) * size > REPLAY_EVENTS:
            raise TooLarge(f"{collective} {algorithm} at {size} ranks: about {len(first) * size} steps to replay")
        calls = 1
    calls = max(1, calls)
    done = replay_calls([schedules(collective, algorithm, nbytes, size, step) for _ in range(calls)], machine, ITEMSIZE)
    return machine.overhead + max(done[-1]) / calls


BROADCAST_RATE = 1.4
"""What a direct broadcast's copy through the small window's halves costs a byte, in the window's
per-byte price (``direct_beta``): every rank copies n once (the root in, every other rank out), but
in a loop of calls the root writes one half while the others copy the other half out, every line of
it written by another core a call before (the likely reason, not measured apart): 1.29-1.57 times
the rate the window's other calls fit in the quiet run of 2026-12-07 (2-4 ranks, 64 KiB - 1 MiB;
1.39-1.64 in two fresh runs; the broadcasts alone fitted 0.062-0.065 ns/B where all the window's
calls fitted 0.038-0.042, the fifty-fourth round), 1.4 chosen on a grid over the saved runs keeping
every pick (docs/simulation.md, the fifty-fifth round)."""


# Bytes each rank moves (and reduces) in the direct engine, as multiples of n, by collective:
# all_reduce reads (p-1)/p of n to reduce its block and (p-1)/p of n back; the others move
# their share once. These are the engine's copies (engines/direct.py, engines/small.py;
# the all-gather's: _small_c.c's run_halves and small.AllGatherPlan); a broadcast's at its
# own rate (BROADCAST_RATE).
def direct_factors(collective: str, size: int) -> tuple[float, float]:
    share = (size - 1) / size
    if collective == "all_reduce":
        return 1.0 + 2 * share, share
    if collective == "reduce":  # the root: its x into its slot and out again, every peer's slot folded in
        return float(size + 1), float(size - 1)
    if collective == "reduce_scatter":
        return 1.0 + share, share
    if collective == "all_gather":  # x (n/p) into my half, every rank's block (n, mine too) out of the halves
        return 1.0 + 1 / size, 0.0
    if collective == "all_to_all":  # all of x into the window, as much out of the peers' halves
        return 2.0, 0.0
    if collective == "gather":  # n: the root's out, its x and every peer's slot copied in
        return 1.0, 0.0
    if collective == "scatter":  # n: the root's x into its slot, and its block out again
        return 1.0 + 1 / size, 0.0
    return BROADCAST_RATE, 0.0  # broadcast: every rank copies n once, each byte at the broadcast's rate


def direct_time(collective: str, nbytes: int, size: int, costs: TransportCosts) -> float:
    """Seconds of a direct (shared-window) call: its own per-call cost (the engine bypasses
    the schedules' executor, so ``direct_alpha`` is all its overhead), per byte moved, per byte reduced."""
    moved, reduced = direct_factors(collective, size)
    return costs.direct_alpha + nbytes * (moved * costs.direct_beta + reduced * costs.gamma)


TWO_SHOT_MOVED = 3.0
"""Bytes each rank copies in a direct all-reduce in two shots, as a multiple of n: ``x`` into its
window, block r of every rank's copy read and folded (its own block too), that block copied back
over its own copy, the p - 1 other reduced blocks copied out (n/p + (p - 1)/p of n)."""


def two_shot_time(nbytes: int, size: int, costs: TransportCosts) -> float:
    """Seconds of one turn of a direct all-reduce in two shots through the small window's halves
    (``direct_routes.two_shot``, the engine's ``TwoShotAllReducePlan``): ``TWO_SHOT_MOVED`` per byte copied, (p - 1)/p of n folded, and for
    the second flag, whose wait every rank yields through, one more context switch (``wake``; the
    ranks queued ahead of it are the turns' ``direct_turns``)."""
    share = (size - 1) / size
    return costs.direct_alpha + costs.wake + nbytes * (TWO_SHOT_MOVED * costs.direct_beta + share * costs.gamma)


def one_shot_factors(size: int) -> tuple[float, float]:
    """Bytes each rank copies and folds in a direct all-reduce in one shot through the small
    window's halves (the engine's ``AllReducePlan``), as multiples of n: ``x`` into its half, then
    all p halves read and the whole vector folded by every rank itself, (p - 1) n."""
    return 1.0 + size, size - 1.0


def one_shot_time(nbytes: int, size: int, costs: TransportCosts) -> float:
    """Seconds of one turn of a direct all-reduce in one shot through the small window's halves."""
    moved, reduced = one_shot_factors(size)
    return costs.direct_alpha + nbytes * (moved * costs.direct_beta + reduced * costs.gamma)


def window_factors(collective: str, nbytes: int, size: int, cores: int = 0) -> tuple[float, float]:
    """Bytes each rank copies and folds, as multiples of n, in a direct call through the windows
    of ``nbytes`` at ``size`` ranks on ``cores`` (0: as many as ranks): an all-reduce through the
    halves in one shot or two (``direct_routes``), any other call as ``direct_factors`` says."""
    if collective == "all_reduce" and direct_routes.all_reduce_by_halves(nbytes, 0 < cores < size):
        if direct_routes.two_shot(nbytes, 0 < cores < size):
            return TWO_SHOT_MOVED, (size - 1) / size
        return one_shot_factors(size)
    return direct_factors(collective, size)


def direct_runs_schedule(collective: str, nbytes: int, size: int, costs: TransportCosts | None = None,
                         cores: int = 0) -> bool:
    """Whether a call given to the direct engine is priced as the schedule the rule takes
    without windows (plans/planner.py): beyond its window's limit, a call runs it where the kernel
    refuses reads of peers' memory and where its route takes no reads (a reduce below
    ``direct_routes.reduce_reads_from``, but where ranks outnumber cores: the slots piece by
    piece there, ``pieces``), and goes by reads elsewhere (engines/exchange_reads.py,
    direct.reduce_by_reads), priced by ``reads`` where ``costs`` (shared memory's) have the reads'
    terms. Without ``costs``: beyond the limit and not in pieces. ``size`` ranks on one host of
    ``cores`` (0: as many as ranks)."""
    if collective == "all_gather":
        beyond = nbytes // size > direct_routes.gather_window_bytes(0 < cores < size)
    else:
        limit = DIRECT_LIMITS.get(collective)
        beyond = limit is not None and nbytes > limit
    return beyond and not pieces.taken(collective, nbytes, size, cores) and not (
        costs is not None and reads.taken(collective, nbytes, size, costs, cores))


def direct_price(collective: str, nbytes: int, size: int, costs: TransportCosts, cores: int = 0,
                 cache_bytes: int = 0) -> float | None:
    """Seconds of a call the direct engine takes on one host of ``cores`` (0: as many as
    ranks), ``costs`` shared memory's: by reads of peers' memory where it takes them
    (``reads``; beyond the cache, the reads that fold into the output at ``cache.read_spilled``'s
    rate; an all-gather's, which copy each byte once, by their steps where every rank has a core
    and the profile measured them, ``reads.once_time``, else at the window's rate,
    ``cache.read_once``, where the profile models the cache), a reduce one way through the slots
    where ranks outnumber cores as ``pieces`` measured it, else
    through its windows (all-reduces within the small window's halves in one
    shot, ``one_shot_time``, or in two where ``direct_routes.two_shot`` says, ``two_shot_time``,
    each of ``direct_routes.all_reduce_pieces`` a call of its own, its copies those of its piece), in turns beyond the cores
    (``direct_turns``, and ``switches`` between them), the window's copies beyond a host's cache of
    ``cache_bytes`` (0: not modelled) at ``cache.windowed``'s rate; None where it runs the rule's
    schedule instead."""
    if direct_runs_schedule(collective, nbytes, size, costs, cores):
        return None
    if pieces.taken(collective, nbytes, size, cores):
        return pieces.pieces_time(nbytes, size, costs)
    if reads.taken(collective, nbytes, size, costs, cores):
        if collective in reads.SPILLS:
            costs = read_spilled(costs, beyond(footprint(collective, nbytes, size, size), cache_bytes))
            if reads.fold_spills(collective, nbytes, size, cores):
                costs = fold_spilled(costs, nbytes, cache_bytes)
        elif reads.once_priced(collective, size, costs, cores):
            share = beyond(footprint(collective, nbytes, size, size), cache_bytes)
            return reads.once_time(nbytes, size, costs, share)
        elif collective in reads.ONCE and cache_bytes > 0 and costs.cache_beta:
            costs = read_once(costs, beyond(footprint(collective, nbytes, size, size), cache_bytes))
        return reads.reads_time(collective, nbytes, size, costs, cores)
    turns = direct_turns(collective, size, cores)
    if collective == "all_reduce" and direct_routes.all_reduce_by_halves(nbytes, 0 < cores < size):
        calls = direct_routes.all_reduce_pieces(nbytes, 0 < cores < size)  # each piece a call of its own
        piece = -(-nbytes // calls)
        costs = windowed(costs, beyond(halves_footprint(piece, size), cache_bytes))
        shots = two_shot_time if direct_routes.two_shot(piece, 0 < cores < size) else one_shot_time
        return calls * (shots(piece, size, costs) * turns + switches(collective, turns, costs))
    costs = windowed(costs, beyond(footprint(collective, nbytes, size, size), cache_bytes))
    if collective == "reduce" and turns == 1.0 and nbytes < DIRECT_REDUCE_BYTES:
        return pipelined_reduce_time(nbytes, size, costs)
    return direct_time(collective, nbytes, size, costs) * turns + switches(collective, turns, costs)


def pipelined_reduce_time(nbytes: int, size: int, costs: TransportCosts) -> float:
    """Seconds of a direct reduce through the slots (``slots.PipelinedReducePlan``) where every rank
    has a core: the peers copy their pieces into their slots while the root folds the pieces already
    there, so the call costs its slowest stream, the root's folds of ``size - 1`` slots at γ or a
    peer's copy at ``direct_beta``, not their sum (``direct_factors``' ``size + 1`` copies and ``size - 1``
    folds in a row priced the 2-rank reduces of 8-128 KiB of choice runs 20 and 26 at 1.7-2.8 times
    their time: docs/simulation.md, *The sixty-eighth round*, its second part). Below a full slot only
    (``registry.DIRECT_REDUCE_BYTES``): at 256 KiB the 2-rank calls no longer overlap, 42 µs against 9 at
    128 KiB (likely the ring of eight full slots and ``x`` beyond a core's 2 MiB L2), slower than the ring's 35."""
    return costs.direct_alpha + nbytes * max(costs.direct_beta, (size - 1) * costs.gamma)


def halves_footprint(piece: int, size: int) -> float:
    """Bytes whose share beyond the cache raises the copies of a direct all-reduce of ``piece`` bytes
    through the small window's halves at ``size`` ranks (``cache.windowed``): one rank's own buffers
    (``cache.footprint`` of one rank, 2n), not its host's. A rank copies ``x`` into its half and reads
    back its own block of it and of ``out`` within its turn, and those reuses are what stay in the
    cache or not; its peers' bytes it copies once either way. Measured (docs/simulation.md, the
    sixty-fourth round): the calls' passes run one host's ranks in turn on one core cost a byte of n
    the same at 2, 4 and 8 ranks (1 MiB: 0.184, 0.190, 0.191 ns) and rise with n (2 MiB: 0.21, 0.20,
    0.23); the 1 MiB calls at 3, 4 and 8 ranks, priced on the host's buffers 1.27-1.44 times their time
    in four runs, cost what the window's in-cache rate says."""
    return footprint("all_reduce", piece, size, 1)


DIRECT_SYNCED = frozenset({"all_reduce", "reduce_scatter", "all_gather", "all_to_all"})
"""Collectives whose direct calls make every rank wait for every peer between phases (each
rank's block is read by all the others): where ranks outnumber the cores, a phase is done only
when every rank has had its turn on a core."""


def direct_turns(collective: str, size: int, cores: int) -> float:
    """How many times its cost a direct call of ``size`` ranks on ``cores`` (0: not modelled)
    takes. Where every rank waits for every peer (``DIRECT_SYNCED``) the ranks beyond the cores
    run as whole turns (``reads.turns``: 3 ranks on 2 cores as long as 4); in the rooted calls
    each rank waits for the root alone and the cores are shared evenly (3 on 2: 1.5 times)."""
    if collective in DIRECT_SYNCED:
        return float(reads.turns(size, cores))
    return max(1.0, size / cores) if cores else 1.0


def switches(collective: str, turns: float, costs: TransportCosts) -> float:
    """Seconds a window call of ``turns`` whole turns spends handing the cores from one turn's
    ranks to the next's: where every rank waits for every peer (``DIRECT_SYNCED``), each turn
    beyond the first costs ``direct_sync`` (the ranks that posted yield at a flag and resume once
    the ranks queued behind them have posted theirs); the rooted calls, whose ranks wait for the
    root alone, hand over nothing."""
    return (turns - 1) * costs.direct_sync if collective in DIRECT_SYNCED else 0.0


@functools.lru_cache(maxsize=4096)
def predict(collective: str, algorithm: str, nbytes: int, size: int, transport: str = "shm",
            ranks_per_host: int = 0, profile: Profile | None = None, step: int = 0, lockstep: int = -1) -> float:
    """Predicted seconds of one call. ``ranks_per_host``: 0 for one host; else hosts of that
    many ranks, ``transport`` between them and shared memory within. ``step``: the schedules'
    step (0: the one a call of ``nbytes`` runs, ``steps.step_bytes``); ``lockstep``: as
    ``replay_time``'s (the line's ends)."""
    profile = profile or current()
    costs = profile.costs(transport)
    k = ranks_per_host if 0 < ranks_per_host < size else size
    shared = max(1.0, k / profile.cores) if profile.cores else 1.0  # ranks beyond the cores share them evenly
    if algorithm == "direct":  # (no messages to queue)
        price = direct_price(collective, nbytes, size, costs, profile.cores, profile.cache_bytes)
        if price is not None:
            return price
        algorithm = automatic(collective, nbytes, size)
    if algorithm == "hierarchical":
        k = ranks_per_host  # within a host, the direct calls of its local communicator
        inner = sum(predict(c, "direct", nbytes, k, "shm", 0, profile) for c in ("reduce_scatter", "all_gather"))
        between = transport + BETWEEN_HOSTS if transport + BETWEEN_HOSTS in profile.transports else transport
        share_bytes = -(-nbytes // k)
        across = min(predict("all_reduce", a, share_bytes, size // k, between, 0, profile,
                             step_bytes(transport, "all_reduce", share_bytes, size // k)) for a in FLAT)
        return inner + across
    step = step or step_bytes(transport, collective, nbytes, size)
    if nbytes > LINEAR_BYTES:  # as replay_time does, through this cache: the line's two ends are shared
        kept = line_lockstep(collective, algorithm, nbytes, size, step, lockstep_bytes(transport)) if k >= size else -1
        return on_the_line(nbytes, lambda n: predict(collective, algorithm, n, size, transport, ranks_per_host,
                                                     profile, step, kept))
    hosts = 0 < ranks_per_host < size
    local = profile.costs("shm") if hosts else costs
    share = beyond(footprint(collective, nbytes, size, k), profile.cache_bytes)
    link = profile.between_hosts(transport) if hosts else costs
    intra, inter = spilled(link_of("shm", local), share), spilled(link_of(transport, link), share)
    copies = local_copy_time(collective, algorithm, nbytes, size, intra) * shared
    floor, gamma = (0.0, costs.gamma) if hosts else beyond_the_cache(
        collective, algorithm, nbytes, size, intra, costs.gamma, share, profile.cache_bytes)
    return max(floor, copies + replay_time(collective, algorithm, nbytes, lambda: Machine(
        size, k, intra, inter, gamma=gamma, overhead=costs.overhead,
        cores=profile.cores, mixed_wait=costs.mixed_wait if hosts else 0.0,
        split_wait=costs.split_wait if hosts else 0.0, **traits_of(transport)),
        profile.calls, transport, step, lockstep))


def candidates(collective: str, windows: bool = False, hosts: bool = False) -> list[str]:
    """The algorithms that can run ``collective`` here (distinct schedules only)."""
    names = []
    seen = set()
    for name, factory in SCHEDULES.get(collective, SCHEDULES["all_to_all"]).items():
        if factory not in seen:
            seen.add(factory)
            names.append(name)
    if windows and collective in DIRECT:
        names.append("direct")
    if hosts and collective in HIERARCHICAL:
        names.append("hierarchical")
    return names


def choose(collective: str, nbytes: int, size: int, transport: str = "shm", windows: bool = False,
           ranks_per_host: int = 0, profile: Profile | None = None) -> str:
    """The algorithm predicted fastest (priced at ``priced_at(nbytes)`` in the steps a call of
    ``nbytes`` runs, ``steps.step_bytes``), where it beats the
    size rule's choice by more than the profile's margin (else the rule's); ties go to the
    earlier of ring, tree, recursive, direct, hierarchical. ``ranks_per_host`` > 0 (and <
    ``size``): several hosts, evenly."""
    hosts = 0 < ranks_per_host < size
    rule = automatic(collective, nbytes, size, windows, hosts)
    if size <= 1:
        return rule
    step = step_bytes(transport, collective, nbytes, size)  # the call's own step, not the priced size's
    return _override(collective, priced_at(nbytes), size, transport, windows, ranks_per_host, profile, rule,
                     step) or rule


def priced_at(nbytes: int) -> int:
    """The size the tuner prices a call of ``nbytes`` at: the next power of two, so that
    calls of many sizes (every new shape is a new plan) cost one pricing per octave, not
    one each (a replay takes 0.1-7 ms at 2-8 ranks). The size rule itself sees the exact size."""
    return 1 << max(0, nbytes - 1).bit_length() if nbytes > 0 else 0


@functools.lru_cache(maxsize=4096)
def _override(collective: str, nbytes: int, size: int, transport: str, windows: bool, ranks_per_host: int,
              profile: Profile | None, rule: str, step: int = 0) -> str | None:
    """The algorithm predicted faster than ``rule`` by more than the profile's margin at
    ``nbytes`` in steps of ``step`` (0: ``nbytes``'s own), else None."""
    hosts = 0 < ranks_per_host < size
    names = candidates(collective, windows, hosts)
    times = fastest(collective, nbytes, size, transport, windows, ranks_per_host, profile, step)
    best = min(times, key=lambda a: (times[a], names.index(a)))
    if rule in times and times[rule] <= times[best] * (1 + (profile or current()).margin):
        return None
    return best


def fastest(collective: str, nbytes: int, size: int, transport: str = "shm", windows: bool = False,
            ranks_per_host: int = 0, profile: Profile | None = None, step: int = 0) -> dict[str, float]:
    """Every candidate's predicted seconds (those too large to replay left out), in steps of
    ``step`` (0: the ones a call of ``nbytes`` runs)."""
    hosts = 0 < ranks_per_host < size
    times = {}
    for a in candidates(collective, windows, hosts):
        try:
            times[a] = predict(collective, a, nbytes, size, transport, ranks_per_host if hosts else 0, profile, step)
        except TooLarge:
            pass
    return times
