"""Names of shared-memory segments, and the sweep of those whose owner died.

A segment is unlinked as soon as every peer has mapped it, so a job that ends in any way
after setup leaves nothing in /dev/shm. A process killed *during* setup (SIGKILL, or a
launcher stopping its ranks while one waits for a peer that failed) cannot unlink its own,
so the name says who owns it::

    collectives-<pid namespace, hex>-<pid>-<start time, hex>-<16 random hex digits>

and :func:`sweep` removes the segments whose owner is gone: same pid namespace (a pid
means nothing in another one, so those are never touched), owned by our user, and the
process with that pid is dead, a zombie, or a different process (another start time: the
pid was reused). Every shm transport sweeps when it starts, and so does the launcher when
its job ends, so leftovers live at most until the next job on the host.

The random part keeps names unguessable and distinct; creation uses ``O_EXCL``, so a
name is never reused even if the random parts were to meet.

Names of the older ``collectives-<pid>-<random>`` form carry no namespace and no start
time, so they cannot be swept safely and are left alone.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat

logger = logging.getLogger("collectives")

SHM_DIR = "/dev/shm"
PREFIX = "collectives-"
_NAME = re.compile(r"collectives-([0-9a-f]+)-([0-9]+)-([0-9a-f]+)-[0-9a-f]{16}")

__all__ = ["PREFIX", "SHM_DIR", "owner_gone", "pid_namespace", "proc_stat", "segment_name", "sweep"]


def proc_stat(pid: int) -> list[bytes] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rindex(b")") + 2 :].split()


def pid_namespace() -> str:
    """This process's pid namespace: a peer's pid is meaningful only inside the same one."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _namespace_id() -> int:
    """The inode of our pid namespace (``pid:[4026531836]`` -> 4026531836), 0 if unknown."""
    digits = "".join(c for c in pid_namespace() if c.isdigit())
    return int(digits) if digits else 0


def _start_time(pid: int) -> int:
    """When process ``pid`` started (clock ticks since boot), 0 if unknown."""
    fields = proc_stat(pid)
    return int(fields[19]) if fields is not None and len(fields) > 19 else 0


_OWNER: tuple[int, int, str] | None = None  # (pid, start time, name prefix) of this process


def segment_name() -> str:
    """A fresh name for a segment this process creates (see the module docstring)."""
    global _OWNER
    pid = os.getpid()
    if _OWNER is None or _OWNER[0] != pid:  # computed once per process (again after fork)
        _OWNER = (pid, _start_time(pid), f"{PREFIX}{_namespace_id():x}-{pid}-{_start_time(pid):x}-")
    return _OWNER[2] + secrets.token_hex(8)


def owner_gone(name: str) -> bool:
    """Whether ``name`` is a segment of ours whose owner process is certainly gone."""
    match = _NAME.fullmatch(name)
    if match is None:
        return False
    namespace, pid, started = int(match[1], 16), int(match[2]), int(match[3], 16)
    if namespace == 0 or namespace != _namespace_id() or pid == os.getpid():
        return False
    fields = proc_stat(pid)
    if fields is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False  # alive but /proc unreadable: leave it
    if fields[0] in (b"Z", b"X"):
        return True
    return started != 0 and len(fields) > 19 and int(fields[19]) != started


def sweep(directory: str = SHM_DIR) -> list[str]:
    """Unlink the segments in ``directory`` whose owner died (ours only); their names."""
    try:
        names = [n for n in os.listdir(directory) if n.startswith(PREFIX)]
    except OSError:
        return []
    swept: list[str] = []
    uid = os.geteuid()
    for name in names:
        if not owner_gone(name):
            continue
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
            if st.st_uid != uid or not stat.S_ISREG(st.st_mode):
                continue
            os.unlink(path)
        except OSError:
            continue  # gone already (another sweeper), or not ours to remove
        swept.append(name)
    if swept:
        logger.info("shm: removed %d segment(s) left in %s by dead processes: %s",
                    len(swept), directory, ", ".join(swept))
    return swept
