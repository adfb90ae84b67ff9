"""Inputs whose collective result is exactly known, and the element-by-element check.

The idea of nccl-tests' ``verifiable/``: every input element is a hash of (seed, element
index, rank), built so that the reduced value is the same *bit pattern* whatever order the
ranks are combined in. Then a result is compared bit for bit with an independently
computed expectation (floating ``avg``: within 2 units in the last place, like nccl-tests).

Floats (``p`` = significand bits incl. the hidden one, 11 half, 8 bfloat16, 24 float,
53 double):

* **sum / avg**: element ``i`` gets one exponent ``E_i`` and one sign for all ranks, and
  rank ``r`` contributes ``X_r * 2**E_i`` with an integer ``1 <= X_r <= (2**p - 1) // n``.
  Every partial sum is an integer multiple of ``2**E_i`` below ``2**p * 2**E_i``, hence
  exactly representable: any summation order gives the same bits. The expected sum is
  ``(sum of X_r) * 2**E_i``, computed with integers. ``avg`` expects that exact sum
  divided by ``n`` in the type (one correctly rounded division).
* **prod**: one rank (chosen per element) contributes a full ``p``-bit significand, every
  other rank ``+-2**k`` with ``k`` in {-1, 0, 1}; the product is exact and in range.
* **min / max**: any finite values; selection is exact.

Integers: hashed bits; sums and products wrap modulo 2**bits (the same in any order;
products use odd inputs so they do not collapse to 0); integer avg is the wrapped sum
divided by ``n`` truncating toward zero (C / NCCL semantics).

Only numpy is used; generation is vectorised (a splitmix64 hash per element).
"""

from __future__ import annotations

import numpy as np

from .colls import Collective, alltoallv_splits

