"""Issue 16, acceptance case 9 (first half): 200 init/close cycles leave descriptors,
threads, sockets (listening and connected), /dev/shm mappings and the library's /dev/shm
entries unchanged, per transport at 2 and 4 ranks (MPI: tests/faults/test_faults_mpi.py).

The ranks are threads of this process over one HashStore, so one snapshot of the process
sees every rank's resources and 200 cycles take seconds; each cycle connects the ranks
for real (shared-memory segments, TCP listeners and connections); every tenth also runs
an all-reduce large enough to open the shared windows."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from lifecycle_resources import snapshot

import collectives
from collectives.store import HashStore, PrefixStore

CYCLES = 200
RING_BYTES = 1 << 16
"""Small shm rings: a leak shows as well, and the 4 MiB default would make every cycle
allocate (and the kernel zero) 48 MiB at 4 ranks."""


def _cycles(transport: str, size: int, cycles: int, prefix: str) -> None:
    store = HashStore(timeout=30)
    errors: list[BaseException] = []

    def rank(r: int) -> None:
        try:
            for i in range(cycles):
                comm = collectives.init(r, size, PrefixStore(f"{prefix}{i}", store), transport=transport, timeout=30,
                                        shm_ring_bytes=RING_BYTES)
                if i % 10 == 0:  # opens the shared windows (small and scratch) too
                    x = np.ones(4096)
                    comm.all_reduce(x)
                    assert x[0] == size
                comm.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=rank, args=(r,), daemon=True) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "init/close cycles hung"
    if errors:
        raise errors[0]


@pytest.mark.parametrize("size", [2, 4])
@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_init_close_cycles_leak_nothing(transport: str, size: int) -> None:
    _cycles(transport, size, 1, "warm")  # imports, thread pools and caches made once
    before = snapshot()
    start = time.monotonic()
    _cycles(transport, size, CYCLES, "cycle")
    seconds = time.monotonic() - start
    after = snapshot()
    print(f"{transport} n={size}: {CYCLES} cycles in {seconds:.2f} s; {after}")
    assert after == before
