"""Worlds kept from one ``--np`` run to the next in one process (:func:`keep_worlds`).

A driver that runs several programs one after another with the same ``--np`` (the tests
run nine with one set of flags) would start and stop every world, torch-importing gloo
ranks and ``mpiexec`` included, once per program. Inside ``keep_worlds()`` each run takes
the coordinator of the run before with the same ``--np`` and ``-T``, and its worlds where
they were started alike (perf.coordinator); they all stop when the block ends. A world
that failed is not kept, nor any world of a run that ended before its table (a library
failure, an interrupt). What a program prints is what it prints alone, but for the
ranks' pids, which repeat.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .coordinator import Coordinator

_kept: dict[tuple[int, float | None], Coordinator] | None = None


@contextlib.contextmanager
def keep_worlds() -> Iterator[None]:
    """Keep the worlds of the ``--np`` runs in this block for the runs after them."""
    global _kept
    outer, _kept = _kept, {}
    try:
        yield
    finally:
        kept, _kept = _kept, outer
        for coord in kept.values():
            coord.close()


def coordinator(nranks: int, timeout: float | None) -> Coordinator:
    """A new coordinator, or inside :func:`keep_worlds` the kept one for ``nranks``/``timeout``."""
    if _kept is None:
        return Coordinator(nranks, timeout=timeout)
    key = (nranks, timeout)
    if key not in _kept:
        _kept[key] = Coordinator(nranks, timeout=timeout)
    return _kept[key]


def release(coord: Coordinator, *, graceful: bool, completed: bool) -> None:
    """The end of a run: keep ``coord``'s well worlds where it is kept and the run
    ``completed`` (printed its table), else stop them all."""
    key = (coord.nranks, coord.timeout)
    if _kept is not None and _kept.get(key) is coord:
        if graceful and completed:
            coord.drop_failed()
            return
        del _kept[key]
    coord.close(graceful=graceful)
