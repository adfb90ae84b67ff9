"""Which ranks share a host, for algorithms in two levels (within each host, then across).

NCCL's trees and MPICH's SMP-aware collectives take the same view: shared memory within a
host is cheap, the network between hosts is not, so reduce within the host first and send
across only what is left.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class HostLayout:
    """Ranks on several hosts, ``per_host`` (more than one) on each.

    Attributes:
        host_of: the host index of every rank (hosts numbered in the order of their first rank).
        per_host: ranks on each host.
    """

    host_of: tuple[int, ...]
    per_host: int

    @property
    def hosts(self) -> int:
        return len(self.host_of) // self.per_host

    def on_host(self, host: int) -> list[int]:
        """The ranks on ``host``, in rank order (their order within the host)."""
        return [r for r, h in enumerate(self.host_of) if h == host]

    def local_rank(self, rank: int) -> int:
        """``rank``'s place among the ranks of its host."""
        return self.on_host(self.host_of[rank]).index(rank)

    def across(self, rank: int) -> list[int]:
        """The ranks with ``rank``'s place on every host, in host order (``rank`` among them)."""
        place = self.local_rank(rank)
        return [self.on_host(h)[place] for h in range(self.hosts)]


def two_level_layout(hosts: Sequence[str]) -> HostLayout | None:
    """The layout of ranks whose host identities are ``hosts`` (one per rank), where two
    levels apply: more than one host, and the same number of ranks, more than one, on each.
    None otherwise (one host, one rank per host, or uneven hosts)."""
    index: dict[str, int] = {}
    host_of = tuple(index.setdefault(h, len(index)) for h in hosts)
    if len(index) < 2 or len(host_of) == len(index):
        return None
    per_host = len(host_of) // len(index)
    if any(host_of.count(h) != per_host for h in range(len(index))):
        return None
    return HostLayout(host_of, per_host)
