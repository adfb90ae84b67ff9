"""The single copies of the direct all-gather, timed alone: what ``collectives-tune`` measures
``peer_alpha``, ``peer_beta`` and ``heap_beta`` by (``tuning/reads.once_time``), and what
``perf/cma_copies.py`` prints.

The direct engine's all-gather by single copies (``engines/_reads_c.c``) is, per rank and call,
one ``process_vm_readv`` of each peer's block into its ``out`` and a ``memcpy`` of its own block,
or a ``process_vm_writev`` of each piece of its block into every peer's ``out`` and the same
piece into its own; plus flags. ``run`` times those copies without the flags: two processes
(this one and a forked child), each pinned to a core of its own, each running the same C loop
(``_reads_c.time_copies``) at once on its own buffers and its peer's, as the two ranks of an
all-gather do; a case's time is the median over ``rounds`` of the mean over ``calls`` calls.
``fit`` draws a line through the sizes within the cache; ``steps`` turns the lines of the three
single steps into the profile's constants (docs/simulation.md, *The forty-fifth round*).
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from .algorithms.direct_routes import ALL_GATHER_WRITE_PIECE_BYTES
from .transports import cma

try:
    from .engines import _reads_c  # type: ignore[attr-defined]
except ImportError:  # built without a C compiler
    _reads_c = None

MODES = ("memcpy", "read", "write", "reads", "writes")
"""The C loop's modes, in its numbering: a copy within my heap, one read from my peer's, one write
into it, the route by reads (``memcpy`` then read), the route by writes (write then ``memcpy``,
piece by piece)."""

STEP_SIZES = (8 << 10, 16 << 10, 32 << 10, 64 << 10, 128 << 10)
"""Blocks ``collectives-tune`` times the single steps at: within the cache, where the probe's lines
were drawn (8-128 KiB)."""


class Steps(NamedTuple):
    """The single copies' constants, in seconds (``TransportCosts``' fields of the same names)."""

    peer_alpha: float
    """Per ``process_vm_readv`` or ``process_vm_writev``: the mean of the read's and the write's intercepts."""
    peer_beta: float
    """Per byte read from or written into a peer's heap: the mean of the two slopes."""
    heap_beta: float
    """Per byte copied within a rank's heap: the ``memcpy`` slope."""


class CopiesRefused(Exception):
    """The kernel refused a cross-memory copy between the two timing processes."""


def unavailable() -> str | None:
    """Why the single copies cannot be timed here (None: they can)."""
    if _reads_c is None:
        return "the C part engines/_reads_c is not built"
    if len(os.sched_getaffinity(0)) < 2:
        return "fewer than 2 usable cores (the copies are timed on a core each)"
    if not cma.AVAILABLE:
        return "this platform has no process_vm_readv"
    return None


def _barrier(me: int, pipes: tuple[tuple[int, int], tuple[int, int]]) -> None:
    """Both processes pass together (one byte each way)."""
    os.write(pipes[me][1], b"x")
    if not os.read(pipes[1 - me][0], 1):
        raise CopiesRefused("the peer process of the timing ended early")


