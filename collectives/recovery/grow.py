"""``grow`` and ``join``: new processes join a running group through its store.

The members agree (every one present, every one asking for the same ``n``), then offer
``n`` places under the well-known key ``collectives/join/offer`` of the store they all
meet in: the part of the store where the larger communicator will connect, the old size
and ``n``. A process that calls ``join`` connects to that store (proving the job secret,
as every store connection does), takes a place with ``add`` on the offer's counter (the
store numbers them, so two joiners never take the same one), and connects as rank
``old size + place - 1``. A joiner that finds the offer full waits for the next one.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import TYPE_CHECKING

from ..config import Config
from ..errors import InvalidArgumentError, PeerLostError, RendezvousTimeoutError
from ..store import PrefixStore, Store
from .state import Connect, Recovery, root_of

if TYPE_CHECKING:
    from ..communicator import Communicator

OFFER = "collectives/join/offer"


def grow(comm: Communicator, state: Recovery, n: int) -> Communicator:
    """The communicator of the members (ranks unchanged) and ``n`` joiners (ranks size..size+n-1)."""
    if not isinstance(n, int) or n < 1:
        raise InvalidArgumentError(f"grow: n must be a positive int, got {n!r}")
    # AND of (n, ~n) is each member's own pair only when every member passed the same n.
    pair = (n << 32) | (~n & 0xFFFFFFFF)
    decision = state.agree(pair)
    if state.gone:
        raise PeerLostError(f"grow: rank(s) {sorted(state.gone)} failed or left; shrink first, then grow")
    if decision.flag != pair:
        raise InvalidArgumentError(f"grow: the members passed different n (this rank {n})")
    root, prefix = root_of(state.store)
    place = f"{prefix}/grow/{decision.round}"
    # The joiners take the group's timeout (theirs bounds the wait for this offer): init's
    # check of settings across the ranks then holds them to everything else.
    root.set(OFFER, json.dumps({"place": place, "base": comm.size, "n": n, "timeout": comm.config.timeout}).encode())
    new = state.connect(comm.rank, comm.size + n, PrefixStore(f"{place}/comm", root), comm.config)
    new._owned.extend(state.owned_by(comm))
    del comm._owned[:]
    comm._owned.append(state)
    return new


def join_group(store: Store, config: Config, connect: Connect) -> Communicator:
    """Wait for an offer in ``store`` with a free place, take it, and connect."""
    deadline = time.monotonic() + config.timeout
    seen = b""
    while True:
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise RendezvousTimeoutError("")
            raw = store.get(OFFER, left)
        except RendezvousTimeoutError:
            raise RendezvousTimeoutError(f"join: no group offered a place (grow) within {config.timeout:g} s") from None
        if raw == seen:  # that offer is full: wait for the next one
            time.sleep(0.02)
            continue
        seen = raw
        offer = json.loads(raw)
        slot = store.add(f"{offer['place']}/joined", 1)
        if slot <= offer["n"]:
            joined = dataclasses.replace(config, timeout=offer.get("timeout", config.timeout))
            return connect(offer["base"] + slot - 1, offer["base"] + offer["n"],
                           PrefixStore(f"{offer['place']}/comm", store), joined)
