"""The tests: how a sweep size becomes element counts, buffers and bandwidth, per collective.

Follows nccl-tests' ``*GetCollByteCount`` and ``*GetBw`` (see
``shared/reference/nccl_tests_spec.md`` §4-§5): a size ``S`` of an ``e``-byte type on ``n``
ranks gives ``k = S // e`` elements; collectives whose buffers are divided among ranks
(all_gather, reduce_scatter, alltoall, alltoallv, gather, scatter, hypercube) trim the
per-rank count to a multiple of 16 bytes.

gather and scatter skip the call when that count is 0, as nccl-tests does. hypercube
(nccl-tests' ``hypercube_perf``) is an all-gather made of lg(n) rounds of point-to-point
(:func:`hypercube`); it runs only on a power-of-two world (else nccl-tests prints
``nRanks N is not a power of 2, skipping`` and no rows), prints an empty redop, and its
algbw counts the ``(n-1)·count`` elements a rank receives, with busbw = algbw.

alltoallv (nccl-tests 2.19 ``alltoallv_perf``) sends blocks of uneven sizes, chosen
deterministically by :func:`alltoallv_splits`: distance-weighted, as nccl-tests' default
``NCCL_TESTS_ALLTOALLV_SPREAD=1``, so every rank sends and receives the same total
(``n·base`` elements, the ``size`` column, which is then also the largest send or receive
of any rank, nccl-tests' byte count for its bandwidth) and busbw = algbw·(n−1)/n.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DTYPE_NAMES = ("int8", "uint8", "int32", "uint32", "int64", "uint64", "half", "float", "double", "bfloat16")
OP_NAMES = ("sum", "prod", "max", "min", "avg")
NCCL_ONLY_OPS = ("mulsum",)


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype of an nccl-tests type name (bfloat16 needs ml_dtypes)."""
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype({"half": "float16", "float": "float32", "double": "float64"}.get(name, name))


