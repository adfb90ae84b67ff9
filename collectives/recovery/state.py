"""What one communicator keeps for recovery: its part of the store, its agreement count,
the ranks out of its agreements, its failure detector and its revoke watcher."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from ..store import PrefixStore, Store
from ..store.torch_store import TorchStore
from .agree import Decision, agree_round
from .liveness import Liveness
from .revoke import Watcher, publish

if TYPE_CHECKING:
    from ..communicator import Communicator

Connect = Callable[..., "Communicator"]
"""``connect(rank, size, store, config)``: how new communicators are made (``collectives.connect``)."""


def root_of(store: Store) -> tuple[Store, str]:
    """The store under any prefixes, and the prefix ``store`` puts on keys there."""
    parts: list[str] = []
    while isinstance(store, PrefixStore):
        parts.append(store.prefix)
        store = store.store
    return store, "/".join(reversed(parts))


def _waitable(store: Store) -> Store | None:
    """``store`` on a connection of its own where its client serialises every operation (a
    torch store: a parked ``get`` would hold up all the others), or None where it cannot
    have one (the watcher is then left out: a revoke reaches that member when one of its
    operations next fails, its peers having closed their ends)."""
    root, prefix = root_of(store)
    if not isinstance(root, TorchStore):
        return store
    try:
        own: Store = TorchStore(root.torch_store.clone(), root.timeout)
    except Exception:  # noqa: BLE001 - stores without clone() (older torch)
        return None
    return PrefixStore(prefix, own) if prefix else own


class Recovery:
    """Recovery state of one member of one communicator (made by ``attach``)."""

    def __init__(self, comm: Communicator, store: Store, connect: Connect, host: str) -> None:
        self.rank, self.size, self.config = comm.rank, comm.size, comm.config
        self.store = PrefixStore("recovery", store)
        self.connect = connect
        self.rounds = 0  # agreements run on this communicator (collective: the same on every member)
        self.gone: set[int] = set()  # ranks out of its agreements: declared failed, or excluded by a shrink
        self.excluded: set[int] = set()  # of those, the ones a shrink excluded (alive, but out)
        self.revoked = False
        self.liveness = Liveness(self.store, self.rank, host)
        self.watcher: Watcher | None = None

    def watch(self, on_revoke: Callable[[str], None]) -> None:
        """Start the revoke watcher, which calls ``on_revoke(reason)`` when a member revokes."""
        waitable = None if self.size == 1 else _waitable(self.store)
        if waitable is not None:
            self.watcher = Watcher(waitable, self.rank, on_revoke, ring=self.store)

    def publish_revoke(self, reason: str) -> str:
        """Tell every member (through the store) that the communicator is revoked."""
        return publish(self.store, self.size, reason)

    def revoked_in_store(self) -> str | None:
        """The revoke reason if some member revoked, else None (None too if the store is lost)."""
        if self.watcher is not None and self.watcher.store_lost:
            return None
        try:
            if self.store.check(["revoked"]):
                return self.store.get("revoked", 1.0).decode(errors="replace")
        except StoreError:
            return None
        return None

    def agree(self, flag: int, exclude: Collection[int] = ()) -> Decision:
        """One agreement round among the members not yet gone; the ranks it left out are gone after it."""
        self.rounds += 1
        decision = agree_round(self.store, self.rounds, self.rank, self.size, flag, gone=self.gone,
                               liveness=self.liveness, timeout=self.config.recovery_timeout, exclude=exclude)
        self.gone |= set(range(self.size)) - set(decision.alive)
        self.gone |= set(decision.excluded)
        self.excluded |= set(decision.excluded)
        return decision

    def failed(self) -> tuple[int, ...]:
        """Ranks the agreements declared failed (not those a shrink excluded)."""
        return tuple(sorted(self.gone - self.excluded))

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()

    def owned_by(self, comm: Any) -> list[Any]:
        """What ``comm`` owns apart from its recovery state (what a successor takes over)."""
        return [o for o in comm._owned if o is not self]
