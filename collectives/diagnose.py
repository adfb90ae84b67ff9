"""Which ranks never joined an operation that timed out, asked through the store."""

from __future__ import annotations

import time

from .errors import CollectiveTimeoutError
from .store import Store


def name_the_absent(exc: CollectiveTimeoutError, store: Store, rank: int, size: int, grace: float) -> None:
    """Say in ``store`` that this rank is stuck in ``exc``'s operation, and wait up to
    ``grace`` seconds for the others to say so too: those that never do did not join it
    (or already left it). Records them in ``exc.absent`` and its message. A dead store
    leaves ``exc`` as it was: it must not hide the timeout itself."""
    key = f"stuck/{exc.collective}/{exc.seq}"
    try:
        store.set(f"{key}/{rank}", b"1")
        deadline = time.monotonic() + grace
        absent = list(range(size))
        while absent and time.monotonic() < deadline:
            absent = [r for r in absent if not store.check([f"{key}/{r}"])]
            time.sleep(0.05)
    except Exception:  # noqa: BLE001
        return
    exc.absent = absent
    if absent:
        exc.args = (
            f"{exc.args[0]}; rank(s) {', '.join(map(str, absent))} never reported being in "
            f"{exc.collective} #{exc.seq} (not joined, or already finished it)",
        )
