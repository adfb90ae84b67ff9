"""All-to-alls too large for the small window's halves, and gathers and scatters too large for
its slots, copy every block straight between its owner's and its receiver's memory where the
kernel allows it (engines/exchange_reads.py: reads, and for gather and scatter writes of the
rest of each block), and run their schedule where it does not. A call returns only once every
rank it exchanged with is done, so the caller may overwrite ``x`` at once and finds ``out``
complete; ranks that pass different counts raise."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
import pytest

import collectives
from collectives.algorithms import direct_routes
from collectives.algorithms.registry import (DIRECT_ALL_TO_ALL_BYTES, DIRECT_GATHER_BYTES, DIRECT_REDUCE_BYTES,
                                             DIRECT_SCATTER_BYTES)
from collectives.algorithms.schedule import partition
from collectives.engines import direct, exchange_reads, small, small_native
from collectives.engines import windows as window_engine
from collectives.errors import MessageMismatchError, PeerLostError
from collectives.ops import ReduceOp
from collectives.store import PrefixStore
from collectives.testing import RankError, run_world
from collectives.transports import shm_window

pytestmark = pytest.mark.multiprocess

LIMITS = {"all_to_all": DIRECT_ALL_TO_ALL_BYTES, "gather": DIRECT_GATHER_BYTES, "scatter": DIRECT_SCATTER_BYTES}


def _k(collective: str, size: int) -> int:
    """float64 elements per block: past the window's limit."""
    return LIMITS[collective] // 8 // size + 3


def _blocks(size, k, rep):
    return [np.arange(k * size, dtype=np.float64) + 10**7 * q + rep for q in range(size)]


def _exchange(comm, collective):
    k, me, root = _k(collective, comm.size), comm.rank, comm.size - 1
    bad = []
    for rep in range(6):
        in_place = rep % 2 == 1
        sent = _blocks(comm.size, k, rep)  # rank q's x (all-to-all); block q of it is rank q's (gather)
        mine = slice(me * k, (me + 1) * k)
        if collective == "all_to_all":
            x = sent[me].copy()
            want = np.concatenate([sent[q][mine] for q in range(comm.size)])
            out = comm.all_to_all(x, x if in_place else None)
        elif collective == "gather":
            out = np.zeros(k * comm.size) if me == root else None
            x = out[mine] if in_place and me == root else np.empty(k)
            x[...] = sent[0][mine]
            want = sent[0]
            comm.gather(x, out, root)
        else:
            x = sent[0].copy() if me == root else None
            out = x[mine] if in_place and me == root else np.zeros(k)
            want = sent[0][mine]
            comm.scatter(x, out, root)
        if x is not None and not in_place:
            x.fill(-1.0)  # at once: every rank that reads it has
        if out is not None and not np.array_equal(out, want):
            bad.append(rep)
    plan = next(p for key, p in comm._plans.items() if key[0] == collective)
    return bad, type(plan).__name__, type(plan.route).__name__


@pytest.mark.parametrize("collective", ["all_to_all", "gather", "scatter"])
@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("cross_memory", [True, False], ids=["reads", "reads refused"])
def test_large_exchanges_read_peers_blocks_or_run_their_schedule(collective, size, cross_memory):
    results = run_world(lambda comm: _exchange(comm, collective), size, "shm", timeout=120, cross_memory=cross_memory)
    schedule = {"all_to_all": "AllToAll", "gather": "Gather", "scatter": "Scatter"}[collective]
    route = "ExchangeByReads" if cross_memory else schedule
    assert results == [([], "ReadsExchange", route)] * size


def test_ranks_that_pass_different_counts_raise_rather_than_read_past_a_block():
    def fn(world):
        comm = collectives.init(world.rank, world.size, PrefixStore("a2a", world.store), transport="shm", timeout=5)
        k = _k("all_to_all", comm.size) + comm.rank
        x = np.ones(k * comm.size)
        try:
            comm.all_to_all(x)
            outcome = "returned"
        except MessageMismatchError:
            outcome = "MessageMismatchError"
        finally:
            comm.abort()
        return outcome

    assert run_world(fn, 2, "shm", timeout=60) == ["MessageMismatchError"] * 2


def test_a_gather_whose_ranks_pass_different_counts_raises_on_both_sides():
    """The root reads the head of every block and each rank writes the rest into the root's
    out, so both sides compare counts before they copy."""
    def fn(world):
        comm = collectives.init(world.rank, world.size, PrefixStore("g", world.store), transport="shm", timeout=5)
        k = _k("gather", comm.size) + comm.rank
        try:
            comm.gather(np.ones(k), np.empty(k * comm.size) if comm.rank == 0 else None, 0)
            outcome = "returned"
        except MessageMismatchError:
            outcome = "MessageMismatchError"
        finally:
            world.barrier()
            comm.abort()
        return outcome

    assert run_world(fn, 2, "shm", timeout=60) == ["MessageMismatchError"] * 2


def _rooted(comm, collective, root, in_place):
    """Three calls of ``collective`` from ``root`` (new values each time); the rows that came
    out wrong, and the share of each block the root posted it copies itself (``SHARE``)."""
    from collectives.engines.direct import SHARE

    k, me, p = _k(collective, comm.size), comm.rank, comm.size
    mine = slice(me * k, (me + 1) * k)
    bad = []
    for rep in range(3):
        sent = _blocks(p, k, rep + 100 * root)
        if collective == "gather":
            out = np.zeros(k * p) if me == root else None
            x = out[mine] if in_place and me == root else np.empty(k)
            x[...] = sent[0][mine]
            comm.gather(x, out, root)
            got, want = out, sent[0]
        else:
            x = sent[0].copy() if me == root else None
            out = x[mine] if in_place and me == root else np.zeros(k)
            comm.scatter(x, out, root)
            got, want = out, sent[0][mine]
        if got is not None and not np.array_equal(got, want):
            bad.append(rep)
    route = next(plan for key, plan in comm._plans.items() if key[0] == collective).route
    return bad, route.window.flag(root, SHARE), route.block


@pytest.mark.parametrize("collective", ["gather", "scatter"])
@pytest.mark.parametrize("in_place", [False, True], ids=["out of place", "in place"])
@pytest.mark.parametrize("size,spread", [(2, True), (3, True), (3, False)],
                         ids=["2 ranks", "3 ranks, as many cores", "3 ranks, fewer cores"])
