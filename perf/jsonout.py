"""The JSON the harness writes: nccl-tests' document (``-J``, version 3 keys) with our
``environment`` and per-row ``peers`` added (``--json``), and where it goes."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import report
from .bench import AVERAGE_NAMES
from .colls import Collective
from .options import Options
from .progress import Printer
from .sweep import SweepResult


def environment(opts: Options, main_info: dict[str, Any], nranks: int, peer_infos: dict[str, Any]) -> dict[str, Any]:
    """What ran where: versions, host, cores, world, backend, timing (the JSON's ``environment``)."""
    import platform
    from importlib import metadata

    from .backend import cpu_model, host_name

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    usable: int | None
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


def json_targets(opts: Options, out: Printer) -> list[tuple[Any, str]]:
    """Open the ``-J`` and ``--json`` files and say so in the table, as nccl-tests does."""
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
