"""Who is known dead without waiting: the failure detector of the agreements.

Every member publishes where it runs (host identity, pid namespace, pid, start time) when
its communicator is made. A member on this host, in this pid namespace, whose process is
gone (exited, a zombie, or its pid reused) is dead for certain, and an agreement stops
waiting for it at once. A member elsewhere is only suspected after ``recovery_timeout``
of silence (docs/fault-tolerance.md, "Failure model").
"""

from __future__ import annotations

import os

from ..store import Store
from ..transports.shm import _pid_namespace, _proc_stat, _process_gone  # the shm transport's own checks


def _start_time() -> bytes:
    fields = _proc_stat(os.getpid())
    return fields[19] if fields is not None and len(fields) > 19 else b"?"


class Liveness:
    """Publishes this rank's process and tells which peers' processes are gone."""

    def __init__(self, store: Store, rank: int, host: str) -> None:
        self.store = store
        self.place = f"{host}\n{_pid_namespace()}"
        self._peers: dict[int, tuple[str, int, bytes]] = {}
        store.set(f"process/{rank}", f"{self.place}\n{os.getpid()}\n{_start_time().decode()}".encode())

    def dead(self, rank: int) -> bool:
        """Whether ``rank``'s process is known to be gone (False where we cannot tell)."""
        record = self._peers.get(rank)
        if record is None:
            if not self.store.check([f"process/{rank}"]):
                return False
            host, namespace, pid, start = self.store.get(f"process/{rank}", 1.0).decode().split("\n")
            record = self._peers[rank] = (f"{host}\n{namespace}", int(pid), start.encode())
        return record[0] == self.place and _process_gone(record[1], record[2]) is not None