def test_the_root_copies_its_share_of_every_block_from_every_root(monkeypatch, collective, in_place, size, spread):
    """Where the ranks do not outnumber the cores, a gather's or scatter's root copies a share
    of every peer's block itself (ROOT_SHARE: more in place, where it has no block of its own
    to copy) while each peer copies the rest; where they do, a gather's root reads 1/p of each
    block and a scatter's root writes none. Every root, the data right every time."""
    from collectives.engines.exchange_reads import PAGE_BYTES, ROOT_SHARE
    from collectives.transports import shm_window

    monkeypatch.setattr(shm_window, "oversubscribed", lambda n: not spread)
    for root in range(size):
        results = run_world(lambda comm: _rooted(comm, collective, root, in_place), size, "shm", timeout=120,
                            cross_memory=True)
        block = results[0][2]
        if spread:
            share = int(block * ROOT_SHARE[in_place] * 2 / size)
            share -= share % PAGE_BYTES
        else:
            share = block // size if collective == "gather" else 0
        assert results == [([], share, block)] * size, root


@pytest.mark.parametrize("ranks", [2, 3, 4, 5, 6])
def test_ranks_in_place_swap_every_pair_of_blocks_once_and_share_the_swaps_evenly(ranks):
    """Both in place, each pair of blocks (r's block q, q's block r) is swapped by exactly one of
    the two ranks, or half by each at the opposite rank of an even count, whatever the block's
    bytes (cut at 64); so every rank swaps (ranks - 1) / 2 blocks' worth, to 64 bytes."""
    for block in (64, 4096, 131075, 1 << 18):
        swapped = {r: 0 for r in range(ranks)}
        for r in range(ranks):
            for q in range(r + 1, ranks):
                at_r, n_r = exchange_reads.swap_part(r, q, ranks, block)
                at_q, n_q = exchange_reads.swap_part(q, r, ranks, block)
                covered = sorted((at, at + n) for at, n in ((at_r, n_r), (at_q, n_q)) if n)
                assert covered[0][0] == 0 and covered[-1][1] == block, (r, q, block)
                assert all(a[1] == b[0] for a, b in zip(covered, covered[1:])), (r, q, block)
                swapped[r] += n_r
                swapped[q] += n_q
        assert sum(swapped.values()) == block * ranks * (ranks - 1) // 2
        spread = max(swapped.values()) - min(swapped.values())
        assert spread == 0 if ranks % 2 else spread < 128, swapped


def _in_place_all_to_all(comm, dtype, extra, out_of_place=()):
    """Three all-to-alls in place of blocks ``extra`` elements past the window's limit (``dtype``;
    the ranks in ``out_of_place`` pass a separate ``out``): the calls that came out wrong, whether
    the plan kept one inbox, the peers whose blocks the last call read into it, and whether it
    ran in Python."""
    p, me = comm.size, comm.rank
    k = DIRECT_ALL_TO_ALL_BYTES // np.dtype(dtype).itemsize // p + extra
    bad, kept = [], []
    for rep in range(3):
        sent = [((np.arange(k * p) * 7 + 31 * q + rep) % 251).astype(dtype) for q in range(p)]
        x = sent[me].copy()
        got = comm.all_to_all(x, None if me in out_of_place else x)
        if not np.array_equal(got, np.concatenate([sent[q][me * k : (me + 1) * k] for q in range(p)])):
            bad.append(rep)
        route = next(plan for key, plan in comm._plans.items() if key[0] == "all_to_all").route
        kept.append(id(route.inbox))
    return bad, len(set(kept) - {id(None)}), sorted(route.staged_peers()), route.native is None


@pytest.mark.parametrize("pure", [False, True], ids=["C plan and fast path", "COLLECTIVES_PURE_PYTHON"])
@pytest.mark.parametrize("ranks", [2, 3, 4])
@pytest.mark.parametrize("dtype, extra", [(np.float64, 3), (np.uint8, 131)], ids=["float64", "odd bytes"])
def test_an_all_to_all_in_place_swaps_blocks_with_peers_in_place_through_a_buffer_it_keeps(
        monkeypatch, pure, ranks, dtype, extra):
    """Ranks all in place swap their pairs of blocks through a buffer each plan keeps (a new one
    on every call took its page faults every time) and read none into it to copy in later; the
    bytes are those of the call out of place, in C and in Python alike, blocks of odd sizes too."""
    if pure:
        monkeypatch.setenv("COLLECTIVES_PURE_PYTHON", "1")
    results = run_world(lambda comm: _in_place_all_to_all(comm, dtype, extra), ranks, "shm", timeout=120,
                        cross_memory=True)
    assert results == [([], 1, [], pure)] * ranks


@pytest.mark.parametrize("pure", [False, True], ids=["C plan and fast path", "COLLECTIVES_PURE_PYTHON"])
def test_an_all_to_all_in_place_reads_the_block_of_a_peer_out_of_place_and_copies_it_in_once_read(
        monkeypatch, pure):
    """A rank in place swaps with the peers in place, but reads the block of a peer that passed a
    separate ``out`` (which reads its own block out of my ``x``) into its inbox and copies it in once
    that peer has read; the peer out of place reads every block straight into its ``out``."""
    if pure:
        monkeypatch.setenv("COLLECTIVES_PURE_PYTHON", "1")
    results = run_world(lambda comm: _in_place_all_to_all(comm, np.float64, 5, out_of_place=(1,)), 4, "shm",
                        timeout=120, cross_memory=True)
    assert results[1] == ([], 0, [], pure)
    assert [results[r] for r in (0, 2, 3)] == [([], 1, [1], pure)] * 3


def _mid(comm, collective, nbytes=None):
    """Calls within the window's limits but from the reads' sizes (ALL_TO_ALL_READS_BYTES,
    GATHER_SLOTS_BYTES, SCATTER_SLOTS_BYTES; or ``x`` of ``nbytes``), out of place and in place:
    the rows that came out wrong, the route, and whether it runs in C."""
    from collectives.algorithms.direct_routes import ALL_TO_ALL_READS_BYTES, GATHER_SLOTS_BYTES, SCATTER_SLOTS_BYTES

    p, me = comm.size, comm.rank
    threshold = {"all_to_all": ALL_TO_ALL_READS_BYTES, "gather": GATHER_SLOTS_BYTES, "scatter": SCATTER_SLOTS_BYTES}
    k = (threshold[collective] + 8 * p) // 8 // p
    if nbytes is not None:
        k = nbytes // 8 // p
    bad = []
    for rep in range(4):
        in_place = rep % 2 == 1
        sent = _blocks(p, k, rep)
        mine = slice(me * k, (me + 1) * k)
        if collective == "all_to_all":
            x = sent[me].copy()
            got = comm.all_to_all(x, x if in_place else None)
            want = np.concatenate([sent[q][mine] for q in range(p)])
        elif collective == "gather":
            got = np.zeros(k * p) if me == 0 else None
            x = got[mine] if in_place and me == 0 else np.empty(k)
            x[...] = sent[0][mine]
            comm.gather(x, got, 0)
            want = sent[0]
            if me != 0:
                got, want = x, x  # nothing arrives here
        else:
            x = sent[0].copy() if me == 0 else None
            got = x[mine] if in_place and me == 0 else np.zeros(k)
            comm.scatter(x, got, 0)
            want = sent[0][mine]
        if not np.array_equal(got, want):
            bad.append(rep)
    route = next(plan for key, plan in comm._plans.items() if key[0] == collective).route
    return bad, type(route).__name__, getattr(route, "native", None) is not None


