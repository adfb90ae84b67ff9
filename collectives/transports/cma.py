"""Cross-memory attach: copy straight out of (or into) a peer process's memory with one
syscall.

``process_vm_readv(2)`` moves bytes from another process's address space into ours in a
single copy, with no shared segment in between (what MPICH and Open MPI call CMA, their
single-copy path for large messages on one host); ``process_vm_writev`` the other way.
The kernel allows them where ptrace
would be allowed: same user, and under Yama's ``ptrace_scope=1`` only once the target
has named us (or anyone) as its tracer, which :func:`allow_peers` does for this process.

Whether it works is a property of the machine (containers often forbid it), so callers
probe it collectively before relying on it (see ``engines.windows.SharedWindows.peer_memory``), and
fall back to copies through shared memory where it does not.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys
from typing import Any

import numpy as np

from ..buffers import address_of
from ..errors import PeerLostError, TransportError

PR_SET_PTRACER = 0x59616D61
PR_SET_PTRACER_ANY = ctypes.c_ulong(-1).value
PIECE_BYTES = 4 << 20
"""Bytes per syscall: large enough to amortise the call, small enough that a dead peer is
noticed between pieces. Measured: docs/performance.md, "Thresholds", PIECE_BYTES."""


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def _load() -> tuple[Any, Any, Any] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        readv = libc.process_vm_readv
        writev = libc.process_vm_writev
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    for call in (readv, writev):
        call.restype = ctypes.c_ssize_t
        call.argtypes = [
            ctypes.c_int, ctypes.POINTER(_IoVec), ctypes.c_ulong, ctypes.POINTER(_IoVec), ctypes.c_ulong, ctypes.c_ulong,
        ]
    prctl.restype = ctypes.c_int
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return readv, writev, prctl


_LIBC = _load()
AVAILABLE: bool = _LIBC is not None
"""Whether this platform has ``process_vm_readv`` at all (a peer may still refuse)."""


def allow_peers() -> None:
    """Let processes of our user read our memory under Yama ``ptrace_scope=1`` (a no-op
    where Yama is absent or stricter; the probe then finds out)."""
    if _LIBC is not None:
        _LIBC[2](PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0)


def read(pid: int, remote_address: int, into: np.ndarray, peer: int) -> None:
    """Copy ``into.nbytes`` bytes at ``remote_address`` in process ``pid`` (rank ``peer``)
    into ``into`` (C-contiguous).

    Raises:
        PeerLostError: the process is gone.
        TransportError: the kernel refused (permissions, a bad address), naming why.
    """
    _transfer(0, "process_vm_readv", pid, remote_address, into, peer)


def write(pid: int, remote_address: int, data: np.ndarray, peer: int) -> None:
    """Copy ``data`` (C-contiguous) to ``remote_address`` in process ``pid`` (rank
    ``peer``). Raises as :func:`read` does."""
    _transfer(1, "process_vm_writev", pid, remote_address, data, peer)


def _transfer(which: int, name: str, pid: int, remote_address: int, local: np.ndarray, peer: int) -> None:
    if _LIBC is None:
        raise TransportError(f"cross-memory copies ({name}) do not exist on this platform", peer=peer)
    call = _LIBC[which]
    mine, remote = _IoVec(), _IoVec()
    base = address_of(local)
    total = local.nbytes
    done = 0
    while done < total:
        n = min(PIECE_BYTES, total - done)
        mine.base, mine.len = base + done, n
        remote.base, remote.len = remote_address + done, n
        got = call(pid, ctypes.byref(mine), 1, ctypes.byref(remote), 1, 0)
        if got <= 0:
            code = ctypes.get_errno() if got < 0 else errno.EFAULT
            if code == errno.ESRCH:
                raise PeerLostError(f"rank {peer} (pid {pid}) exited while its memory was being copied", peer=peer)
            raise TransportError(
                f"{name} with rank {peer} (pid {pid}) failed: {errno.errorcode.get(code, code)} ({os.strerror(code)})",
                peer=peer,
            )
        done += got


def probe(pid: int, remote_address: int, expected: bytes) -> bool:
    """Whether reading ``len(expected)`` bytes of process ``pid`` works and gives them, and
    writing them back (unchanged) works too."""
    into = np.empty(len(expected), dtype=np.uint8)
    try:
        read(pid, remote_address, into, peer=-1)
        if into.tobytes() != expected:
            return False
        write(pid, remote_address, into, peer=-1)
    except TransportError:
        return False
    return True


def allowed_here() -> bool:
    """Whether the kernel lets this process read and write the memory of another of ours that
    has named us as its tracer, as ranks do (a forked child, its bytes at the same address):
    a property of the machine, which ``collectives-tune`` records in the cost profile. Forks."""
    if _LIBC is None:
        return False
    expected = os.urandom(16)
    mine = np.frombuffer(expected, dtype=np.uint8).copy()
    ready_r, ready_w = os.pipe()
    stop_r, stop_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: let us in, keep its copy of `mine` until told to go
        try:
            allow_peers()
            os.write(ready_w, b"1")
            os.read(stop_r, 1)
        finally:
            os._exit(0)
    try:
        os.read(ready_r, 1)
        return probe(pid, address_of(mine), expected)
    finally:
        os.write(stop_w, b"1")
        os.waitpid(pid, 0)
        for fd in (ready_r, ready_w, stop_r, stop_w):
            os.close(fd)


class PeerMemory:
    """Copies from and to the memory of the ranks ``pids`` names (rank -> pid on this host)."""

    def __init__(self, pids: dict[int, int]) -> None:
        self.pids = dict(pids)

    def read(self, rank: int, address: int, into: np.ndarray) -> None:
        read(self.pids[rank], address, into, peer=rank)

    def write(self, rank: int, address: int, data: np.ndarray) -> None:
        write(self.pids[rank], address, data, peer=rank)

    def probe(self, rank: int, address: int, expected: bytes) -> bool:
        return probe(self.pids[rank], address, expected)
