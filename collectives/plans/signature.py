"""What a plan's signature says about its call: the fields every rank must agree on.

A call's signature is the key its plan is kept under (``Communicator`` builds it: the
collective first, the requested algorithm last, dtype, count, operator and root between,
in an order per collective). The flight recorder decodes it into readable fields, and the
``COLLECTIVES_CHECK`` mode turns it into a fixed-size fingerprint that the ranks compare
before any data moves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from ..names import ALGORITHMS
from ..ops import ReduceOp

COLLECTIVES = ("barrier", "all_reduce", "reduce_scatter", "all_gather", "broadcast", "reduce", "gather", "scatter",
               "all_to_all", "all_to_all_v", "alloc")
"""Every collective a signature may name (its index is its code in a fingerprint)."""

FIELDS = ("op", "dtype", "count", "root", "reduce_op", "algorithm")
"""The fields of a signature, in the order a mismatch is reported."""

FINGERPRINT_WORDS = 8
"""int64 words of a fingerprint: op, dtype (two words of its name), count, root, reduce
op, algorithm, and one spare (0)."""

_OPS = tuple(op.value for op in ReduceOp)
_LAYOUTS: dict[str, tuple[str, ...]] = {
    # the key's fields after the collective's name, as communicator.py builds them
    "all_reduce": ("dtype", "count", "reduce_op", "algorithm"),
    "reduce_scatter": ("dtype", "count", "reduce_op", "algorithm"),
    "all_gather": ("dtype", "count", "algorithm"),
    "broadcast": ("dtype", "count", "root", "algorithm"),
    "reduce": ("dtype", "count", "reduce_op", "root", "algorithm"),
    "gather": ("dtype", "count", "root", "algorithm"),
    "scatter": ("dtype", "count", "root", "algorithm"),
    "all_to_all": ("dtype", "count", "algorithm"),
    "all_to_all_v": ("dtype", "sends", "recvs", "algorithm"),
}


@dataclasses.dataclass(frozen=True)
class Signature:
    """A call's fields (None where the collective has none: a barrier's dtype, an
    all-reduce's root). ``count`` is elements per rank as the call passed them (for
    all_to_all_v, None: its counts differ by rank by design)."""

    op: str
    dtype: str | None = None
    count: int | None = None
    root: int | None = None
    reduce_op: str | None = None
    algorithm: str | None = None


def _op_name(op: Any) -> str:
    try:
        return ReduceOp.parse(op).value
    except Exception:  # noqa: BLE001 - a signature is read for reports: say what is there
        return str(op)


def signature(key: Hashable) -> Signature:
    """The fields of the call whose plan is kept under ``key``."""
    if not isinstance(key, tuple) or not key:
        return Signature(str(key))
    name = str(key[0])
    fields: dict[str, Any] = dict(zip(_LAYOUTS.get(name, ()), key[1:]))
    dtype = fields.get("dtype")
    reduce_op = fields.get("reduce_op")
    return Signature(
        op=name,
        dtype=None if dtype is None else str(np.dtype(dtype)),
        count=None if fields.get("count") is None else int(fields["count"]),
        root=None if fields.get("root") is None else int(fields["root"]),
        reduce_op=None if reduce_op is None else _op_name(reduce_op),
        algorithm=None if fields.get("algorithm") in (None, "auto") else str(fields["algorithm"]).lower(),
    )


def _text_words(text: str | None) -> tuple[int, int]:
    raw = (text or "").encode()[:16].ljust(16, b"\0")
    return int.from_bytes(raw[:8], "little", signed=True), int.from_bytes(raw[8:], "little", signed=True)


def _words_text(lo: int, hi: int) -> str | None:
    raw = int(lo).to_bytes(8, "little", signed=True) + int(hi).to_bytes(8, "little", signed=True)
    text = raw.rstrip(b"\0").decode(errors="replace")
    return text or None


def fingerprint(sig: Signature, out: np.ndarray) -> None:
    """Write ``sig`` into ``out`` (FINGERPRINT_WORDS int64): fixed-size, so that ranks can
    exchange fingerprints whatever their calls."""
    lo, hi = _text_words(sig.dtype)
    out[0] = COLLECTIVES.index(sig.op) + 1 if sig.op in COLLECTIVES else -1
    out[1], out[2] = lo, hi
    out[3] = -1 if sig.count is None else sig.count
    out[4] = -1 if sig.root is None else sig.root
    out[5] = _OPS.index(sig.reduce_op) + 1 if sig.reduce_op in _OPS else (0 if sig.reduce_op is None else -1)
    out[6] = ALGORITHMS.index(sig.algorithm) + 1 if sig.algorithm in ALGORITHMS else 0
    out[7] = 0


def from_fingerprint(words: Sequence[int] | np.ndarray) -> Signature:
    """The signature a fingerprint was written from (what ``fingerprint`` keeps of it)."""
    op, lo, hi, count, root, reduce_op, algorithm = (int(w) for w in words[:7])
    return Signature(
        op=COLLECTIVES[op - 1] if 1 <= op <= len(COLLECTIVES) else "unknown",
        dtype=_words_text(lo, hi),
        count=None if count < 0 else count,
        root=None if root < 0 else root,
        reduce_op=_OPS[reduce_op - 1] if 1 <= reduce_op <= len(_OPS) else None,
        algorithm=ALGORITHMS[algorithm - 1] if 1 <= algorithm <= len(ALGORITHMS) else None,
    )


def first_difference(signatures: Sequence[Signature]) -> tuple[str, list[Any]] | None:
    """The first field (in FIELDS order) on which ``signatures`` (one per rank) differ,
    with every rank's value; None when they all agree."""
    for field in FIELDS:
        values = [getattr(s, field) for s in signatures]
        if any(v != values[0] for v in values[1:]):
            return field, values
    return None


def as_dict(sig: Signature) -> dict[str, Any]:
    """The fields of ``sig`` by name."""
    return dataclasses.asdict(sig)
