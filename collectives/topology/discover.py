"""Find this host's GPU topology: a recorded file, else NVML, else nvidia-smi, else none.

1. ``COLLECTIVES_TOPO_FILE`` (like NCCL_TOPO_FILE): a JSON topology written by
   :func:`dump` (or ``python -m collectives.topology.discover > topo.json``), or the text of
   ``nvidia-smi topo -m`` (optionally followed by ``nvidia-smi topo -p2p r``). A file that
   was asked for but cannot be read is an error, not a silent fallback.
2. NVML through ``pynvml`` (package nvidia-ml-py): PCI distance, NVLink (direct or to
   NVSwitch) and the P2P read/write status of every pair.
3. ``nvidia-smi topo -m`` and ``topo -p2p r`` if nvidia-smi is on PATH.
4. Nothing: a topology without GPUs.

Probing never raises: a machine without GPUs, driver or pynvml gets the empty topology and
a debug log line saying why, so a CPU job is never stopped by GPU discovery.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..errors import InvalidArgumentError
from .model import EMPTY, Gpu, HostTopology, Link, LinkKind, normalize_bus_id
from .nvidia_smi import parse_nvidia_smi

ENV_TOPO_FILE = "COLLECTIVES_TOPO_FILE"

logger = logging.getLogger("collectives.topology")

T = TypeVar("T")

# nvmlGpuTopologyLevel_t -> nvidia-smi's names (INTERNAL: two GPUs on one board).
_NVML_LEVELS = {
    0: LinkKind.PIX,
    10: LinkKind.PIX,
    20: LinkKind.PXB,
    30: LinkKind.PHB,
    40: LinkKind.NODE,
    50: LinkKind.SYS,
}
# nvidia-ml-py defines NVML_P2P_CAPS_INDEX_READ as the tuple (0,), which ctypes cannot
# pass; these are the C enum values.
_P2P_READ, _P2P_WRITE = 0, 1
_P2P_OK, _P2P_UNKNOWN = 0, 6
_NVLINK_ENABLED = 1
_NVLINK_GPU, _NVLINK_SWITCH, _NVLINK_UNKNOWN = 0, 2, 0xFF


def load(path: str | os.PathLike[str]) -> HostTopology:
    """Read a recorded topology: our JSON, or nvidia-smi's text.

    Raises:
        InvalidArgumentError: the file cannot be read or parsed (the message names it).
    """
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"topology file {os.fspath(path)!r}: {exc}") from None
    try:
        if text.lstrip().startswith("{"):
            return HostTopology.from_json(text)
        return parse_nvidia_smi(text, source=os.fspath(path))
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"topology file {os.fspath(path)!r}: {exc}") from None


def dump(topology: HostTopology, path: str | os.PathLike[str]) -> None:
    """Write ``topology`` as JSON, to be read back by :func:`load` or COLLECTIVES_TOPO_FILE."""
    Path(path).write_text(topology.to_json() + "\n")


def discover(env: Mapping[str, str] | None = None) -> HostTopology:
    """This host's GPU topology (see the module doc for the order of sources).

    Args:
        env: environment to read COLLECTIVES_TOPO_FILE and PATH from (default os.environ).

    Raises:
        InvalidArgumentError: only when COLLECTIVES_TOPO_FILE names an unreadable file.
    """
    env = os.environ if env is None else env
    path = env.get(ENV_TOPO_FILE)
    if path:
        topology = load(path)
        logger.info("topology from %s=%s: %s", ENV_TOPO_FILE, path, topology.summary())
        return topology
    probes: list[tuple[str, Callable[[], HostTopology | None]]] = [
        ("NVML", from_nvml),
        ("nvidia-smi", lambda: from_nvidia_smi(env)),
    ]
    for name, probe in probes:
        try:
            found = probe()
        except Exception as exc:  # noqa: BLE001 - discovery must never stop a job; say why at debug level
            logger.debug("topology: %s failed: %r", name, exc)
            continue
        if found is not None:
            logger.info("topology: %s", found.summary())
            return found
    logger.debug("topology: no GPUs (no usable NVML, no nvidia-smi)")
    return EMPTY


# -- NVML -----------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _optional(fn: Callable[..., T], *args: Any) -> T | None:
    """``fn(*args)``, or None when NVML says no (not supported, no such link, old driver)."""
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - NVMLError and its many subclasses
        return None


def _sysfs_numa_node(bus_id: str) -> int | None:
    try:
        node = int(Path(f"/sys/bus/pci/devices/{bus_id}/numa_node").read_text())
    except (OSError, ValueError):
        return None
    return node if node >= 0 else None


def _nvml_p2p(nvml: Any, a: Any, b: Any) -> bool | None:
    """Peer access from a to b: OK for both reads and writes (as NCCL requires), else no."""
    statuses = [_optional(nvml.nvmlDeviceGetP2PStatus, a, b, index) for index in (_P2P_READ, _P2P_WRITE)]
    if any(s is not None and s not in (_P2P_OK, _P2P_UNKNOWN) for s in statuses):
        return False
    if all(s == _P2P_OK for s in statuses):
        return True
    return None


def from_nvml(nvml: Any | None = None) -> HostTopology | None:
    """Ask NVML; None when it cannot be used here (no pynvml, no driver).

    Args:
        nvml: the ``pynvml`` module, or a stand-in with the same functions (tests).

    NVLink counts follow nvidia-smi: links to another GPU count for that pair; links to
    NVSwitches count for every pair of switch-attached GPUs, as the smaller of the two
    GPUs' counts (NV18 on an HGX H100).
    """
    if nvml is None:
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError:
            logger.debug("topology: pynvml (nvidia-ml-py) is not installed")
            return None
    try:
        nvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, ...: no GPUs
        logger.debug("topology: NVML did not start: %r", exc)
        return None
    try:
        return _read_nvml(nvml)
    finally:
        _optional(nvml.nvmlShutdown)


def _read_nvml(nvml: Any) -> HostTopology:
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
    gpus = []
    for i, handle in enumerate(handles):
        bus = normalize_bus_id(_text(nvml.nvmlDeviceGetPciInfo(handle).busId))
        uuid = _optional(nvml.nvmlDeviceGetUUID, handle)
        name = _optional(nvml.nvmlDeviceGetName, handle)
        gpus.append(Gpu(i, uuid and _text(uuid), name and _text(name), bus, _sysfs_numa_node(bus)))
    by_bus = {gpu.pci_bus_id: gpu.index for gpu in gpus}

    direct: collections.Counter[tuple[int, int]] = collections.Counter()
    to_switch = [0] * len(handles)
    for i, handle in enumerate(handles):
        for link in range(int(getattr(nvml, "NVML_NVLINK_MAX_LINKS", 18))):
            if _optional(nvml.nvmlDeviceGetNvLinkState, handle, link) != _NVLINK_ENABLED:
                continue
            kind = _optional(nvml.nvmlDeviceGetNvLinkRemoteDeviceType, handle, link)
            if kind == _NVLINK_SWITCH:
                to_switch[i] += 1
                continue
            remote = _optional(nvml.nvmlDeviceGetNvLinkRemotePciInfo, handle, link)
            j = by_bus.get(normalize_bus_id(_text(remote.busId))) if remote is not None else None
            if j is not None and j != i:
                direct[(i, j)] += 1
            elif kind in (None, _NVLINK_UNKNOWN):
                to_switch[i] += 1  # an older driver without device types: a link to no GPU is a switch

    links: dict[tuple[int, int], Link] = {}
    access: dict[tuple[int, int], bool] = {}
    for i, a in enumerate(handles):
        for j, b in enumerate(handles):
            if i == j:
                continue
            nvlinks = direct[(i, j)] + min(to_switch[i], to_switch[j])
            if nvlinks:
                links[(i, j)] = Link(LinkKind.NV, nvlinks)
            else:
                level = _optional(nvml.nvmlDeviceGetTopologyCommonAncestor, a, b)
                if level in _NVML_LEVELS:
                    links[(i, j)] = Link(_NVML_LEVELS[level])
            status = _nvml_p2p(nvml, a, b)
            if status is not None:
                access[(i, j)] = status
    return HostTopology(tuple(gpus), links, access, "nvml")


# -- nvidia-smi -----------------------------------------------------------------------------


def _run(argv: list[str], timeout: float) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("topology: %s failed: %r", " ".join(argv), exc)
        return None
    if done.returncode != 0:
        logger.debug("topology: %s exited %d: %s", " ".join(argv), done.returncode, done.stdout.strip()[:200])
        return None
    return done.stdout


def from_nvidia_smi(env: Mapping[str, str] | None = None, *, timeout: float = 15.0) -> HostTopology | None:
    """Run nvidia-smi (found on env's PATH); None when it is absent or fails.

    Reads ``topo -m`` for links, ``topo -p2p r`` for peer access and ``--query-gpu`` for
    UUIDs, names and bus ids; the last two are optional.

    Raises:
        InvalidArgumentError: ``topo -m`` printed something that is not a matrix.
    """
    env = os.environ if env is None else env
    exe = shutil.which("nvidia-smi", path=env.get("PATH"))
    if exe is None:
        logger.debug("topology: nvidia-smi is not on PATH")
        return None
    matrix = _run([exe, "topo", "-m"], timeout)
    if matrix is None:
        return None
    topology = parse_nvidia_smi(matrix)
    p2p = _run([exe, "topo", "-p2p", "r"], timeout)
    if p2p:
        try:
            topology = parse_nvidia_smi(matrix + "\n" + p2p)
        except InvalidArgumentError as exc:
            logger.debug("topology: ignoring nvidia-smi topo -p2p r: %s", exc)
    query = _run([exe, "--query-gpu=index,uuid,name,pci.bus_id", "--format=csv,noheader"], timeout)
    if query:
        topology = _with_ids(topology, query)
    return topology


def _with_ids(topology: HostTopology, csv: str) -> HostTopology:
    """Fill UUID, name and bus id from ``index, uuid, name, pci.bus_id`` lines."""
    gpus = list(topology.gpus)
    for line in csv.splitlines():
        try:
            index_text, uuid, rest = (part.strip() for part in line.split(",", 2))
            name, bus = (part.strip() for part in rest.rsplit(",", 1))
            index = int(index_text)
        except ValueError:
            continue
        if 0 <= index < len(gpus):
            bus = normalize_bus_id(bus)
            numa = gpus[index].numa_node if gpus[index].numa_node is not None else _sysfs_numa_node(bus)
            gpus[index] = dataclasses.replace(gpus[index], uuid=uuid, name=name, pci_bus_id=bus, numa_node=numa)
    return dataclasses.replace(topology, gpus=tuple(gpus))


def main(argv: list[str] | None = None) -> int:
    """``python -m collectives.topology.discover``: print this host's topology as JSON."""
    del argv
    topology = discover()
    print(topology.to_json())
    print(f"# {topology.summary()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
