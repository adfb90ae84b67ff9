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
import platform
import sys
import time

FUTEX_WAIT = 0
FUTEX_WAKE = 1
INT_MAX = 2**31 - 1
_FALLBACK_SLEEP = 200e-6

_SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_OP_WAIT = ctypes.c_long(FUTEX_WAIT)  # syscall(2) reads every argument as a long
_OP_WAKE = ctypes.c_long(FUTEX_WAKE)
_ZERO = ctypes.c_long(0)


def _load_syscall() -> tuple[object, ctypes.c_long] | None:
    if not sys.platform.startswith("linux"):
        return None
    number = _SYS_FUTEX.get(platform.machine().lower())
    if number is None:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        syscall = libc.syscall
    except (OSError, AttributeError):
        return None
    syscall.restype = ctypes.c_long
    # Probe: waking nobody on a private word must succeed (returns 0 woken).
    probe = ctypes.c_uint32(0)
    if syscall(ctypes.c_long(number), ctypes.byref(probe), ctypes.c_long(FUTEX_WAKE), ctypes.c_long(1), None, None,
               ctypes.c_long(0)) < 0:
        return None
    return syscall, ctypes.c_long(number)


_SYSCALL = _load_syscall()
AVAILABLE: bool = _SYSCALL is not None
"""Whether the real futex syscall is used (else: polling with short sleeps)."""


def futex_wait(address: int, expected: int, timeout: float) -> None:
    """Sleep up to ``timeout`` seconds while the u32 at ``address`` equals ``expected``.

    Returns early on a wake-up, a signal, or when the word differs; spurious returns are
    allowed, so callers re-check their condition.
    """
    if timeout <= 0:
        return
    if _SYSCALL is not None:
        syscall, number = _SYSCALL
        ts = _Timespec(int(timeout), int((timeout % 1.0) * 1e9))
        if syscall(number, ctypes.c_void_p(address), _OP_WAIT, ctypes.c_long(expected),  # type: ignore[operator]
                   ctypes.byref(ts), None, _ZERO) < 0:
            err = ctypes.get_errno()
            if err not in (errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR):
                raise OSError(err, f"futex wait failed: {errno.errorcode.get(err, err)}")
        return
    word = ctypes.c_uint32.from_address(address)
    deadline = time.monotonic() + timeout
    while word.value == expected and time.monotonic() < deadline:
        time.sleep(_FALLBACK_SLEEP)


def futex_wake(address: int, n: int = INT_MAX) -> None:
    """Wake up to ``n`` processes sleeping on the u32 at ``address`` (no-op in fallback)."""
    if _SYSCALL is not None:
        syscall, number = _SYSCALL
        syscall(number, ctypes.c_void_p(address), _OP_WAKE, ctypes.c_long(n), None, None, _ZERO)  # type: ignore[operator]
