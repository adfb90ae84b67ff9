"""Reference results of every collective, computed centrally with numpy.

Each function takes the per-rank inputs (``inputs[r]`` is what rank ``r`` passed) and
returns what each rank must end with, as a list indexed by rank, so a test can compare
``results[r]`` with ``expected[r]`` for every collective the same way::

    inputs = [rank_input(r, 10, np.float32, ReduceOp.SUM) for r in range(4)]
    results = run_world(lambda comm: comm.all_reduce(inputs[comm.rank].copy()), 4)
    for got, want in zip(results, all_reduce(inputs, ReduceOp.SUM)):
        assert_close(got, want, op=ReduceOp.SUM, world_size=4, scale=error_scale(inputs, ReduceOp.SUM))

Semantics (those of the library):

* Integer reductions wrap modulo 2**bits exactly as numpy's ufuncs do in the dtype
  (SUM and PROD modulo 2**bits are associative and commutative, so the result does not
  depend on the order the library reduces in).
* AVG divides the (wrapped) integer sum by the world size truncating toward zero, and a
  float sum by the world size.
* Float reductions are computed in float64 (complex128 for complex64) and rounded once to
  the dtype; the library rounds at every step, so floats are compared within
  :func:`tolerance` times :func:`error_scale`.
* Data movement (broadcast, gather, scatter, all_gather, all_to_all, all_to_all_v) is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..buffers import BFLOAT16, INTEGER_KINDS, SUPPORTED_DTYPES
from ..ops import ReduceOp

__all__ = [
    "all_gather",
    "all_reduce",
    "all_to_all",
    "all_to_all_v",
    "assert_close",
    "broadcast",
    "error_scale",
    "gather",
    "ops_for",
    "rank_input",
    "reduce",
    "reduce_scatter",
    "scatter",
    "tolerance",
]

BITWISE_OPS = (ReduceOp.BAND, ReduceOp.BOR, ReduceOp.BXOR)


# -- dtypes and operators -------------------------------------------------------------------


def _is_int(dtype: np.dtype) -> bool:
    return dtype.kind in INTEGER_KINDS


def _is_complex(dtype: np.dtype) -> bool:
    return dtype.kind == "c"


def ops_for(dtype: Any) -> tuple[ReduceOp, ...]:
    """The reduction operators defined for ``dtype`` (bitwise: integers; MIN/MAX: not complex)."""
    dtype = np.dtype(dtype)
    if _is_int(dtype):
        return tuple(ReduceOp)
    if _is_complex(dtype):
        return (ReduceOp.SUM, ReduceOp.PROD, ReduceOp.AVG)
    return (ReduceOp.SUM, ReduceOp.PROD, ReduceOp.MIN, ReduceOp.MAX, ReduceOp.AVG)


def _eps(dtype: np.dtype) -> float:
    if BFLOAT16 is not None and dtype == BFLOAT16:
        return 2.0**-7
    if _is_complex(dtype):
        return float(np.finfo(np.float32 if dtype == np.complex64 else np.float64).eps)
    return float(np.finfo(dtype).eps)


def _tiny(dtype: np.dtype) -> float:
    """The spacing of the dtype's subnormals (its smallest positive value)."""
    if BFLOAT16 is not None and dtype == BFLOAT16:
        import ml_dtypes

        return float(ml_dtypes.finfo(ml_dtypes.bfloat16).smallest_subnormal)
    real = np.float32 if dtype == np.complex64 else np.float64 if _is_complex(dtype) else dtype
    return float(np.finfo(real).smallest_subnormal)


def _wide(dtype: np.dtype) -> np.dtype:
    """The dtype a float reference is computed in."""
    return np.dtype(np.complex128) if _is_complex(dtype) else np.dtype(np.float64)


_UFUNCS = {
    ReduceOp.SUM: np.add,
    ReduceOp.AVG: np.add,
    ReduceOp.PROD: np.multiply,
    ReduceOp.MIN: np.minimum,
    ReduceOp.MAX: np.maximum,
    ReduceOp.BAND: np.bitwise_and,
    ReduceOp.BOR: np.bitwise_or,
    ReduceOp.BXOR: np.bitwise_xor,
}


