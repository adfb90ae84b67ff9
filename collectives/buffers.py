"""Turn what users pass (numpy arrays, torch CPU tensors, DLPack or buffer-protocol objects)
into flat numpy views of the same memory, and reject what cannot be used.

No copies: a collective writes its result straight into the caller's memory, so a view
is the only correct answer. What cannot be viewed in place (non-contiguous, read-only
outputs, device memory before the CUDA issue lands) is refused with an error naming the
argument, before anything is sent.
"""

from __future__ import annotations

import ctypes
import importlib.util
import sys
from typing import Any

import numpy as np

from .errors import InvalidArgumentError, InvalidTypeError

INTEGER_KINDS = "iu"
BUILT_IN_DTYPES = tuple(  # the dtypes every call takes without ml_dtypes
    np.dtype(t)
    for t in (
        "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
        "float16", "float32", "float64", "complex64", "complex128",
    )
)
_SUPPORTED = set(BUILT_IN_DTYPES)  # a hashed lookup: this check runs on every call (bfloat16 joins on first use)
_bfloat16: list[np.dtype | None] = []  # ml_dtypes' bfloat16, once looked up


def bfloat16() -> np.dtype | None:
    """numpy's bfloat16 (from ml_dtypes, also a JAX/TF dependency), or None without it.
    Imported on first use, not with the package: it is 0.6 s of every process's start, and
    a bfloat16 array cannot exist before something imported it."""
    if not _bfloat16:
        try:
            import ml_dtypes

            dtype = np.dtype(ml_dtypes.bfloat16)
            _SUPPORTED.add(dtype)
            _bfloat16.append(dtype)
        except ImportError:  # pragma: no cover - exercised only without ml_dtypes
            _bfloat16.append(None)
    return _bfloat16[0]


def __getattr__(name: str) -> Any:
    """``BFLOAT16`` and ``SUPPORTED_DTYPES``, which need ml_dtypes, are made on first use."""
    if name == "BFLOAT16":
        return bfloat16()
    if name == "SUPPORTED_DTYPES":
        bf16 = bfloat16()
        return BUILT_IN_DTYPES + ((bf16,) if bf16 is not None else ())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def dtype_name(dtype: np.dtype) -> str:
    return "bfloat16" if dtype.name == "bfloat16" else str(dtype)


def check_dtype(dtype: np.dtype, name: str) -> None:
    if dtype not in _SUPPORTED and not (dtype.name == "bfloat16" and dtype == bfloat16()):
        supported = ", ".join(supported_names())
        raise InvalidTypeError(f"{name}: dtype {dtype_name(dtype)} is not supported (supported: {supported})")


def supported_names() -> list[str]:
    """The names of SUPPORTED_DTYPES, for an error message: bfloat16 where ml_dtypes is installed,
    found without importing it (its import made the refusal of a wrong dtype the slowest of all)."""
    names = [dtype_name(d) for d in BUILT_IN_DTYPES]
    has_bfloat16 = _bfloat16[0] is not None if _bfloat16 else importlib.util.find_spec("ml_dtypes") is not None
    return names + ["bfloat16"] if has_bfloat16 else names


