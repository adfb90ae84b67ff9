"""The single copies of the direct all-gather by reads or writes, timed alone on two cores.

The direct engine's all-gather by single-copy reads or writes (``engines/exchange_reads.py``,
``_reads_c.c``) is, per rank and call, one ``process_vm_readv`` of each peer's block into its
``out`` and a ``memcpy`` of its own block (reads), or, where every rank has a core and the blocks
are of ``direct_routes.ALL_GATHER_WRITES_BYTES`` and more, a ``process_vm_writev`` of each piece of
its block into every peer's ``out`` and the same piece into its own, read from the cache the second
time (writes); plus flags. This times those steps without the flags: two processes, each pinned to
its own core, each running the same loop at once on its own buffers and its peer's (as the two
ranks of an all-gather do), in C (``cc``), the median over ``--rounds`` of the mean over
``--calls`` calls, per step:

- ``memcpy``: ``block`` bytes of my heap into my heap;
- ``read`` / ``write``: one ``process_vm_readv`` / ``process_vm_writev`` of ``block`` bytes
  between my heap and my peer's;
- ``reads``: ``memcpy`` then ``read`` (the route by reads at 2 ranks);
- ``writes``: ``write`` then ``memcpy`` of the same source, piece by piece (the route by writes).

A line fitted through the sizes within the cache (``--fit-max``) gives each step's cost per call
and per byte (docs/simulation.md, *The forty-fifth round*).

    python perf/cma_copies.py --sizes 16K,32K,64K,128K,256K,512K,1M,2M --json cma.json
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script
from perf.options import parse_size  # noqa: E402

SOURCE = r"""
#define _GNU_SOURCE
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int cma(int pid, int write, char *local, uint64_t remote, size_t n) {
    struct iovec mine = {local, n}, theirs = {(void *)(uintptr_t)remote, n};
    ssize_t got = write ? process_vm_writev(pid, &mine, 1, &theirs, 1, 0)
                        : process_vm_readv(pid, &mine, 1, &theirs, 1, 0);
    return got == (ssize_t)n;
}

/* mode 0 memcpy, 1 read, 2 write, 3 memcpy + read, 4 write + memcpy piece by piece. Mean ns a call, -1 refused. */
int64_t loop(int mode, int pid, char *src, char *dst, char *peer_src, char *peer_dst, size_t n, size_t piece,
             int calls) {
    int64_t t0 = now_ns();
    for (int c = 0; c < calls; c++) {
        switch (mode) {
        case 0: memcpy(dst, src, n); break;
        case 1: if (!cma(pid, 0, dst, (uint64_t)(uintptr_t)peer_src, n)) return -1; break;
        case 2: if (!cma(pid, 1, src, (uint64_t)(uintptr_t)peer_dst, n)) return -1; break;
        case 3: memcpy(dst + n, src, n); if (!cma(pid, 0, dst, (uint64_t)(uintptr_t)peer_src, n)) return -1; break;
        default:
            for (size_t at = 0; at < n; at += piece) {
                size_t m = n - at < piece ? n - at : piece;
                if (!cma(pid, 1, src + at, (uint64_t)(uintptr_t)(peer_dst + at), m)) return -1;
                memcpy(dst + n + at, src + at, m);
            }
        }
    }
    return (now_ns() - t0) / calls;
}
"""

MODES = ("memcpy", "read", "write", "reads", "writes")
PIECE_BYTES = 512 << 10  # direct_routes.ALL_GATHER_WRITE_PIECE_BYTES


def build() -> ctypes.CDLL:
    """Compile ``SOURCE`` with the system's C compiler and load it."""
    folder = Path(tempfile.mkdtemp(prefix="cma_copies_"))
    (folder / "loop.c").write_text(SOURCE)
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(folder / "loop.so"), str(folder / "loop.c")], check=True)
    lib = ctypes.CDLL(str(folder / "loop.so"))
    lib.loop.restype = ctypes.c_int64
    lib.loop.argtypes = [ctypes.c_int, ctypes.c_int] + [ctypes.c_void_p] * 4 + [ctypes.c_size_t, ctypes.c_size_t,
                                                                                   ctypes.c_int]
    return lib