@pytest.mark.parametrize("pure", [False, True], ids=["C", "COLLECTIVES_PURE_PYTHON"])
@pytest.mark.parametrize("collective", ["all_to_all", "gather", "scatter"])
def test_exchanges_within_the_window_go_by_reads_from_their_threshold(monkeypatch, collective, pure):
    """From ALL_TO_ALL_READS_BYTES (all-to-all) and beyond GATHER_SLOTS_BYTES (gather) and
    SCATTER_SLOTS_BYTES (scatter) up to
    the window's limits, the calls copy straight between peers' memory, in C where it is built
    and in Python under COLLECTIVES_PURE_PYTHON, right in and out of place."""
    if pure:
        monkeypatch.setenv("COLLECTIVES_PURE_PYTHON", "1")
    results = run_world(lambda comm: _mid(comm, collective), 2, "shm", timeout=120, cross_memory=True)
    assert results == [([], "ExchangeByReads", not pure)] * 2


@pytest.mark.parametrize("collective,window", [("all_to_all", "SmallAllToAll"), ("gather", "SlotExchange"),
                                               ("scatter", "SlotExchange")])
def test_where_reads_are_refused_exchanges_within_the_window_take_the_window(collective, window):
    results = run_world(lambda comm: _mid(comm, collective), 2, "shm", timeout=120, cross_memory=False)
    assert [(bad, name) for bad, name, _ in results] == [([], window)] * 2


@pytest.mark.parametrize("pure", [False, True], ids=["C", "COLLECTIVES_PURE_PYTHON"])
@pytest.mark.parametrize("which", ["reads", "below", "limit"])
def test_where_ranks_outnumber_the_cores_an_all_to_all_within_the_window_reads_from_its_crowded_size(
        monkeypatch, which, pure):
    """Where ranks outnumber the cores, an all-to-all within the window goes by reads from
    ALL_TO_ALL_READS_CROWDED up to the window's limit, through the halves below it (by reads
    measured slower there): every rank agrees (the window's ``oversubscribed``), right in and out
    of place, in C and in Python."""
    from collectives.algorithms.direct_routes import ALL_TO_ALL_READS_BYTES, ALL_TO_ALL_READS_CROWDED
    from collectives.engines.small import HALF_BYTES
    from collectives.transports import shm_window

    if pure:
        monkeypatch.setenv("COLLECTIVES_PURE_PYTHON", "1")
    monkeypatch.setattr(shm_window, "oversubscribed", lambda n: True)
    limit = min(DIRECT_ALL_TO_ALL_BYTES, HALF_BYTES)
    assert ALL_TO_ALL_READS_BYTES < ALL_TO_ALL_READS_CROWDED < limit
    nbytes, route = {"reads": (ALL_TO_ALL_READS_CROWDED, "ExchangeByReads"),
                     "below": (ALL_TO_ALL_READS_CROWDED - 64 * 1024, "SmallAllToAll"),
                     "limit": (limit, "ExchangeByReads")}[which]
    results = run_world(lambda comm: _mid(comm, "all_to_all", nbytes), 4, "shm", timeout=120, cross_memory=True)
    assert [(bad, name) for bad, name, _ in results] == [([], route)] * 4
    assert all(native == (route == "ExchangeByReads" and not pure) for _, _, native in results)


def test_where_ranks_outnumber_the_cores_a_gather_within_the_window_takes_its_slots(monkeypatch):
    """Where ranks outnumber the cores, a gather within the window's limit goes through its slots
    (by reads measured slower there): every rank agrees (the window's ``oversubscribed``)."""
    from collectives.transports import shm_window

    monkeypatch.setattr(shm_window, "oversubscribed", lambda n: True)
    results = run_world(lambda comm: _mid(comm, "gather"), 3, "shm", timeout=120, cross_memory=True)
    assert [(bad, name) for bad, name, _ in results] == [([], "SlotExchange")] * 3


def _all_gathers(comm, nbytes):
    """All-gathers of ``nbytes`` per rank by reads: out of place (``x`` rewritten as soon as the call
    returns), in place, and with ``x`` inside ``out`` elsewhere than my block. Returns the calls
    that came out wrong, the route, whether it runs in C, and whether the address this rank posted
    for its peers was its block of ``out`` (else its ``x``) on the out-of-place call."""
    from collectives.buffers import address_of
    from collectives.engines.direct import ADDR

    p, me = comm.size, comm.rank
    k = nbytes // 8
    bad, posted_out = [], []
    for rep in range(4):
        blocks = [np.arange(k, dtype=np.float64) + 10**7 * q + rep for q in range(p)]
        want = np.concatenate(blocks)
        x = blocks[me].copy()
        out = np.zeros(k * p)
        comm.all_gather(x, out)
        window = comm._context.windows.small_window
        posted_out.append(window.flag(me, ADDR) == address_of(out[me * k :]))
        x.fill(-1.0)  # at once: every peer has read it
        inplace = np.zeros(k * p)
        inplace[me * k : (me + 1) * k] = blocks[me]
        comm.all_gather(inplace[me * k : (me + 1) * k], inplace)
        shifted = np.zeros(k * p)  # x is the block of the next rank: not in place
        at = ((me + 1) % p) * k
        shifted[at : at + k] = blocks[me]
        comm.all_gather(shifted[at : at + k], shifted)
        if not (np.array_equal(out, want) and np.array_equal(inplace, want) and np.array_equal(shifted, want)):
            bad.append(rep)
    route = next(plan for key, plan in comm._plans.items() if key[0] == "all_gather").route
    return bad, type(route).__name__, route.native is not None, set(posted_out)