def is_torch_tensor(obj: Any) -> bool:
    """Whether ``obj`` is a torch tensor, subclasses included (without importing torch:
    whoever made a tensor has imported it)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def torch_bytes_view(tensor: Any) -> np.ndarray:
    """The raw bytes of a contiguous host tensor as a flat writable uint8 array over the same
    memory (no copy); the array keeps the tensor alive through its base.

    Not ``Tensor.numpy()``: that marks the tensor's storage as not resizable for good, and
    FSDP frees unsharded parameters with ``untyped_storage().resize_(0)``.
    """
    nbytes: int = tensor.numel() * tensor.element_size()
    if nbytes == 0:
        return np.empty(0, dtype=np.uint8)
    raw = (ctypes.c_uint8 * nbytes).from_address(tensor.data_ptr())
    raw._tensor = tensor  # type: ignore[attr-defined]  # a ctypes array takes attributes: this one keeps the tensor alive
    # Through a memoryview (base -> view -> raw): typeshed calls a ctypes array a buffer only on 3.12+.
    return np.frombuffer(memoryview(raw), dtype=np.uint8)


_TORCH_DTYPES: dict[Any, np.dtype | None] = {}  # torch dtype -> numpy dtype (None: no numpy equivalent)


def torch_numpy_dtype(torch_dtype: Any) -> np.dtype | None:
    """The numpy dtype with the same bits as a torch dtype (bool as uint8), or None."""
    try:
        return _TORCH_DTYPES[torch_dtype]
    except KeyError:
        pass
    import torch

    if torch_dtype == torch.bfloat16:
        dtype = bfloat16()
    elif torch_dtype == torch.bool:
        dtype = np.dtype(np.uint8)
    else:
        try:
            dtype = np.dtype(torch.empty(0, dtype=torch_dtype).numpy().dtype)
        except (TypeError, RuntimeError):
            dtype = None
    _TORCH_DTYPES[torch_dtype] = dtype  # asked on every call with a tensor: 6 us each without this
    return dtype


def plain_tensor_view(obj: Any) -> np.ndarray | None:
    """A flat numpy view of ``obj`` if it is a torch tensor the full checks would take as it
    is (on the CPU, contiguous, not a lazy conjugate or negation, a dtype numpy has, not
    bool); None for anything else, which ``as_flat_array`` then judges (and names)."""
    if not is_torch_tensor(obj) or not obj.is_cpu or not obj.is_contiguous() or obj.is_conj() or obj.is_neg():
        return None
    dtype = torch_numpy_dtype(obj.dtype)
    if dtype is None or obj.dtype == sys.modules["torch"].bool:
        return None
    return torch_bytes_view(obj).view(dtype)


def check_torch_tensor(tensor: Any, name: str) -> np.dtype:
    """The numpy dtype for a torch tensor on any device, after the checks every tensor
    passes: contiguous, and a dtype numpy has (not bool)."""
    if not tensor.is_contiguous():
        raise InvalidArgumentError(f"{name}: the tensor is not contiguous (call .contiguous() first)")
    torch = sys.modules["torch"]
    dtype = None if tensor.dtype == torch.bool else torch_numpy_dtype(tensor.dtype)
    if dtype is None:
        what = "bfloat16 tensors need the ml_dtypes package" if tensor.dtype == torch.bfloat16 else "is not supported"
        raise InvalidTypeError(f"{name}: torch dtype {tensor.dtype} {what}")
    return dtype


def _from_torch(tensor: Any, name: str) -> np.ndarray:
    if not tensor.is_cpu:
        raise InvalidArgumentError(
            f"{name}: a {tensor.device.type} tensor; only host (CPU) memory can be viewed here"
        )
    if tensor.is_conj() or tensor.is_neg():
        raise InvalidArgumentError(
            f"{name}: the tensor is a lazily conjugated or negated view, whose memory holds other "
            f"values (call .resolve_conj() or .resolve_neg() first)"
        )
    return torch_bytes_view(tensor).view(check_torch_tensor(tensor, name))


_DLPACK_DEVICES = {2: "cuda", 4: "opencl", 7: "vulkan", 8: "metal", 9: "vpi", 10: "rocm", 13: "cuda managed", 14: "oneapi"}
"""DLPack device types whose memory the host cannot address (CPU 1, CUDA host 3 and ROCm
host 11 are host memory, viewed like any other)."""


def device_memory_kind(obj: Any) -> str | None:
    """The kind of device memory ``obj`` lives in, or None where it is host memory."""
    if hasattr(obj, "__cuda_array_interface__"):
        return "cuda"
    device = getattr(obj, "__dlpack_device__", None)
    if device is None:
        return None
    try:
        kind = int(device()[0])
    except Exception:  # noqa: BLE001 - a broken protocol is left to the DLPack import below
        return None
    return _DLPACK_DEVICES.get(kind, f"DLPack device type {kind}" if kind not in (1, 3, 11) else None)


def as_flat_array(obj: Any, name: str, *, writable: bool = False) -> np.ndarray:
    """A 1-D numpy view of ``obj``'s memory (no copy).

    Raises:
        InvalidTypeError: ``obj`` exposes no host buffer, or its dtype is unsupported.
        InvalidArgumentError: not C-contiguous, or read-only while ``writable`` is asked.
    """
    if isinstance(obj, np.ndarray):
        array = obj
    elif is_torch_tensor(obj):
        array = _from_torch(obj, name)
    elif (device := device_memory_kind(obj)) is not None:
        raise InvalidArgumentError(
            f"{name}: a {device} device buffer; only host (CPU) memory is supported so far (copy it to the host)"
        )
    elif hasattr(obj, "__dlpack__"):
        try:
            array = np.from_dlpack(obj)
        except (BufferError, TypeError, RuntimeError) as exc:
            raise InvalidTypeError(f"{name}: cannot view this DLPack object on the host ({exc})") from None
    else:
        try:
            array = np.asarray(memoryview(obj))
        except TypeError:
            raise InvalidTypeError(
                f"{name}: expected a numpy array, a torch CPU tensor, or an object with the buffer "
                f"protocol or __dlpack__; got {type(obj).__name__}"
            ) from None
    if not array.flags.c_contiguous:
        raise InvalidArgumentError(f"{name}: the array is not C-contiguous (use np.ascontiguousarray)")
    if writable and not array.flags.writeable:
        raise InvalidArgumentError(f"{name}: the array is read-only, but the result is written into it")
    check_dtype(array.dtype, name)
    return array.reshape(-1)


def address_of(array: np.ndarray) -> int:
    """The address of ``array``'s first byte in this process."""
    return int(array.__array_interface__["data"][0])


