"""The sweep: every (type, op, root) block, every size, our world and the ``--vs`` peers
interleaved row by row; the ranks' times and error counts combined into the cells of
the table (``-a``), and each row printed as it is done.

Apart from the command (perf.harness) so that the loop reads on its own; it knows a
world only as a :class:`Runner` (a RemoteWorld of the coordinator, or this process as a
rank) and writes only through a :class:`~perf.progress.Printer`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import report
from .bench import RankRow, RowSpec, combine_time, combine_wrong
from .colls import DTYPE_NAMES, OP_NAMES, Collective, have_dtype, numpy_dtype, sweep_sizes
from .options import Options
from .progress import Printer, human_size, note

CORRUPT_ENV = "COLLECTIVES_PERF_CORRUPT"  # test hook: "R" makes rank R flip a result bit before checking


class Runner(Protocol):
    """One world as the sweep drives it: warm up, run a row on every rank, say what it
    can run and what it is."""

    name: str
    nranks: int

    def warmup(self, coll: str, dtype: str, op: str, root: int, minbytes: int, maxbytes: int, iters: int,
               unalign: int = 0) -> None: ...
    def row(self, spec: RowSpec) -> list[RankRow]: ...
    def supports(self, dtype: str, op: str | None) -> str | None: ...
    def info(self) -> dict[str, Any]: ...


class LibraryFailure(Exception):
    """The library under test failed (exit status 3)."""



@dataclass
class Cell:
    """One half of a row (out-of-place or in-place): time, bandwidths, wrong values."""
    time: float
    algbw: float
    busbw: float
    wrong: int | None

    def json(self, cputime: bool) -> dict[str, Any]:
        """The cell as nccl-tests' JSON writes it."""
        return {("cpu_time" if cputime else "time"): self.time, "alg_bw": self.algbw, "bus_bw": self.busbw,
                "nwrong": None if self.wrong is None else float(self.wrong)}


@dataclass
class Row:
    """One printed row: its size and type, our cells, and each peer's cells and time ratio."""
    size: int
    count: int
    type: str
    redop: str
    root: int
    cells: list[Cell]
    peers: dict[str, list[Cell] | None] = field(default_factory=dict)
    ratios: dict[str, float | None] = field(default_factory=dict)


@dataclass
class SweepResult:
    """Every row, the counts behind the footer, and what happened to each peer."""
    rows: list[Row] = field(default_factory=list)
    out_of_bounds: int = 0
    bw_sum: float = 0.0
    bw_count: int = 0
    peer_bw: dict[str, list[float]] = field(default_factory=dict)
    peer_wrong: dict[str, int] = field(default_factory=dict)
    stopped: dict[str, str] = field(default_factory=dict)

    @property
    def avg_busbw(self) -> float:
        """Mean bus bandwidth over every cell (nan without cells)."""
        return self.bw_sum / self.bw_count if self.bw_count else float("nan")


def _cells(coll: Collective, size_bytes: int, ranks: list[RankRow], average: int, nranks: int
           ) -> tuple[list[Cell], int]:
    """Combine the ranks' times (``-a``) and error counts into the row's two cells; also how many cells went wrong."""
    cells, failing = [], 0
    for p in range(2):
        t = combine_time([r.time[p] for r in ranks], average)
        algbw, busbw = coll.bandwidth(size_bytes, t, nranks)
        wrong, fails = combine_wrong([r.wrong[p] for r in ranks])
        failing += fails
        cells.append(Cell(t, algbw, busbw, wrong))
    return cells, failing


def loops(opts: Options, coll: Collective, nranks: int) -> list[tuple[str, str, int]]:
    """(type, op, root) blocks, in nccl-tests' order."""
    if coll.name == "barrier":
        return [("none", "none", -1)]
    types = [t for t in DTYPE_NAMES if have_dtype(t)] if opts.dtype == "all" else [opts.dtype]
    if coll.loops_ops:
        ops = list(OP_NAMES) if opts.op == "all" else [opts.op]
    else:
        ops = [coll.op_label]
    roots = (list(range(nranks)) if opts.root == -1 else [opts.root]) if coll.rooted else [-1]
    return [(t, o, r) for t in types for o in ops for r in roots]


