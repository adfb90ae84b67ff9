"""Waiting on Ray, always bounded: one call per rank, results in rank order, and a failure
that names the rank and its actor (the root cause where several failed)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ..errors import CollectiveTimeoutError, CommunicatorBrokenError, TransportError
from ._ray import ray_module
from .errors import RayRankError, RayRankTimeoutError

SETTLE_SECONDS = 0.5
"""After a first failure, how long to wait for the others: a killed actor is often reported
after its peers' PeerLostError, and the killed one is the cause."""

_CONSEQUENCES = (TransportError, CollectiveTimeoutError, CommunicatorBrokenError)


def describe_actor(actor: Any) -> str:
    return repr(actor)


def _unwrap(exc: BaseException) -> tuple[BaseException, bool]:
    """(what the rank raised, whether its actor died) for an exception from ``ray.get``."""
    ray = ray_module()
    if isinstance(exc, ray.exceptions.RayActorError):
        return exc, True
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = getattr(exc, "cause", None)
        return (cause if isinstance(cause, BaseException) else exc), False
    return exc, False


def _severity(exc: BaseException, died: bool) -> int:
    """Lower is likelier the cause: a dead actor, then the rank's own error, then what
    follows from another rank's failure (peer lost, timeout)."""
    if died:
        return 0
    return 2 if isinstance(exc, _CONSEQUENCES) else 1


def gather(refs: Sequence[Any], actors: Sequence[Any], *, what: str, timeout: float,
           deadline: float | None = None, dead_ok: bool = False) -> list[Any]:
    """The results of ``refs`` (one per rank, in rank order) within ``timeout`` seconds
    (or by ``deadline``, a ``time.monotonic()``). With ``dead_ok``, a dead actor's
    result is None rather than a failure.

    Raises:
        RayRankError: a rank raised or its actor died; the message says ``what`` was under way.
        RayRankTimeoutError: ranks did not answer in time.
    """
    ray = ray_module()
    deadline = time.monotonic() + timeout if deadline is None else deadline
    pending = {ref: rank for rank, ref in enumerate(refs)}
    results: list[Any] = [None] * len(refs)
    failures: list[tuple[int, int, BaseException, bool]] = []  # (severity, rank, exception, died)
    settle_by: float | None = None
    while pending:
        until = deadline if settle_by is None else min(deadline, settle_by)
        left = until - time.monotonic()
        if left <= 0:
            break
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=left)
        for ref in ready:
            rank = pending.pop(ref)
            try:
                results[rank] = ray.get(ref, timeout=max(deadline - time.monotonic(), 0.001))
            except Exception as exc:  # noqa: BLE001 - every failure is reported, by rank
                cause, died = _unwrap(exc)
                if died and dead_ok:
                    continue
                failures.append((_severity(cause, died), rank, cause, died))
                settle_by = settle_by or time.monotonic() + SETTLE_SECONDS
    if failures:
        severity, rank, cause, died = min(failures, key=lambda f: (f[0], f[1]))
        how = "died" if died else f"raised {type(cause).__name__}"
        others = sorted(r for _, r, _, _ in failures if r != rank)
        also = f" (rank(s) {', '.join(map(str, others))} failed too)" if others else ""
        error = RayRankError(f"{what}: rank {rank} ({describe_actor(actors[rank])}) {how}: {cause}{also}",
                             rank=rank, actor=describe_actor(actors[rank]), ranks=[f[1] for f in failures],
                             exception=None if died else cause, died=died)
        raise error from cause
    if pending:
        late = sorted(pending.values())
        raise RayRankTimeoutError(
            f"{what}: rank(s) {', '.join(map(str, late))} did not answer within {timeout:g} s "
            f"(first: {describe_actor(actors[late[0]])})",
            rank=late[0], actor=describe_actor(actors[late[0]]), ranks=late)
    return results
