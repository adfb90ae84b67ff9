"""Several Ray nodes as hosts (``hosts="node"``): shared memory within a node, TCP across,
and the two-level all_reduce, as on any multi-host layout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

HERE = Path(__file__).resolve().parent


def test_two_nodes_are_two_hosts() -> None:
    pytest.importorskip("ray")
    # Its own short folder: Ray's socket paths under it must fit AF_UNIX's 107 bytes.
    tmp = tempfile.mkdtemp(prefix="cr-")
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_TMPDIR=tmp,
               PYTHONPATH=os.pathsep.join(p for p in (str(HERE.parents[1]), str(HERE), os.environ.get("PYTHONPATH")) if p))
    try:
        done = subprocess.run([sys.executable, str(HERE / "two_nodes.py")], env=env, capture_output=True,
                              text=True, timeout=240)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = json.loads(done.stdout)
    assert [r["rank"] for r in reports] == [0, 1, 2, 3]
    assert reports[0]["node"] == reports[1]["node"] != reports[2]["node"] == reports[3]["node"]
    for r in reports:
        assert r["right"], r
        same_node = 1 - r["rank"] % 2 + r["rank"] // 2 * 2  # 0<->1, 2<->3
        assert {int(p): t for p, t in r["transports"].items()} == {
            p: ("shm" if p == same_node else "tcp") for p in range(4) if p != r["rank"]}, r
        assert r["levels"] == [["shm"], ["tcp"]], r  # two levels: within the node, across
