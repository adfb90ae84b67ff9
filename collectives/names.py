"""The algorithm and transport names a user may give, listed once.

``COLLECTIVES_ALGO``, ``init(algorithm=)``, every collective's ``algorithm=`` and the
harness's ``--algo`` take an algorithm name (or "auto"); ``COLLECTIVES_TRANSPORT``,
``init(transport=)`` and ``collectives-run --transport`` a transport name. Depends on
nothing, so that configuration, registry and tools can all read it.
"""

from __future__ import annotations

ALGORITHMS = ("ring", "tree", "recursive", "direct", "hierarchical")
TRANSPORTS = ("shm", "tcp", "inproc", "mpi")