def tolerance(dtype: Any, world_size: int, op: ReduceOp | None = None) -> float:
    """Relative error allowed for a float result of ``op`` over ``world_size`` ranks.

    It is ``2·world_size`` units of the dtype's epsilon: a sum of ``p`` terms in any order
    is off by at most ``(p-1)·eps/2·Σ|xᵢ|`` plus one final rounding, a product by
    ``(p-1)·eps/2·|Π xᵢ|`` (a complex product by up to √5·eps/2 per step, hence the factor 2;
    the result's own rounding to the dtype is allowed on top, see :func:`assert_close`).
    Multiply it by :func:`error_scale` for an absolute bound per element.

    Zero for integers (exact, wrapping), for MIN/MAX (they pick an operand, no rounding)
    and for ``op=None`` (data movement).
    """
    dtype = np.dtype(dtype)
    if _is_int(dtype) or op is None or op in (ReduceOp.MIN, ReduceOp.MAX) or op in BITWISE_OPS:
        return 0.0
    return 2.0 * _eps(dtype) * max(1, world_size)


def error_scale(inputs: Sequence[np.ndarray], op: ReduceOp | None) -> np.ndarray:
    """Per-element magnitude that :func:`tolerance` is relative to (float64).

    SUM: Σ|xᵢ| (rounding error scales with the partial sums, not the result, which may
    cancel to 0); AVG: Σ|xᵢ| / p; PROD: |Π xᵢ|; anything else: |x| of the first input.
    """
    arrays = [np.asarray(x).reshape(-1) for x in inputs]
    if not arrays:
        return np.zeros(0)
    stack = np.stack([np.abs(a.astype(_wide(a.dtype))).astype(np.float64) for a in arrays])
    if op in (ReduceOp.SUM, ReduceOp.AVG):
        total: np.ndarray = stack.sum(axis=0)
        return total / len(arrays) if op is ReduceOp.AVG else total
    if op is ReduceOp.PROD:
        product: np.ndarray = np.prod(stack, axis=0)
        return product
    first: np.ndarray = stack[0]
    return first


def _widened(a: np.ndarray) -> np.ndarray:
    return a.astype(np.complex128) if _is_complex(a.dtype) else a.astype(np.float64)


def assert_close(
    actual: Any,
    expected: np.ndarray,
    *,
    op: ReduceOp | None,
    world_size: int,
    scale: np.ndarray | None = None,
    what: str = "result",
) -> None:
    """Integers (and data movement, MIN, MAX): equal bits. Floats: within
    ``tolerance · scale`` (``scale`` from :func:`error_scale`; ``|expected|`` if None).

    The dtype and length must match exactly either way.
    """
    got = np.ascontiguousarray(actual)
    expected = np.ascontiguousarray(expected)
    assert got.dtype == expected.dtype, f"{what}: dtype {got.dtype} != expected {expected.dtype}"
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != expected {expected.shape}"
    tol = tolerance(expected.dtype, world_size, op)
    if tol == 0.0:
        if not np.array_equal(got.view(np.uint8), expected.view(np.uint8)):
            width = expected.dtype.itemsize
            got_bytes = got.reshape(-1).view(np.uint8).reshape(-1, width)
            bad = np.flatnonzero((got_bytes != expected.reshape(-1).view(np.uint8).reshape(-1, width)).any(axis=1))
            got, expected = got.reshape(-1), expected.reshape(-1)
            raise AssertionError(
                f"{what}: not bitwise equal to the reference at {len(bad)} element(s), "
                f"first {bad[:5].tolist()}: got {got[bad[:5]].tolist()}, want {expected[bad[:5]].tolist()}"
            )
        return
    g, e = _widened(got), _widened(expected)
    if scale is None:
        scale = np.abs(e)
    limit = tol * np.asarray(scale, dtype=np.float64)
    # a result of the dtype is rounded once more than the float64 reference, and results
    # in the subnormal range are off by up to a spacing there
    limit = limit + _eps(expected.dtype) * np.abs(e) + world_size * _tiny(expected.dtype)
    err = np.abs(g - e)
    bad = np.flatnonzero(~(err <= limit))  # NaN counts as bad
    if bad.size:
        i = bad[:5]
        raise AssertionError(
            f"{what}: {bad.size} element(s) off by more than the tolerance {tol:g}·scale, first at "
            f"{i.tolist()}: got {g[i].tolist()}, want {e[i].tolist()}, allowed {limit[i].tolist()}"
        )


