"""Version and setting skew between ranks: found at init, on every rank, with a diff.

Ranks of one job must run the same library and wire protocol and agree on the settings
that decide how they talk (timeout, default algorithm, forced transport, check mode,
chunking); one rank with another ``COLLECTIVES_ALGO`` or an older install otherwise hangs
or returns wrong data far from the cause (NCCL's "receiving 524288 bytes instead of
65536"). So every rank publishes a small record of them in the store once, when the
ranks meet, reads everyone's, and where any differ every rank raises
:class:`~collectives.errors.SettingsMismatchError` listing, per setting, which rank has
which value. Settings that may differ by rank (host name, interface, log level, trace
file) and the secret are not in the record.
"""

from __future__ import annotations

import json
import time
from typing import Any

from . import _handshake
from ._version import __version__
from .config import Config
from .errors import SettingsMismatchError, StoreError
from .store import Store

AGREED = ("version", "protocol", "timeout", "algorithm", "transport", "check", "chunk_bytes", "max_frame_bytes",
          "shm_ring_bytes", "cross_memory")
"""What every rank must have alike, in the order a difference is reported."""

GRACE = 10.0
"""Seconds a rank that found skew waits (at most) for every rank to have read the
records before it raises: the store may live in a rank that leaves when it raises."""


def settings_record(config: Config) -> dict[str, Any]:
    """This rank's record: the library and protocol versions and the agreed settings."""
    return {"version": __version__, "protocol": _handshake.VERSION, "timeout": config.timeout,
            "algorithm": config.algorithm, "transport": config.transport, "check": config.check,
            "chunk_bytes": config.chunk_bytes, "max_frame_bytes": config.max_frame_bytes,
            "shm_ring_bytes": config.shm_ring_bytes, "cross_memory": config.cross_memory}


def differences(records: list[dict[str, Any]]) -> list[str]:
    """One line per setting the ranks' ``records`` (in rank order) disagree on."""
    lines = []
    for name in AGREED:
        values = [record.get(name) for record in records]
        if any(v != values[0] for v in values[1:]):
            lines.append(f"{name}: " + ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values)))
    return lines


def agree_on_settings(store: Store, rank: int, size: int, config: Config) -> None:
    """Publish this rank's record in ``store`` (a communicator's own part of it), read
    every rank's and raise SettingsMismatchError on every rank where any differ."""
    if size == 1:
        return
    store.set(f"settings/{rank}", json.dumps(settings_record(config)).encode())
    records = [json.loads(store.get(f"settings/{r}", config.timeout)) for r in range(size)]
    lines = differences(records)
    if not lines:
        return
    try:
        read = store.add("settings/skew", 1)
        deadline = time.monotonic() + GRACE
        while read < size and time.monotonic() < deadline:
            time.sleep(0.02)
            read = store.add("settings/skew", 0)
    except StoreError:
        pass  # the rank hosting the store saw everyone's count and left: all have read
    raise SettingsMismatchError(
        "init: the ranks' versions or settings differ (set them alike on every rank): " + "; ".join(lines))