def sweep(opts: Options, coll: Collective, main: Runner, peers: list[Runner], out: Printer) -> SweepResult:
    """Run every row on ``main`` and the active peers, print each as it is done, return the lot."""
    n = main.nranks
    result = SweepResult()
    sizes = sweep_sizes(opts.minbytes, opts.maxbytes, opts.stepbytes, opts.stepfactor)
    if coll.name == "barrier":
        sizes = [0]
    blocks = loops(opts, coll, n)
    skip = coll.skips(n)
    if skip:  # nccl-tests prints this where the rows would be, and runs nothing
        out.line(skip)
        blocks = []
    hook = os.environ.get(CORRUPT_ENV, "").strip()
    corrupt = int(hook) if hook.lstrip("-").isdigit() else -1
    active = list(peers)
    for p in peers:
        result.peer_bw[p.name] = []
        result.peer_wrong[p.name] = 0
    rep = 0
    cycles = opts.run_cycles
    total = len(blocks) * len(sizes) * cycles if cycles > 0 else None
    out.start_progress(total, opts.progress, opts.program)
    try:
        for block, (dtype, op, root) in enumerate(blocks):
            run_op = "sum" if op in ("none", "") else op
            elem = numpy_dtype(dtype).itemsize if dtype != "none" else 1
            try:
                main.warmup(coll.name, dtype, run_op, root, opts.minbytes, opts.maxbytes, opts.warmup_iters,
                            opts.unalign)
            except Exception as exc:
                raise LibraryFailure(str(exc)) from exc
            for p in list(active):
                if p.supports(dtype, op if coll.reduces else None) is None:
                    _peer_call(p, active, result, out, functools.partial(
                        p.warmup, coll.name, dtype, run_op, root, opts.minbytes, opts.maxbytes, opts.warmup_iters,
                        opts.unalign))
            cycle = 0
            last: dict[str, tuple[int, float]] = {}  # world -> (size, µs out of place) of its last row here
            while cycles <= 0 or cycle < cycles:
                cycle += 1
                for index, size in enumerate(sizes):
                    count, size_bytes, _, _ = coll.counts(size, elem, n)
                    spec = RowSpec(coll.name, dtype, run_op, root, size, opts.iters, opts.agg_iters, opts.check,
                                   opts.blocking, opts.unalign, (rep + 1, rep + 2), -1)
                    rep += 2
                    out.row_started(_row_label(size_bytes, dtype, op, root, cycle if cycles != 1 else 0))
                    runnable = [p for p in peers if p in active
                                and p.supports(dtype, op if coll.reduces else None) is None]
                    peers_first = peers_go_first(opts.order, block, cycle - 1, index)
                    theirs_by_name = _peer_rows(runnable, active, result, out, spec, opts, last) if peers_first else {}
                    try:
                        ours = main.row(dataclasses.replace(spec, corrupt=corrupt,
                                                            warm=warm_calls(opts, last.get(main.name), size)))
                    except Exception as exc:
                        raise LibraryFailure(str(exc)) from exc
                    if not peers_first:
                        theirs_by_name = _peer_rows(runnable, active, result, out, spec, opts, last)
                    cells, failing = _cells(coll, size_bytes, ours, opts.average, n)
                    last[main.name] = (size, cells[0].time)
                    result.out_of_bounds += failing
                    row = Row(size_bytes, count, dtype, op, root, cells)
                    for p in peers:
                        row.peers[p.name] = None
                        row.ratios[p.name] = None
                        theirs = theirs_by_name.get(p.name)
                        if theirs is None:
                            continue
                        pcells, _ = _cells(coll, size_bytes, theirs, opts.average, n)
                        last[p.name] = (size, pcells[0].time)
                        row.peers[p.name] = pcells
                        result.peer_bw[p.name].extend(c.busbw for c in pcells)
                        result.peer_wrong[p.name] += sum(1 for c in pcells if c.wrong)
                        ours_t = cells[0].time + cells[1].time
                        row.ratios[p.name] = (pcells[0].time + pcells[1].time) / ours_t if ours_t > 0 else None
                    for c in cells:
                        result.bw_sum += c.busbw
                        result.bw_count += 1
                    result.rows.append(row)
                    out.line(format_row(row, opts, [p.name for p in peers]))
                    out.tick()
    finally:
        out.stop_progress()
    return result


