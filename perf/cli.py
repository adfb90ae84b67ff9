"""Console entry points: ``all_reduce_perf``, ``all_gather_perf``, ... (pyproject
``[project.scripts]``), and ``python -m perf.cli <program> [flags]``."""

from __future__ import annotations

import sys

from .colls import BY_PROGRAM
from .harness import main as _main


def _entry(program: str):  # type: ignore[no-untyped-def]
    def run() -> None:
        sys.exit(_main(program, sys.argv[1:]))

    run.__name__ = program
    run.__doc__ = f"The {program} command (nccl-tests flags; --help for the list)."
    return run


all_reduce_perf = _entry("all_reduce_perf")
all_gather_perf = _entry("all_gather_perf")
reduce_scatter_perf = _entry("reduce_scatter_perf")
broadcast_perf = _entry("broadcast_perf")
reduce_perf = _entry("reduce_perf")
alltoall_perf = _entry("alltoall_perf")
alltoallv_perf = _entry("alltoallv_perf")
sendrecv_perf = _entry("sendrecv_perf")
barrier_perf = _entry("barrier_perf")
gather_perf = _entry("gather_perf")
scatter_perf = _entry("scatter_perf")
hypercube_perf = _entry("hypercube_perf")

PROGRAMS = tuple(BY_PROGRAM)


def main(argv: list[str] | None = None) -> int:
    """``python -m perf.cli all_reduce_perf -b 8 -e 1M ...``"""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in BY_PROGRAM:
        sys.stderr.write(f"usage: python -m perf.cli <{'|'.join(PROGRAMS)}> [nccl-tests flags]\n")
        return 255 if argv else 0
    return _main(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
