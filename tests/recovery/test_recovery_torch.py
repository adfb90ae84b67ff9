"""The torch path of docs/fault-tolerance.md: after a rank dies, a new process group is
made from the shrunk communicator's numbering, and its collectives count the survivors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytestmark = pytest.mark.multiprocess
HERE = Path(__file__).resolve().parent


def test_a_new_process_group_from_the_shrunk_communicator() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTIVES_")}
    env.update(PYTHONPATH=str(HERE.parents[1]), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(HERE / "torch_shrink_script.py")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = sorted((json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")),
                   key=lambda d: d["rank"])
    assert lines == [{"rank": 1, "new_rank": 0, "size": 2, "sum": [3.0] * 4},
                     {"rank": 2, "new_rank": 1, "size": 2, "sum": [3.0] * 4}], done.stdout
