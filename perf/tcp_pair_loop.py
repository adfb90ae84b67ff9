"""A compiled send-receive-fold loop for the 2-rank tcp all-reduce, against the library's call.

The 2-rank all-reduce over loopback TCP at 32-64 MiB is CPU-bound, mostly in the kernel; the
Python around the socket calls was estimated at 11-17 % of a call (docs/performance.md, thirty-first
round). This bounds what a compiled loop could win before any of it goes into the library: both
ranks run ``pair_all_reduce`` of ``tcp_pair_loop.c`` (compiled here with the system's C compiler) on
one loopback TCP connection set up as the transport sets its own (4 MiB buffers, TCP_NODELAY,
non-blocking): one C call an all-reduce, sends at most ``window`` ahead of the receive in ``piece``
calls, reads of at least ``read`` bytes (SO_RCVLOWAT) folded as they land, and a wait that polls
without sleeping for ``spin`` microseconds before it sleeps in poll(). The library's row is
``comm.all_reduce`` over ``run_world(..., "tcp")``, the same in-place float32 calls. Each row: wall ms
a call (the slower rank), each rank's user + sys CPU ms a call (``getrusage``), and for the loop its
send / recv / poll calls a call. Every row's result is checked on both ranks.

    python -m perf.tcp_pair_loop --mib 32,64 --calls 20 --rounds 3 \\
        --variants lib,loop:1M:0,loop:1M:1000
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from collectives.transports.tcp import SOCKET_BUFFER_BYTES
from perf.options import parse_size
from perf.tcp_send_paths import cpu_ms

MIB = 1 << 20
PIECE = 2 * MIB  # the transport's step at these sizes (collectives.steps)
SOURCE = Path(__file__).with_suffix(".c")
WARM = 3


@dataclass
class Row:
    """One measurement: wall ms a call (the slower rank), each rank's (user, sys) CPU ms a call,
    whether both ranks got the exact sums, and the loop's "send/recv/poll" calls a call per rank."""

    wall_ms: float
    cpu: list[tuple[float, float]]
    ok: bool
    calls: list[str] | None


def build(directory: str) -> ctypes.CDLL:
    """Compile ``tcp_pair_loop.c`` into ``directory`` and load it."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (cc or gcc) on PATH")
    out = Path(directory) / "tcp_pair_loop.so"
    subprocess.run([cc, "-O3", "-std=c11", "-D_GNU_SOURCE", "-shared", "-fPIC", "-o", str(out), str(SOURCE)],
                   check=True)
    lib = ctypes.CDLL(str(out))
    lib.pair_all_reduce.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_size_t,
                                    ctypes.c_size_t, ctypes.c_size_t, ctypes.c_long, ctypes.c_int, ctypes.c_void_p]
    lib.pair_all_reduce.restype = ctypes.c_int
    return lib


def _values(n: int, rank: int) -> np.ndarray:
    """Rank ``rank``'s input: small integers, so the float32 sum is exact."""
    return (np.arange(n, dtype=np.int64) % 251 + 1000 * rank).astype(np.float32)


def _expected(n: int) -> np.ndarray:
    total: np.ndarray = _values(n, 0) + _values(n, 1)
    return total


