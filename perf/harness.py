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

import os
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from collectives.environment import detect_launcher as _detect_launcher

from . import report
from .bench import AVERAGE_NAMES, RankRow, RowSpec, pack, run_row, unpack, warmup
from .colls import COLLECTIVES, Collective
from .jsonout import environment, json_document
from .jsonout import json_targets as _json_targets
from .options import Options, UsageExit, parse
from .progress import Printer, note
from .sweep import CORRUPT_ENV, Cell, LibraryFailure, Row, Runner, SweepResult, format_row, loops, sweep

__all__ = ["CORRUPT_ENV", "Cell", "LibraryFailure", "Printer", "Row", "Runner", "SweepResult", "detect_launcher",
           "environment", "format_row", "header_lines", "json_document", "loops", "main", "note", "sweep"]

EXIT_OK, EXIT_LIBRARY, EXIT_INVALID, EXIT_RESULTS, EXIT_ARGS = 0, 3, 6, 7, 255


# -- header, footer, files ------------------------------------------------------------------


def header_lines(opts: Options, coll: Collective, main_info: dict[str, Any], nranks: int, how: str,
                 peer_lines: Sequence[str]) -> list[str]:
    """nccl-tests' banner, then one line on the library measured (transport, algorithm, ranks, how the times combine) and the peers' lines."""
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
    """Parse, refuse what cannot run, then run coordinated (``--np``, ``--vs``) or direct."""
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
    if opts.algo == "all":
        from .algo_all import run_all

        return run_all(opts, coll, launcher)
    if opts.np is not None and launcher:
        note(f"--np starts its own ranks; it cannot run under {launcher} (each process already is a rank). "
             "Leave out --np, or start the command alone.")
        return EXIT_INVALID
    if opts.np is not None or (opts.vs and not launcher):
        return _run_coordinated(opts, coll)
    return _run_direct(opts, coll, launcher)


def _min_bw() -> float | None:
    """NCCL_TESTS_MIN_BW as a number (unreadable: 0, as atof), or None when unset."""
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
    """Footer, failure line, JSON and plot; the exit status (7 for wrong values or too little bandwidth)."""
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
    failed = result.out_of_bounds > 0 or (min_bw is not None and avg < min_bw * 0.9)  # as C: nan passes
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


def _check_world(opts: Options, coll: Collective, nranks: int) -> str | None:
    """Why the world cannot run this test (a root out of range), or None."""
    if coll.rooted and opts.root != -1 and not 0 <= opts.root < nranks:
        return f"invalid root {opts.root}: the world has {nranks} rank{'s' if nranks != 1 else ''} (use -r -1 for all)"
    return None


def _run_coordinated(opts: Options, coll: Collective) -> int:
    """``--np N``: start our world and the peers' (perf.coordinator), sweep, print, stop them."""
    from . import kept
    from .coordinator import RemoteWorld, WorldFailed
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
    coord = kept.coordinator(nranks, opts.timeout or None)
    skip: list[str] = []
    interrupted = completed = False
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
        completed = True
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
        kept.release(coord, graceful=not interrupted, completed=completed)


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
    """What stands in the table's device column: the CPU model."""
    from .backend import cpu_model

    model = cpu_model()
    return f"cpu ({model})" if model else "cpu"


def _library_failure(out: Printer, message: str) -> None:
    """Say that the library under test failed, the way nccl-tests says it, with the details on stderr."""
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
    """This process as one rank of the backend asked for, meeting the ranks its launcher started."""
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
    """Pid, host and device of every rank (an all-gather of fixed-size JSON)."""
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
    """One rank of a world a launcher started (or a world of one): sweep; rank 0 prints."""
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
