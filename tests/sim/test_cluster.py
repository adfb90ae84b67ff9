"""The simulator's machines: hosts that are parts of one machine share its cores."""

from __future__ import annotations

from collectives.sim.cluster import cluster
from collectives.tuning.profile import current


def test_only_several_hosts_share_cores_and_the_machine_built_carries_it() -> None:
    profile = current()
    two_hosts = cluster("tcp", 8, 4, profile, cores=1, shared_cores=True)
    assert two_hosts.shared_cores
    assert two_hosts.factory()().shared_cores
    assert not cluster("tcp", 8, None, profile, cores=2, shared_cores=True).shared_cores  # one host: nothing to share
    assert not cluster("tcp", 8, 4, profile, cores=1).shared_cores  # real hosts by default
