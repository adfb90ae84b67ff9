"""Several Ray nodes as hosts (``hosts="node"``): shared memory within a node, TCP across,
and the two-level all_reduce, as on any multi-host layout."""

from __future__ import annotations

import pytest
from ray_scripts import run_ray_script

pytestmark = [pytest.mark.ray, pytest.mark.slow]



def test_two_nodes_are_two_hosts() -> None:
    pytest.importorskip("ray")
    reports = run_ray_script("two_nodes.py", timeout=240)
    assert [r["rank"] for r in reports] == [0, 1, 2, 3]
    assert reports[0]["node"] == reports[1]["node"] != reports[2]["node"] == reports[3]["node"]
    for r in reports:
        assert r["right"], r
        same_node = 1 - r["rank"] % 2 + r["rank"] // 2 * 2  # 0<->1, 2<->3
        assert {int(p): t for p, t in r["transports"].items()} == {
            p: ("shm" if p == same_node else "tcp") for p in range(4) if p != r["rank"]}, r
        assert r["levels"] == [["shm"], ["tcp"]], r  # two levels: within the node, across
