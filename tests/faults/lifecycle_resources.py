"""What a process holds that init/close cycles could leak: descriptors, threads, sockets
(listening and connected, from /proc/net against our own socket inodes), mappings of
/dev/shm files, and the library's /dev/shm entries that this process owns (new names
carry the owner's pid: ``collectives-<ns>-<pid>-...``). Shared by the cycle tests and
tests/faults/mpi_lifecycle.py."""

from __future__ import annotations

from typing import Any

import os
import threading
import time

# /proc/net/tcp states (include/net/tcp_states.h)
_LISTEN = "0A"
_ESTABLISHED = "01"


def socket_inodes(pid: int | str = "self") -> set[str]:
    """The inodes of the sockets process ``pid`` holds (empty where it cannot be read)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def _tcp_sockets(inodes: set[str]) -> tuple[int, int]:
    """(listening, other) TCP sockets of ours: ports held."""
    listening = other = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[9] in inodes:
                if fields[3] == _LISTEN:
                    listening += 1
                else:
                    other += 1
    return listening, other


def own_shm_entries() -> list[str]:
    """The library's /dev/shm entries created by this process."""
    marker = f"-{os.getpid()}-"
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith("collectives-") and marker in n)


def snapshot() -> dict[str, object]:
    """Counts of what this process holds now."""
    import gc

    gc.collect()
    inodes = socket_inodes()
    listening, connected = _tcp_sockets(inodes)
    with open("/proc/self/maps") as f:
        shm_maps = sum(1 for line in f if "/dev/shm/" in line)
    return {
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": threading.active_count(),
        "tasks": len(os.listdir("/proc/self/task")),
        "sockets": len(inodes),
        "listening": listening,
        "connected": connected,
        "shm_maps": shm_maps,
        "shm_entries": own_shm_entries(),
    }


class AbortTimer:
    """``comm.abort()`` from a timer thread after ``seconds`` (a watchdog), noting when."""

    def __init__(self, comm: Any, seconds: float) -> None:
        self.aborted_at: list[float] = []
        self.comm = comm
        self.timer = threading.Timer(seconds, self._abort)
        self.timer.start()

    def _abort(self) -> None:
        self.aborted_at.append(time.monotonic())
        self.comm.abort()

    def seconds_to(self, returned: float) -> float:
        """Seconds from the abort to ``returned`` (once the timer has fired)."""
        self.timer.join()
        return returned - self.aborted_at[0]