def _barrier(me: int, pipes: tuple[tuple[int, int], tuple[int, int]]) -> None:
    """Both processes pass together (one byte each way)."""
    os.write(pipes[me][1], b"x")
    os.read(pipes[1 - me][0], 1)


def run(sizes: list[int], calls: int, rounds: int) -> list[dict[str, Any]]:
    """Time every mode and size on two processes; rows of the parent's (rank 0's) medians, with rank 1's."""
    lib = build()
    largest = max(sizes)
    src = np.ones(largest, np.uint8)  # the same addresses in both processes after fork, each its own pages
    dst = np.zeros(2 * largest, np.uint8)  # a read lands in the first half, my own copy in the second
    a, b = src.ctypes.data, dst.ctypes.data
    pipes = (os.pipe(), os.pipe())
    result = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    me, peer = (0, pid) if pid else (1, parent)
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[me % len(cpus)]})
    src[:] = 1 + me  # each process's own pages (copy on write)
    dst[:] = 0
    rows = []
    for n in sizes:
        for m, mode in enumerate(MODES):
            times = []
            for _ in range(rounds):
                _barrier(me, pipes)
                lib.loop(m, peer, a, b, a, b, n, PIECE_BYTES, max(1, calls // 4))  # warm
                _barrier(me, pipes)
                times.append(lib.loop(m, peer, a, b, a, b, n, PIECE_BYTES, calls))
            rows.append({"mode": mode, "bytes": n, "us": statistics.median(times) / 1e3})
    if me == 1:
        os.write(result[1], json.dumps(rows).encode())
        os.close(result[1])
        os._exit(0)
    os.close(result[1])
    data = b""
    while chunk := os.read(result[0], 1 << 16):
        data += chunk
    os.waitpid(pid, 0)
    for row, other in zip(rows, json.loads(data)):
        row["peer_us"] = other["us"]
    return rows


def fit(rows: list[dict[str, Any]], mode: str, most: int) -> tuple[float, float]:
    """(µs a call, ns a byte) of the least-squares line through ``mode``'s rows up to ``most`` bytes,
    each row the slower process's time."""
    pts = [(r["bytes"], max(r["us"], r["peer_us"])) for r in rows if r["mode"] == mode and r["bytes"] <= most]
    x = np.array([p[0] for p in pts], float)
    y = np.array([p[1] for p in pts], float)
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope * 1e3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16K,32K,64K,128K,256K,512K,1M,2M,4M")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fit-max", default="1M", help="the largest block of the fitted line (within the cache)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    start, load0 = time.strftime("%H:%M:%S", time.gmtime()), os.getloadavg()[0]
    rows = run(sizes, args.calls, args.rounds)
    end, load1 = time.strftime("%H:%M:%S", time.gmtime()), os.getloadavg()[0]
    print(f"# {start}-{end} UTC, load {load0:.2f} -> {load1:.2f}; us a call, rank 0 / rank 1")
    print(f"{'bytes':>9} " + " ".join(f"{m:>15}" for m in MODES))
    for n in sizes:
        cells = [next(r for r in rows if r["mode"] == m and r["bytes"] == n) for m in MODES]
        print(f"{n:>9} " + " ".join(f"{c['us']:>7.2f}/{c['peer_us']:<7.2f}" for c in cells))
    most = parse_size(args.fit_max)
    fits = {m: fit(rows, m, most) for m in MODES}
    for m, (alpha, beta) in fits.items():
        print(f"# {m:>7}: {alpha:6.2f} us a call + {beta:.4f} ns a byte (blocks up to {most} B)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"start": start, "end": end, "load": [load0, load1], "rows": rows,
                       "fit_max": most, "fits": {m: {"alpha_us": a, "beta_ns": b} for m, (a, b) in fits.items()}},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
