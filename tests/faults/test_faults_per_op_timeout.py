"""Per-operation timeouts (reliability acceptance case 7): ``with comm.op_timeout(s):``
gives the operations issued inside it ``s`` seconds instead of the group's timeout. A
shorter one fires at its own value (not the group's); a longer one is honoured (a call that
waits longer than the group's timeout but less than its own succeeds), synchronous and
``async_op``, and the group's timeout applies again after the block. Over shared memory and
TCP at 2 and 4 ranks; the block's rules (per thread, nesting, restoring) in one process."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import collectives
from collectives.errors import InvalidArgumentError
from collectives.mpi import find_mpiexec
from collectives.testing import run_world
from fault_worlds import figure
from per_op_timeouts import GROUP, SHORT, check_longer, check_shorter, longer, shorter

WORLDS = [("shm", 2), ("shm", 4), ("tcp", 2), ("tcp", 4)]
HERE = Path(__file__).resolve().parent


@pytest.mark.multiprocess
@pytest.mark.parametrize(("transport", "size"), WORLDS)
def test_a_longer_per_op_timeout_is_honoured(transport, size):
    waited = check_longer(run_world(longer, size, transport, timeout=60))
    figure(f"per-op timeout 30 s honoured past the group's {GROUP} s, {transport} n={size}, waited", waited)


@pytest.mark.multiprocess
@pytest.mark.parametrize(("transport", "size"), WORLDS)
def test_a_shorter_per_op_timeout_fires_at_its_value(transport, size, tmp_path: Path):
    raised = check_shorter(run_world(shorter(tmp_path), size, transport, timeout=60))
    figure(f"per-op timeout {SHORT} s (group 60 s) raised, {transport} n={size}, after", raised)


@pytest.mark.mpi
@pytest.mark.multiprocess
def test_per_op_timeouts_over_mpi(tmp_path: Path):
    """Both cases over the mpi transport under a real mpiexec, at 2 ranks."""
    pytest.importorskip("mpi4py")
    mpiexec = find_mpiexec()
    if mpiexec is None:
        pytest.skip("no mpiexec on PATH or beside this Python")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTIVES_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parents[1]), str(HERE), env.get("PYTHONPATH")]))
    proc = subprocess.run([mpiexec, "-n", "2", sys.executable, str(HERE / "faults_per_op_mpi.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=HERE.parents[1])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    waited = check_longer([r["longer"] for r in results])
    raised = check_shorter([r["shorter"] for r in results])
    figure(f"per-op timeout 30 s honoured past the group's {GROUP} s, mpi n=2, waited", waited)
    figure(f"per-op timeout {SHORT} s (group 60 s) raised, mpi n=2, after", raised)


def test_the_block_is_per_thread_nests_and_restores():
    comm = collectives.init(rank=0, size=1, timeout=7.0)
    try:
        seen: list[float] = []
        with comm.op_timeout(2) as seconds:
            assert seconds == 2.0 and comm.timeout == 2.0
            other = threading.Thread(target=lambda: seen.append(comm.timeout))
            other.start()
            other.join()
            with comm.op_timeout(datetime.timedelta(minutes=1)):
                assert comm.timeout == 60.0  # the innermost block wins
            assert comm.timeout == 2.0
            assert comm.all_reduce(np.ones(3), async_op=True).wait().tolist() == [1.0, 1.0, 1.0]
        assert seen == [7.0]  # another thread keeps the group's timeout
        assert comm.timeout == 7.0
        with pytest.raises(RuntimeError), comm.op_timeout(1):
            raise RuntimeError("left by an error")
        assert comm.timeout == 7.0
        comm.timeout = 9.0  # sets the group's timeout
        assert comm.timeout == 9.0
        for wrong in (0, -1, float("nan"), float("inf"), "5", True, datetime.timedelta(0)):
            with pytest.raises(InvalidArgumentError, match="op_timeout"), comm.op_timeout(wrong):
                pass
    finally:
        comm.close()