@pytest.mark.parametrize("pure", [False, True], ids=["C", "COLLECTIVES_PURE_PYTHON"])
@pytest.mark.parametrize("where", ["below", "from"])
def test_an_all_gather_by_reads_posts_its_x_or_from_a_size_its_block_of_out(monkeypatch, where, pure):
    """Where every rank has a core, all-gathers from GATHER_READS_BYTES read every peer's block
    straight out of its memory, in C where it is built and in Python under
    COLLECTIVES_PURE_PYTHON. A rank posts its ``x`` and copies it into its own block while peers
    read it; in C from ALL_GATHER_STREAM_BYTES that copy goes by non-temporal stores (here blocks
    of an odd number of elements, so that most land off any alignment), in Python from
    ALL_GATHER_COPY_FIRST_BYTES it copies first and posts that block. Either way the call returns
    once every peer has read, in place, out of place and with ``x`` inside ``out`` elsewhere,
    every block bit for bit."""
    from collectives.algorithms.direct_routes import (ALL_GATHER_COPY_FIRST_BYTES, ALL_GATHER_STREAM_BYTES,
                                                      GATHER_READS_BYTES)
    from collectives.transports import progress

    if pure:
        monkeypatch.setenv("COLLECTIVES_PURE_PYTHON", "1")
    monkeypatch.setattr(progress, "usable_cpus", lambda: 64)
    nbytes = {"below": GATHER_READS_BYTES, "from": max(ALL_GATHER_COPY_FIRST_BYTES, ALL_GATHER_STREAM_BYTES) + 24}[where]
    results = run_world(lambda comm: _all_gathers(comm, nbytes), 3, "shm", timeout=120, cross_memory=True)
    assert results == [([], "ExchangeByReads", not pure, {where == "from" and pure})] * 3


@pytest.mark.parametrize("extra", [0, 24])
def test_at_two_ranks_all_gathers_from_the_streamed_size_read_in_c_with_every_block_right(monkeypatch, extra):
    """At 2 ranks, each with a core, blocks from ALL_GATHER_STREAM_BYTES (the harness's 32 MiB of
    ``out``, and an odd count of float64s beyond it) go by reads in C with the streamed own copy,
    not by writes: out of place, in place and with ``x`` inside ``out`` elsewhere, bit for bit."""
    from collectives.algorithms.direct_routes import ALL_GATHER_STREAM_BYTES
    from collectives.transports import progress

    monkeypatch.setattr(progress, "usable_cpus", lambda: 64)

    def body(comm):
        bad, name, in_c, _ = _all_gathers(comm, ALL_GATHER_STREAM_BYTES + extra)
        route = next(plan for key, plan in comm._plans.items() if key[0] == "all_gather").route
        return bad, name, in_c, route.stream, route.writes

    results = run_world(body, 2, "shm", timeout=120, cross_memory=True)
    assert results == [([], "ExchangeByReads", True, True, False)] * 2


def _all_gathers_by_writes(comm, nbytes):
    """All-gathers of ``nbytes`` per rank: out of place with rank 0 late (so that its peers' C
    calls give up waiting and finish in Python), out of place, in place, and rank 0 in place while
    its peers are not. Returns the calls that came out wrong and whether the route writes, in C."""
    import time

    p, me = comm.size, comm.rank
    k = nbytes // 8
    bad = []
    for rep in range(4):
        blocks = [np.arange(k, dtype=np.float64) + 10**7 * q + rep for q in range(p)]
        want = np.concatenate(blocks)
        in_place = rep == 2 or (rep == 3 and me == 0)
        out = np.zeros(k * p)
        x = out[me * k : (me + 1) * k] if in_place else np.empty(k)
        x[...] = blocks[me]
        if rep == 0 and me == 0:
            time.sleep(0.2)
        comm.all_gather(x, out)
        if not in_place:
            x.fill(-1.0)  # at once: every peer is done with it
        if not np.array_equal(out, want):
            bad.append(rep)
    route = next(plan for key, plan in comm._plans.items() if key[0] == "all_gather").route
    return bad, route.writes, route.native is not None


@pytest.mark.parametrize("pure", [False, True], ids=["C", "COLLECTIVES_PURE_PYTHON"])
@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("where", ["from", "last"])
def test_where_every_rank_has_a_core_mid_sized_all_gathers_write_every_block_into_the_peers_out(
        monkeypatch, where, size, pure):
    """Where every rank has a core, all-gather blocks from ALL_GATHER_WRITES_BYTES below
    ALL_GATHER_STREAM_BYTES go the other way: every rank writes its block into every peer's ``out``
    (in C piece by piece, its own copy between the pieces) and reads none, in C and in Python alike,
    also where a late peer leaves the C call to finish in Python and where some ranks are in place
    and others not. Blocks of an odd number of float64s, so that pieces land off any alignment;
    every block bit for bit."""
    from collectives.algorithms.direct_routes import ALL_GATHER_STREAM_BYTES, ALL_GATHER_WRITES_BYTES
    from collectives.transports import progress

    if pure:
        monkeypatch.setenv("COLLECTIVES_PURE_PYTHON", "1")
    monkeypatch.setattr(progress, "usable_cpus", lambda: 64)
    nbytes = {"from": ALL_GATHER_WRITES_BYTES + 24, "last": ALL_GATHER_STREAM_BYTES - 8}[where]
    results = run_world(lambda comm: _all_gathers_by_writes(comm, nbytes), size, "shm", timeout=120, cross_memory=True)
    assert results == [([], True, not pure)] * size



def _harness_cell(comm, dtype, count):
    """The harness's 2-rank 16 MiB all-gather: blocks of ``count`` elements of ``dtype``, out of
    place (``x`` rewritten as soon as the call returns) and in place, twice. Returns the calls
    that came out wrong, whether the route writes, and whether it runs in C."""
    p, me = comm.size, comm.rank
    bad = []
    for rep in range(2):
        blocks = [(np.arange(count) * (q + 3) + rep).astype(dtype) for q in range(p)]
        want = np.concatenate(blocks)
        x = blocks[me].copy()
        out = np.zeros(count * p, dtype)
        comm.all_gather(x, out)
        x.fill(7)  # at once: every peer is done with it
        inplace = np.zeros(count * p, dtype)
        inplace[me * count : (me + 1) * count] = blocks[me]
        comm.all_gather(inplace[me * count : (me + 1) * count], inplace)
        if not (np.array_equal(out, want) and np.array_equal(inplace, want)):
            bad.append(rep)
    route = next(plan for key, plan in comm._plans.items() if key[0] == "all_gather").route
    return bad, route.writes, route.native is not None


