"""Two Ray nodes on this machine (``ray.cluster_utils.Cluster``), two actors on each, as one
group with ``hosts="node"``: prints, as JSON, what each rank saw. Run by
``test_nodes.py`` in a process of its own (a process joins one Ray cluster at a time)."""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import ray
from ray.cluster_utils import Cluster

import collectives.ray as cray


class Member:
    def report(self, name: str) -> dict[str, Any]:
        comm = cray.get_communicator(name)
        x = np.arange(1 << 16, dtype=np.float64) * (comm.rank + 1)
        comm.all_reduce(x)
        levels = comm._context.levels
        pair = levels.pair if levels is not None else None
        return {
            "rank": comm.rank,
            "node": ray.get_runtime_context().get_node_id(),
            "transports": comm.transport_names,
            "levels": None if pair is None else [sorted(set(level.transport_names.values())) for level in pair],
            "right": bool(np.array_equal(x, np.arange(1 << 16, dtype=np.float64) * 10)),
        }


def main() -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"node_a": 2},
                                                            "include_dashboard": False})
    cluster.add_node(num_cpus=2, resources={"node_b": 2})
    try:
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        cls = ray.remote(num_cpus=0)(Member)
        actors = [cls.options(resources={node: 1}).remote() for node in ("node_a", "node_a", "node_b", "node_b")]
        cray.create_group(actors, "nodes", hosts="node", timeout=60)
        reports = ray.get([a.report.remote("nodes") for a in actors], timeout=60)
        cray.destroy_group("nodes")
        json.dump(reports, sys.stdout)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
