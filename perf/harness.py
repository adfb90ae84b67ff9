"""The ``*_perf`` commands: parse nccl-tests' flags, run the sweep, print the table.

Two ways ranks come to be:

* **coordinated** (``--np N``, and the default ``--np 1`` when ``--vs`` is given without
  a launcher): this process hosts a TCPStoreServer and a control socket and starts N
  worker processes per world (perf.coordinator); for every row it asks our world, then
  each ``--vs`` peer world, to run it, combines the ranks' times (``-a``) and error counts
  itself, and prints. Only one world runs at a time; the others wait in a socket read.
* **direct** (under ``collectives-run``, ``torchrun`` or ``mpiexec``, or alone as a world
  of one): every process is one rank, calls ``collectives.init()`` (mpiexec: a store
  bootstrapped through mpi4py), runs the same per-rank code, and the ranks exchange times
  and counts with an all-gather of their own; rank 0 prints.

Exit status: 0; 7 when any value was wrong (or NCCL_TESTS_MIN_BW failed); 255 for bad
sizes; 3 when the library under test fails; 6 for an invalid world (root out of range,
``--np`` under a launcher).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from collectives.environment import detect_launcher as _detect_launcher

from . import report
from .bench import AVERAGE_NAMES, RankRow, RowSpec, combine_time, combine_wrong, pack, run_row, unpack, warmup
from .colls import COLLECTIVES, DTYPE_NAMES, OP_NAMES, Collective, have_dtype, numpy_dtype, sweep_sizes
from .options import Options, UsageExit, parse

CORRUPT_ENV = "COLLECTIVES_PERF_CORRUPT"  # test hook: "R" makes rank R flip a result bit before checking
EXIT_OK, EXIT_LIBRARY, EXIT_INVALID, EXIT_RESULTS, EXIT_ARGS = 0, 3, 6, 7, 255


class Runner(Protocol):
    name: str
    nranks: int

    def warmup(self, coll: str, dtype: str, op: str, root: int, minbytes: int, maxbytes: int, iters: int,
               unalign: int = 0) -> None: ...
    def row(self, spec: RowSpec) -> list[RankRow]: ...
    def supports(self, dtype: str, op: str | None) -> str | None: ...
    def info(self) -> dict[str, Any]: ...


class LibraryFailure(Exception):
    """The library under test failed (exit status 3)."""


# -- output ---------------------------------------------------------------------------------


class Printer:
    """stdout lines of rank 0 (others print nothing), kept apart from the progress bar."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def line(self, text: str = "") -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stdout)
        else:
            sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def lines(self, texts: Sequence[str]) -> None:
        for t in texts:
            self.line(t)

    def start_progress(self, total: int | None, mode: str, desc: str) -> None:
        if not self.enabled or mode == "off":
            return
        if mode == "auto" and not (sys.stderr.isatty() or os.environ.get("COLLECTIVES_PERF_PROGRESS") == "1"):
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=total, file=sys.stderr, desc=desc, unit="row", leave=False, dynamic_ncols=True,
                        delay=0.0 if mode == "on" else 1.0)

    def tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def stop_progress(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def note(text: str) -> None:
    """A note on stderr (never in the table)."""
    sys.stderr.write(f"{text}\n")
    sys.stderr.flush()


# -- the sweep ------------------------------------------------------------------------------


@dataclass
class Cell:
    time: float
    algbw: float
    busbw: float
    wrong: int | None

    def json(self, cputime: bool) -> dict[str, Any]:
        return {("cpu_time" if cputime else "time"): self.time, "alg_bw": self.algbw, "bus_bw": self.busbw,
                "nwrong": None if self.wrong is None else float(self.wrong)}


@dataclass
class Row:
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
    rows: list[Row] = field(default_factory=list)
    out_of_bounds: int = 0
    bw_sum: float = 0.0
    bw_count: int = 0
    peer_bw: dict[str, list[float]] = field(default_factory=dict)
    peer_wrong: dict[str, int] = field(default_factory=dict)
    stopped: dict[str, str] = field(default_factory=dict)

    @property
    def avg_busbw(self) -> float:
        return self.bw_sum / self.bw_count if self.bw_count else float("nan")


def _cells(coll: Collective, size_bytes: int, ranks: list[RankRow], average: int, nranks: int
           ) -> tuple[list[Cell], int]:
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
        ops = ["none"]
    roots = (list(range(nranks)) if opts.root == -1 else [opts.root]) if coll.rooted else [-1]
    return [(t, o, r) for t in types for o in ops for r in roots]


def sweep(opts: Options, coll: Collective, main: Runner, peers: list[Runner], out: Printer) -> SweepResult:
    n = main.nranks
    result = SweepResult()
    sizes = sweep_sizes(opts.minbytes, opts.maxbytes, opts.stepbytes, opts.stepfactor)
    if coll.name == "barrier":
        sizes = [0]
    blocks = loops(opts, coll, n)
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
        for dtype, op, root in blocks:
            run_op = "sum" if op == "none" else op
            elem = numpy_dtype(dtype).itemsize if dtype != "none" else 1
            try:
                main.warmup(coll.name, dtype, run_op, root, opts.minbytes, opts.maxbytes, opts.warmup_iters,
                            opts.unalign)
            except Exception as exc:
                raise LibraryFailure(str(exc)) from exc
            for p in list(active):
                if p.supports(dtype, op if coll.reduces else None) is None:
                    _peer_call(p, active, result, out, lambda p=p: p.warmup(
                        coll.name, dtype, run_op, root, opts.minbytes, opts.maxbytes, opts.warmup_iters,
                        opts.unalign))
            cycle = 0
            while cycles <= 0 or cycle < cycles:
                cycle += 1
                for size in sizes:
                    count, size_bytes, _, _ = coll.counts(size, elem, n)
                    spec = RowSpec(coll.name, dtype, run_op, root, size, opts.iters, opts.agg_iters, opts.check,
                                   opts.blocking, opts.unalign, (rep + 1, rep + 2), -1)
                    rep += 2
                    try:
                        ours = main.row(dataclasses.replace(spec, corrupt=corrupt))
                    except Exception as exc:
                        raise LibraryFailure(str(exc)) from exc
                    cells, failing = _cells(coll, size_bytes, ours, opts.average, n)
                    result.out_of_bounds += failing
                    row = Row(size_bytes, count, dtype, op, root, cells)
                    for p in peers:
                        row.peers[p.name] = None
                        row.ratios[p.name] = None
                        if p not in active or p.supports(dtype, op if coll.reduces else None) is not None:
                            continue
                        theirs = _peer_call(p, active, result, out, lambda p=p: p.row(spec))
                        if theirs is None:
                            continue
                        pcells, _ = _cells(coll, size_bytes, theirs, opts.average, n)
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
    text = report.row_preamble(row.size, row.count, row.type, row.redop, row.root)
    for cell in row.cells:
        text += report.row_body(cell.time, cell.algbw, cell.busbw, cell.wrong)
    if opts.report_timestamps:
        text += "%21s" % time.strftime("%Y-%m-%d %H:%M:%S")
    for name in peer_names:
        text += report.ratio_cell(row.ratios.get(name))
    return text


# -- header, footer, files ------------------------------------------------------------------


def header_lines(opts: Options, coll: Collective, main_info: dict[str, Any], nranks: int, how: str,
                 peer_lines: Sequence[str]) -> list[str]:
    lines = report.banner_lines(
        coll.program, nthreads=opts.nthreads, ngpus=opts.ngpus, minbytes=opts.minbytes, maxbytes=opts.maxbytes,
        stepbytes=opts.stepbytes, stepfactor=opts.stepfactor, warmup_iters=opts.warmup_iters, iters=opts.iters,
        agg_iters=opts.agg_iters, check=opts.check, graph=opts.cudagraph, unalign=opts.unalign,
        blocking=opts.blocking,
    )
    backend = main_info.get("backend", opts.backend)
    desc = f"# {backend} {main_info.get('version', '')}".rstrip()
    if backend == "collectives":
        desc += f": transport {main_info.get('transport', '?')}, algorithm {main_info.get('algorithm', 'auto')},"
    elif main_info.get("library"):
        desc += f" ({main_info['library']}),"
    else:
        desc += ","
    desc += f" {nranks} rank{'s' if nranks != 1 else ''} ({how}); time: {AVERAGE_NAMES[opts.average]} (-a {opts.average})"
    lines.append(desc)
    if coll.name == "barrier":
        lines.append("# barrier_perf: one row per cycle; sizes do not apply (size 0), nothing to verify")
    lines.extend(peer_lines)
    lines.append("#")
    return lines


def environment(opts: Options, main_info: dict[str, Any], nranks: int, peer_infos: dict[str, Any]) -> dict[str, Any]:
    import platform
    from importlib import metadata

    from .backend import cpu_model, host_name

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    import collectives

    return {
        "versions": {"collectives": collectives.__version__, "python": platform.python_version(),
                     "numpy": np.__version__, "mpi4py": version("mpi4py"), "torch": version("torch"),
                     "ml_dtypes": version("ml_dtypes"), "matplotlib": version("matplotlib"),
                     "tqdm": version("tqdm"), "nccl_tests_layout": report.NCCL_TESTS_VERSION},
        "host": host_name(), "platform": platform.platform(), "cpu": cpu_model(),
        "cores": os.cpu_count(), "usable_cores": usable,
        "world_size": nranks, "backend": main_info.get("backend", opts.backend),
        "transport": main_info.get("transport"), "algorithm": main_info.get("algorithm", opts.algo or "auto"),
        "main": main_info, "peers": peer_infos,
        "timing": {"average": opts.average, "meaning": AVERAGE_NAMES[opts.average], "iters": opts.iters,
                   "agg_iters": opts.agg_iters, "warmup_iters": opts.warmup_iters, "blocking": opts.blocking,
                   "ratio": "vs_<peer> = (peer out-of-place + in-place time) / (our out-of-place + in-place time)"},
    }


_ENV_PREFIXES = ("NCCL_", "COLLECTIVES_", "OMP_", "MKL_", "MPICH_", "MPIR_", "HYDRA_", "OMPI_", "PMI", "TORCH",
                 "GLOO_", "PYTHONPATH")


def _json_env() -> list[str]:
    """The environment nccl-tests records, limited to what concerns the run, no secrets."""
    return [f"{k}={v}" for k, v in sorted(os.environ.items())
            if k.startswith(_ENV_PREFIXES) and not any(s in k for s in ("SECRET", "TOKEN", "PASSWORD", "KEY"))]


def json_document(opts: Options, coll: Collective, ranks: Sequence[report.RankInfo], result: SweepResult,
                  env_info: dict[str, Any], start: str, min_bw: float | None, errors: list[str]) -> dict[str, Any]:
    """nccl-tests' JSON (version 3 keys, with its string booleans), plus ``environment``
    and per-row ``peers``."""
    def b(value: bool) -> str:
        return "true" if value else "false"

    config: dict[str, Any] = {
        "nthreads": opts.nthreads, "ngpus": opts.ngpus, "minimum_bytes": opts.minbytes,
        "maximum_bytes": opts.maxbytes,
    }
    if opts.stepfactor > 1:
        config["step_factor"] = opts.stepfactor
    else:
        config["step_bytes"] = opts.stepbytes
    config.update({
        "warmup_iters": opts.warmup_iters, "iterations": opts.iters, "aggregated_iterations": opts.agg_iters,
        "validation": opts.check, "graph": opts.cudagraph, "blocking_collectives": b(bool(opts.blocking)),
        "per_iter_timing": b(False), "per_iter_skip": 0, "parallel_init": b(False),
        "devices": [{"rank": r.rank, "group": r.group, "pid": r.pid, "hostname": report.short_host(r.host),
                     "device": r.device, "device_hex": "0000:00:00", "device_info": r.device_name} for r in ranks],
    })
    rows = []
    for row in result.rows:
        entry: dict[str, Any] = {
            "size": row.size, "count": row.count, "type": row.type, "redop": row.redop, "root": "%6i" % row.root,
            "out_of_place": row.cells[0].json(bool(opts.report_cputime)),
            "in_place": row.cells[1].json(bool(opts.report_cputime)),
            "actual_iterations": opts.iters, "experiment_name": "",
        }
        if row.peers:
            entry["peers"] = {
                name: None if cells is None else {
                    "out_of_place": cells[0].json(False), "in_place": cells[1].json(False),
                    "ratio": row.ratios.get(name)}
                for name, cells in row.peers.items()
            }
        rows.append(entry)
    avg = result.avg_busbw
    return {
        "version": 3,
        "start_time": start,
        "args": [coll.program, *opts.argv],
        "env": _json_env(),
        "nccl_version": 0,
        "config": config,
        "results": rows,
        "out_of_bounds": {"count": result.out_of_bounds, "okay": b(result.out_of_bounds == 0)},
        "average_bus_bandwidth": {
            "bandwidth": "nan" if math.isnan(avg) else avg,
            "okay": "unchecked" if min_bw is None else b(avg >= min_bw * 0.9)},
        "errors": errors,
        "end_time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "environment": env_info,
        "peer_summary": {name: {"avg_bus_bandwidth": (sum(v) / len(v)) if v else None,
                                "wrong_cells": result.peer_wrong.get(name, 0),
                                "stopped": result.stopped.get(name)}
                         for name, v in result.peer_bw.items()},
    }


def _open_json(path: str, exclusive: bool) -> tuple[Any, str] | tuple[None, str]:
    """nccl-tests' -J never overwrites (path, path.0, path.1, ...); --json does."""
    if not exclusive:
        try:
            return open(path, "w"), path
        except OSError:
            return None, path
    tries, attempt = path, 0
    while True:
        try:
            return open(tries, "x"), tries
        except FileExistsError:
            tries = f"{path}.{attempt}"
            attempt += 1
        except OSError:
            return None, tries


# -- running --------------------------------------------------------------------------------


def detect_launcher(env: Mapping[str, str] | None = None) -> str | None:
    """The launcher that started this process, as ``collectives.init()`` sees it
    (:func:`collectives.environment.detect_launcher`), or None."""
    return _detect_launcher(env)


def main(program: str, argv: Sequence[str] | None = None) -> int:
    """Run ``program`` (e.g. ``all_reduce_perf``) with ``argv``; return the exit status."""
    try:
        return _main(program, argv)
    except BrokenPipeError:
        # the reader of stdout went away (``| head``): stop like a C program on SIGPIPE
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141


def _main(program: str, argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    coll = next((c for c in COLLECTIVES.values() if c.program == program), None)
    if coll is None:
        note(f"unknown test {program!r}")
        return EXIT_ARGS
    try:
        opts = parse(argv, program)
    except UsageExit as exc:
        if exc.stdout:
            sys.stdout.write(exc.stdout)
            sys.stdout.flush()
        if exc.stderr:
            sys.stderr.write(exc.stderr)
        return exc.code
    launcher = detect_launcher()
    if opts.np is not None and launcher:
        note(f"--np starts its own ranks; it cannot run under {launcher} (each process already is a rank). "
             "Leave out --np, or start the command alone.")
        return EXIT_INVALID
    if opts.np is not None or (opts.vs and not launcher):
        return _run_coordinated(opts, coll)
    return _run_direct(opts, coll, launcher)


def _min_bw() -> float | None:
    text = os.environ.get("NCCL_TESTS_MIN_BW")
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return 0.0


def _finish(opts: Options, coll: Collective, out: Printer, ranks: Sequence[report.RankInfo], result: SweepResult,
            env_info: dict[str, Any], start: str, peer_names: Sequence[str], json_targets: list[tuple[Any, str]],
            is_root: bool) -> int:
    min_bw = _min_bw()
    avg = result.avg_busbw
    footer = report.footer_lines(coll.program, result.out_of_bounds, avg, min_bw)
    out.lines(footer[:2])
    for name in peer_names:
        bws = result.peer_bw.get(name) or []
        if name in result.stopped and not bws:
            continue
        mean = sum(bws) / len(bws) if bws else float("nan")
        wrong = result.peer_wrong.get(name, 0)
        out.line(report.c_format("# %-20s : %g (%d cells with wrong values)", f"{name} avg bus bw", mean, wrong))
    out.lines(footer[2:])
    failed = result.out_of_bounds > 0 or (min_bw is not None and not avg >= min_bw * 0.9)
    if failed and is_root:
        from .backend import host_name

        out.line(f" .. {report.short_host(host_name())} pid {os.getpid()}: Test failure perf/harness.py")
    if is_root:
        import json

        doc = json_document(opts, coll, ranks, result, env_info, start, min_bw, [])
        for fh, path in json_targets:
            with fh:
                json.dump(doc, fh, indent=1)
                fh.write("\n")
        if opts.plot:
            from .plot import write_plot

            why = write_plot(opts.plot, coll, result, list(peer_names))
            if why:
                note(f"--plot: {why}")
    return EXIT_RESULTS if failed else EXIT_OK


def _json_targets(opts: Options, out: Printer) -> list[tuple[Any, str]]:
    targets = []
    for path, exclusive in ((opts.output_file, True), (opts.json, False)):
        if not path:
            continue
        if exclusive and not path.lower().endswith(".json"):
            continue  # nccl-tests writes only *.json
        fh, where = _open_json(path, exclusive)
        if fh is None:
            out.line(f"# skipping json output; {where} not accessible")
        else:
            out.line(f"# Writing JSON output to {where}")
            targets.append((fh, where))
    return targets


def _check_world(opts: Options, coll: Collective, nranks: int) -> str | None:
    if coll.rooted and opts.root != -1 and not 0 <= opts.root < nranks:
        return f"invalid root {opts.root}: the world has {nranks} rank{'s' if nranks != 1 else ''} (use -r -1 for all)"
    return None


def _run_coordinated(opts: Options, coll: Collective) -> int:
    from .coordinator import Coordinator, RemoteWorld, WorldFailed
    from .peers import missing

    nranks = opts.np or 1
    for w in opts.warnings:
        note(f"# {w}")
    problem = _check_world(opts, coll, nranks)
    if problem:
        note(problem)
        return EXIT_INVALID
    out = Printer(True)
    out.lines(opts.notes)
    start = time.strftime("%Y-%m-%d %H:%M:%S")
    coord = Coordinator(nranks, timeout=opts.timeout or None)
    skip: list[str] = []
    interrupted = False
    try:
        if opts.backend == "mpi":
            why = missing("mpi")
            if why:
                note(f"--backend mpi: {why}")
                return EXIT_LIBRARY
            main_world = coord.start_mpi()
        elif opts.backend == "gloo":
            why = missing("gloo")
            if why:
                note(f"--backend gloo: {why}")
                return EXIT_LIBRARY
            main_world = coord.start_gloo(timeout=opts.timeout or None)
        else:
            main_world = coord.start_collectives(transport=opts.transport, algorithm=opts.algo,
                                                 timeout=opts.timeout or None)
        peers: list[RemoteWorld] = []
        for name in opts.vs:
            if name == opts.backend:
                skip.append(f"# skipping --vs {name}: it is the backend being measured")
                continue
            why = missing(name)
            if why:
                skip.append(f"# skipping --vs {name}: {why}")
                continue
            peers.append(coord.start_mpi() if name == "mpi" else coord.start_gloo(timeout=opts.timeout or None))
        coord.wait_ready()
        if main_world.failed:
            _library_failure(out, f"{main_world.name} world did not start: {main_world.failed}")
            return EXIT_LIBRARY
        for p in list(peers):
            if p.failed:
                skip.append(f"# skipping --vs {p.name}: its world did not start "
                            f"({(p.failed.strip().splitlines() or ['?'])[-1]})")
                note(f"--vs {p.name}: {p.failed}")
                peers.remove(p)
        peer_lines = list(skip)
        if peers:
            names = ", ".join(f"vs_{p.name}" for p in peers)
            measured = main_world.info().get("backend", opts.backend)
            peer_lines.insert(0, f"# {names} = peer time / {measured} time, out-of-place + in-place added "
                                 f"(> 1: {measured} is faster); same sizes, iterations and data, run interleaved")
            for p in peers:
                info = p.info()
                extra = f" ({info['library']})" if info.get("library") else ""
                peer_lines.append(f"# vs {p.name}: {info.get('backend', p.name)} {info.get('version', '')}{extra}")
        json_targets = _json_targets(opts, out)
        main_info = main_world.info()
        out.lines(header_lines(opts, coll, main_info, nranks, f"--np {nranks}", peer_lines))
        ranks = main_world.ranks()
        for r in range(len(ranks)):
            ranks[r] = report.RankInfo(ranks[r].rank, ranks[r].pid, ranks[r].host, ranks[r].device,
                                       device_name=_device_name())
        out.lines(report.device_lines(ranks))
        out.lines(report.column_head_lines(cputime=bool(opts.report_cputime),
                                           timestamps=bool(opts.report_timestamps),
                                           extra=[f"vs_{p.name}" for p in peers]))
        env_info = environment(opts, main_info, nranks, {p.name: p.info() for p in peers})
        try:
            result = sweep(opts, coll, _Timed(main_world, opts), [_Timed(p, opts) for p in peers], out)
        except LibraryFailure as exc:
            _library_failure(out, str(exc))
            for fh, _ in json_targets:
                fh.close()
            return EXIT_LIBRARY
        return _finish(opts, coll, out, ranks, result, env_info, start, [p.name for p in peers], json_targets,
                       True)
    except WorldFailed as exc:
        _library_failure(out, str(exc))
        return EXIT_LIBRARY
    except KeyboardInterrupt:
        note("interrupted")
        interrupted = True
        return 130
    except BaseException:
        interrupted = True
        raise
    finally:
        coord.close(graceful=not interrupted)


class _Timed:
    """A RemoteWorld with the row deadline of ``-T`` (none by default)."""

    def __init__(self, world: Any, opts: Options) -> None:
        self.world = world
        self.name = world.name
        self.nranks = world.nranks
        self.timeout = None
        if opts.timeout > 0:
            self.timeout = float(opts.timeout) * (opts.iters * opts.agg_iters + opts.check + 4)

    def warmup(self, *args: Any) -> None:
        self.world.warmup(*args)

    def row(self, spec: RowSpec) -> list[RankRow]:
        return [RankRow.from_msg(a) for a in self.world.request(spec.to_msg(), timeout=self.timeout)]

    def supports(self, dtype: str, op: str | None) -> str | None:
        return self.world.supports(dtype, op) if dtype != "none" else None

    def info(self) -> dict[str, Any]:
        return self.world.info()


def _device_name() -> str:
    from .backend import cpu_model

    model = cpu_model()
    return f"cpu ({model})" if model else "cpu"


def _library_failure(out: Printer, message: str) -> None:
    from .backend import host_name

    first = (message.strip().splitlines() or ["?"])[-1]
    out.line(f"{report.short_host(host_name())}: Test collectives failure perf/harness.py '{first}'")
    out.line(f" .. {report.short_host(host_name())} pid {os.getpid()}: Test failure perf/harness.py")
    note(message)


# -- direct mode ----------------------------------------------------------------------------


class _Local:
    """This process as one rank; rows are combined with the backend's own all-gather."""

    def __init__(self, backend: Any, check: int) -> None:
        self.backend = backend
        self.name = backend.name
        self.nranks = backend.size
        self.check = check

    def warmup(self, *args: Any) -> None:
        warmup(self.backend, *args)

    def row(self, spec: RowSpec) -> list[RankRow]:
        mine = run_row(self.backend, spec)
        everyone = self.backend.gather_all(pack(mine, self.check))
        return [unpack(v, self.check) for v in everyone]

    def supports(self, dtype: str, op: str | None) -> str | None:
        return self.backend.supports(dtype, op) if dtype != "none" else None

    def info(self) -> dict[str, Any]:
        return self.backend.describe()


def _direct_backend(opts: Options, launcher: str | None) -> Any:
    from .backend import CollectivesBackend

    timeout = float(opts.timeout) if opts.timeout > 0 else None
    if opts.backend == "mpi":
        from .peers.mpi import MpiBackend

        return MpiBackend()
    if opts.backend == "gloo":
        from .peers.gloo import GlooBackend

        if launcher != "torchrun":
            rank, size = 0, 1
            import socket

            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                init = f"tcp://127.0.0.1:{s.getsockname()[1]}"
        else:
            rank, size, init = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), "env://"
        return GlooBackend(rank, size, init, timeout)
    # Under collectives-run, torchrun or mpiexec (nccl-tests built with MPI=1), init() finds
    # the ranks itself: under mpiexec it bootstraps from MPI.COMM_WORLD (collectives.from_mpi).
    return CollectivesBackend.connect(transport=opts.transport, algorithm=opts.algo, timeout=timeout)


def _gather_ranks(backend: Any) -> list[report.RankInfo]:
    import json

    from .backend import host_name, local_device_index

    device = local_device_index()
    mine = json.dumps({"pid": os.getpid(), "host": host_name(), "device": device if device >= 0 else backend.rank})
    raw = np.zeros(512, dtype=np.uint8)
    data = mine.encode()[:512]
    raw[:len(data)] = np.frombuffer(data, dtype=np.uint8)
    everyone = backend.gather_all(raw)
    ranks = []
    for r, row in enumerate(everyone):
        info = json.loads(bytes(row).rstrip(b"\0").decode())
        ranks.append(report.RankInfo(r, info["pid"], info["host"], info["device"], device_name=_device_name()))
    return ranks


def _run_direct(opts: Options, coll: Collective, launcher: str | None) -> int:
    try:
        backend = _direct_backend(opts, launcher)
    except Exception:  # noqa: BLE001
        out = Printer(True)
        _library_failure(out, traceback.format_exc())
        return EXIT_LIBRARY
    is_root = backend.rank == 0
    out = Printer(is_root)
    if is_root:
        for w in opts.warnings:
            note(f"# {w}")
    problem = _check_world(opts, coll, backend.size)
    if problem:
        if is_root:
            note(problem)
        backend.close()
        return EXIT_INVALID
    try:
        out.lines(opts.notes)
        start = time.strftime("%Y-%m-%d %H:%M:%S")
        json_targets = _json_targets(opts, out) if is_root else []
        peer_lines = [f"# skipping --vs {p}: --vs needs --np N (the harness starts the peer worlds itself)"
                      for p in opts.vs]
        info = backend.describe()
        how = launcher or "alone"
        out.lines(header_lines(opts, coll, info, backend.size, how, peer_lines))
        ranks = _gather_ranks(backend)
        out.lines(report.device_lines(ranks))
        out.lines(report.column_head_lines(cputime=bool(opts.report_cputime),
                                           timestamps=bool(opts.report_timestamps)))
        env_info = environment(opts, info, backend.size, {})
        try:
            result = sweep(opts, coll, _Local(backend, opts.check), [], out)
        except LibraryFailure:
            _library_failure(out, traceback.format_exc())
            return EXIT_LIBRARY
        status = _finish(opts, coll, out, ranks, result, env_info, start, [], json_targets, is_root)
        # every rank has the same status; the others wait until rank 0 has written its files,
        # since launchers stop the remaining ranks once one exits non-zero
        backend.barrier()
        return status
    finally:
        backend.close()
        for resource in getattr(backend, "_bootstrap", ()):
            if resource is not None:
                resource.close()