@pytest.mark.parametrize("pure", [False, True], ids=["C", "COLLECTIVES_PURE_PYTHON"])
@pytest.mark.parametrize("dtype, extra", [("float32", 0), ("int16", 3)])
def test_at_two_ranks_the_harness_16_mib_all_gather_writes_every_block_in_c_and_python_alike(
        monkeypatch, dtype, extra, pure):
    """At 2 ranks, each with a core, blocks of 8 MiB (the harness's 16 MiB of ``out``; and an odd
    count of int16s beyond it) lie below ALL_GATHER_STREAM_BYTES and go by writes: in C, and under
    COLLECTIVES_PURE_PYTHON in Python with the same bytes, out of place and in place."""
    from collectives.transports import progress

    if pure:
        monkeypatch.setenv("COLLECTIVES_PURE_PYTHON", "1")
    monkeypatch.setattr(progress, "usable_cpus", lambda: 64)
    count = (8 << 20) // np.dtype(dtype).itemsize + extra
    assert direct_routes.all_gather_writes(count * np.dtype(dtype).itemsize, False)
    results = run_world(lambda comm: _harness_cell(comm, dtype, count), 2, "shm", timeout=120, cross_memory=True)
    assert results == [([], True, not pure)] * 2


def _killed_writer(folder: Any) -> Any:
    """Both ranks all-gather 8 MiB blocks by writes once; rank 1 then dies (os._exit) before the
    second call, and rank 0's C plan, its peer's POSTED never coming, hands the call back to the
    Python plan, whose wait finds rank 1 gone."""

    def body(comm: Any) -> str:
        count = (8 << 20) // 4
        x = np.full(count, comm.rank + 1, np.float32)
        out = np.zeros(2 * count, np.float32)
        comm.all_gather(x, out)
        if comm.rank == 1:
            os._exit(3)
        try:
            comm.all_gather(x, out)
        except PeerLostError as exc:
            (folder / "rank0").write_text(json.dumps([type(exc).__name__, exc.peer, float(out[count])]))
        return "raised"

    return body


def test_a_peer_killed_before_an_all_gather_by_writes_fails_it_with_peer_lost(tmp_path, monkeypatch):
    from collectives.transports import progress

    monkeypatch.setattr(progress, "usable_cpus", lambda: 64)
    with pytest.raises(RankError) as info:
        run_world(_killed_writer(tmp_path), 2, "shm", timeout=60, cross_memory=True)
    assert info.value.rank == 1 and info.value.exitcode == 3
    name, peer, first = json.loads((tmp_path / "rank0").read_text())
    assert (name, peer, first) == ("PeerLostError", 1, 2.0)  # the first call's block of rank 1 in place


def _crowded_all_gathers(comm, nbytes):
    """All-gathers of ``nbytes`` per rank by reads: on time (the plan made), with rank 0 late by more
    than any yield window, on time again. Returns the calls that came out wrong, how long the C plan
    yields before handing a call back (all-gather, and an all-to-all's for comparison), and how
    many calls this rank handed back to the Python plan's sleeping waits."""
    import time

    from collectives.engines.exchange_reads import ExchangeByReads

    handed_back = []
    finish = ExchangeByReads._finish

    def counted(self, start, *args):
        handed_back.append(start)
        return finish(self, start, *args)

    ExchangeByReads._finish = counted  # this rank's process only (forked)
    p, me = comm.size, comm.rank
    k = nbytes // 8
    bad = []
    for rep in range(3):
        blocks = [np.arange(k, dtype=np.float64) + 10**7 * q + rep for q in range(p)]
        x, out = blocks[me].copy(), np.zeros(k * p)
        if rep == 1 and me == 0:
            time.sleep(0.1)
        comm.all_gather(x, out)
        x.fill(-1.0)  # at once: every peer has read it
        if not np.array_equal(out, np.concatenate(blocks)):
            bad.append(rep)
    handed = len(handed_back) > 0
    comm.all_to_all(np.zeros(_k("all_to_all", p) * p))  # by reads too, for its yield window
    routes = {key[0]: plan.route for key, plan in comm._plans.items() if key[0] in ("all_gather", "all_to_all")}
    yields = tuple(routes[c]._yield_seconds() for c in ("all_gather", "all_to_all"))
    return bad, yields, handed if me else None


@pytest.mark.parametrize("crowded", [True, False], ids=["ranks outnumber cores", "a core each"])
def test_where_ranks_outnumber_the_cores_an_all_gather_by_reads_yields_longer_before_handing_back(
        monkeypatch, crowded):
    """Where ranks outnumber the cores, an all-gather's C plan yields to a late peer for
    CROWDED_ALL_GATHER_YIELD_SECONDS before handing the call to the Python plan's sleeping waits,
    other kinds (an all-to-all) for YIELD_SECONDS; where every rank has a core none yields (it
    spins). A peer later than that still hands the call back, and every block comes out right."""
    from collectives.algorithms.direct_routes import gather_window_bytes
    from collectives.engines.exchange_reads import CROWDED_ALL_GATHER_YIELD_SECONDS
    from collectives.transports import progress, shm_window
    from collectives.transports.progress import YIELD_SECONDS

    assert YIELD_SECONDS < CROWDED_ALL_GATHER_YIELD_SECONDS < 0.1  # rank 0's lateness exceeds both
    monkeypatch.setattr(shm_window, "oversubscribed", lambda n: crowded)
    if not crowded:
        monkeypatch.setattr(progress, "usable_cpus", lambda: 64)
    nbytes = max(gather_window_bytes(True), gather_window_bytes(False)) + 24
    results = run_world(lambda comm: _crowded_all_gathers(comm, nbytes), 3, "shm", timeout=120, cross_memory=True)
    yields = (CROWDED_ALL_GATHER_YIELD_SECONDS, YIELD_SECONDS) if crowded else (0.0, 0.0)
    assert results == [([], yields, None)] + [([], yields, True)] * 2


# -- reduces and reduce-scatters by reads where ranks outnumber cores: their C plans (fold_plan) --

STEP_BYTES = 16 << 10
"""The reads' step in these tests: blocks of several steps, the last one short."""


@pytest.fixture
def crowded_reads(monkeypatch, direct_reduces):
    """Ranks that outnumber cores (forced), reduces by reads from just beyond the slots and
    reduce-scatters from 64 KiB (the halves up to 16 KiB), in steps of ``STEP_BYTES`` (the forked
    ranks inherit all of it)."""
    monkeypatch.setattr(shm_window, "oversubscribed", lambda n: True)
    monkeypatch.setattr(direct_routes, "REDUCE_READS_BYTES", (DIRECT_REDUCE_BYTES + 1,) * 2)
    monkeypatch.setattr(direct_routes, "REDUCE_PIECES_CROWDED_RANKS", (1, DIRECT_REDUCE_BYTES + 1))
    monkeypatch.setattr(direct_routes, "READS_FROM_BYTES", 64 << 10)
    for name in ("HALF_BYTES", "ALL_REDUCE_HALVES_BYTES"):  # the small window's halves up to 16 KiB
        monkeypatch.setattr(small, name, 16 << 10)
    monkeypatch.setattr(window_engine, "DIRECT_STEP_BYTES", STEP_BYTES)