def _loop(me: int, peer: int, pipes: tuple[tuple[int, int], tuple[int, int]], modes: Sequence[str],
          sizes: Sequence[int], calls: int, rounds: int, a: int, b: int) -> list[dict[str, Any]]:
    """This process's rows: every mode and size, in step with the other process."""
    assert _reads_c is not None
    rows = []
    for n in sizes:
        for mode in modes:
            m = MODES.index(mode)
            times = []
            for _ in range(rounds):
                _barrier(me, pipes)
                _reads_c.time_copies(m, peer, a, b, a, b, n, ALL_GATHER_WRITE_PIECE_BYTES, max(1, calls // 4))  # warm
                _barrier(me, pipes)
                times.append(_reads_c.time_copies(m, peer, a, b, a, b, n, ALL_GATHER_WRITE_PIECE_BYTES, calls))
            refused = min(times) < 0
            rows.append({"mode": mode, "bytes": n, "us": -1.0 if refused else statistics.median(times) / 1e3})
    _barrier(me, pipes)  # neither leaves (the child exits) while the other still copies from its memory
    return rows


def run(sizes: Sequence[int], calls: int = 200, rounds: int = 5,
        modes: Sequence[str] = MODES) -> list[dict[str, Any]]:
    """Rows ``{"mode", "bytes", "us", "peer_us"}``: this process's median µs a call of each mode and
    size, and the forked peer's. Pins this process to one core while it runs (restored after).

    Raises:
        CopiesRefused: the kernel refused a copy (``peer_us`` or ``us`` would be -1), or the
            C part or a second core is missing (``unavailable``).
    """
    why = unavailable()
    if why is not None:
        raise CopiesRefused(why)
    largest = max(sizes)
    src = np.ones(largest, np.uint8)  # the same addresses in both processes after fork, each its own pages
    dst = np.zeros(2 * largest, np.uint8)  # a read lands in the first half, my own copy in the second
    a, b = src.ctypes.data, dst.ctypes.data
    pipes = (os.pipe(), os.pipe())
    result_r, result_w = os.pipe()
    cpus = sorted(os.sched_getaffinity(0))
    parent = os.getpid()
    cma.allow_peers()  # the child reads and writes this process (Yama's ptrace_scope 1)
    pid = os.fork()
    if pid == 0:
        try:
            for fd in (result_r, pipes[0][1], pipes[1][0]):  # the parent's ends: its exit is our EOF
                os.close(fd)
            os.sched_setaffinity(0, {cpus[1]})
            src[:] = 2  # the child's own pages (copy on write)
            dst[:] = 0
            rows = _loop(1, parent, pipes, modes, sizes, calls, rounds, a, b)
            os.write(result_w, json.dumps(rows).encode())
        finally:
            os._exit(0)
    for fd in (result_w, pipes[0][0], pipes[1][1]):  # the child's ends: its exit is our EOF
        os.close(fd)
    try:
        os.sched_setaffinity(0, {cpus[0]})
        src[:] = 1
        dst[:] = 0
        rows = _loop(0, pid, pipes, modes, sizes, calls, rounds, a, b)
        data = b""
        while chunk := os.read(result_r, 1 << 16):
            data += chunk
    finally:
        os.waitpid(pid, 0)
        os.sched_setaffinity(0, set(cpus))
        for fd in (result_r, pipes[0][1], pipes[1][0]):
            os.close(fd)
    if not data:
        raise CopiesRefused("the peer process ended without its times")
    for row, other in zip(rows, json.loads(data)):
        row["peer_us"] = other["us"]
    if any(r["us"] < 0 or r["peer_us"] < 0 for r in rows):
        raise CopiesRefused("the kernel refused a process_vm_readv or process_vm_writev between two of our processes")
    return rows


def fit(rows: Sequence[dict[str, Any]], mode: str, most: int) -> tuple[float, float]:
    """(µs a call, ns a byte) of the least-squares line through ``mode``'s rows up to ``most`` bytes,
    each row the slower process's time."""
    pts = [(r["bytes"], max(r["us"], r["peer_us"])) for r in rows if r["mode"] == mode and r["bytes"] <= most]
    x = np.array([p[0] for p in pts], float)
    y = np.array([p[1] for p in pts], float)
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope * 1e3)


def steps(rows: Sequence[dict[str, Any]], most: int = max(STEP_SIZES)) -> Steps:
    """The constants from the lines of ``memcpy``, ``read`` and ``write`` through ``rows`` up to ``most``."""
    read, write, copy = fit(rows, "read", most), fit(rows, "write", most), fit(rows, "memcpy", most)
    return Steps((read[0] + write[0]) / 2 * 1e-6, (read[1] + write[1]) / 2 * 1e-9, copy[1] * 1e-9)


def measure(calls: int = 200, rounds: int = 7, repeats: int = 5) -> tuple[Steps, list[dict[str, Any]]]:
    """The single steps timed at ``STEP_SIZES``, ``repeats`` times over, and each constant's median over
    the repeats (a repeat takes about 0.2 s on two cores); the rows carry their ``repeat``. Raises
    CopiesRefused as ``run`` does."""
    fits, rows = [], []
    for repeat in range(repeats):
        these = run(STEP_SIZES, calls, rounds, ("memcpy", "read", "write"))
        fits.append(steps(these))
        rows += [{**r, "repeat": repeat} for r in these]
    return Steps(*(statistics.median(values) for values in zip(*fits))), rows
