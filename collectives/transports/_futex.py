"""Futex wait/wake on a 32-bit word in shared memory, so that idle ranks sleep in the kernel.

``futex_wait`` sleeps while the word still holds ``expected`` (the kernel compares
atomically, so a wake-up that changed the word first is never lost); ``futex_wake`` wakes
sleepers. The operations are the *shared* ones (no FUTEX_PRIVATE_FLAG): the kernel keys
them by the mapped file and offset, so processes that map one segment at different
addresses meet on the same word. Where the syscall is not available (not Linux, unknown
architecture, seccomp) ``futex_wait`` falls back to polling the word with short sleeps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import sys
import time
from collections.abc import Callable

FUTEX_WAIT = 0
FUTEX_WAKE = 1
INT_MAX = 2**31 - 1
_FALLBACK_SLEEP = 200e-6

_SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _load_syscall() -> Callable[..., int] | None:
    """libc's ``syscall`` bound to SYS_futex, or None where futexes cannot be used."""
    number = _SYS_FUTEX.get(platform.machine().lower())
    if not sys.platform.startswith("linux") or number is None:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        syscall = libc.syscall
    except (OSError, AttributeError):
        return None
    syscall.restype = ctypes.c_long
    sys_futex = ctypes.c_long(number)  # syscall(2) reads every argument as a long

    def futex(address: int, op: int, value: int, timeout: _Timespec | None) -> int:
        result: int = syscall(sys_futex, ctypes.c_void_p(address), ctypes.c_long(op), ctypes.c_long(value),
                              None if timeout is None else ctypes.byref(timeout), None, ctypes.c_long(0))
        return result  # an int: restype is c_long

    probe = ctypes.c_uint32(0)  # waking nobody must succeed (seccomp or old kernels: ENOSYS)
    return futex if futex(ctypes.addressof(probe), FUTEX_WAKE, 1, None) >= 0 else None


_futex = _load_syscall()
AVAILABLE: bool = _futex is not None
"""Whether the real futex syscall is used (else: polling with short sleeps)."""


def futex_wait(address: int, expected: int, timeout: float) -> None:
    """Sleep up to ``timeout`` seconds while the u32 at ``address`` equals ``expected``.

    Returns early on a wake-up, a signal, or when the word differs; spurious returns are
    allowed, so callers re-check their condition.
    """
    if timeout <= 0:
        return
    if _futex is not None:
        ts = _Timespec(int(timeout), int((timeout % 1.0) * 1e9))
        if _futex(address, FUTEX_WAIT, expected, ts) < 0:
            err = ctypes.get_errno()
            if err not in (errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR):
                raise OSError(err, f"futex wait failed: {os.strerror(err)}")
        return
    word = ctypes.c_uint32.from_address(address)
    deadline = time.monotonic() + timeout
    while word.value == expected and time.monotonic() < deadline:
        time.sleep(_FALLBACK_SLEEP)


def futex_wake(address: int, n: int = INT_MAX) -> None:
    """Wake up to ``n`` processes sleeping on the u32 at ``address`` (no-op in fallback)."""
    if _futex is not None:
        _futex(address, FUTEX_WAKE, n, None)