def _recorded_fold_plans(wrap: Any = None) -> list[list[int]]:
    """In this rank: make ``exchange_reads.fold_plan``'s plans record what every call returned (one
    list per plan made), ``wrap(plan)`` instead of the plan where given (None: no plan)."""
    made = exchange_reads.fold_plan
    states: list[list[int]] = []

    def recording(*args: Any, **kwargs: Any) -> Any:
        plan = made(*args, **kwargs)
        if plan is None or wrap is not None and wrap(plan) is None:
            return None
        inner = plan if wrap is None else wrap(plan)
        mine: list[int] = []
        states.append(mine)

        def recorded(*call: Any) -> int:
            state = inner(*call)
            mine.append(int(state))
            return state

        return recorded

    exchange_reads.fold_plan = recording  # type: ignore[assignment]
    return states


FOLD_CASES = [  # (dtype, op, elements): every kind of fold C does, one it does not (float MAX), odd counts
    ("float32", ReduceOp.SUM, (DIRECT_REDUCE_BYTES >> 2) + 4099),
    ("float64", ReduceOp.PROD, (DIRECT_REDUCE_BYTES >> 3) + 2053),
    ("int8", ReduceOp.BXOR, DIRECT_REDUCE_BYTES + 16387),
    ("int64", ReduceOp.SUM, (DIRECT_REDUCE_BYTES >> 3) + 1029),
    ("uint16", ReduceOp.MAX, (DIRECT_REDUCE_BYTES >> 1) + 8195),
    ("float32", ReduceOp.AVG, (DIRECT_REDUCE_BYTES >> 2) + 4099),
    ("float32", ReduceOp.MAX, (DIRECT_REDUCE_BYTES >> 2) + 4099),
]


def _part(rank: int, dtype: str, op: ReduceOp, count: int) -> np.ndarray:
    """Rank ``rank``'s contribution: values whose folds round (floats) or wrap (integers)."""
    rng = np.random.default_rng(rank)
    if np.dtype(dtype).kind == "f":
        values = rng.standard_normal(count) * 3
        return (1 + values / 100 if op is ReduceOp.PROD else values).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, count, dtype=dtype, endpoint=True)


def _fold_calls(comm: Any) -> tuple[list[bytes], list[list[int]]]:
    """Every case as reduces to roots 0 and last, in place and into ``out=``, then as reduce-scatters
    out of place and into x's own block: what each call left (the root's result, or whether x
    was left as it was; the reduce-scatter's block), and what the fold plans returned."""
    states = _recorded_fold_plans()
    p, me, got = comm.size, comm.rank, []
    for dtype, op, count in FOLD_CASES:
        for root in (0, p - 1):
            for into_out in (False, True):
                x = _part(me, dtype, op, count)
                out = np.full_like(x, 7) if into_out and me == root else None
                comm.reduce(x, root=root, op=op, out=out)
                if me == root:
                    got.append((x if out is None else out).tobytes())
                else:
                    got.append(bytes([np.array_equal(x, _part(me, dtype, op, count))]))
        k = count // p + 1
        x = _part(me, dtype, op, k * p)
        block = np.full(k, 7, dtype)
        comm.reduce_scatter(x, block, op=op)
        comm.reduce_scatter(x, x[me * k : (me + 1) * k], op=op)
        got += [block.tobytes(), x[me * k : (me + 1) * k].tobytes()]
    return got, states


def _crowded_reduce_of_4_mib(comm: Any) -> tuple[bytes, list[list[int]], str]:
    """A float32 SUM reduce of 4 MiB (odd count) to rank 0, in place then into ``out=``: the
    root's results, what the fold plans returned and the route the reduce took."""
    states = _recorded_fold_plans()
    count = (4 << 20) // 4 + 1
    x = _part(comm.rank, "float32", ReduceOp.SUM, count)
    out = np.full_like(x, 7) if comm.rank == 0 else None
    comm.reduce(x.copy(), root=0)
    comm.reduce(x, root=0, out=out)
    got = b"" if out is None else out.tobytes()
    plan = next(p for key, p in comm._plans.items() if key[0] == "reduce")
    plan = getattr(plan, "plan", plan)
    return got, states, f"{type(plan).__name__} {type(getattr(plan, 'route', None)).__name__}"


@pytest.mark.parametrize("size, route", [(4, "LargeReduce NoneType"), (3, "LargeReduce PiecewiseReduce")])
def test_a_crowded_4_rank_reduce_of_4_mib_goes_by_reads_folded_in_c_and_a_3_rank_one_through_the_slots_pieces(
        monkeypatch, direct_reduces, size, route):
    """Where ranks outnumber cores a reduce of 4 MiB goes at 4 ranks by reads from the size larger
    crowded groups take them (``REDUCE_READS_BYTES``' second), folded in C below ``FOLDS_IN_C_BYTES``,
    and at 3 ranks (``REDUCE_PIECES_CROWDED_RANKS``) through the slots piece by piece (the root
    folding two peers' pieces keeps up). Either way the root's result is the bits of folding each
    block in rank order."""
    monkeypatch.delenv(small_native.PURE_PYTHON_ENV, raising=False)
    monkeypatch.setattr(shm_window, "oversubscribed", lambda n: True)  # the forked ranks inherit it
    monkeypatch.setattr(exchange_reads, "FOLD_YIELD_SECONDS", 1.0)  # no hand-back here: the calls in C
    results = run_world(_crowded_reduce_of_4_mib, size, "shm", timeout=120)
    count = (4 << 20) // 4 + 1
    parts = [_part(r, "float32", ReduceOp.SUM, count) for r in range(size)]
    if route.endswith("NoneType"):  # the reads' blocks, each folded by its rank
        want = _folded_in_rank_order(parts, ReduceOp.SUM)
    else:  # the pieces, each folded by the root in rank order
        want = parts[0].copy()
        for q in range(1, size):
            want += parts[q]
    assert results[0][0] == want.tobytes()
    for _, states, taken in results:
        assert taken == route, taken  # NoneType: by reads (``native``), no route of pieces or schedule
        calls = [state for plan in states for state in plan]
        if route.endswith("NoneType"):
            assert len(calls) == 2 and all(state > 0 for state in calls), states  # both calls done in C
        else:
            assert calls == [], states  # no reads


