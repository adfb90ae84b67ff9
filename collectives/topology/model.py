"""What one host's GPUs are and how they reach each other, as frozen data.

The names follow ``nvidia-smi topo -m`` (X, NV#, PIX, PXB, PHB, NODE, SYS) so that a
recorded matrix reads back without translation. A :class:`HostTopology` is plain data:
discovery (:mod:`.discover`) fills it from NVML or nvidia-smi, a test builds it from a
recorded fixture, and JSON round-trips it (like NCCL_TOPO_FILE), so the transport choice
in :mod:`.select` can be tested on a machine without a GPU.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..errors import InvalidArgumentError

JSON_FORMAT = "collectives.topology/1"


class LinkKind(enum.Enum):
    """How two GPUs are connected, nearest first, named as ``nvidia-smi topo -m`` names them."""

    X = "X"  # the same GPU
    NV = "NV"  # a bonded set of NVLinks (NV#), direct or through NVSwitch
    PIX = "PIX"  # at most one PCIe bridge
    PXB = "PXB"  # several PCIe bridges, below the host bridge
    PHB = "PHB"  # through a PCIe host bridge (the CPU)
    NODE = "NODE"  # between host bridges of one NUMA node
    SYS = "SYS"  # across the SMP interconnect between NUMA nodes (QPI/UPI/xGMI)


# Older nvidia-smi printed SOC where newer ones print SYS.
_ALIASES = {"SOC": LinkKind.SYS}
_NV = re.compile(r"NV(\d+)$")


@dataclasses.dataclass(frozen=True)
class Link:
    """One matrix cell: the kind, and for NVLink the number of bonded links (NV18 → 18)."""

    kind: LinkKind
    nvlinks: int = 0

    def __post_init__(self) -> None:
        if (self.kind is LinkKind.NV) != (self.nvlinks > 0):
            raise InvalidArgumentError(f"Link: nvlinks={self.nvlinks} does not fit kind {self.kind.value}")

    @classmethod
    def parse(cls, text: str) -> Link:
        """Read a cell as nvidia-smi prints it: ``X``, ``NV18``, ``PIX``, ... (``SOC`` = SYS).

        Raises:
            InvalidArgumentError: the text is no link name.
        """
        word = text.strip().upper()
        match = _NV.match(word)
        if match and int(match.group(1)) > 0:
            return cls(LinkKind.NV, int(match.group(1)))
        if word in _ALIASES:
            return cls(_ALIASES[word])
        try:
            kind = LinkKind(word)
        except ValueError:
            raise InvalidArgumentError(f"{text!r} is not a link (X, NV#, PIX, PXB, PHB, NODE, SYS)") from None
        if kind is LinkKind.NV:
            raise InvalidArgumentError(f"{text!r}: NV needs a link count, as in NV4")
        return cls(kind)

    @property
    def is_nvlink(self) -> bool:
        return self.kind is LinkKind.NV

    def __str__(self) -> str:
        return f"NV{self.nvlinks}" if self.is_nvlink else self.kind.value


SELF = Link(LinkKind.X)


def normalize_bus_id(bus_id: str) -> str:
    """``00000000:18:00.0`` (NVML) and ``0000:18:00.0`` (sysfs, CUDA) → ``0000:18:00.0``."""
    text = bus_id.strip().lower()
    domain, sep, rest = text.partition(":")
    if not sep or rest.count(":") != 1:
        return text
    try:
        return f"{int(domain, 16):04x}:{rest}"
    except ValueError:
        return text


@dataclasses.dataclass(frozen=True)
class Gpu:
    """One GPU as the driver numbers it (nvidia-smi/NVML order, which is PCI bus order).

    That index is not the CUDA device number of a process with CUDA_VISIBLE_DEVICES set
    (or CUDA_DEVICE_ORDER=FASTEST_FIRST): map a process's device to it by UUID or PCI bus
    id with :meth:`HostTopology.index_of`.
    """

    index: int
    uuid: str | None = None
    name: str | None = None
    pci_bus_id: str | None = None
    numa_node: int | None = None


def _freeze(mapping: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return MappingProxyType(dict(mapping))


@dataclasses.dataclass(frozen=True)
class HostTopology:
    """The GPUs of one host, the link between each ordered pair, and recorded peer access.

    Attributes:
        gpus: indexed 0..n-1, in driver order.
        links: ``(i, j) -> Link`` for i != j (a missing pair is unknown).
        peer_access: ``(i, j) -> bool`` where a P2P status was recorded (NVML
            nvmlDeviceGetP2PStatus, or ``nvidia-smi topo -p2p r``); a missing pair means
            "not recorded", which :mod:`.select` treats by the link kind.
        source: where this came from ("nvml", "nvidia-smi", a file name, "none").
    """

    gpus: tuple[Gpu, ...] = ()
    links: Mapping[tuple[int, int], Link] = dataclasses.field(default_factory=dict, hash=False)
    peer_access: Mapping[tuple[int, int], bool] = dataclasses.field(default_factory=dict, hash=False)
    source: str = ""

    def __post_init__(self) -> None:
        gpus = tuple(self.gpus)
        for position, gpu in enumerate(gpus):
            if gpu.index != position:
                raise InvalidArgumentError(f"HostTopology: GPU at position {position} has index {gpu.index}")
        n = len(gpus)
        for name in ("links", "peer_access"):
            for i, j in getattr(self, name):
                if not (0 <= i < n and 0 <= j < n) or i == j:
                    raise InvalidArgumentError(f"HostTopology.{name}: pair {(i, j)} is not two of {n} GPUs")
        object.__setattr__(self, "gpus", gpus)
        object.__setattr__(self, "links", _freeze(self.links))
        object.__setattr__(self, "peer_access", _freeze(self.peer_access))

    @property
    def num_gpus(self) -> int:
        return len(self.gpus)

    def link(self, i: int, j: int) -> Link | None:
        """The link from GPU i to GPU j (X when i == j), or None when unknown."""
        if i == j and 0 <= i < self.num_gpus:
            return SELF
        return self.links.get((i, j))

    def can_access_peer(self, i: int, j: int) -> bool | None:
        """The recorded P2P status from i to j, or None when none was recorded."""
        if i == j and 0 <= i < self.num_gpus:
            return True
        return self.peer_access.get((i, j))

    def index_of(self, *, uuid: str | None = None, pci_bus_id: str | None = None) -> int | None:
        """The driver index of the GPU with this UUID or PCI bus id (None if absent).

        A rank knows its device as CUDA sees it (``cuda:0`` under CUDA_VISIBLE_DEVICES=3);
        this finds the same GPU here.
        """
        bus = normalize_bus_id(pci_bus_id) if pci_bus_id else None
        for gpu in self.gpus:
            if uuid is not None and gpu.uuid == uuid:
                return gpu.index
            if bus is not None and gpu.pci_bus_id and normalize_bus_id(gpu.pci_bus_id) == bus:
                return gpu.index
        return None

    def summary(self) -> str:
        """One line for logs: ``8 GPUs (nvml): NV18 x28`` (pairs of each link kind)."""
        counts: dict[str, int] = {}
        for (i, j), link in self.links.items():
            if i < j:
                counts[str(link)] = counts.get(str(link), 0) + 1
        kinds = ", ".join(f"{name} x{count}" for name, count in sorted(counts.items()))
        plural = "" if self.num_gpus == 1 else "s"
        return f"{self.num_gpus} GPU{plural} ({self.source or 'unknown source'})" + (f": {kinds}" if kinds else "")

    # -- JSON -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain data: GPUs as objects, links and peer access as n x n matrices (null = unknown)."""
        n = self.num_gpus
        links = [[str(l) if (l := self.link(i, j)) is not None else None for j in range(n)] for i in range(n)]
        access = [[None if i == j else self.peer_access.get((i, j)) for j in range(n)] for i in range(n)]
        return {
            "format": JSON_FORMAT,
            "source": self.source,
            "gpus": [dataclasses.asdict(gpu) for gpu in self.gpus],
            "links": links,
            "peer_access": access,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HostTopology:
        """Inverse of :meth:`to_dict`.

        Raises:
            InvalidArgumentError: not a topology of this format, or inconsistent.
        """
        if data.get("format") != JSON_FORMAT:
            raise InvalidArgumentError(f"topology: format is {data.get('format')!r}, expected {JSON_FORMAT!r}")
        try:
            fields = {f.name for f in dataclasses.fields(Gpu)}
            gpus = tuple(Gpu(**{k: v for k, v in g.items() if k in fields}) for g in data.get("gpus", []))
            n = len(gpus)
            links: dict[tuple[int, int], Link] = {}
            access: dict[tuple[int, int], bool] = {}
            link_rows = data.get("links") or [[None] * n for _ in range(n)]
            access_rows = data.get("peer_access") or [[None] * n for _ in range(n)]
            if len(link_rows) != n or len(access_rows) != n:
                raise InvalidArgumentError(f"topology: matrices do not have {n} rows")
            for i in range(n):
                if len(link_rows[i]) != n or len(access_rows[i]) != n:
                    raise InvalidArgumentError(f"topology: row {i} does not have {n} columns")
                for j in range(n):
                    if i == j:
                        continue
                    if link_rows[i][j] is not None:
                        links[(i, j)] = Link.parse(link_rows[i][j])
                    if access_rows[i][j] is not None:
                        access[(i, j)] = bool(access_rows[i][j])
            return cls(gpus, links, access, str(data.get("source", "")))
        except (TypeError, AttributeError, KeyError) as exc:
            raise InvalidArgumentError(f"topology: malformed ({exc})") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> HostTopology:
        """Raises InvalidArgumentError when the text is not JSON of this format."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidArgumentError(f"topology: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise InvalidArgumentError("topology: JSON is not an object")
        return cls.from_dict(data)


EMPTY = HostTopology(source="none")