_M64 = (1 << 64) - 1
_FLOAT_FORMAT = {  # dtype name -> (significand bits p, emin, emax) of the normal numbers
    "float16": (11, -14, 15),
    "bfloat16": (8, -126, 127),
    "float32": (24, -126, 127),
    "float64": (53, -1022, 1023),
}
_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _mix_int(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def hash64(seed: int, stream: int, ix0: int, count: int) -> np.ndarray:
    """``count`` pseudo-random uint64 for element indices ``ix0..ix0+count-1``."""
    key = _mix_int((seed * 0xD1B54A32D192ED03 + stream * 0x8CB92BA72F3D8DD7 + 0x632BE59BD9B4E019) & _M64)
    x = np.arange(ix0, ix0 + count, dtype=np.uint64)
    x ^= np.uint64(key)
    x += np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


# streams: 0 nil data; 1..n rank contributions; these for per-element choices
_S_EXP, _S_SIGN, _S_PICK = 1 << 40, (1 << 40) + 1, (1 << 40) + 2


def dtype_key(dtype: np.dtype) -> str:
    return "bfloat16" if dtype.name == "bfloat16" else dtype.name


def is_float(dtype: np.dtype) -> bool:
    return dtype_key(dtype) in _FLOAT_FORMAT


def _exp_range(dtype: np.dtype, spread: int = 0) -> tuple[int, int]:
    """Exponents E with X * 2**E normal and finite for 1 <= X < 2**p (the middle half of
    that range), narrowed by ``spread`` on both sides."""
    p, emin, emax = _FLOAT_FORMAT[dtype_key(dtype)]
    lo, hi = emin, emax + 1 - p
    quarter = (hi - lo) // 4
    lo, hi = lo + quarter, hi - quarter
    if hi - lo >= 2 * spread:
        return lo + spread, hi - spread
    mid = (lo + hi) // 2
    return mid, mid


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return values.astype(dtype)


def _float_from(x: np.ndarray, exponent: np.ndarray, negative: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """sign * x * 2**exponent, exact (x < 2**53), converted to ``dtype`` (exact too)."""
    v = np.ldexp(x.astype(np.float64), exponent.astype(np.int32))
    np.negative(v, out=v, where=negative)
    return _to_dtype(v, dtype)


def _element_exponent(seed: int, ix0: int, count: int, dtype: np.dtype, spread: int = 0) -> np.ndarray:
    lo, hi = _exp_range(dtype, spread)
    h = hash64(seed, _S_EXP, ix0, count)
    return (h % np.uint64(hi - lo + 1)).astype(np.int64) + lo


def _element_negative(seed: int, ix0: int, count: int) -> np.ndarray:
    return (hash64(seed, _S_SIGN, ix0, count) >> np.uint64(63)).astype(bool)


def nil_data(seed: int, ix0: int, count: int, dtype: np.dtype) -> np.ndarray:
    """Data that is only moved, never combined: hashed bits (floats: finite, normal)."""
    h = hash64(seed, 0, ix0, count)
    if not is_float(dtype):
        return h.astype(_UNSIGNED[dtype.itemsize]).view(dtype)
    p = _FLOAT_FORMAT[dtype_key(dtype)][0]
    x = (h >> np.uint64(11)) % np.uint64((1 << p) - 1) + np.uint64(1)
    lo, hi = _exp_range(dtype)
    exponent = (h % np.uint64(hi - lo + 1)).astype(np.int64) + lo
    negative = (h >> np.uint64(63)).astype(bool)
    return _float_from(x, exponent, negative, dtype)


class Reduction:
    """Rank inputs and the exact result of ``op`` over ``nranks`` ranks, for a seed."""

    def __init__(self, op: str, dtype: np.dtype, nranks: int, seed: int) -> None:
        self.op, self.dtype, self.nranks, self.seed = op, dtype, nranks, seed
        self.float = is_float(dtype)
        if self.float:
            self.p = _FLOAT_FORMAT[dtype_key(dtype)][0]
            self.sum_bound = max(1, ((1 << self.p) - 1) // nranks)
            lo, hi = _exp_range(dtype, spread=nranks - 1)
            self.prod_k = 3 if hi > lo or nranks == 1 else 1  # k in {-1,0,1}, or {0} if no room

    # -- floats -----------------------------------------------------------------------------

    def _sum_x(self, rank: int, ix0: int, count: int) -> np.ndarray:
        h = hash64(self.seed, rank + 1, ix0, count)
        return h % np.uint64(self.sum_bound) + np.uint64(1)

    def _prod_parts(self, rank: int, ix0: int, count: int) -> np.ndarray:
        """float64 contribution of ``rank`` to the product (exact)."""
        h = hash64(self.seed, rank + 1, ix0, count)
        pick = hash64(self.seed, _S_PICK, ix0, count) % np.uint64(self.nranks)
        mine = pick == np.uint64(rank)
        k = ((h % np.uint64(self.prod_k)).astype(np.int64) - (1 if self.prod_k == 3 else 0))
        half = np.uint64(1 << (self.p - 1))
        mantissa = (h >> np.uint64(8)) % half + half
        exponent = _element_exponent(self.seed, ix0, count, self.dtype, spread=self.nranks - 1)
        value = np.where(mine, np.ldexp(mantissa.astype(np.float64), exponent.astype(np.int32)),
                         np.ldexp(np.ones(count), k.astype(np.int32)))
        negative = (h >> np.uint64(63)).astype(bool)
        np.negative(value, out=value, where=negative)
        return value

    def _minmax_parts(self, rank: int, ix0: int, count: int) -> np.ndarray:
        h = hash64(self.seed, rank + 1, ix0, count)
        x = (h >> np.uint64(11)) % np.uint64((1 << self.p) - 1) + np.uint64(1)
        lo, hi = _exp_range(self.dtype)
        exponent = (h % np.uint64(hi - lo + 1)).astype(np.int64) + lo
        return _float_from(x, exponent, (h >> np.uint64(63)).astype(bool), self.dtype)

    # -- integers ---------------------------------------------------------------------------

    def _int_parts(self, rank: int, ix0: int, count: int) -> np.ndarray:
        h = hash64(self.seed, rank + 1, ix0, count)
        if self.op == "prod":
            h |= np.uint64(1)
        return h.astype(_UNSIGNED[self.dtype.itemsize]).view(self.dtype)

    # -- public -----------------------------------------------------------------------------

    def input(self, rank: int, ix0: int, count: int) -> np.ndarray:
        """Rank ``rank``'s input for elements ``ix0..ix0+count-1``."""
        if not self.float:
            return self._int_parts(rank, ix0, count)
        if self.op in ("sum", "avg"):
            x = self._sum_x(rank, ix0, count)
            return _float_from(x, _element_exponent(self.seed, ix0, count, self.dtype),
                               _element_negative(self.seed, ix0, count), self.dtype)
        if self.op == "prod":
            return _to_dtype(self._prod_parts(rank, ix0, count), self.dtype)
        return self._minmax_parts(rank, ix0, count)

    def expected(self, ix0: int, count: int) -> np.ndarray:
        """The reduced result for elements ``ix0..ix0+count-1`` (every rank regenerated)."""
        n = self.nranks
        if not self.float:
            acc = self._int_parts(0, ix0, count).copy()
            kernel = {"sum": np.add, "avg": np.add, "prod": np.multiply, "max": np.maximum, "min": np.minimum}[self.op]
            with np.errstate(over="ignore"):
                for r in range(1, n):
                    kernel(acc, self._int_parts(r, ix0, count), out=acc)
            if self.op == "avg":
                acc = int_average(acc, n)
            return acc
        if self.op in ("sum", "avg"):
            total = np.zeros(count, dtype=np.uint64)
            for r in range(n):
                total += self._sum_x(r, ix0, count)
            result = _float_from(total, _element_exponent(self.seed, ix0, count, self.dtype),
                                 _element_negative(self.seed, ix0, count), self.dtype)
            if self.op == "avg":
                result = float_average(result, n)
            return result
        if self.op == "prod":
            acc = np.ones(count)
            for r in range(n):
                acc *= self._prod_parts(r, ix0, count)
            return _to_dtype(acc, self.dtype)
        acc = self._minmax_parts(0, ix0, count)
        kernel = np.maximum if self.op == "max" else np.minimum
        for r in range(1, n):
            acc = kernel(acc, self._minmax_parts(r, ix0, count))
        return acc


def int_average(total: np.ndarray, n: int) -> np.ndarray:
    """A wrapped integer sum divided by ``n``, truncating toward zero (C semantics)."""
    if total.dtype.kind == "u" or n == 1:
        return total // total.dtype.type(n)
    wide = total.astype(np.int64)
    q = np.abs(wide) // n
    return np.where(wide < 0, -q, q).astype(total.dtype)


def float_average(total: np.ndarray, n: int) -> np.ndarray:
    """A sum divided by ``n`` in its own type (what our library and nccl-tests expect)."""
    return np.divide(total, total.dtype.type(n))


def finalize_average(buf: np.ndarray, n: int) -> None:
    """In place: turn a summed buffer into the average (for peers with no native avg)."""
    if n == 1 or buf.size == 0:
        return
    buf[...] = int_average(buf, n) if not is_float(buf.dtype) else float_average(buf, n)


# -- per collective -------------------------------------------------------------------------


def prepare(coll: Collective, dtype: np.dtype, op: str, nranks: int, rank: int, root: int, count: int,
            seed: int, send: np.ndarray, recv: np.ndarray) -> np.ndarray | None:
    """Zero ``recv``, fill ``send`` for verification round ``seed``, and return what
    ``recv`` must hold afterwards (None when this collective/placement is not checked).

    ``send``/``recv`` may overlap (in place); the layouts are those of Collective.buffers.
    """
    n = nranks
    recv[...] = 0
    name = coll.name
    if name in ("all_reduce", "reduce"):
        red = Reduction(op, dtype, n, seed)
        send[...] = red.input(rank, 0, count)
        if name == "reduce" and rank != root:
            return recv.copy()  # untouched: zeros out of place, the own input in place
        return red.expected(0, count)
    if name == "reduce_scatter":
        red = Reduction(op, dtype, n, seed)
        send[...] = red.input(rank, 0, n * count)
        return red.expected(rank * count, count)
    if name == "broadcast":
        data = nil_data(seed, 0, count, dtype)
        if rank == root:
            send[...] = data
        return data
    if name in ("all_gather", "hypercube"):
        send[...] = nil_data(33 * seed + rank, 0, count, dtype)
        return np.concatenate([nil_data(33 * seed + j, 0, count, dtype) for j in range(n)]) if n else recv.copy()
    if name == "alltoall":
        send[...] = nil_data(33 * seed + rank, 0, n * count, dtype)
        return np.concatenate([nil_data(33 * seed + j, rank * count, count, dtype) for j in range(n)])
    if name == "alltoallv":  # rank j's block for this rank starts where j's splits put it
        total = n * count
        send[...] = nil_data(33 * seed + rank, 0, total, dtype)
        blocks = []
        for j in range(n):
            counts = alltoallv_splits(total, n, j)
            start = sum(counts[:rank])
            blocks.append(nil_data(33 * seed + j, start, counts[rank], dtype))
        return np.concatenate(blocks)
    if name == "gather":  # one sequence, rank r's slice r; a non-root's recv stays as it is
        send[...] = nil_data(seed, rank * count, count, dtype)
        return nil_data(seed, 0, n * count, dtype) if rank == root else recv.copy()
    if name == "scatter":  # the root holds the whole sequence; rank r gets slice r
        if rank == root:
            send[...] = nil_data(seed, 0, n * count, dtype)
        return nil_data(seed, rank * count, count, dtype)
    if name == "sendrecv":
        send[...] = nil_data(seed, rank * count, count, dtype)
        return nil_data(seed, ((rank - 1) % n) * count, count, dtype)
    return None


def count_wrong(result: np.ndarray, expected: np.ndarray, *, tolerance: int = 0) -> int:
    """Elements whose bit patterns differ (by more than ``tolerance`` units, as integers)."""
    if result.size != expected.size:
        return max(result.size, expected.size)
    if result.size == 0:
        return 0
    unsigned = _UNSIGNED[result.dtype.itemsize]
    a = np.ascontiguousarray(result).view(unsigned)
    b = np.ascontiguousarray(expected).astype(result.dtype, copy=False).view(unsigned)
    if tolerance == 0:
        return int(np.count_nonzero(a != b))
    diff = np.abs(a.astype(np.int64) - b.astype(np.int64))
    return int(np.count_nonzero(diff > tolerance))


def tolerance(dtype: np.dtype, op: str) -> int:
    """nccl-tests: floating avg may be 2 ULP off (pre-multiply precision); else exact."""
    return 2 if op == "avg" and is_float(dtype) else 0