ALIASED_COPY_BYTES = (192 << 10, 512 << 10)
"""The sizes at which ``copy_array`` sidesteps memcpy for 4K-aliased buffers. From 512 KiB
glibc copies another way; below 192 KiB the detour measured as often slower as faster.
Measured: docs/performance.md, "Thresholds", ALIASED_COPY_BYTES."""


def copy_array(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[...] = src`` for C-contiguous arrays of one dtype and size, sidestepping a
    slow path of memcpy: where ``dst`` lies 1 to 31 bytes after ``src`` modulo 4096 (a
    page-aligned shared window and a malloc'd array are 16 apart), glibc's rep-movsb copy
    runs about 10x slower on the AMD EPYC we measure on (256 KiB: 156 against 11 us; from
    4 KiB to 480 KiB). Such copies go through a numpy ufunc over 8-byte words instead
    (11 us), which no alignment slows."""
    n = src.nbytes
    if ALIASED_COPY_BYTES[0] <= n < ALIASED_COPY_BYTES[1] and 0 < (address_of(dst) - address_of(src)) % 4096 < 32:
        whole = n - n % 8
        d8, s8 = dst.reshape(-1).view(np.uint8), src.reshape(-1).view(np.uint8)
        np.bitwise_or(s8[:whole].view(np.uint64), 0, out=d8[:whole].view(np.uint64))
        d8[whole:] = s8[whole:]
        return
    dst[...] = src


def check_same_dtype(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.dtype != b.dtype:
        raise InvalidTypeError(
            f"{name_b}: dtype {dtype_name(b.dtype)} differs from {name_a}'s {dtype_name(a.dtype)}"
        )


def overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether the bytes of two C-contiguous arrays overlap (a bounds check on their
    addresses: ``np.may_share_memory`` costs several times as much per call)."""
    if not a.nbytes or not b.nbytes:
        return False
    lo_a, lo_b = address_of(a), address_of(b)
    return lo_a < lo_b + b.nbytes and lo_b < lo_a + a.nbytes


def same_or_apart(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``b`` is ``a`` itself (in place) or memory apart from it (two C-contiguous
    arrays, as the checks of arguments have them: ``overlap``)."""
    return b is a or not overlap(a, b) or address_of(a) == address_of(b)


def check_same_or_apart(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """``b`` is either ``a`` itself (in place) or memory apart from it: a partial overlap
    would have the result overwrite input still to be read."""
    if not same_or_apart(a, b):
        raise InvalidArgumentError(f"{name_b}: overlaps {name_a} without being the same memory")


def check_count(array: np.ndarray, expected: int, name: str, why: str) -> None:
    if array.size != expected:
        raise InvalidArgumentError(f"{name}: holds {array.size} elements but must hold {expected} ({why})")


def check_splits(splits: Any, size: int, name: str) -> list[int]:
    """``splits`` as a list of ``size`` non-negative ints (element counts per rank, as
    MPI_Alltoallv's counts), or InvalidArgumentError naming ``name``."""
    try:
        values = list(splits)
    except TypeError:
        raise InvalidArgumentError(
            f"{name}: expected a sequence of {size} element counts, got {type(splits).__name__}"
        ) from None
    if len(values) != size:
        raise InvalidArgumentError(f"{name}: holds {len(values)} counts, not one per rank (world size {size})")
    counts = []
    for j, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 0:
            raise InvalidArgumentError(f"{name}[{j}]: expected a non-negative int, got {v!r}")
        counts.append(int(v))
    return counts
