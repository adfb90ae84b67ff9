"""``monitored_barrier`` for collectives groups.

``torch.distributed.monitored_barrier`` refuses every backend but gloo, so this module offers
the same service: a barrier that, when ranks do not arrive in time, raises on rank 0 naming
them (the first one, or all of them with ``wait_all_ranks=True``) instead of hanging.

It runs through the group's store, not its communicator, so that it still works when a
rank is stuck inside a collective: every rank announces itself under a per-call key, rank 0
waits for those keys and then publishes the verdict, which the other ranks wait for.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

import torch.distributed as dist

from ..errors import StoreError
from .errors import BACKEND_NAME


def _seconds(timeout: Any, default: float) -> float:
    if timeout is None:
        return default
    if isinstance(timeout, datetime.timedelta):
        return timeout.total_seconds()
    return float(timeout)


def _ranks_text(ranks: list[int]) -> str:
    return ", ".join(map(str, ranks))


def monitored_barrier_on(pg: Any, timeout: Any = None, wait_all_ranks: bool = False) -> None:
    """Run the monitored barrier on the CollectivesProcessGroup ``pg`` (group ranks)."""
    seconds = _seconds(timeout, pg._timeout)
    rank, size = pg._rank, pg._size
    with pg._issue_lock:
        pg._monitored_seq += 1
        n = pg._monitored_seq
    store = pg._store
    key = f"monitored_barrier/{n}"
    deadline = time.monotonic() + seconds
    ms = int(round(seconds * 1000))
    if size == 1:
        return
    if rank != 0:
        store.set(f"{key}/arrived/{rank}", b"1")
        try:
            store.wait([f"{key}/verdict"], max(0.0, deadline - time.monotonic()) + 0.5)
        except StoreError:
            raise dist.DistBackendError(
                f"[Rank {rank}]: monitored_barrier #{n} Timed out after {ms} ms waiting for rank 0 "
                f"(rank 0 has not confirmed that every rank arrived)"
            ) from None
        verdict = store.get(f"{key}/verdict").decode()
        if verdict != "ok":
            raise dist.DistBackendError(
                f"[Rank {rank}]: monitored_barrier #{n} failed: rank 0 reports that rank(s) {verdict} "
                f"did not arrive within {ms} ms"
            )
        return
    missing: list[int] = []
    for peer in range(1, size):
        arrived_key = f"{key}/arrived/{peer}"
        remaining = deadline - time.monotonic()
        try:
            if remaining > 0:
                store.wait([arrived_key], remaining)
                continue
        except StoreError:
            pass
        if store.check([arrived_key]):
            continue
        missing.append(peer)
        if not wait_all_ranks:
            break
    store.set(f"{key}/verdict", _ranks_text(missing).encode() if missing else b"ok")
    if missing:
        if len(missing) == 1:
            what = f"Rank {missing[0]} failed"
        else:
            what = f"Ranks {_ranks_text(missing)} failed"
        raise dist.DistBackendError(
            f"[Rank 0]: {what} to pass monitoredBarrier in {ms} ms (collectives monitored_barrier #{n}; "
            f"group ranks; the rank(s) did not arrive, or are stuck in an earlier operation)"
        )


def monitored_barrier(group: Any = None, timeout: Any = None, wait_all_ranks: bool = False) -> None:
    """``torch.distributed.monitored_barrier`` for groups of the collectives backend.

    Args:
        group: the process group (default: the default group). A gloo group is passed on to
            ``torch.distributed.monitored_barrier``.
        timeout: a ``timedelta`` or seconds (default: the group's timeout).
        wait_all_ranks: on rank 0, collect every rank that did not arrive instead of
            reporting the first one.

    Raises:
        torch.distributed.DistBackendError: on rank 0, naming the ranks that did not arrive
            ("Rank 1 failed to pass monitoredBarrier in 2000 ms", as gloo says it); on the
            other ranks, when rank 0 reports a failure or does not answer in time.
    """
    pg = group if group is not None else dist.distributed_c10d._get_default_group()
    if dist.distributed_c10d._rank_not_in_group(pg):
        return
    # known by name (process_group imports this module); torch's own groups lack the method
    if getattr(pg, "getBackendName", lambda: None)() != BACKEND_NAME:
        dist.monitored_barrier(group=group, timeout=timeout, wait_all_ranks=wait_all_ranks)
        return None
    monitored_barrier_on(pg, timeout, wait_all_ranks)
    return None
