"""Which transport carries the bytes between two ranks, given where their buffers live.

Host buffers: shared memory on one host, TCP across hosts (what ``connect()`` does today).
Device buffers:

- ``cuda_ipc``: one host, and the two GPUs can reach each other's memory (NVLink, or PCIe
  peer-to-peer): a rank maps its peer's buffer through a CUDA IPC handle.
- ``shm_staged``: one host, no peer access (typically PCIe across CPU sockets, where the
  chipset refuses P2P): copy to pinned host memory and move it through shared memory.
- ``tcp_staged``: different hosts: copy to host memory and send over TCP.

Peer access is taken from the P2P status recorded in the topology (NVML, or
``nvidia-smi topo -p2p r``). Where none was recorded, the link decides, by
:data:`ASSUMED_PEER_ACCESS`: NVLink and paths below the host bridge (PIX, PXB) are assumed
to allow P2P; paths through the CPU (PHB, NODE, SYS) are not, since P2P through a root
complex depends on the chipset (CNS) and NCCL too stops at PXB by default on Intel and
ARM hosts. Assuming wrongly "no" only costs a copy; assuming wrongly "yes" fails at the
first IPC mapping.

The choice is symmetric: both ranks of a pair look at the same (lower, higher) GPU pair
and require peer access in both directions, so they reach the same answer without talking.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

from ..errors import InvalidArgumentError
from .model import HostTopology, Link, LinkKind

TransportName = Literal["cuda_ipc", "shm_staged", "tcp_staged", "shm", "tcp"]

# Peer access assumed from the link kind when no P2P status was recorded (see module doc).
ASSUMED_PEER_ACCESS: Mapping[LinkKind, bool] = {
    LinkKind.X: True,
    LinkKind.NV: True,
    LinkKind.PIX: True,
    LinkKind.PXB: True,
    LinkKind.PHB: False,
    LinkKind.NODE: False,
    LinkKind.SYS: False,
}


@dataclasses.dataclass(frozen=True)
class PairPlan:
    """The transport chosen from ``rank`` to ``peer``, with the facts behind the choice."""

    rank: int
    peer: int
    transport: TransportName
    my_gpu: int | None
    peer_gpu: int | None
    link: Link | None
    reason: str


def _peer_access(topology: HostTopology, a: int, b: int, link: Link | None) -> tuple[bool, str]:
    """Whether GPUs a and b can map each other's memory, and why we think so."""
    recorded = [topology.can_access_peer(a, b), topology.can_access_peer(b, a)]
    if False in recorded:
        return False, "P2P not supported"
    if recorded == [True, True]:
        return True, "P2P status OK"
    if link is None:
        return False, "link unknown, no P2P status recorded"
    if ASSUMED_PEER_ACCESS[link.kind]:
        return True, "P2P assumed from the link, no status recorded"
    return False, "P2P not assumed through the CPU, no status recorded"


def select_transport(
    rank: int,
    peer: int,
    *,
    my_host: str,
    peer_host: str,
    device_buffers: bool = False,
    my_gpu: int | None = None,
    peer_gpu: int | None = None,
    topology: HostTopology | None = None,
) -> PairPlan:
    """Choose the transport between ``rank`` and ``peer``.

    Args:
        rank, peer: the two ranks (for the plan and its description).
        my_host, peer_host: host identities (``collectives._init.host_identity``).
        device_buffers: whether the buffers are GPU memory.
        my_gpu, peer_gpu: the driver indices (nvidia-smi/NVML order, see
            :meth:`HostTopology.index_of`) of the two ranks' GPUs; needed for device buffers.
        topology: this host's topology; without it, or without the two GPUs in it, one
            host with device buffers falls back to ``shm_staged``.

    Returns:
        A :class:`PairPlan`; ``plan.transport`` is "cuda_ipc", "shm_staged", "tcp_staged",
        "shm" or "tcp".

    Raises:
        InvalidArgumentError: device buffers without both GPU indices, or a negative index.

    Example:
        >>> plan = select_transport(0, 1, my_host="a", peer_host="b", device_buffers=True,
        ...                         my_gpu=0, peer_gpu=0)
        >>> plan.transport
        'tcp_staged'
    """
    if device_buffers:
        for name, value in (("my_gpu", my_gpu), ("peer_gpu", peer_gpu)):
            if value is None or value < 0:
                raise InvalidArgumentError(f"select_transport: {name}={value!r}: device buffers need a GPU index")

    def plan(transport: TransportName, reason: str, link: Link | None = None) -> PairPlan:
        if not device_buffers:
            return PairPlan(rank, peer, transport, None, None, None, reason)
        return PairPlan(rank, peer, transport, my_gpu, peer_gpu, link, reason)

    if my_host != peer_host:
        return plan("tcp_staged" if device_buffers else "tcp", "other host")
    if not device_buffers:
        return plan("shm", "same host")
    assert my_gpu is not None and peer_gpu is not None  # checked above
    if topology is None:
        return plan("shm_staged", "no topology, peer access unknown")
    for gpu in (my_gpu, peer_gpu):
        if gpu >= topology.num_gpus:
            return plan("shm_staged", f"GPU{gpu} not in the topology ({topology.num_gpus} GPUs), peer access unknown")
    if my_gpu == peer_gpu:
        return plan("cuda_ipc", "same GPU", topology.link(my_gpu, peer_gpu))
    low, high = min(my_gpu, peer_gpu), max(my_gpu, peer_gpu)
    link = topology.link(low, high)
    ok, why = _peer_access(topology, low, high, link)
    return plan("cuda_ipc" if ok else "shm_staged", f"{link or 'link unknown'}; {why}", link)


def describe(plan: PairPlan) -> str:
    """One line for COLLECTIVES_DEBUG=INFO, in the spirit of NCCL's channel lines.

    ``0[0] -> 1[1] via cuda_ipc (NV18; P2P status OK)``: rank[GPU], or rank[cpu] for host
    buffers.
    """

    def where(rank: int, gpu: int | None) -> str:
        return f"{rank}[{'cpu' if gpu is None else gpu}]"

    return f"{where(plan.rank, plan.my_gpu)} -> {where(plan.peer, plan.peer_gpu)} via {plan.transport} ({plan.reason})"
