"""perf/cell_swings.py: every rank's time of a harness cell, ours and MPICH's, world by world and sweep by sweep."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.multiprocess
def test_each_sweep_keeps_every_ranks_time_of_both_libraries_and_the_harness_ratio(tmp_path: Path) -> None:
    from perf.peers import missing

    if missing("mpi"):
        pytest.skip(f"MPI not available: {missing('mpi')}")
    out = tmp_path / "swings.json"
    done = subprocess.run([sys.executable, "perf/cell_swings.py", "hypercube", "--np", "2", "-b", "64", "-e", "256",
                           "-n", "3", "--worlds", "2", "--sweeps", "2", "--only", "64,256", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    records = json.loads(out.read_text())["records"]
    # --only leaves out 128 B; every world runs every sweep, in order
    assert [(r["world"], r["sweep"], r["size"]) for r in records] == [
        (w, s, size) for w in range(2) for s in range(2) for size in (64, 256)]
    assert len(done.stdout.splitlines()) == len(records)
    for r in records:
        assert len(r["ours"]) == len(r["peer"]) == 2 and all(len(t) == 2 and min(t) > 0 for t in r["ours"] + r["peer"])
        # the harness's column: the ranks' mean, out of place and in place added, theirs over ours
        ours = sum(statistics.mean(t[p] for t in r["ours"]) for p in range(2))
        theirs = sum(statistics.mean(t[p] for t in r["peer"]) for p in range(2))
        assert r["ratio"] == pytest.approx(theirs / ours)