# -- inputs ---------------------------------------------------------------------------------


def _mix(rank: int, index: np.ndarray, seed: int) -> np.ndarray:
    """A deterministic pseudo-random uint64 per (seed, rank, index) (splitmix64)."""
    with np.errstate(over="ignore"):
        z = (index.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
             + np.uint64((rank * 0x632BE59BD9B4E019 + seed * 0xD1B54A32D192ED03 + 0x8CB92BA72F3D8DD7) % 2**64))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        mixed: np.ndarray = z ^ (z >> np.uint64(31))
        return mixed


def rank_input(rank: int, count: int, dtype: Any, op: ReduceOp | None = None, *,
               seed: int = 0, exact: bool = True) -> np.ndarray:
    """The input rank ``rank`` contributes: ``count`` elements of ``dtype``, a function of
    (seed, rank, index) only, never constant across ranks or indices.

    * integers: any bit pattern of the dtype (so sums and products wrap, bitwise ops see
      every bit); values differ between ranks and elements. For PROD odd values (a product
      mod 2**bits never becomes 0), for BAND mostly-set and for BOR mostly-clear bits (so
      the result over 9 ranks still depends on every rank).
    * floats with SUM/AVG/MIN/MAX, ``exact=True``: multiples of 1/2 in [-8, 8] (sums of up to
      16 of them are exact even in bfloat16) mixed with the rank and index so MIN/MAX
      winners move around; ``exact=False``: values of magnitude in [1/8, 1) with full mantissas, so the
      reduction order changes the rounding (for determinism checks).
    * floats with PROD: ±1 and ±2 (``exact=True``; a product over 9 ranks is at most 512)
      or ±(1 + small) (``exact=False``); stays finite in float16 and bfloat16.
    * complex: real and imaginary parts as above (for PROD, units ±1, ±i and 1±i).
    """
    dtype = np.dtype(dtype)
    idx = np.arange(count, dtype=np.uint64)
    bits = _mix(rank, idx, seed)
    if _is_int(dtype):
        raw = bits
        if op is ReduceOp.PROD:  # odd factors: a product mod 2**bits never collapses to 0
            raw = raw | np.uint64(1)
        elif op is ReduceOp.BAND:  # bits mostly set, so the AND over 9 ranks is not all 0
            raw = raw | _mix(rank + 31, idx, seed) | _mix(rank + 37, idx, seed)
        elif op is ReduceOp.BOR:  # bits mostly clear, so the OR over 9 ranks is not all 1
            raw = raw & _mix(rank + 31, idx, seed) & _mix(rank + 37, idx, seed)
        width = dtype.itemsize * 8
        if width < 64:
            raw = raw & np.uint64((1 << width) - 1)
        unsigned = np.dtype(f"u{dtype.itemsize}")
        ints: np.ndarray = raw.astype(unsigned).view(dtype).copy()
        return ints
    if _is_complex(dtype):
        if op is ReduceOp.PROD:
            units = np.array([1, -1, 1j, -1j, 1 + 1j, 1 - 1j], dtype=np.complex128)
            values: np.ndarray = units[(bits % np.uint64(len(units))).astype(np.intp)]
            if not exact:
                values = values * (1 + _unit_float(_mix(rank + 7919, idx, seed)) / 64)
            return values.astype(dtype)
        part = np.dtype(np.float64)
        re = _real_values(bits, op, exact, part)
        im = _real_values(_mix(rank + 104729, idx, seed), op, exact, part)
        pairs: np.ndarray = re + 1j * im
        return pairs.astype(dtype)
    return _real_values(bits, op, exact, np.dtype(np.float64)).astype(dtype)


