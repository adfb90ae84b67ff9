"""A safe codec for objects that peers send each other (the torch backend's ``*_object``
collectives): plain data, numpy arrays and torch tensors, and nothing that can run code.

Pickle lets whoever writes the bytes run code in the process that reads them (a
``__reduce__`` is a function call); ranks of one job are peers, not a trust boundary one
would hand code execution across. This format is a tagged tree: every value is one tag
byte and a fixed-size header, every length is checked against the bytes that remain
before anything is allocated, nesting is bounded, and decoding builds only the types
listed below. What it cannot encode raises :class:`InvalidTypeError` on the *sending*
rank, naming the type; ``COLLECTIVES_OBJECT_CODEC=pickle`` on every rank opts back in to
pickle.

Types: ``None``, ``bool``, ``int`` (any size), ``float``, ``complex``, ``str``, ``bytes``,
``bytearray``, ``list``, ``tuple``, ``dict``, ``set``, ``frozenset``, numpy arrays and
scalars of the numeric, bool, bytes, str and datetime dtypes, torch tensors (dense,
strided; they come back contiguous, on the device they left, with ``requires_grad``;
a subclass such as ``nn.Parameter`` comes back as a plain tensor).
"""

from __future__ import annotations

import re
import struct
import sys
from typing import Any

import numpy as np

from .errors import DecodeError, InvalidTypeError

MAGIC = b"\x00COLLOBJ1"
"""Starts every encoding (a pickle starts with ``\\x80``, so neither is taken for the other)."""
MAX_DEPTH = 100
MAX_INT_BYTES = 1 << 20

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")
_C128 = struct.Struct("<dd")
_DTYPE_TEXT = re.compile(r"[<>|=]?[biufcSUmM]\d{0,8}(\[[A-Za-z0-9]{1,8}\])?")
_TORCH_DTYPES = (
    "float64", "float32", "float16", "bfloat16", "complex64", "complex128", "int64", "int32", "int16", "int8",
    "uint8", "uint16", "uint32", "uint64", "bool", "float8_e4m3fn", "float8_e5m2",
)

_NONE, _TRUE, _FALSE, _INT, _FLOAT, _COMPLEX, _STR, _BYTES, _BYTEARRAY = b"NTFifcsbB"
_LIST, _TUPLE, _DICT, _SET, _FROZENSET, _ARRAY, _NPSCALAR, _TENSOR = b"ltdSZagp"
_SEQUENCE_TAGS: dict[type, int] = {list: _LIST, tuple: _TUPLE, set: _SET, frozenset: _FROZENSET}


def encode(obj: Any) -> bytes:
    """The bytes of ``obj``; raises :class:`InvalidTypeError` for what the codec cannot carry."""
    out = bytearray(MAGIC)
    _encode(obj, out, 0)
    return bytes(out)


def _blob(out: bytearray, tag: int, data: bytes | bytearray | memoryview) -> None:
    out.append(tag)
    out += _U64.pack(len(data))
    out += data


