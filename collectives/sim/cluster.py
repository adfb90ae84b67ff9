"""The machines the simulator models: this machine's transports, or a GPU cluster.

``shm`` and ``tcp`` take their links from a cost profile (``collectives-tune``'s, or the
built-in one): shared memory within a host, TCP between hosts, each rank copying its own
bytes (and queueing for the host's cores where ranks outnumber ``cores``). ``nvlink`` is a
cluster of 8-GPU nodes: NVLink within a node, one 400 Gb/s NIC per GPU, nodes under leaf
switches of a non-blocking two-level fat tree; its constants are the public figures of
such machines (below), not measurements of ours.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..tuning.machine import LinkClass, Machine, link_of, traits_of
from ..tuning.profile import Profile

TRANSPORTS = ("shm", "tcp", "nvlink")

NVLINK = LinkClass("nvlink", alpha=1.5e-6, beta=1 / 370e9, send_share=1.0)
"""NVLink 4 through NVSwitch: 450 GB/s per direction per GPU, of which NCCL's all_reduce
reaches about 370 GB/s of bus bandwidth on one node; about 1.5 µs per step."""

NIC_400G = LinkClass("nic400", alpha=5e-6, beta=1 / 46e9, send_share=1.0)
"""400 Gb/s InfiniBand or RoCE: 50 GB/s, about 46 GB/s in practice; about 5 µs per message
end to end through one or three switches (RDMA latency plus the proxy's step)."""

GPU_GAMMA = 1 / 1.5e12
"""Seconds per reduced byte on the GPU (HBM3 at about 3 TB/s, two reads and a write)."""

GPU_OVERHEAD = 5e-6
"""Per call: a kernel launch and its completion."""


@dataclasses.dataclass(frozen=True)
class Cluster:
    """What ``Machine`` is built from (a fresh one per replay: its links start idle)."""

    ranks: int
    ranks_per_host: int
    intra: LinkClass
    inter: LinkClass
    gamma: float
    overhead: float
    nics_per_host: int = 1
    hosts_per_leaf: int = 0
    uplink_ratio: float = 1.0
    cpu_factor: float = 1.0
    name: str = ""
    cores: int = 0
    mixed_wait: float = 0.0
    split_wait: float = 0.0
    calls: int = 1
    shared_cores: bool = False
    crowd_of_waiters: bool = False
    sticky: bool = False
    whole_messages: bool = False
    sticky_flowing: bool = True
    lockstep_bytes: int = 0
    crowd_per_call: bool = False
    folds_in_place: bool = False

    def factory(self) -> Callable[[], Machine]:
        return lambda: Machine(self.ranks, self.ranks_per_host, self.intra, self.inter, gamma=self.gamma,
                               overhead=self.overhead, nics_per_host=self.nics_per_host,
                               hosts_per_leaf=self.hosts_per_leaf, uplink_ratio=self.uplink_ratio,
                               cpu_factor=1.0 if self.cores else self.cpu_factor, cores=self.cores,
                               mixed_wait=self.mixed_wait, split_wait=self.split_wait,
                               shared_cores=self.shared_cores, crowd_of_waiters=self.crowd_of_waiters,
                               sticky=self.sticky, whole_messages=self.whole_messages,
                               sticky_flowing=self.sticky_flowing, lockstep_bytes=self.lockstep_bytes,
                               crowd_per_call=self.crowd_per_call,
                               folds_in_place=self.folds_in_place)

    def describe(self) -> str:
        hosts = -(-self.ranks // self.ranks_per_host)
        tree = f", {self.hosts_per_leaf} hosts per leaf switch" if self.hosts_per_leaf and hosts > 1 else ""
        cpu = f", {self.cpu_factor:g} ranks per core" if self.cpu_factor > 1 else ""
        cpu += f" (queueing for {self.cores} cores)" if self.cores and self.cpu_factor > 1 else ""
        return (f"{self.name}: {self.ranks} ranks, {hosts} host(s) of {self.ranks_per_host}, "
                f"within {self.intra.name} (α {self.intra.alpha * 1e6:.2f} µs, {1e-9 / self.intra.beta:.2f} GB/s), "
                f"across {self.inter.name} (α {self.inter.alpha * 1e6:.2f} µs, {1e-9 / self.inter.beta:.2f} GB/s, "
                f"{self.nics_per_host} per host){tree}{cpu}")


def cluster(transport: str, ranks: int, ranks_per_host: int | None, profile: Profile, cores: int | None = None,
            hosts_per_leaf: int | None = None, shared_cores: bool = False) -> Cluster:
    """The machine of ``transport`` for ``ranks`` ranks, ``ranks_per_host`` on each host
    (default: one host for shm and tcp, 8 GPUs for nvlink); ``shared_cores``: the hosts are
    parts of one machine and queue for all their ``cores`` together (``Machine``)."""
    if transport == "nvlink":
        k = ranks_per_host or min(8, ranks)
        return Cluster(ranks, k, NVLINK, NIC_400G, GPU_GAMMA, GPU_OVERHEAD, nics_per_host=k,
                       hosts_per_leaf=4 if hosts_per_leaf is None else hosts_per_leaf,
                       name="8-GPU NVLink nodes, 400 Gb/s NICs")
    k = ranks_per_host or ranks
    shm, tcp = profile.costs("shm"), profile.costs(transport)
    intra = link_of("shm", shm) if transport == "shm" or k < ranks else link_of("tcp", tcp)
    costs = shm if transport == "shm" else tcp
    factor = max(1.0, k / cores) if cores else 1.0
    return Cluster(ranks, k, intra, link_of("tcp", profile.between_hosts("tcp")), costs.gamma, costs.overhead,
                   hosts_per_leaf=hosts_per_leaf or 0, cpu_factor=factor, name=f"{transport} ({profile.source})",
                   cores=cores or 0, mixed_wait=tcp.mixed_wait if k < ranks else 0.0,
                   split_wait=tcp.split_wait if k < ranks else 0.0, calls=profile.calls,
                   shared_cores=shared_cores and k < ranks, **traits_of(transport))
