"""The measure-or-reread arguments of the model's measurement scripts (crowd_cost, ring_parts, tree_parts,
refit_split): ``--json`` keeps what was measured, ``--from`` rereads it and measures nothing, and
the rows keep the cores they were measured on, so a reread prices them on that machine's cores."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

from collectives.tuning.profile import DEFAULT_FILE


def add_arguments(parser: argparse.ArgumentParser, *, repeats: int, rounds: int, cores: bool = True) -> None:
    """``--json``, ``--from``, ``--profile``, ``--repeats``, ``--rounds`` and, where the script
    prices on the machine's cores (not on CPUs it pins itself), ``--cores``."""
    parser.add_argument("--json", help="measure, and write the rows here")
    parser.add_argument("--from", dest="source", help="price the rows saved in this file (measure nothing)")
    parser.add_argument("--profile", default=str(DEFAULT_FILE), help="the profile to price with (default: built-in)")
    if cores:
        parser.add_argument("--cores", type=int, default=0,
                            help="cores of the machine (default: the saved rows', else os.cpu_count())")
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--rounds", type=int, default=rounds)


def rows_and_cores(args: argparse.Namespace, script: str,
                   measure: Callable[[], list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], int]:
    """The rows saved at ``args.source``, else ``measure()``'s (written to ``args.json`` where
    given, with the script, cores and load); and the cores to price them on: ``--cores``, else
    the saved rows', else this machine's."""
    cores = os.cpu_count() or 1
    if args.source:
        with open(args.source) as f:
            doc = json.load(f)
        rows, cores = doc["rows"], doc.get("cores") or cores
    else:
        rows = measure()
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"script": script, "cores": cores, "load": os.getloadavg(), "rows": rows}, f, indent=1)
    return rows, getattr(args, "cores", 0) or cores
