"""Tensors as the core takes them: contiguous, without lazy conjugation or negation.

torch accepts what the core refuses (a non-contiguous view, a slice of a bigger buffer, a
tensor with a conjugate or negative bit). At the edge the backend makes a stand-in
(:class:`StandIn`): the tensor itself when it already is plain, else a plain copy on the
tensor's own device, copied back into the caller's tensor after the call where it is an
output. Device tensors go to the core as they are: on the device where the communicator
has a device path (``cuda_ipc``, docs/gpu.md), else ``collectives.staging`` moves them
through (pinned) host memory; either way on the issuing thread's current stream
(:func:`caller_stream`).

Data-movement collectives (broadcast, gathers, scatter, all-to-all, point-to-point) move
raw bytes (:func:`raw`), so every dtype torch has works there (bool, float8, complex32,
...). Reductions need a dtype the core reduces (:func:`numeric`): bool is reduced as
uint8 with the operator translated (SUM is OR, PRODUCT is AND, as gloo does), bfloat16
through ml_dtypes.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.distributed as dist

from ..buffers import torch_numpy_dtype
from ..errors import InvalidTypeError
from ..ops import ReduceOp, check_op
from .errors import InvalidOperation

RedOpType: Any = dist.ReduceOp.RedOpType  # Any: torch's stubs lack its members (SUM, AVG, ...)

_INTEGRAL = {
    torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
    torch.uint16, torch.uint32, torch.uint64,
}
_FLOATING = {torch.float16, torch.bfloat16, torch.float32, torch.float64}
_COMPLEX = {torch.complex64, torch.complex128}
REDUCIBLE = _INTEGRAL | _FLOATING | _COMPLEX | {torch.bool}


def is_plain(t: torch.Tensor) -> bool:
    """A contiguous CPU tensor numpy can view as it is."""
    return t.is_cpu and is_core_layout(t)


def is_core_layout(t: torch.Tensor) -> bool:
    """Contiguous and strided, without lazy conjugation or negation: the core takes it (on any device)."""
    return t.is_contiguous() and not t.is_conj() and not t.is_neg() and t.layout == torch.strided


def check_tensor(t: Any, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise InvalidOperation(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise InvalidOperation(f"{name}: {t.layout} tensors are not supported by the collectives backend")
    if t.is_quantized:
        raise InvalidOperation(f"{name}: quantized tensors are not supported by the collectives backend")
    return t


class StandIn:
    """The tensor the core is handed for ``user``: ``user`` itself (detached) when the core
    takes it as it is, else a plain copy on ``user``'s device.

    ``load``: the operation reads the tensor (the copy takes the caller's values now).
    ``store``: the operation writes it (:meth:`finish` copies the result back).
    """

    __slots__ = ("user", "tensor", "copied", "store")

    def __init__(self, user: torch.Tensor, *, load: bool = True, store: bool = False) -> None:
        self.user = user
        self.store = store
        t = user.detach()
        self.copied = not is_core_layout(t)
        if not self.copied:
            self.tensor = t
        elif load:
            self.tensor = t.resolve_conj().resolve_neg().contiguous()
        else:
            self.tensor = torch.empty(t.shape, dtype=t.dtype, device=t.device)

    def finish(self) -> None:
        """Copy the result into the caller's tensor, where it was a stand-in's."""
        if self.copied and self.store:
            with torch.no_grad():
                self.user.detach().copy_(self.tensor)


def caller_stream(tensors: list[torch.Tensor]) -> Any:
    """A context that makes the issuing thread's current stream (on the first CUDA tensor's
    device) current where it is entered: device collectives (``cuda_ipc``) queue their work
    on the current stream, and an asynchronous call runs on the backend's own thread, whose
    current stream would otherwise be the default one. A null context for host tensors."""
    for t in tensors:
        if t.is_cuda:
            return torch.cuda.stream(torch.cuda.current_stream(t.device))
    return contextlib.nullcontext()


def raw(t: torch.Tensor) -> torch.Tensor:
    """The bytes of a plain tensor as a flat uint8 tensor over the same memory (any dtype)."""
    return t.reshape(-1).view(torch.uint8)


def numeric(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor as the core reduces it: bool as uint8 (0 or 1), the rest as it is."""
    if t.dtype == torch.bool:
        return t.view(torch.uint8)
    if torch_numpy_dtype(t.dtype) is None:
        raise InvalidOperation(f"the collectives backend cannot reduce tensors of dtype {t.dtype}")
    return t