def _folded_in_rank_order(parts: list[np.ndarray], op: ReduceOp) -> np.ndarray:
    """The reduction the Python plans define: block r folded by rank r, its own part first, then
    the others in rank order."""
    ufunc = {ReduceOp.SUM: np.add, ReduceOp.PROD: np.multiply, ReduceOp.MAX: np.maximum,
             ReduceOp.BXOR: np.bitwise_xor}[op]
    out = np.empty_like(parts[0])
    for r, (lo, n) in enumerate(partition(parts[0].size, len(parts))):
        folded = parts[r][lo : lo + n]
        for q in (q for q in range(len(parts)) if q != r):
            folded = ufunc(folded, parts[q][lo : lo + n])
        out[lo : lo + n] = folded
    return out


@pytest.mark.parametrize("size", [3, 4])
def test_crowded_reduces_and_reduce_scatters_by_reads_fold_in_c_with_the_python_plans_bits(crowded_reads, monkeypatch,
                                                                                          size):
    """Where ranks outnumber cores a reduce or reduce-scatter by reads runs in C (``fold_plan``) for
    every dtype and operator C folds, and leaves the same bytes as the Python plan (run with the C
    parts off): every root, in place and into ``out=``, odd counts of several steps; float MAX
    (numpy's fold) gets no C plan."""
    monkeypatch.setattr(exchange_reads, "FOLD_YIELD_SECONDS", 1.0)  # no hand-back here: the calls in C
    in_c = run_world(_fold_calls, size, "shm", timeout=180)
    monkeypatch.setenv(small_native.PURE_PYTHON_ENV, "1")
    in_python = run_world(_fold_calls, size, "shm", timeout=180)
    for r in range(size):
        assert in_c[r][0] == in_python[r][0], f"rank {r}: the C plans' bytes differ from the Python plan's"
        assert in_python[r][1] == [], "the Python plan made C plans"
        in_c_cases = [case for case in FOLD_CASES if (case[0], case[1]) != ("float32", ReduceOp.MAX)]
        calls = [state for states in in_c[r][1] for state in states]
        assert len(calls) == 6 * len(in_c_cases), in_c[r][1]  # four reduces and two reduce-scatters a case
        assert all(state > 0 for state in calls), in_c[r][1]  # done in C every call
    i = 0
    for dtype, op, count in FOLD_CASES:
        parts = [_part(r, dtype, op, count) for r in range(size)]
        want = None if op is ReduceOp.AVG else _folded_in_rank_order(parts, op).tobytes()
        for root in (0, size - 1):
            for _ in range(2):
                assert want is None or in_c[root][0][i] == want, (dtype, op, root)
                assert all(in_c[r][0][i] == b"\x01" for r in range(size) if r != root), "a peer's x changed"
                i += 1
        k = count // size + 1
        parts = [_part(r, dtype, op, k * size) for r in range(size)]
        if op is not ReduceOp.AVG:
            folded = _folded_in_rank_order(parts, op)
            for r in range(size):
                assert in_c[r][0][i] == in_c[r][0][i + 1] == folded[r * k : (r + 1) * k].tobytes(), (dtype, op, r)
        i += 2


LATE_COUNT = (DIRECT_REDUCE_BYTES >> 2) + 4099
"""float32 elements of the reduces below: beyond the slots, blocks of several steps (one short)."""


def _folds_late_on(comm: Any, late_rank: int) -> list[list[int]]:
    """Make ``late_rank`` fold in Python and late (every piece 20 ms behind, its C plans refused), so
    that the other ranks' C plans hand their calls back mid-call; this rank's recorded plan states."""
    if comm.rank != late_rank:
        return _recorded_fold_plans()
    states = _recorded_fold_plans(wrap=lambda plan: None)
    reduce = direct.Reads.reduce

    def late(self: Any, *args: Any) -> None:
        time.sleep(0.02)
        reduce(self, *args)

    direct.Reads.reduce = late  # type: ignore[method-assign]
    return states


def _late_peer(comm: Any) -> tuple[bool, list[list[int]]]:
    """Reduces to rank 0 where rank 2 folds in Python and late (every piece 20 ms behind), so that
    the others' C plans hand their calls back mid-call; whether every result was right."""
    states = _folds_late_on(comm, 2)
    count = LATE_COUNT
    right = True
    for rep in range(3):
        x = _part(comm.rank, "float32", ReduceOp.SUM, count) + rep
        comm.reduce(x, root=0)
        if comm.rank == 0:
            want = _folded_in_rank_order([_part(r, "float32", ReduceOp.SUM, count) + rep for r in range(comm.size)],
                                         ReduceOp.SUM)
            right = right and x.tobytes() == want.tobytes()
    return right, states


