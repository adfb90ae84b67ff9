"""Recovery under our own launcher: ``collectives-run --keep-going`` lets the survivors of a
killed rank run on, and its store (served by the launcher, no rank) lets them shrink, rank 0
killed included; the launcher's status is the killed rank's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.multiprocess
REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import os, signal, time
import numpy as np
import collectives

comm = collectives.init(timeout=10)
comm.all_reduce(np.ones(4))
if comm.rank == 0:
    os.kill(os.getpid(), signal.SIGKILL)
try:
    for _ in range(10_000):
        comm.all_reduce(np.ones(4))
except collectives.CollectivesError as exc:
    print(f"failed: {type(exc).__name__}", flush=True)
time.sleep(1.0)  # a launcher that stops survivors has done so by now
new = comm.shrink()
y = np.full(4, float(comm.rank))
new.all_reduce(y)
print(f"RESULT old={comm.rank} new={new.rank}/{new.size} sum={y[0]:g}", flush=True)
new.close()
"""


def _run(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTIVES_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "collectives.run", "-n", "3", *flags, str(script)], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_survivors_of_a_killed_rank_0_shrink_and_go_on_under_keep_going(tmp_path: Path) -> None:
    done = _run(tmp_path, "--keep-going")
    results = sorted(line.split("] ", 1)[1] for line in done.stdout.splitlines() if "RESULT" in line)
    assert results == ["RESULT old=1 new=0/2 sum=3", "RESULT old=2 new=1/2 sum=3"], done.stdout + done.stderr
    assert done.returncode == 128 + 9, done.stderr  # the killed rank's status, once all ended
    assert "rank 0 was killed by signal 9; rank(s) 1, 2 go on (--keep-going)" in done.stderr


def test_without_keep_going_the_survivors_are_stopped(tmp_path: Path) -> None:
    done = _run(tmp_path)
    assert "RESULT" not in done.stdout
    assert done.returncode == 128 + 9
    assert "rank 0 was killed by signal 9; stopping rank(s) 1, 2" in done.stderr