def red_op_type(op: Any) -> Any:
    """The RedOpType of what torch hands us (a ReduceOp object or a RedOpType)."""
    if op is None:
        return RedOpType.SUM
    inner = getattr(op, "op", None)
    return inner if inner is not None else op


def premul_factor(op: Any) -> float | torch.Tensor:
    factor = op.factor
    if isinstance(factor, torch.Tensor):
        return factor.detach().to("cpu")
    return float(factor)


_TORCH_OPS = {
    RedOpType.SUM: ReduceOp.SUM,
    RedOpType.PRODUCT: ReduceOp.PROD,
    RedOpType.MIN: ReduceOp.MIN,
    RedOpType.MAX: ReduceOp.MAX,
    RedOpType.AVG: ReduceOp.AVG,
    RedOpType.BAND: ReduceOp.BAND,
    RedOpType.BOR: ReduceOp.BOR,
    RedOpType.BXOR: ReduceOp.BXOR,
    RedOpType.PREMUL_SUM: ReduceOp.SUM,
}
"""torch's operators as ours (a translation: which dtypes each takes is ``ops.check_op``'s)."""
# bool is carried as uint8 holding 0 or 1: SUM is OR and PRODUCT is AND (as in gloo)
_BOOL_OPS = {
    ReduceOp.SUM: ReduceOp.BOR,
    ReduceOp.PROD: ReduceOp.BAND,
    ReduceOp.MIN: ReduceOp.BAND,
    ReduceOp.MAX: ReduceOp.BOR,
    ReduceOp.BAND: ReduceOp.BAND,
    ReduceOp.BOR: ReduceOp.BOR,
    ReduceOp.BXOR: ReduceOp.BXOR,
}


def resolve_op(op: Any, dtype: torch.dtype, what: str) -> tuple[ReduceOp, float | torch.Tensor | None]:
    """Our operator for torch's ``op`` on ``dtype``, and the PREMUL_SUM factor (or None).

    Which operator takes which dtype is the core's judgement (``ops.check_op``: bitwise
    operators need integers, ordering ones refuse complex); on top of it torch refuses what
    gloo refuses and the core allows: AVG or PREMUL_SUM on integers and bool (the core
    divides integers truncating) and PRODUCT on complex. Raises InvalidOperation.
    """
    kind = red_op_type(op)
    checked = _CHECKED.get((kind, dtype))
    if checked is not None:
        ours, premul = checked
        return ours, (premul_factor(op) if premul else None)
    translated = _TORCH_OPS.get(kind)
    if translated is None:
        raise InvalidOperation(f"{what}: reduction operator {kind} is not supported")
    ours = translated
    np_dtype = torch_numpy_dtype(dtype)
    if np_dtype is None or dtype not in REDUCIBLE:
        raise InvalidOperation(f"{what}: the collectives backend cannot reduce tensors of dtype {dtype}")
    name = str(kind).rsplit(".", 1)[-1]
    if kind in (RedOpType.AVG, RedOpType.PREMUL_SUM) and (dtype in _INTEGRAL or dtype == torch.bool):
        raise InvalidOperation(f"{what}: ReduceOp.{name} needs a floating point or complex dtype, not {dtype}")
    if ours is ReduceOp.PROD and dtype in _COMPLEX:
        raise InvalidOperation(f"{what}: ReduceOp.{name} is not supported on complex dtype {dtype}")
    if dtype == torch.bool:
        ours = _BOOL_OPS[ours]
    try:
        check_op(ours, np_dtype)
    except InvalidTypeError as exc:
        if ours in (ReduceOp.BAND, ReduceOp.BOR, ReduceOp.BXOR):
            raise InvalidOperation(f"{what}: Cannot use ReduceOp.{name} with non-integral dtype {dtype}") from exc
        raise InvalidOperation(f"{what}: ReduceOp.{name} is not supported on complex dtype {dtype}") from exc
    factor = premul_factor(op) if kind == RedOpType.PREMUL_SUM else None
    _CHECKED[(kind, dtype)] = (ours, factor is not None)
    return ours, factor


_CHECKED: dict[tuple[Any, torch.dtype], tuple[ReduceOp, bool]] = {}
"""(torch operator kind, dtype) pairs already checked: our operator, and whether it is
PREMUL_SUM (whose factor changes per call). Every collective asks, and the checks (torch's
enums compare and print slowly) took 9-17 us per call."""


def scale_(t: torch.Tensor, factor: float | torch.Tensor) -> None:
    """``t *= factor`` in t's own dtype (PREMUL_SUM's pre-multiplication)."""
    with torch.no_grad():
        t.mul_(factor.to(t.dtype) if isinstance(factor, torch.Tensor) else factor)
