"""Messages over 2 GiB (issue 16, acceptance case 20) on shm, tcp and mpi, 2 ranks:
2^31+3 uint8 elements (so 2^31+3 bytes and 2^31+3 elements) through an in-place
all_reduce, a broadcast, and one point-to-point message, every byte of each result
checked (tests/faults/load_large.py). One 2 GiB buffer per rank: about 4.2 GiB for the job.

The seconds of each call are printed (``pytest -s``) and listed in docs/reliability.md.
"""

from __future__ import annotations

from typing import Any

import pytest
from load_large import large_calls
from load_mpiexec import run_mpiexec

from collectives.testing import run_world

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

NEEDED_BYTES = 6 << 30  # two ranks' 2 GiB buffers, their processes, and room for the rest of the machine


def _enough_memory() -> None:
    with open("/proc/meminfo") as f:
        available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    if available < NEEDED_BYTES:
        pytest.skip(f"needs {NEEDED_BYTES >> 30} GiB of available memory, this machine has {available / 2**30:.1f} GiB")


def _report(transport: str, per_rank: list[dict[str, Any]]) -> None:
    slowest = {name: max(r[name] for r in per_rank) for name in per_rank[0]}
    print(f"\n{transport}: 2^31+3 uint8 on 2 ranks: " + ", ".join(f"{name} {s:.1f} s" for name, s in slowest.items()))


@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_messages_over_2_gib(transport: str) -> None:
    _enough_memory()
    _report(transport, run_world(large_calls, 2, transport, timeout=300))


@pytest.mark.mpi
def test_messages_over_2_gib_over_mpi() -> None:
    """The point-to-point message is one MPI_Isend of 2^31+3 bytes: a large count
    (MPI_Isend_c, through mpi4py 4), not a C int."""
    _enough_memory()
    result = run_mpiexec("load_large_mpi_script.py", 2, [], timeout=300)
    assert result["ranks"] == 2
    _report("mpi", result["per_rank"])