def _encode(obj: Any, out: bytearray, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidTypeError(f"object codec: nesting deeper than {MAX_DEPTH} levels")
    kind = type(obj)
    if obj is None:
        out.append(_NONE)
    elif kind is bool:
        out.append(_TRUE if obj else _FALSE)
    elif kind is int:
        n = (obj.bit_length() + 8) // 8
        _blob(out, _INT, obj.to_bytes(n, "little", signed=True))
    elif kind is float:
        out.append(_FLOAT)
        out += _F64.pack(obj)
    elif kind is complex:
        out.append(_COMPLEX)
        out += _C128.pack(obj.real, obj.imag)
    elif kind is str:
        _blob(out, _STR, obj.encode("utf-8", "surrogatepass"))
    elif kind is bytes:
        _blob(out, _BYTES, obj)
    elif kind is bytearray:
        _blob(out, _BYTEARRAY, obj)
    elif kind in (list, tuple, set, frozenset):
        out.append(_SEQUENCE_TAGS[kind])
        out += _U64.pack(len(obj))
        for item in obj:
            _encode(item, out, depth + 1)
    elif kind is dict:
        out.append(_DICT)
        out += _U64.pack(len(obj))
        for key, value in obj.items():
            _encode(key, out, depth + 1)
            _encode(value, out, depth + 1)
    elif isinstance(obj, (np.ndarray, np.generic)):
        _encode_array(obj, out)
    elif _is_tensor(obj):
        _encode_tensor(obj, out)
    else:
        raise InvalidTypeError(
            f"object codec: cannot send a {kind.__module__}.{kind.__qualname__} with the safe codec (it carries "
            "None, bool, int, float, complex, str, bytes, list, tuple, dict, set, numpy arrays and torch tensors); "
            "send plain data, or set COLLECTIVES_OBJECT_CODEC=pickle on every rank if every peer may run code "
            "in every other"
        )


def _encode_array(obj: np.ndarray | np.generic, out: bytearray) -> None:
    array = np.asarray(obj)
    text = array.dtype.str
    if array.dtype.hasobject or array.dtype.names is not None or not _DTYPE_TEXT.fullmatch(text):
        raise InvalidTypeError(f"object codec: cannot send a numpy array of dtype {array.dtype} with the safe codec")
    out.append(_NPSCALAR if isinstance(obj, np.generic) else _ARRAY)
    _header(out, text, array.shape)
    _blob(out, _BYTES, np.ascontiguousarray(array).tobytes())


def _header(out: bytearray, dtype: str, shape: tuple[int, ...]) -> None:
    raw = dtype.encode()
    out.append(len(raw))
    out += raw
    out.append(len(shape))
    for n in shape:
        out += _U64.pack(n)


def _is_tensor(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def _encode_tensor(obj: Any, out: bytearray) -> None:
    import torch

    name = str(obj.dtype).removeprefix("torch.")
    if name not in _TORCH_DTYPES or obj.layout != torch.strided or obj.is_quantized or obj.is_nested:
        raise InvalidTypeError(f"object codec: cannot send a {obj.dtype} {obj.layout} tensor with the safe codec")
    flat = obj.detach().to("cpu").contiguous().reshape(-1)
    raw = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
    out.append(_TENSOR)
    _header(out, name, tuple(obj.shape))
    device = str(obj.device).encode()
    out.append(len(device))
    out += device
    out.append(1 if obj.requires_grad else 0)
    _blob(out, _BYTES, raw)


def decode(data: bytes | bytearray | memoryview) -> Any:
    """The object ``data`` encodes. Raises :class:`DecodeError` (and nothing else) for bytes
    that are not a complete, valid encoding, a pickle included."""
    view = memoryview(data).cast("B")
    if bytes(view[: len(MAGIC)]) != MAGIC:
        if bytes(view[:1]) == b"\x80":
            raise DecodeError(
                "object codec: a peer sent a pickle (its COLLECTIVES_OBJECT_CODEC is pickle); this rank decodes "
                "only the safe codec and will not unpickle it (unpickling runs whatever code the sender chose). "
                "Set COLLECTIVES_OBJECT_CODEC=pickle on every rank to allow it"
            )
        raise DecodeError(f"object codec: {len(view)} bytes that are not an encoded object (bad magic)")
    reader = _Reader(view, len(MAGIC))
    try:
        value = reader.value(0)
    except DecodeError:
        raise
    except (ValueError, TypeError, OverflowError, UnicodeError, RuntimeError) as exc:
        raise DecodeError(f"object codec: invalid encoding at byte {reader.pos}: {exc}") from None
    if reader.pos != len(view):
        raise DecodeError(f"object codec: {len(view) - reader.pos} stray bytes after the object")
    return value


class _Reader:
    __slots__ = ("view", "pos")

    def __init__(self, view: memoryview, pos: int) -> None:
        self.view = view
        self.pos = pos

    def take(self, n: int) -> memoryview:
        if n > len(self.view) - self.pos:
            raise DecodeError(f"object codec: {n} bytes wanted at byte {self.pos}, only {len(self.view) - self.pos} left")
        chunk = self.view[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u64(self) -> int:
        value: int = _U64.unpack(self.take(8))[0]
        return value

    def count(self) -> int:
        """An item count: each item takes at least one byte, so more than remain is a lie."""
        n = self.u64()
        if n > len(self.view) - self.pos:
            raise DecodeError(f"object codec: {n} items announced at byte {self.pos}, more than the bytes left")
        return n

    def blob(self) -> memoryview:
        if self.u8() != _BYTES:
            raise DecodeError(f"object codec: expected raw bytes at byte {self.pos - 1}")
        return self.take(self.u64())

    def value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise DecodeError(f"object codec: nesting deeper than {MAX_DEPTH} levels")
        tag = self.u8()
        if tag == _NONE:
            return None
        if tag in (_TRUE, _FALSE):
            return tag == _TRUE
        if tag == _FLOAT:
            return _F64.unpack(self.take(8))[0]
        if tag == _COMPLEX:
            return complex(*_C128.unpack(self.take(16)))
        if tag in (_INT, _STR, _BYTES, _BYTEARRAY):
            n = self.u64()
            if tag == _INT and n > MAX_INT_BYTES:
                raise DecodeError(f"object codec: a {n}-byte integer, over the {MAX_INT_BYTES}-byte limit")
            raw = self.take(n)
            if tag == _INT:
                return int.from_bytes(raw, "little", signed=True)
            if tag == _STR:
                return str(raw, "utf-8", "surrogatepass")
            return bytes(raw) if tag == _BYTES else bytearray(raw)
        if tag in (_LIST, _TUPLE, _SET, _FROZENSET):
            items = [self.value(depth + 1) for _ in range(self.count())]
            return {_LIST: list, _TUPLE: tuple, _SET: set, _FROZENSET: frozenset}[tag](items)
        if tag == _DICT:
            n = self.count()
            return {self.value(depth + 1): self.value(depth + 1) for _ in range(n)}
        if tag in (_ARRAY, _NPSCALAR):
            return self.array(tag == _NPSCALAR)
        if tag == _TENSOR:
            return self.tensor()
        raise DecodeError(f"object codec: unknown tag {tag:#04x} at byte {self.pos - 1}")

    def header(self) -> tuple[str, tuple[int, ...]]:
        dtype = str(self.take(self.u8()), "ascii")
        shape = tuple(self.u64() for _ in range(self.u8()))
        return dtype, shape

    def _payload(self, itemsize: int, shape: tuple[int, ...]) -> memoryview:
        raw = self.blob()
        elements = 1
        for n in shape:
            elements *= n
        if elements * itemsize != len(raw):
            raise DecodeError(f"object codec: shape {shape} of {itemsize}-byte items does not fit {len(raw)} bytes")
        return raw

    def array(self, scalar: bool) -> Any:
        text, shape = self.header()
        if not _DTYPE_TEXT.fullmatch(text):
            raise DecodeError(f"object codec: dtype {text!r} is not one the safe codec carries")
        dtype = np.dtype(text)
        if dtype.hasobject or dtype.names is not None or (scalar and shape):
            raise DecodeError(f"object codec: dtype {text!r} is not one the safe codec carries")
        raw = self._payload(dtype.itemsize, shape)
        array = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
        return array[()] if scalar else array

    def tensor(self) -> Any:
        import torch

        name, shape = self.header()
        if name not in _TORCH_DTYPES or not hasattr(torch, name):
            raise DecodeError(f"object codec: tensor dtype {name!r} is not one the safe codec carries")
        device = str(self.take(self.u8()), "ascii")
        requires_grad = bool(self.u8())
        dtype = getattr(torch, name)
        raw = self._payload(torch.empty((), dtype=dtype).element_size(), shape)
        if len(raw):
            tensor = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape)
        else:
            tensor = torch.empty(shape, dtype=dtype)
        if device != "cpu":
            tensor = tensor.to(device)
        return tensor.requires_grad_(requires_grad) if requires_grad else tensor
