"""Argument checks of the communicator's calls: local, before anything is sent.

Every check raises an error that names the argument and what is wrong with it, so a
wrong call fails on the rank that made it instead of hanging or corrupting its peers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .buffers import address_of, check_count, check_same_dtype, check_same_or_apart, check_splits
from .errors import InvalidArgumentError
from .ops import ReduceOp, check_op
from .staging import Staging
from .tags import MAX_USER_TAG, P2P_TAG_BIT


def rank_in(value: object, name: str, size: int) -> int:
    """``value`` as a rank of a world of ``size``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgumentError(f"{name}: expected a rank (int), got {type(value).__name__}")
    if not 0 <= int(value) < size:
        raise InvalidArgumentError(f"{name}: rank {value} is out of range for world size {size}")
    return int(value)


def reduction(op: object, array: np.ndarray, name: str = "op") -> ReduceOp:
    """``op`` as a ReduceOp that has a meaning for ``array``'s dtype."""
    parsed = ReduceOp.parse(op, name)
    check_op(parsed, array.dtype, name)
    return parsed


def per_rank(array: np.ndarray, name: str, size: int) -> int:
    """Elements of ``array`` per rank, refusing a count that is not a multiple of ``size``."""
    if array.size % size:
        raise InvalidArgumentError(f"{name}: holds {array.size} elements, not a multiple of the world size {size}")
    return array.size // size


def output(stage: Staging, out: Any, like: Any, xa: np.ndarray, count: int, why: str) -> tuple[Any, np.ndarray]:
    """The call's output (allocated like ``like`` when None) and its flat host view,
    checked to hold ``count`` elements of ``xa``'s dtype (``why`` says why that many)."""
    if out is None:
        out = stage.new_like(like, count, xa.dtype)
    oa = stage.flat(out, "out", writable=True, load=False)
    check_same_dtype(xa, oa, "x", "out")
    check_count(oa, count, "out", why)
    return out, oa


def same_shape_out(stage: Staging, out: Any, xa: np.ndarray, why: str) -> np.ndarray:
    """``out``'s flat host view, checked to hold as many elements of ``xa``'s dtype as ``xa``
    (``why`` says why) and to be ``xa`` itself or apart from it (a partial overlap would
    read what the call already wrote)."""
    oa = stage.flat(out, "out", writable=True, load=False)
    check_same_dtype(xa, oa, "x", "out")
    check_count(oa, xa.size, "out", why)
    check_same_or_apart(xa, oa, "x", "out")
    return oa


def _filled_out(stage: Staging, out: Any, xa: np.ndarray, why: str) -> np.ndarray:
    """``same_shape_out``, holding ``xa``'s values (copied unless it is ``xa``'s memory)."""
    oa = same_shape_out(stage, out, xa, why)
    if address_of(xa) != address_of(oa):  # same memory or apart, checked
        np.copyto(oa, xa)
    return oa


def broadcast_buffer(stage: Staging, x: Any, out: Any, is_root: bool) -> np.ndarray:
    """The flat buffer a broadcast runs on: ``x`` (written on every rank but the root), or
    ``out``, checked as all_reduce's is and filled from ``x`` on the root."""
    xa = stage.flat(x, "x", writable=not is_root and out is None)
    if out is None:
        return xa
    why = "broadcast's result is the size of x"
    return _filled_out(stage, out, xa, why) if is_root else same_shape_out(stage, out, xa, why)


def reduce_buffer(stage: Staging, x: Any, out: Any, is_root: bool) -> np.ndarray:
    """The flat buffer a reduce runs on: ``x`` (the result on the root), or on the root
    ``out``, checked as all_reduce's is and filled from ``x`` (``out`` is not used elsewhere,
    as MPI_Reduce's recvbuf)."""
    xa = stage.flat(x, "x", writable=is_root and out is None)
    if out is None or not is_root:
        return xa
    return _filled_out(stage, out, xa, "reduce's result is the size of x")


def peer_and_tag(peer: object, name: str, tag: object, rank: int, size: int, *, async_op: bool = False
                 ) -> tuple[int, int]:
    """The other rank of a send or receive, and the tag its messages carry on the wire. This
    rank itself only with ``async_op``: a blocking send or receive could only wait for itself."""
    peer = rank_in(peer, name, size)
    if peer == rank and not async_op:
        raise InvalidArgumentError(
            f"{name}: rank {peer} is this rank; a blocking send/recv needs another rank (or async_op=True)")
    return peer, wire_tag(tag)


def source_and_tag(src: object, tag: object, rank: int, size: int, *, async_op: bool) -> tuple[int | None, int]:
    """A receive's source (None: any rank) and wire tag."""
    if src is None:
        return None, wire_tag(tag)
    return peer_and_tag(src, "src", tag, rank, size, async_op=async_op)


def wire_tag(tag: object) -> int:
    """The user's point-to-point ``tag`` as its messages carry it (under ``P2P_TAG_BIT``)."""
    if isinstance(tag, bool) or not isinstance(tag, (int, np.integer)) or not 0 <= int(tag) <= MAX_USER_TAG:
        raise InvalidArgumentError(f"tag: expected an int in 0..{MAX_USER_TAG}, got {tag!r}")
    return P2P_TAG_BIT | int(tag)


def color_or_key(name: str, value: object) -> None:
    """``split``'s color and key are ints or None."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
        raise InvalidArgumentError(f"{name}: expected an int or None, got {type(value).__name__}")


def splits(in_splits: Any, out_splits: Any, rank: int, size: int) -> tuple[list[int], list[int]]:
    """``all_to_all_v``'s counts per rank, sent and received, each a list of ``size``
    non-negative ints, agreeing on what this rank sends itself."""
    sends = check_splits(in_splits, size, "in_splits")
    recvs = check_splits(out_splits, size, "out_splits")
    if sends[rank] != recvs[rank]:
        raise InvalidArgumentError(
            f"out_splits[{rank}]: this rank sends itself in_splits[{rank}] = {sends[rank]} "
            f"elements but expects {recvs[rank]}"
        )
    return sends, recvs
