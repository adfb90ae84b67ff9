"""A fault-tolerant agreement through the store (ULFM's MPIX_Comm_agree).

Round ``k`` of a communicator: every live member sets its vote (``agree/k/vote/r``), then
watches the votes come in. As soon as every member it still waits for has voted, or is
known dead (:mod:`.liveness`), or ``recovery_timeout`` has passed, it proposes a decision
(the bitwise AND of the flags it saw, the voters, the union of their exclusions) with
``compare_set`` on ``agree/k/decision``. The store keeps the first proposal only, so every
member, whoever proposed and whenever it looked, reads the same decision: that is the
agreement, and it needs no rank to stay alive, only the store. A member whose vote the
decision does not hold was declared failed and raises :class:`RankDeclaredFailedError`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Collection

from ..errors import RankDeclaredFailedError
from ..store import PrefixStore, Store
from .liveness import Liveness

POLL_FIRST, POLL_MAX = 0.002, 0.05  # seconds between looks at the votes: short, then backing off


@dataclasses.dataclass(frozen=True)
class Decision:
    """What one round decided: its number, the AND of the voters' flags, the voters (old
    ranks, ascending) and the ranks any voter asked to exclude."""

    round: int
    flag: int
    alive: tuple[int, ...]
    excluded: tuple[int, ...]


def agree_round(store: Store, round: int, rank: int, size: int, flag: int, *, gone: Collection[int],  # noqa: A002
                liveness: Liveness, timeout: float, exclude: Collection[int] = ()) -> Decision:
    """Vote ``flag`` in round ``round`` among ranks ``0..size-1`` less ``gone`` (out of the
    communicator's agreements already) and return the decision every member reads."""
    s = PrefixStore(f"agree/{round}", store)
    s.set(f"vote/{rank}", json.dumps({"flag": int(flag), "exclude": sorted(exclude)}).encode())
    votes: dict[int, dict[str, object]] = {}
    deadline = time.monotonic() + timeout
    pause = POLL_FIRST
    while not s.check(["decision"]):
        for r in range(size):
            if r not in votes and r not in gone and s.check([f"vote/{r}"]):
                votes[r] = json.loads(s.get(f"vote/{r}", timeout))
        excluded = {int(x) for v in votes.values() for x in v["exclude"]}  # type: ignore[attr-defined]
        waiting = [r for r in range(size) if r not in votes and r not in gone and r not in excluded
                   and not liveness.dead(r)]
        if not waiting or time.monotonic() >= deadline:
            both = -1
            for v in votes.values():
                both &= int(v["flag"])  # type: ignore[call-overload]
            proposal = {"flag": both, "alive": sorted(votes), "excluded": sorted(excluded), "by": rank}
            s.compare_set("decision", b"", json.dumps(proposal).encode())
            break
        time.sleep(pause)
        pause = min(pause * 2, POLL_MAX)
    held = json.loads(s.get("decision", timeout))
    decision = Decision(round, int(held["flag"]), tuple(held["alive"]), tuple(held["excluded"]))
    # A rank the voters excluded may not have voted in time (nobody waits for it): it is out
    # by request, not declared failed.
    if rank not in decision.alive and rank not in decision.excluded:
        raise RankDeclaredFailedError(
            f"agreement #{round}: the other members declared rank {rank} failed (it did not vote within "
            f"{timeout:g} s, recovery_timeout); it is not a member of what they agreed on", round=round)
    return decision
