"""Reduction operators and their host kernels (numpy ufuncs writing in place).

Every rank uses the same kernel, element by element with no threads racing, so a
reduction of the same operands gives the same bits everywhere. All operators here are
commutative, so ``a op b`` and ``b op a`` are bitwise equal too.
"""

from __future__ import annotations

import enum

import numpy as np

from .buffers import INTEGER_KINDS, dtype_name
from .errors import InvalidArgumentError, InvalidTypeError


class ReduceOp(enum.Enum):
    """How contributions combine (names as in torch.distributed and NCCL)."""

    SUM = "sum"
    PROD = "prod"
    MIN = "min"
    MAX = "max"
    AVG = "avg"
    BAND = "band"
    BOR = "bor"
    BXOR = "bxor"

    # Members are singletons compared by identity; Enum's own __hash__ (hash of the name,
    # in Python) cost about 0.3 us per dict lookup on the small all_reduce's path.
    __hash__ = object.__hash__

    @classmethod
    def parse(cls, op: object, name: str = "op") -> ReduceOp:
        """Accept a ReduceOp, or its name in any case ("sum", "PROD", "product")."""
        if isinstance(op, ReduceOp):
            return op
        if isinstance(op, str):
            member = _BY_NAME.get(op)
            if member is None:
                member = _BY_NAME.get(op.strip().lower())
            if member is not None:
                return member
        raise InvalidArgumentError(
            f"{name}: {op!r} is not a reduction operator (one of {', '.join(m.name for m in cls)})"
        )


_BY_NAME = {m.value: m for m in ReduceOp} | {"product": ReduceOp.PROD, "mean": ReduceOp.AVG, "average": ReduceOp.AVG}

_KERNELS = {
    ReduceOp.SUM: np.add,
    ReduceOp.AVG: np.add,
    ReduceOp.PROD: np.multiply,
    ReduceOp.MIN: np.minimum,
    ReduceOp.MAX: np.maximum,
    ReduceOp.BAND: np.bitwise_and,
    ReduceOp.BOR: np.bitwise_or,
    ReduceOp.BXOR: np.bitwise_xor,
}


_BITWISE = frozenset((ReduceOp.BAND, ReduceOp.BOR, ReduceOp.BXOR))
_ORDERED = frozenset((ReduceOp.MIN, ReduceOp.MAX))


def check_op(op: ReduceOp, dtype: np.dtype, name: str = "op") -> None:
    """Refuse dtype/op pairs that have no meaning (bitwise on floats, min on complex)."""
    kind = dtype.kind
    if op in _BITWISE and kind not in INTEGER_KINDS:
        raise InvalidTypeError(f"{name}: {op.name} needs an integer dtype, not {dtype_name(dtype)}")
    if op in _ORDERED and kind == "c":
        raise InvalidTypeError(f"{name}: {op.name} is undefined for complex dtype {dtype_name(dtype)}")


def kernel_of(op: ReduceOp) -> np.ufunc:
    """The ufunc that combines two operands of ``op`` (AVG sums; ``finalize`` divides)."""
    return _KERNELS[op]


def reduce_into(op: ReduceOp, dst: np.ndarray, src: np.ndarray) -> None:
    """``dst = dst op src`` in place."""
    _KERNELS[op](dst, src, out=dst)


def fold_received(op: ReduceOp, dst: np.ndarray, received: np.ndarray, received_first: bool) -> None:
    """``dst = dst op received`` in place, or ``received op dst`` with ``received_first``
    (a schedule's reducing receive, ``Recv.first``)."""
    if received_first:
        _KERNELS[op](received, dst, out=dst)
    else:
        _KERNELS[op](dst, received, out=dst)


def reduce_pair(op: ReduceOp, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out = a op b`` (saves the copy of ``a`` into ``out`` that reduce_into would need)."""
    _KERNELS[op](a, b, out=out)


def finalize(op: ReduceOp, result: np.ndarray, world_size: int) -> None:
    """Post-operation on a reduced result: AVG divides by the world size.

    Integers divide truncating toward zero (as C and NCCL do); floats divide in their own
    precision.
    """
    if op is not ReduceOp.AVG or world_size == 1 or result.size == 0:
        return
    if result.dtype.kind in INTEGER_KINDS:
        # floor division, then one step back toward zero where a negative value had a rest
        adjust = (result < 0) & (result % world_size != 0) if result.dtype.kind == "i" else None
        np.floor_divide(result, world_size, out=result)
        if adjust is not None:
            np.add(result, 1, out=result, where=adjust)
    else:
        np.divide(result, result.dtype.type(world_size), out=result)