def have_dtype(name: str) -> bool:
    try:
        numpy_dtype(name)
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class Collective:
    """One ``*_perf`` test."""

    name: str                  # our method / command stem: all_reduce, ...
    program: str               # all_reduce_perf
    reduces: bool              # takes an op (and prints it); else the op column says "none"
    rooted: bool               # takes a root (and loops over roots with -r -1); else root -1
    divided: bool              # per-rank count trimmed to 16 bytes; size column = n * count * e
    loops_ops: bool            # loops over -o all (reductions, and sendrecv as nccl-tests does)
    check_in_place: bool = True  # nccl-tests leaves in-place alltoall and sendrecv unchecked
    op_label: str = "none"     # the redop column of a test without an op (hypercube: "")

    def skips(self, nranks: int) -> str | None:
        """The line nccl-tests prints instead of any row on this world, or None when it runs."""
        if self.name == "hypercube" and nranks & (nranks - 1):
            return f"nRanks {nranks} is not a power of 2, skipping"
        return None

    def factor(self, nranks: int) -> float:
        """busbw = algbw * factor (nccl-tests' doc/PERFORMANCE.md)."""
        if self.name == "all_reduce":
            return 2.0 * (nranks - 1) / nranks
        if self.name in ("all_gather", "reduce_scatter", "alltoall", "alltoallv", "gather", "scatter"):
            return (nranks - 1) / nranks
        if self.name == "barrier":
            return 0.0
        return 1.0  # broadcast, reduce, sendrecv, hypercube

    def counts(self, size: int, itemsize: int, nranks: int) -> tuple[int, int, int, int]:
        """(count column, size column in bytes, send count, recv count) for sweep size ``size``."""
        if self.name == "barrier":
            return 0, 0, 0, 0
        k = size // itemsize
        if not self.divided:
            return k, k * itemsize, k, k
        base = (k // nranks) & ~(16 // itemsize - 1)
        total = base * nranks
        if self.name in ("all_gather", "gather", "hypercube"):
            return base, total * itemsize, base, total
        if self.name in ("reduce_scatter", "scatter"):
            return base, total * itemsize, total, base
        return base, total * itemsize, total, total  # alltoall(v): base elements per peer (on average)

    def bandwidth(self, size_bytes: int, time_us: float, nranks: int) -> tuple[float, float]:
        """(algbw, busbw) in GB/s (1e9 B/s) from the size column and the time (hypercube:
        from the ``(n-1)/n`` of it a rank receives)."""
        if self.name == "hypercube":
            size_bytes = size_bytes // nranks * (nranks - 1)
        if time_us <= 0:
            algbw = float("inf") if size_bytes else 0.0
        else:
            algbw = size_bytes / 1e9 / (time_us * 1e-6)
        return algbw, algbw * self.factor(nranks)

    def buffers(self, rank: int, nranks: int, count: int, dtype: np.dtype, in_place: bool,
                unalign: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Zeroed (send, recv) with nccl-tests' in-place layouts; ``unalign`` shifts both by
        that many elements."""
        if self.divided:
            total = count * nranks
            send_count, recv_count = {
                "all_gather": (count, total), "reduce_scatter": (total, count), "alltoall": (total, total),
                "alltoallv": (total, total), "gather": (count, total), "scatter": (total, count),
                "hypercube": (count, total),
            }[self.name]
        else:
            send_count = recv_count = count

        def alloc(n: int) -> np.ndarray:
            return np.zeros(n + unalign, dtype=dtype)[unalign:]

        if not in_place:
            return alloc(send_count), alloc(recv_count)
        if self.name in ("all_gather", "gather", "hypercube"):
            recv = alloc(recv_count)
            return recv[rank * count:(rank + 1) * count], recv
        if self.name in ("reduce_scatter", "scatter"):
            send = alloc(send_count)
            return send, send[rank * count:(rank + 1) * count]
        buf = alloc(max(send_count, recv_count))
        return buf, buf

    def run(self, backend: object, send: np.ndarray, recv: np.ndarray, op: str, root: int) -> None:
        """One collective through a Backend (see perf.backend)."""
        b = backend
        name = self.name
        if name == "all_reduce":
            b.all_reduce(send, recv, op)  # type: ignore[attr-defined]
        elif name == "all_gather":
            b.all_gather(send, recv)  # type: ignore[attr-defined]
        elif name == "reduce_scatter":
            b.reduce_scatter(send, recv, op)  # type: ignore[attr-defined]
        elif name == "broadcast":
            b.broadcast(send, recv, root)  # type: ignore[attr-defined]
        elif name == "reduce":
            b.reduce(send, recv, op, root)  # type: ignore[attr-defined]
        elif name == "alltoall":
            b.alltoall(send, recv)  # type: ignore[attr-defined]
        elif name == "alltoallv":
            n, r = b.size, b.rank  # type: ignore[attr-defined]
            b.alltoallv(send, recv, alltoallv_splits(send.size, n, r), alltoallv_splits(send.size, n, r, receive=True))  # type: ignore[attr-defined]
        elif name == "sendrecv":
            b.sendrecv(send, recv)  # type: ignore[attr-defined]
        elif name == "barrier":
            b.barrier()  # type: ignore[attr-defined]
        elif name == "gather":
            if send.size:  # nccl-tests calls nothing for a count of 0
                b.gather(send, recv, root)  # type: ignore[attr-defined]
        elif name == "scatter":
            if recv.size:
                b.scatter(send, recv, root)  # type: ignore[attr-defined]
        elif name == "hypercube":
            hypercube(b, send, recv)
        else:  # pragma: no cover - the table below is closed
            raise ValueError(name)


COLLECTIVES: dict[str, Collective] = {
    c.name: c
    for c in (
        Collective("all_reduce", "all_reduce_perf", reduces=True, rooted=False, divided=False, loops_ops=True),
        Collective("all_gather", "all_gather_perf", reduces=False, rooted=False, divided=True, loops_ops=False),
        Collective("reduce_scatter", "reduce_scatter_perf", reduces=True, rooted=False, divided=True,
                   loops_ops=True),
        Collective("broadcast", "broadcast_perf", reduces=False, rooted=True, divided=False, loops_ops=False),
        Collective("reduce", "reduce_perf", reduces=True, rooted=True, divided=False, loops_ops=True),
        Collective("alltoall", "alltoall_perf", reduces=False, rooted=False, divided=True, loops_ops=False,
                   check_in_place=False),
        Collective("alltoallv", "alltoallv_perf", reduces=False, rooted=False, divided=True, loops_ops=False),
        Collective("sendrecv", "sendrecv_perf", reduces=False, rooted=False, divided=False, loops_ops=True,
                   check_in_place=False),
        Collective("barrier", "barrier_perf", reduces=False, rooted=False, divided=False, loops_ops=False,
                   check_in_place=False),
        Collective("gather", "gather_perf", reduces=False, rooted=True, divided=True, loops_ops=False),
        Collective("scatter", "scatter_perf", reduces=False, rooted=True, divided=True, loops_ops=False),
        Collective("hypercube", "hypercube_perf", reduces=False, rooted=False, divided=True, loops_ops=False,
                   op_label=""),
    )
}
BY_PROGRAM = {c.program: c for c in COLLECTIVES.values()}


def hypercube(backend: object, send: np.ndarray, recv: np.ndarray) -> None:
    """nccl-tests' ``HyperCubeRunColl``: an all-gather of ``send`` into ``recv`` (rank
    order) by lg(n) pairwise exchanges through ``backend.exchange`` (a power-of-two world).

    The rank's own block is copied in unless ``send`` already is that block (in place);
    then in round ``mask`` it sends the ``mask`` blocks from ``s = rank & ~(mask-1)`` to
    rank ``rank ^ mask`` and receives that rank's ``mask`` blocks from ``s ^ mask``.
    """
    n, rank = backend.size, backend.rank  # type: ignore[attr-defined]
    k = send.size
    mine = recv[rank * k:(rank + 1) * k]
    if k and mine.ctypes.data != send.ctypes.data:
        mine[...] = send
    mask = 1
    while mask < n:
        s = rank & ~(mask - 1)
        r = s ^ mask
        backend.exchange(recv[s * k:(s + mask) * k], recv[r * k:(r + mask) * k], rank ^ mask)  # type: ignore[attr-defined]
        mask <<= 1


def alltoallv_splits(total: int, nranks: int, rank: int, *, receive: bool = False) -> list[int]:
    """Elements ``rank`` sends to each rank (or, with ``receive``, receives from each) in
    alltoallv_perf, out of ``total`` per rank: the block to the peer at distance
    ``d = (j - rank) mod n`` weighs ``2(n - d) / (n + 1)`` times the even share (near peers
    get more, the farthest about a ``1/n`` part of it), rounded down; the rank's own block
    takes what rounding leaves. The counts depend on the distance only, so every rank sends
    and receives ``total`` elements, and rank j's receive count from i is i's send count to j."""
    n = nranks
    if n == 1:
        return [total]
    by_distance = [total * 2 * (n - d) // (n * (n + 1)) for d in range(n)]
    by_distance[0] = total - sum(by_distance[1:])
    if receive:
        return [by_distance[(rank - i) % n] for i in range(n)]
    return [by_distance[(j - rank) % n] for j in range(n)]


def sweep_sizes(minbytes: int, maxbytes: int, stepbytes: int, stepfactor: int) -> list[int]:
    """nccl-tests' size loop: ``size *= f`` when ``f > 1``, else ``size += step``.

    The C loop never ends for ``-b 0 -f 2`` or a zero step; here a 0 is followed by 1,
    and the option parser refuses a zero additive step.
    """
    sizes = []
    size = minbytes
    while size <= maxbytes:
        sizes.append(size)
        if stepfactor > 1:
            size = size * stepfactor if size else 1
        else:
            size += stepbytes
    return sizes


def warmup_sizes(minbytes: int, maxbytes: int) -> list[int]:
    """Warm-up sizes (v2.16.8+): ``minbytes`` doubling up to ``maxbytes``."""
    sizes = []
    size = minbytes
    while size <= maxbytes:
        sizes.append(size)
        size = size * 2 if size else 1
    return sizes