def test_a_crowded_reduce_by_reads_hands_a_late_peer_back_to_the_python_plan_mid_call(crowded_reads, monkeypatch):
    """A fold plan that finds a peer late (its fold's RED, or its READ) hands the call back where it
    stopped, and the Python plan finishes it: the root's result the bits of folding in rank order."""
    monkeypatch.setattr(exchange_reads, "FOLD_YIELD_SECONDS", 1e-3)
    results = run_world(_late_peer, 4, "shm", timeout=120)
    assert [right for right, _ in results] == [True] * 4
    root_states = results[0][1][0]
    steps = -(-partition(LATE_COUNT, 4)[0][1] // (STEP_BYTES // 4))
    mid_call = [-state - 2 for state in root_states if state < -1 and (-state - 2) // 4 < steps]
    assert any(k % 4 > 0 for k in mid_call), root_states  # stopped among the root's reads of a step's pieces
    assert results[2][1] == []  # (rank 2 ran in Python)


def _killed_peer(folder: Any) -> Any:
    """Rank 2 folds its first piece in Python and dies (os._exit) before its second; the root's C
    plan waits for the piece, hands the call back, and the Python plan's wait finds rank 2 gone."""

    def body(comm: Any) -> str:
        if comm.rank == 2:
            _recorded_fold_plans(wrap=lambda plan: None)
            reduce, pieces = direct.Reads.reduce, []

            def dies(self: Any, *args: Any) -> None:
                pieces.append(1)
                if len(pieces) > 1:
                    os._exit(3)
                reduce(self, *args)

            direct.Reads.reduce = dies  # type: ignore[method-assign]
        states = _recorded_fold_plans() if comm.rank != 2 else []
        x = np.ones(LATE_COUNT, np.float32)
        try:
            comm.reduce(x, root=0)
        except PeerLostError as exc:
            (folder / f"rank{comm.rank}").write_text(json.dumps([type(exc).__name__, exc.peer, states]))
        return "raised"

    return body


def test_a_peer_killed_during_a_crowded_reduce_by_reads_fails_it_with_peer_lost(crowded_reads, tmp_path, monkeypatch):
    monkeypatch.setattr(exchange_reads, "FOLD_YIELD_SECONDS", 1e-3)
    with pytest.raises(RankError) as info:
        run_world(_killed_peer(tmp_path), 3, "shm", timeout=60)
    assert info.value.rank == 2 and info.value.exitcode == 3
    name, peer, states = json.loads((tmp_path / "rank0").read_text())
    assert (name, peer) == ("PeerLostError", 2)
    assert len(states) == 1 and states[0][0] < 0, states  # the root's C plan handed the call back


# -- all-reduces by reads where every rank has a core: the fold plan with every rank its root --

@pytest.fixture
def reads_with_cores(monkeypatch):
    """Every rank with a core (forced), all-reduces by reads from 64 KiB (the halves up to 16 KiB), in
    steps of ``STEP_BYTES`` (the forked ranks inherit all of it)."""
    monkeypatch.setattr(shm_window, "oversubscribed", lambda n: False)
    monkeypatch.setattr(direct_routes, "READS_FROM_BYTES", 64 << 10)
    for name in ("HALF_BYTES", "ALL_REDUCE_HALVES_BYTES"):
        monkeypatch.setattr(small, name, 16 << 10)
    monkeypatch.setattr(window_engine, "DIRECT_STEP_BYTES", STEP_BYTES)


ALL_REDUCE_BYTES = 256 << 10
"""Bytes of the all-reduces below (about): blocks of several steps at two and three ranks."""


def _all_reduce_calls(comm: Any) -> tuple[list[bytes], list[list[int]]]:
    """Every case (odd counts) as an all-reduce in place and into ``out=``, twice each: what each
    call left, whether ``x`` out of place was left as it was, and what the fold plans returned."""
    states = _recorded_fold_plans()
    got = []
    for dtype, op, _ in FOLD_CASES:
        count = ALL_REDUCE_BYTES // np.dtype(dtype).itemsize + 7
        for rep in range(2):
            x = _part(comm.rank, dtype, op, count)
            comm.all_reduce(x, op=op)
            y = _part(comm.rank, dtype, op, count)
            out = np.full_like(y, 7)
            comm.all_reduce(y, op=op, out=out)
            got += [x.tobytes(), out.tobytes(), bytes([np.array_equal(y, _part(comm.rank, dtype, op, count))])]
    return got, states


@pytest.mark.parametrize("size", [2, 3])
def test_all_reduces_by_reads_where_every_rank_has_a_core_fold_in_c_with_the_python_plans_bits(reads_with_cores,
                                                                                               monkeypatch, size):
    """Where every rank has a core an all-reduce by reads runs in C (``fold_plan(every=True)``: a
    reduce whose every rank is the root) for every dtype and operator C folds, in place and into
    ``out=``, and leaves the Python plan's bytes (block r folded by rank r in rank order, the same on
    every rank); ``x`` out of place is only read; float MAX (numpy's fold) gets no C plan."""
    monkeypatch.setattr(exchange_reads, "FOLD_YIELD_SECONDS", 1.0)  # no hand-back here: the calls in C
    in_c = run_world(_all_reduce_calls, size, "shm", timeout=180)
    monkeypatch.setenv(small_native.PURE_PYTHON_ENV, "1")
    in_python = run_world(_all_reduce_calls, size, "shm", timeout=180)
    in_c_cases = [case for case in FOLD_CASES if (case[0], case[1]) != ("float32", ReduceOp.MAX)]
    for r in range(size):
        assert in_c[r][0] == in_python[r][0] == in_c[0][0], f"rank {r}: the C plan's bytes differ"
        assert in_python[r][1] == []
        calls = [state for states in in_c[r][1] for state in states]
        assert len(calls) == 4 * len(in_c_cases), in_c[r][1]  # two in place and two into out a case
        assert all(state > 0 for state in calls), in_c[r][1]  # done in C every call
    i = 0
    for dtype, op, _ in FOLD_CASES:
        count = ALL_REDUCE_BYTES // np.dtype(dtype).itemsize + 7
        parts = [_part(r, dtype, op, count) for r in range(size)]
        want = None if op is ReduceOp.AVG else _folded_in_rank_order(parts, op).tobytes()
        for _ in range(2):
            assert want is None or in_c[0][0][i] == in_c[0][0][i + 1] == want, (dtype, op)
            assert in_c[0][0][i + 2] == b"\x01", "x changed out of place"
            i += 3


def _late_all_reduce(comm: Any) -> tuple[bool, list[list[int]]]:
    """All-reduces where the last rank folds in Python and late (every piece 20 ms behind), so that
    the others' C plans hand their calls back mid-call; whether every result was right."""
    states = _folds_late_on(comm, comm.size - 1)
    count = ALL_REDUCE_BYTES // 4 + 7
    right = True
    for rep in range(3):
        parts = [_part(r, "float32", ReduceOp.SUM, count) + rep for r in range(comm.size)]
        want = _folded_in_rank_order(parts, ReduceOp.SUM)
        x = parts[comm.rank].copy()
        comm.all_reduce(x)
        out = np.empty_like(x)
        comm.all_reduce(parts[comm.rank], out=out)
        right = right and x.tobytes() == out.tobytes() == want.tobytes()
    return right, states


@pytest.mark.parametrize("size", [2, 3])
def test_an_all_reduce_by_reads_in_c_hands_a_late_peer_back_to_the_python_plan_mid_call(reads_with_cores,
                                                                                     monkeypatch, size):
    """A fold plan of an all-reduce that finds a peer late (its RED, or its READ) hands the call back
    where it stopped, and the Python plan finishes it: every rank gets the bits of folding in rank
    order, in place and into ``out=``."""
    monkeypatch.setattr(exchange_reads, "FOLD_YIELD_SECONDS", 1e-3)
    results = run_world(_late_all_reduce, size, "shm", timeout=120)
    assert [right for right, _ in results] == [True] * size
    states = results[0][1][0]
    steps = -(-partition(ALL_REDUCE_BYTES // 4 + 7, size)[0][1] // (STEP_BYTES // 4))
    mid_call = [-state - 2 for state in states if state < -1 and (-state - 2) // size < steps]
    assert mid_call, states  # stopped within the steps, not only before them
    assert results[-1][1] == []  # (the last rank ran in Python)