def _loop_rank(lib: ctypes.CDLL, sock: socket.socket, rank: int, n: int, calls: int, read: int, spin_us: int,
               out_fd: int) -> None:
    """One rank of the loop: warm calls, a checked call, then ``calls`` timed ones; reports a line."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    stats = (ctypes.c_long * 3)()

    def call(x: np.ndarray) -> None:
        rc = lib.pair_all_reduce(sock.fileno(), x.ctypes.data, n, rank, PIECE, PIECE, read, spin_us * 1000, 60000,
                                 ctypes.addressof(stats))
        if rc != 0:
            raise RuntimeError(f"rank {rank}: pair_all_reduce returned {rc}")

    x = _values(n, rank)
    for _ in range(WARM):
        call(x)
    x[:] = _values(n, rank)
    call(x)
    ok = bool(np.array_equal(x, _expected(n)))
    for i in range(3):
        stats[i] = 0
    u0, s0 = cpu_ms()
    t0 = time.perf_counter()
    for _ in range(calls):
        call(x)
    wall = (time.perf_counter() - t0) * 1e3 / calls
    u1, s1 = cpu_ms()
    counts = "/".join(str(stats[i] // calls) for i in range(3))
    os.write(out_fd, f"{rank} {wall:.2f} {(u1 - u0) / calls:.2f} {(s1 - s0) / calls:.2f} {int(ok)} {counts}\n".encode())


def measure_loop(lib: ctypes.CDLL, nbytes: int, calls: int, read: int, spin_us: int) -> Row:
    """Both ranks of the loop (forked), ``calls`` timed all-reduces of ``nbytes``."""
    n = nbytes // 4
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    rfd, wfd = os.pipe()
    pids = []
    for rank in (0, 1):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(rfd)
                if rank == 0:
                    sock, _ = listener.accept()
                else:
                    sock = socket.socket()
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
                    sock.connect(listener.getsockname())
                listener.close()
                _loop_rank(lib, sock, rank, n, calls, read, spin_us, wfd)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    os.close(wfd)
    listener.close()
    codes = [os.waitpid(pid, 0)[1] for pid in pids]
    with os.fdopen(rfd) as f:
        rows = sorted(line.split() for line in f.read().splitlines() if line)
    if any(codes) or len(rows) != 2:
        raise RuntimeError(f"a loop rank failed (wait status {codes})")
    return Row(max(float(r[1]) for r in rows), [(float(r[2]), float(r[3])) for r in rows],
               all(r[4] == "1" for r in rows), [r[5] for r in rows])


def _library_rank(comm: Any, n: int, calls: int) -> tuple[float, float, float, bool]:
    x = _values(n, comm.rank)
    for _ in range(WARM):
        comm.all_reduce(x)
    x[:] = _values(n, comm.rank)
    comm.all_reduce(x)
    ok = bool(np.array_equal(x, _expected(n)))
    u0, s0 = cpu_ms()
    t0 = time.perf_counter()
    for _ in range(calls):
        comm.all_reduce(x)
    wall = (time.perf_counter() - t0) * 1e3 / calls
    u1, s1 = cpu_ms()
    return wall, (u1 - u0) / calls, (s1 - s0) / calls, ok


def measure_library(nbytes: int, calls: int) -> Row:
    """The same calls through the library over tcp (2 ranks, ``run_world``)."""
    from collectives.testing.harness import run_world

    rows = run_world(lambda comm: _library_rank(comm, nbytes // 4, calls), 2, "tcp", timeout=600)
    return Row(max(r[0] for r in rows), [(r[1], r[2]) for r in rows], all(r[3] for r in rows), None)


def _size(text: str) -> int:
    """A read size as the harness reads sizes (``perf.options.parse_size``: 256K, 1M)."""
    nbytes = parse_size(text)
    if nbytes <= 0:
        raise ValueError(f"not a read size: {text!r}")
    return nbytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", default="32,64", help="all-reduce sizes in MiB, comma-separated")
    parser.add_argument("--calls", type=int, default=20, help="timed calls a row (after 3 warm and 1 checked)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds over the variants")
    parser.add_argument("--variants", default="lib,loop:1M:0,loop:1M:1000",
                        help="lib, or loop:READ:SPIN_US (READ like 256K or 1M), comma-separated")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lib = build(tmp)
        print("round  MiB variant           wall ms  rank 0 user+sys  rank 1 user+sys  ok  send/recv/poll a call")
        for rnd in range(1, args.rounds + 1):
            for mib in (int(m) for m in args.mib.split(",")):
                for variant in args.variants.split(","):
                    r: Row
                    if variant == "lib":
                        r = measure_library(mib * MIB, args.calls)
                    else:
                        _, read, spin = variant.split(":")
                        r = measure_loop(lib, mib * MIB, args.calls, _size(read), int(spin))
                    cpu = "  ".join(f"{u:6.1f}+{s:5.1f}  " for u, s in r.cpu)
                    calls = " ".join(r.calls) if r.calls else ""
                    print(f"{rnd:5d} {mib:4d} {variant:16s} {r.wall_ms:8.1f}  {cpu} {int(r.ok):2d}  {calls}",
                          flush=True)


if __name__ == "__main__":
    main()
