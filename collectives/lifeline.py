"""Children that die with the process that started them.

A launcher killed outright (SIGKILL, the OOM killer) runs no cleanup, so without help its
ranks live on as orphans, holding ports, memory and GPUs. Linux can tie a child's life to
its parent's: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` in the child makes the kernel kill it
when the parent goes. :mod:`collectives.spawn` asks for it in every child it starts.

The kernel's notion of "parent" is the *thread* that forked, so children must be started
from a thread that lives as long as they should (the launcher's main thread does).
Elsewhere than Linux, or where prctl is refused, children are not tied and nothing fails.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1

__all__ = ["die_with_parent"]

_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent(parent: int, signum: int = signal.SIGKILL) -> bool:
    """In a freshly started child: have the kernel send ``signum`` when the parent thread
    exits; if parent ``parent`` is already gone (it died before we got here), die now.
    Returns whether the tie is in place."""
    if _LIBC is None:
        return False
    if _LIBC.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:  # the parent died before prctl: no signal will come
        os.kill(os.getpid(), signum)
    return True