def _unit_float(bits: np.ndarray) -> np.ndarray:
    """Floats in [-1, 1) from the top 53 bits."""
    top: np.ndarray = bits >> np.uint64(11)
    return top.astype(np.float64) / float(1 << 52) - 1.0


def _real_values(bits: np.ndarray, op: ReduceOp | None, exact: bool, dtype: np.dtype) -> np.ndarray:
    if op is ReduceOp.PROD:
        sign = np.where((bits & np.uint64(1)) == 0, 1.0, -1.0)
        if exact:
            magnitude = np.where((bits & np.uint64(2)) == 0, 1.0, 2.0)
        else:
            magnitude = 1.0 + _unit_float(bits) / 64
        return sign * magnitude
    if exact:
        residue: np.ndarray = bits % np.uint64(33)
        return (residue.astype(np.float64) - 16.0) / 2.0
    sign = np.where((bits & np.uint64(1)) == 0, 1.0, -1.0)
    return sign * (0.125 + 0.875 * (_unit_float(bits) + 1.0) / 2.0)


# -- collectives ----------------------------------------------------------------------------


def _check_inputs(inputs: Sequence[Any]) -> list[np.ndarray]:
    arrays = [np.asarray(x).reshape(-1) for x in inputs]
    if not arrays:
        raise ValueError("inputs: need one input per rank (world size >= 1)")
    dtype, size = arrays[0].dtype, arrays[0].size
    for r, a in enumerate(arrays):
        if a.dtype != dtype:
            raise ValueError(f"inputs[{r}]: dtype {a.dtype} differs from inputs[0]'s {dtype}")
        if a.size != size:
            raise ValueError(f"inputs[{r}]: {a.size} elements, inputs[0] has {size}")
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"inputs: dtype {dtype} is not supported")
    return arrays


def _avg_int(total: np.ndarray, world_size: int) -> np.ndarray:
    """Divide the wrapped integer sum by the world size, truncating toward zero: in 64 bits,
    where every integer dtype's values and their quotients are exact, floor division
    moved up by one for the negative sums it does not divide."""
    wide = total.astype(np.int64 if total.dtype.kind == "i" else np.uint64)
    quotient = wide // world_size
    if total.dtype.kind == "i":
        quotient += (wide < 0) & (wide % world_size != 0)
    return quotient.astype(total.dtype)


def _reduce_all(arrays: list[np.ndarray], op: ReduceOp) -> np.ndarray:
    """The reduction of every rank's array, in the inputs' dtype."""
    op = ReduceOp.parse(op)
    dtype = arrays[0].dtype
    if op in BITWISE_OPS and not _is_int(dtype):
        raise ValueError(f"op: {op.name} needs an integer dtype, not {dtype}")
    if op in (ReduceOp.MIN, ReduceOp.MAX) and _is_complex(dtype):
        raise ValueError(f"op: {op.name} is undefined for complex {dtype}")
    ufunc = _UFUNCS[op]
    n = len(arrays)
    if _is_int(dtype):
        acc: np.ndarray = arrays[0].copy()
        with np.errstate(over="ignore"):
            for a in arrays[1:]:
                ufunc(acc, a, out=acc)
        return _avg_int(acc, n) if op is ReduceOp.AVG and n > 1 else acc
    wide = _wide(dtype)
    acc = arrays[0].astype(wide)
    for a in arrays[1:]:
        ufunc(acc, a.astype(wide), out=acc)
    if op is ReduceOp.AVG:
        acc = acc / n
    return acc.astype(dtype)


def all_reduce(inputs: Sequence[Any], op: ReduceOp = ReduceOp.SUM) -> list[np.ndarray]:
    """Every rank ends with the reduction of all inputs."""
    arrays = _check_inputs(inputs)
    result = _reduce_all(arrays, op)
    return [result.copy() for _ in arrays]


def reduce_scatter(inputs: Sequence[Any], op: ReduceOp = ReduceOp.SUM) -> list[np.ndarray]:
    """Inputs hold ``p·k`` elements; rank r ends with block r (``k`` elements) of the reduction."""
    arrays = _check_inputs(inputs)
    p = len(arrays)
    if arrays[0].size % p:
        raise ValueError(f"inputs: {arrays[0].size} elements is not a multiple of the world size {p}")
    k = arrays[0].size // p
    result = _reduce_all(arrays, op)
    return [result[r * k : (r + 1) * k].copy() for r in range(p)]