def _peer_rows(runnable: list[Runner], active: list[Runner], result: SweepResult, out: Printer, spec: RowSpec,
               opts: Options, last: dict[str, tuple[int, float]]) -> dict[str, list[RankRow] | None]:
    """Each still active peer's row of ``spec``, after its warm-up (``warm_calls`` from its ``last`` row);
    a failing peer is dropped (``_peer_call``) and its row is None."""
    rows: dict[str, list[RankRow] | None] = {}
    for p in runnable:
        if p in active:
            pspec = dataclasses.replace(spec, warm=warm_calls(opts, last.get(p.name), spec.size))
            rows[p.name] = _peer_call(p, active, result, out, functools.partial(p.row, pspec))
    return rows


def peers_go_first(order: str, block: int, cycle: int, index: int) -> bool:
    """Whether the peers run this row before our world: ``ours`` never, ``peers`` always, ``alternate``
    on every other row, the other way round from one block and one cycle to the next, so that each
    world runs as many rows first as the other (the first world of a large row pays a warm-up)."""
    if order == "peers":
        return True
    if order == "alternate":
        return (block + cycle + index) % 2 == 1
    return False


def warm_calls(opts: Options, last: tuple[int, float] | None, size: int) -> int:
    """Untimed calls before a world's out-of-place cell (``--row_warmup MS``): as many as fill MS at the
    time per call that the world's last row here predicts for ``size`` (proportional to the size), at
    least one and at most the timed loop's own count; the timed loop's count when nothing predicts it."""
    if opts.row_warmup <= 0:
        return 0
    cap = max(opts.iters * opts.agg_iters, 1)
    if last is None or last[1] <= 0:
        return cap
    predicted_us = last[1] * max(size, 1) / max(last[0], 1)
    return max(1, min(cap, math.ceil(opts.row_warmup * 1000.0 / predicted_us)))


def _row_label(size_bytes: int, dtype: str, op: str, root: int, cycle: int) -> str:
    """The running row in words for the progress display: ``4 MiB float sum``."""
    words = [human_size(size_bytes)] + [w for w in (dtype, op) if w not in ("none", "")]
    if root >= 0:
        words.append(f"root {root}")
    if cycle:
        words.append(f"cycle {cycle}")
    return " ".join(words)


def _peer_call(peer: Runner, active: list[Runner], result: SweepResult, out: Printer,
               call: Callable[[], Any]) -> Any:
    """Run a peer's command; a failing peer is dropped (with a note), never the run."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - a peer's failure is reported, not fatal
        reason = str(exc).strip().splitlines()
        short = reason[-1] if reason else type(exc).__name__
        result.stopped[peer.name] = str(exc)
        if peer in active:
            active.remove(peer)
        out.line(f"# --vs {peer.name} stopped: {short}")
        note(f"--vs {peer.name} failed:\n{exc}")
        return None


def format_row(row: Row, opts: Options, peer_names: Sequence[str]) -> str:
    """A row as nccl-tests prints it, with ``-S`` timestamps and the peers' ratio columns."""
    text = report.row_preamble(row.size, row.count, row.type, row.redop, row.root)
    for cell in row.cells:
        text += report.row_body(cell.time, cell.algbw, cell.busbw, cell.wrong)
    if opts.report_timestamps:
        text += "%21s" % time.strftime("%Y-%m-%d %H:%M:%S")
    for name in peer_names:
        text += report.ratio_cell(row.ratios.get(name))
    return text
