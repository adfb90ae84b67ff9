"""The kernel's price of moving bytes over loopback TCP, by send path: CPU a side per payload.

The 2-rank tcp all-reduce at 32-64 MiB is CPU-bound, most of it in the kernel (``sendmsg`` and
``recv_into``). This measures what a send path costs on this host, outside the library: one
process sends ``--mib`` MiB to another over one loopback TCP connection (4 MiB socket buffers,
the transport's), the receiver reads it with ``recv_into`` in 256 KiB pieces (the streamed
fold's bounce) and acknowledges each payload, and both report user and sys CPU per payload from
``getrusage``. Paths, run alternately for ``--rounds``:

- ``send``: ``send`` of 2 MiB pieces (the transport's path: the kernel copies the bytes in);
- ``zerocopy``: ``SO_ZEROCOPY`` and ``MSG_ZEROCOPY``; the completion says whether the kernel
  copied anyway (Linux copies every looped-back zerocopy skb, msg_zerocopy.rst);
- ``vmsplice``: ``vmsplice`` of 1 MiB of the buffer into a pipe, then ``splice`` to the socket
  (the socket references the sender's pages; the receiver's copy is the only one).

    python -m perf.tcp_send_paths --mib 64 --reps 10 --rounds 2
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import os
import resource
import socket
import time

import numpy as np

from collectives.transports.tcp import SOCKET_BUFFER_BYTES

MIB = 1 << 20
BUFFER = SOCKET_BUFFER_BYTES  # the transport's socket buffers
PIECE = 2 * MIB
PIPE_BYTES = 1 * MIB
READ_BYTES = 256 << 10
SO_ZEROCOPY = 60
MSG_ZEROCOPY = 0x4000000
PATHS = ("send", "zerocopy", "vmsplice")


class _IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def cpu_ms() -> tuple[float, float]:
    """This process's user and system CPU so far, in ms."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime * 1e3, r.ru_stime * 1e3


def _receive(port: int, nbytes: int, reps: int, out_fd: int) -> None:
    """The child: read ``reps`` payloads, acknowledge each, report CPU a payload and the check."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
    dst = np.empty(nbytes, np.uint8)
    view = memoryview(dst)
    u0, s0 = cpu_ms()
    for _ in range(reps):
        got = 0
        while got < nbytes:
            got += sock.recv_into(view[got : got + READ_BYTES])
        sock.sendall(b"k")
    u1, s1 = cpu_ms()
    ok = bool((dst == (reps - 1) % 251).all())
    os.write(out_fd, f"{(u1 - u0) / reps:.1f} {(s1 - s0) / reps:.1f} {int(ok)}".encode())


def _send_all(path: str, sock: socket.socket, src: np.ndarray, pipe: tuple[int, int] | None) -> None:
    nbytes, off = len(src), 0
    if pipe is None:
        view, flags = memoryview(src), MSG_ZEROCOPY if path == "zerocopy" else 0
        while off < nbytes:
            off += sock.send(view[off : off + PIECE], flags)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.vmsplice.restype = ctypes.c_ssize_t
    libc.vmsplice.argtypes = [ctypes.c_int, ctypes.POINTER(_IOVec), ctypes.c_ulong, ctypes.c_uint]
    while off < nbytes:
        iov = _IOVec(src.ctypes.data + off, min(PIPE_BYTES, nbytes - off))
        n = libc.vmsplice(pipe[1], ctypes.byref(iov), 1, 0)
        if n < 0:
            raise OSError(ctypes.get_errno(), "vmsplice failed")
        left = n
        while left:
            left -= os.splice(pipe[0], sock.fileno(), left)
        off += n


def _drain_completions(sock: socket.socket) -> int | None:
    """The last zerocopy completion's ee_code (1: the kernel copied), None if none came."""
    code = None
    while True:
        try:
            _, ancillary, _, _ = sock.recvmsg(0, 256, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return code
        for _, _, data in ancillary:
            code = data[6]  # struct sock_extended_err: errno (4), origin, type, code


def measure(path: str, nbytes: int, reps: int) -> dict[str, float | int | None]:
    """Wall ms a payload and CPU ms a payload (user, sys) of both sides over ``path``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(rfd)
            _receive(listener.getsockname()[1], nbytes, reps, wfd)
        finally:
            os._exit(0)
    os.close(wfd)
    sock, _ = listener.accept()
    listener.close()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if path == "zerocopy":
        sock.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
    pipe = os.pipe() if path == "vmsplice" else None
    if pipe is not None:
        fcntl.fcntl(pipe[1], fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    src = np.zeros(nbytes, np.uint8)
    code = None
    user = sys_ = wall = 0.0
    for rep in range(reps):
        src[:] = rep % 251  # outside the timing: the receiver checks the last payload
        u0, s0 = cpu_ms()
        t0 = time.perf_counter()
        _send_all(path, sock, src, pipe)
        if sock.recv(1) != b"k":  # every byte read: the buffer may change again
            raise RuntimeError("the receiver did not acknowledge")
        wall += time.perf_counter() - t0
        u1, s1 = cpu_ms()
        user, sys_ = user + u1 - u0, sys_ + s1 - s0
        if path == "zerocopy":
            code = _drain_completions(sock)
    os.waitpid(pid, 0)
    r_user, r_sys, ok = os.read(rfd, 64).decode().split()
    os.close(rfd)
    sock.close()
    if pipe is not None:
        os.close(pipe[0])
        os.close(pipe[1])
    return {"wall_ms": wall * 1e3 / reps, "send_user": user / reps, "send_sys": sys_ / reps,
            "recv_user": float(r_user), "recv_sys": float(r_sys), "ok": int(ok), "copied": code}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="payload MiB (default 64)")
    parser.add_argument("--reps", type=int, default=10, help="payloads a measurement (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds over the paths (default 2)")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, of {', '.join(PATHS)}")
    args = parser.parse_args()
    print(f"{args.mib} MiB a payload, {args.reps} payloads; ms a payload")
    print("round path       wall  send user+sys  recv user+sys  total cpu  data ok  zerocopy copied")
    for rnd in range(1, args.rounds + 1):
        for path in args.paths.split(","):
            r = measure(path, args.mib * MIB, args.reps)
            total = r["send_user"] + r["send_sys"] + r["recv_user"] + r["recv_sys"]  # type: ignore[operator]
            print(f"{rnd:5d} {path:9s} {r['wall_ms']:6.1f}  {r['send_user']:5.1f}+{r['send_sys']:5.1f}"
                  f"    {r['recv_user']:5.1f}+{r['recv_sys']:5.1f}   {total:8.1f}  {r['ok']:7d}  {r['copied']}")


if __name__ == "__main__":
    main()
