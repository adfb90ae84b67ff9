"""A modelled machine: hosts of k ranks, links with their own α and β, a two-level fat tree.

Every rank has a port into its host's fabric (shared memory or NVLink), every host one or
more NICs, hosts hang off leaf switches in groups, and leaves meet at a spine through
uplinks (a two-level fat tree, oversubscribed or not). A message takes a path of links:
within a host, the sender's port and the receiver's; between hosts, the NICs at both ends
and, between leaves, the two leaves' uplinks. Each link passes the bytes it is given at its
own rate, first come first served, so messages that share a link share its bandwidth
(contention): two messages through one NIC take twice as long as one. A link class carries ``send_share``: the part of the transfer its sender's core
does (0.5 where ranks copy through shared memory or sockets, the receiver copying out the
other half; 1 where a DMA engine or NIC moves the bytes and the receiver only waits).
"""

from __future__ import annotations

import dataclasses

from .profile import TransportCosts


@dataclasses.dataclass(frozen=True)
class LinkClass:
    """One kind of link: seconds per message, seconds per byte, and the sender's share of the transfer."""

    name: str
    alpha: float
    beta: float
    send_share: float = 0.5


@dataclasses.dataclass
class Link:
    """One link of a machine, with the time it is next free."""

    cls: LinkClass
    free_at: float = 0.0


class Machine:
    """``ranks`` ranks on hosts of ``ranks_per_host`` (rank r on host r // k), priced per message.

    Args:
        intra: the link class within a host (each rank its own port).
        inter: the link class between hosts (the NICs), or None for one host.
        gamma: seconds per reduced byte; overhead: seconds per call (added once by callers).
        nics_per_host: NICs on each host; rank r uses NIC ``r % k % nics_per_host``.
        hosts_per_leaf: hosts under one leaf switch (0: one switch, no spine).
        uplink_ratio: leaf uplink bandwidth over the bandwidth of the NICs below it
            (1: a full fat tree; 0.5: 2:1 oversubscribed).
        cpu_factor: every cost times this (ranks sharing a core: ranks per core).
    """

    def __init__(self, ranks: int, ranks_per_host: int, intra: LinkClass, inter: LinkClass | None = None, *,
                 gamma: float = 0.0, overhead: float = 0.0, nics_per_host: int = 1, hosts_per_leaf: int = 0,
                 uplink_ratio: float = 1.0, cpu_factor: float = 1.0) -> None:
        self.ranks = ranks
        self.k = max(1, min(ranks_per_host, ranks))
        self.intra = intra
        self.inter = inter or intra
        self.gamma = gamma * cpu_factor
        self.overhead = overhead * cpu_factor
        self.cpu_factor = cpu_factor
        self.nics = max(1, min(nics_per_host, self.k))
        self.hosts_per_leaf = hosts_per_leaf
        self.uplink_ratio = uplink_ratio
        self.ports_out = [Link(intra) for _ in range(ranks)]
        self.ports_in = [Link(intra) for _ in range(ranks)]
        self._nic_out: dict[int, Link] = {}
        self._nic_in: dict[int, Link] = {}
        self._up: dict[int, Link] = {}
        self._down: dict[int, Link] = {}
        per_leaf_nics = max(1, hosts_per_leaf) * self.nics
        beta = self.inter.beta / (per_leaf_nics * max(uplink_ratio, 1e-9))
        self._uplink_cls = LinkClass("uplink", 0.0, beta, 1.0)

    @property
    def hosts(self) -> int:
        return -(-self.ranks // self.k)

    def _get(self, table: dict[int, Link], key: int, cls: LinkClass) -> Link:
        link = table.get(key)
        if link is None:
            link = table[key] = Link(cls)
        return link

    def path(self, src: int, dst: int) -> tuple[LinkClass, list[Link]]:
        """The link class that prices a message from ``src`` to ``dst`` and the links it occupies."""
        hs, hd = src // self.k, dst // self.k
        if hs == hd:
            return self.intra, [self.ports_out[src], self.ports_in[dst]]
        ns = hs * self.nics + src % self.k % self.nics
        nd = hd * self.nics + dst % self.k % self.nics
        links = [self._get(self._nic_out, ns, self.inter), self._get(self._nic_in, nd, self.inter)]
        if self.hosts_per_leaf and hs // self.hosts_per_leaf != hd // self.hosts_per_leaf:
            links.append(self._get(self._up, hs // self.hosts_per_leaf, self._uplink_cls))
            links.append(self._get(self._down, hd // self.hosts_per_leaf, self._uplink_cls))
        return self.inter, links

    def message(self, src: int, dst: int, nbytes: int, ready: float) -> tuple[float, float, float]:
        """Each link serves the bytes it is given first come first served at its own rate; a
        message is through when every link on its path has passed it, and never sooner than
        its own α plus its bytes at the path's slowest rate."""
        cls, links = self.path(src, dst)
        f = self.cpu_factor
        alpha = cls.alpha * f
        slowest = max(link.cls.beta for link in links) * f
        done = ready + alpha + nbytes * slowest * cls.send_share
        for link in links:
            link.free_at = max(link.free_at, ready) + nbytes * link.cls.beta * f * cls.send_share
            if link.free_at + alpha > done:
                done = link.free_at + alpha
        return done, done, nbytes * slowest * (1.0 - cls.send_share)

    def reduce_cost(self, rank: int, nbytes: int) -> float:
        return nbytes * self.gamma


def link_of(name: str, costs: TransportCosts, send_share: float = 0.5) -> LinkClass:
    """The link class of a measured transport (its α and β)."""
    return LinkClass(name, costs.alpha, costs.beta, send_share)
