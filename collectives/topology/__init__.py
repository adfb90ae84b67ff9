"""Who is where: ranks on hosts, GPUs and how they are linked, and the transport each pair
should use.

- :mod:`.model`: frozen data (:class:`Gpu`, :class:`Link`, :class:`HostTopology`) with JSON.
- :mod:`.nvidia_smi`: reads what ``nvidia-smi topo -m`` (and ``topo -p2p r``) prints.
- :mod:`.discover`: finds the topology of this host (COLLECTIVES_TOPO_FILE, NVML,
  nvidia-smi, else none); import it as ``collectives.topology.discover``.
- :mod:`.select`: the per-pair choice (cuda_ipc, shm_staged, tcp_staged, shm, tcp) and its
  one-line description for COLLECTIVES_DEBUG=INFO.
- :mod:`.hosts`: which ranks share a host, for algorithms in two levels (within each host,
  then across).

Everything here is plain Python and runs without a GPU, so the choice is tested on CPU
against recorded topologies.
"""

from __future__ import annotations

from .model import EMPTY, Gpu, HostTopology, Link, LinkKind, normalize_bus_id
from .nvidia_smi import P2P_STATUS, parse_nvidia_smi
from .select import ASSUMED_PEER_ACCESS, PairPlan, TransportName, describe, select_transport

__all__ = [
    "ASSUMED_PEER_ACCESS",
    "EMPTY",
    "P2P_STATUS",
    "Gpu",
    "HostTopology",
    "Link",
    "LinkKind",
    "PairPlan",
    "TransportName",
    "describe",
    "normalize_bus_id",
    "parse_nvidia_smi",
    "select_transport",
]
