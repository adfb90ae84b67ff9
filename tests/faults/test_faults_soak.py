"""The soak of issue 16 (acceptance case 22): 20,000 random collectives on 4 ranks over
shared memory (10,000 over TCP, to fit the CI budget; 3,000 on two hosts of two ranks,
where the hierarchical all_reduce runs), every result checked against a
reference computed from deterministic per-rank inputs, with no growth of private memory
(its floor), descriptors or mappings between the first thousand calls and the end.

The calls and their checks are in tests/faults/load_soak.py. The figures are printed
(``pytest -s``) and listed in docs/reliability.md.
"""

from __future__ import annotations

from typing import Any

import pytest
from load_soak import COLLECTIVES, Pools, new_arenas, soak

from collectives.testing import run_world

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

RANKS = 4
SEED = 20260416
CALLS = {"shm": 20_000, "tcp": 4_000, "two hosts": 2_000}  # shm: the 20,000; the others within the CI budget
JOBS = {  # transport, hosts, the algorithms only this layout offers
    "shm": ("shm", None, ("direct",)),
    "tcp": ("tcp", None, ()),
    "two hosts": ("auto", ["a", "a", "b", "b"], ("hierarchical",)),  # shm within a host, tcp across
}
MAX_PRIVATE_GROWTH = 16 << 20
"""Bytes the floor of private resident memory may rise from the first thousand calls to the
last. Measured: -3 MiB when the file runs alone; +8.5 to +8.7 MiB inside the whole suite,
where the forked ranks start from the test session's heap: two steps near calls 5,000 and
9,000, then flat for the last 7,000 calls (a fill, not a growth); single samples wander by
±10 MiB with no trend. A leak of 1,000 bytes a call lifts the floor 19 MiB over 20,000 calls."""
IDLE_ENDING_THREAD = "collectives-p2p-"
"""The point-to-point engine's thread ends after a second with nothing to do and starts again on
the next pending work (engines/point_to_point.py, IDLE_EXIT): absent at the first count and
running at the end (or the other way) is no leak; two of them would be."""
MAX_MAPPING_GROWTH = 4
"""Mappings that may be new at the end beside new malloc arenas (load_soak.new_arenas: a
thread that mallocs while another holds its arena gets one, a restarted thread too; seen in
every rank in a run of 20,000 calls, in none in a run of 3,000): numpy's large temporaries
come and go as mappings of their own, and a heap that grew shows as a range not there at
first. Threads may not grow but for the restarted IDLE_ENDING_THREAD, so an arena is never a
leaked thread's."""


@pytest.fixture(scope="module")
def pools() -> Pools:
    """Every rank's inputs, made once here and inherited by the forked ranks."""
    return Pools(RANKS, SEED)


@pytest.mark.parametrize("job", list(JOBS))
def test_soak_of_random_collectives(job: str, pools: Pools) -> None:
    calls = CALLS[job]
    transport, hosts, layout = JOBS[job]

    def body(comm: Any) -> dict[str, Any]:
        return soak(comm, calls, pools, layout)

    results = run_world(body, RANKS, transport, timeout=600, hosts=hosts)
    counts = results[0]["counts"]
    assert sum(counts.values()) == calls and all(counts[name] > 0 for name in COLLECTIVES), counts
    growth = [r["private_floor_last"] - r["private_floor_first"] for r in results]
    shared = max(r["end"]["shmem"] - r["first"]["shmem"] for r in results)
    print(f"\n{job}: {calls} random collectives on {RANKS} ranks took "
          f"{max(r['seconds'] for r in results):.1f} s ({max(r['cpu_seconds'] for r in results):.1f} s of CPU "
          f"per rank at most); the floor of private memory moved by {min(growth) / 2**20:+.2f} to "
          f"{max(growth) / 2**20:+.2f} MiB from the first thousand calls to the last, shared memory by "
          f"{shared / 2**20:+.2f} MiB at most; descriptors {[r['first']['descriptors'] for r in results]} -> "
          f"{[r['end']['descriptors'] for r in results]}, mappings {[r['first']['mappings'] for r in results]} -> "
          f"{[r['end']['mappings'] for r in results]}")
    print(f"private memory every 1000 calls on rank 0 (MiB from the first): "
          f"{[round((x - results[0]['private'][0]) / 2**20, 1) for x in results[0]['private']]}")
    for rank, r in enumerate(results):
        first, end = r["first"], r["end"]
        assert end["descriptors"] <= first["descriptors"], f"rank {rank} opened {r['new_descriptors']}"
        assert growth[rank] < MAX_PRIVATE_GROWTH, f"rank {rank}: private memory every 1000 calls {r['private']}"
        restarted = [t for t in r["new_threads"] if t.startswith(IDLE_ENDING_THREAD)]
        assert end["threads"] - len(restarted) <= first["threads"] and len(restarted) <= 1, (
            f"rank {rank}: threads {first['threads']} -> {end['threads']}, new: {r['new_threads']}")
        arenas = new_arenas(r["new_mappings"])  # each a read-write head and a no-access rest
        assert end["mappings"] - first["mappings"] - 2 * arenas <= MAX_MAPPING_GROWTH, (
            f"rank {rank}: {first} -> {end}; mappings at the end not there at first: {r['new_mappings']}")