def all_gather(inputs: Sequence[Any]) -> list[np.ndarray]:
    """Every rank ends with all inputs concatenated in rank order."""
    arrays = _check_inputs(inputs)
    joined = np.concatenate(arrays)
    return [joined.copy() for _ in arrays]


def broadcast(inputs: Sequence[Any], root: int = 0) -> list[np.ndarray]:
    """Every rank ends with the root's input."""
    arrays = _check_inputs(inputs)
    _check_root(root, len(arrays))
    return [arrays[root].copy() for _ in arrays]


def reduce(inputs: Sequence[Any], root: int = 0, op: ReduceOp = ReduceOp.SUM) -> list[np.ndarray]:
    """The root ends with the reduction; every other rank keeps its input unchanged."""
    arrays = _check_inputs(inputs)
    _check_root(root, len(arrays))
    result = _reduce_all(arrays, op)
    return [result if r == root else a.copy() for r, a in enumerate(arrays)]


def gather(inputs: Sequence[Any], root: int = 0) -> list[np.ndarray | None]:
    """The root ends with all inputs concatenated in rank order; the others with None."""
    arrays = _check_inputs(inputs)
    _check_root(root, len(arrays))
    joined = np.concatenate(arrays)
    return [joined if r == root else None for r in range(len(arrays))]


def scatter(inputs: Sequence[Any], root: int = 0) -> list[np.ndarray]:
    """The root's input (``p·k`` elements) is split in rank order; rank r gets block r.
    Only ``inputs[root]`` is read (the others may be None)."""
    p = len(inputs)
    _check_root(root, p)
    source = np.asarray(inputs[root]).reshape(-1)
    if source.size % p:
        raise ValueError(f"inputs[{root}]: {source.size} elements is not a multiple of the world size {p}")
    k = source.size // p
    return [source[r * k : (r + 1) * k].copy() for r in range(p)]


def all_to_all(inputs: Sequence[Any]) -> list[np.ndarray]:
    """Inputs hold ``p·k`` elements; block j of rank i's input becomes block i of rank j's output."""
    arrays = _check_inputs(inputs)
    p = len(arrays)
    if arrays[0].size % p:
        raise ValueError(f"inputs: {arrays[0].size} elements is not a multiple of the world size {p}")
    k = arrays[0].size // p
    return [np.concatenate([arrays[i][j * k : (j + 1) * k] for i in range(p)]) for j in range(p)]


def all_to_all_v(inputs: Sequence[Any], splits: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """Rank i sends ``splits[i][j]`` elements (consecutive blocks of its input, in rank
    order) to rank j; rank j's output is the blocks sent to it, in sender order. Rank j's
    ``out_splits`` are therefore ``[splits[i][j] for i]``. Inputs may differ in size."""
    arrays = [np.asarray(x).reshape(-1) for x in inputs]
    p = len(arrays)
    if len(splits) != p or any(len(s) != p for s in splits):
        raise ValueError(f"splits: need {p} rows of {p} counts (one per sender and receiver)")
    starts = []
    for i, (a, row) in enumerate(zip(arrays, splits)):
        if a.dtype != arrays[0].dtype:
            raise ValueError(f"inputs[{i}]: dtype {a.dtype} differs from inputs[0]'s {arrays[0].dtype}")
        if sum(row) != a.size:
            raise ValueError(f"splits[{i}]: adds up to {sum(row)}, inputs[{i}] has {a.size} elements")
        starts.append(np.concatenate([[0], np.cumsum(row, dtype=np.int64)]))
    dtype = arrays[0].dtype if arrays else np.dtype(np.float32)
    return [
        np.concatenate([arrays[i][starts[i][j] : starts[i][j + 1]] for i in range(p)]).astype(dtype, copy=False)
        for j in range(p)
    ]


def _check_root(root: int, world_size: int) -> None:
    if not 0 <= root < world_size:
        raise ValueError(f"root: {root} is out of range for world size {world_size}")
