"""Which path device buffers take, decided once by ``init()`` (``connect()``).

Every rank publishes the GPU it works on (its driver index in this host's topology, see
docs/gpu.md "GPU numbers"), or none. A rank with a GPU reads every peer's and asks
``topology.select_transport`` per peer with ``device_buffers=True``: where every peer is
on this host and the answer is ``cuda_ipc`` for all of them (peer access, or the same
GPU), the communicator gets a device engine (``engines/device_direct.py`` over
``transports/cuda_ipc.py``) and device buffers stay on the device; anywhere else they are
staged through host memory (``staging.py``), ``shm_staged`` / ``tcp_staged``. Every rank
reaches the same answer from the same facts (a rank without a GPU never takes the device
path, and its peers see that it has none). ``COLLECTIVES_DEBUG=INFO`` says which, one line
per peer.

``COLLECTIVES_DEVICE=off`` keeps device buffers staged; ``COLLECTIVES_DEVICE=host`` runs the
device path over host memory (``transports/device_host.py``): every rank "shares one GPU",
so CI tests the protocol through ``init()`` without one.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from .config import Config
from .engines.device_direct import DeviceEngine
from .store import Store
from .topology import Gpu, HostTopology, PairPlan, describe, select_transport
from .transports.cuda_ipc import CudaIpc

logger = logging.getLogger("collectives")

HOST_DEVICE_TOPOLOGY = HostTopology(gpus=(Gpu(0, name="host device"),), source="COLLECTIVES_DEVICE=host")


@functools.lru_cache(maxsize=1)
def _topology() -> HostTopology:
    """This host's topology, discovered once per process (every split and level reuses it)."""
    from .topology.discover import discover

    return discover()


def _local(config: Config) -> tuple[Any, int, HostTopology] | None:
    """(device, its index in the topology, the topology) for this rank, or None."""
    if config.device == "host":
        from .transports.device_host import HostDevice

        return HostDevice(0), 0, HOST_DEVICE_TOPOLOGY
    from .transports.device_cuda import visible_device

    visible = visible_device()
    if visible is None:
        return None
    index, bus_id = visible
    from .transports.device_cuda import CudaDevice

    topology = _topology()
    gpu = topology.index_of(pci_bus_id=bus_id)
    if gpu is None:
        logger.info("device buffers: cuda:%d (%s) is not in this host's topology (%s); they are staged through the host",
                    index, bus_id, topology.summary())
        return None
    return CudaDevice(index), gpu, topology


def choose(rank: int, size: int, hosts: list[str], store: Store, config: Config, windows: Any,
           label: str) -> DeviceEngine | None:
    """The device engine of this communicator, or None (device buffers staged)."""
    if config.device == "off" or size == 1:
        return None
    local = _local(config)
    store.set(f"device/{rank}", str(-1 if local is None else local[1]).encode())
    if local is None:
        return None
    device, gpu, topology = local
    plans: list[PairPlan] = []
    for peer in range(size):
        if peer == rank:
            continue
        peer_gpu = int(store.get(f"device/{peer}", config.timeout).decode())
        if peer_gpu < 0:
            plans.append(PairPlan(rank, peer, "shm_staged" if hosts[peer] == hosts[rank] else "tcp_staged", gpu, None,
                                  None, "no CUDA device on the peer"))
            continue
        plans.append(select_transport(rank, peer, my_host=hosts[rank], peer_host=hosts[peer], device_buffers=True,
                                      my_gpu=gpu, peer_gpu=peer_gpu, topology=topology))
    direct = all(p.transport == "cuda_ipc" for p in plans) and windows is not None
    for plan in plans:
        logger.info("device buffers: %s", describe(plan))
    if not direct:
        why = "" if windows is not None or config.transport is None else f" (transport={config.transport} forced)"
        logger.info("%s: device buffers are staged through host memory%s", label, why)
        device.shutdown()
        return None
    logger.info("%s: device buffers stay on %s: cuda_ipc to every peer", label, device.name)
    return DeviceEngine(CudaIpc(device, rank, size, store), windows, label)
