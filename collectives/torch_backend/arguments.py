"""What every method of the process group does with torch's arguments: lists of
tensors checked and unpacked, timeouts in seconds, tensors that lie back to back in one
storage found (so that a collective can write into them at once)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

import torch

from .errors import InvalidOperation
from .tensors import check_tensor, is_plain

_C10D = torch._C._distributed_c10d


def timeout_seconds(timeout: Any, default: float) -> float:
    """An options object's timeout in seconds, or ``default`` when unset (negative)."""
    if timeout is None:
        return default
    if isinstance(timeout, datetime.timedelta):
        seconds = timeout.total_seconds()
    else:
        seconds = float(timeout)
    return seconds if seconds > 0 else default


def single_pair(op: str, output: Any, input: Any, size: int, *,  # noqa: A002
                gathers: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(output, input)`` of a ``*_single`` collective, checked: one dtype, and the output
    (``gathers``: all_gather_single) or the input (reduce_scatter_single) holding world size
    × the other's elements."""
    output = check_tensor(output, f"{op}: output")
    input = check_tensor(input, f"{op}: input")  # noqa: A001
    if input.dtype != output.dtype:
        raise InvalidOperation(f"{op}: input dtype {input.dtype} differs from output's {output.dtype}")
    whole, share = (("output", output), ("input", input)) if gathers else (("input", input), ("output", output))
    if whole[1].numel() != size * share[1].numel():
        raise InvalidOperation(f"{op}: {whole[0]} holds {whole[1].numel()} elements, not world size {size} × "
                               f"{share[0]}'s {share[1].numel()}")
    return output, input


def tensor_list(value: Any, name: str) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if not isinstance(value, (list, tuple)):
        raise InvalidOperation(f"{name}: expected a list of tensors, got {type(value).__name__}")
    return [check_tensor(t, f"{name}[{i}]") for i, t in enumerate(value)]


def one(value: Any, name: str) -> torch.Tensor:
    tensors = tensor_list(value, name)
    if len(tensors) != 1:
        raise InvalidOperation(f"{name}: expected exactly one tensor, got {len(tensors)}")
    return tensors[0]


def same_dtype(tensors: Sequence[torch.Tensor], dtype: torch.dtype, name: str) -> None:
    for i, t in enumerate(tensors):
        if t.dtype != dtype:
            raise InvalidOperation(f"{name}[{i}]: dtype {t.dtype} differs from {dtype}")


def root_blocks(value: Any, op: str, kind: str, size: int, like: torch.Tensor, other: str) -> list[torch.Tensor]:
    """The root's one list of ``size`` tensors of a gather's outputs or a scatter's inputs
    (``kind``), each of ``like``'s dtype and element count (``other``: "input"/"output")."""
    if not isinstance(value, (list, tuple)) or len(value) != 1:
        raise InvalidOperation(f"{op}: on the root, {kind} must be a list holding one list of tensors")
    blocks = tensor_list(value[0], f"{op}: {kind}[0]")
    if len(blocks) != size:
        raise InvalidOperation(f"{op}: {kind}[0]: expected one tensor per rank ({size}), got {len(blocks)}")
    same_dtype(blocks, like.dtype, f"{op}: {kind}[0]")
    for j, b in enumerate(blocks):
        if b.numel() != like.numel():
            raise InvalidOperation(f"{op}: {kind}[0][{j}] holds {b.numel()} elements, {other} {like.numel()}")
    return blocks


def copy_bytes_into(dst: torch.Tensor, src_bytes: torch.Tensor) -> None:
    """Write the bytes ``src_bytes`` (a flat uint8 host tensor) into ``dst`` (any layout, device)."""
    with torch.no_grad():
        dst.detach().copy_(src_bytes.view(dst.dtype).view(dst.shape))


def as_bytes(t: torch.Tensor) -> torch.Tensor:
    """A flat uint8 view of a contiguous host tensor."""
    return t.detach().reshape(-1).view(torch.uint8)


def consecutive(tensors: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """If ``tensors`` are plain host tensors lying back to back in one storage (torch.chunk
    of a flat buffer, FSDP1), one flat uint8 tensor over all of them; else None."""
    if not tensors or not all(is_plain(t) for t in tensors):
        return None
    first = tensors[0]
    storage = first.untyped_storage()
    start = first.data_ptr()
    position = start
    for t in tensors:
        if t.untyped_storage().data_ptr() != storage.data_ptr() or t.data_ptr() != position:
            return None
        position += t.numel() * t.element_size()
    total = position - start
    flat = torch.empty(0, dtype=torch.uint8)
    flat.set_(storage, first.storage_offset() * first.element_size(), (total,), (1,))
    return flat
