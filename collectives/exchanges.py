"""The exchanges of a communicator (a base of ``Communicator``): gather, scatter and the
all-to-alls, which every rank calls with blocks for, or from, every other. Their arguments are
checked as the other collectives' are, then the call runs its plan (``_planned``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from . import arguments as check
from ._fast_path import Paths
from .buffers import check_count, check_same_dtype, check_same_or_apart
from .plans import Planner
from .staging import NoteStaged, Staging
from .work import Worker


class Exchanges:
    """Gather, scatter, all_to_all and all_to_all_v of a ``Communicator``."""

    rank: int
    size: int
    _planner: Planner
    _note_staged: NoteStaged
    _fast: Paths
    _worker: Worker | None
    _planned: Callable[..., Any]

    def gather(self, x: Any, out: Any = None, root: int = 0, *, algorithm: str | None = None,
               async_op: bool = False) -> Any:
        """Gather every rank's ``x`` into the root's ``out`` (size·k, rank order).
        Returns ``out`` on the root (allocated when None) and None elsewhere."""
        if not async_op and self._worker is None and self._fast.gather(self, x, out, root, algorithm):
            return out if root == self.rank else None
        root = check.rank_in(root, "root", self.size)
        stage = Staging(self._note_staged)
        xa = stage.flat(x, "x")
        k = xa.size
        out, oa = (check.output(stage, out, x, xa, k * self.size, f"world size {self.size} × {k} elements of x")
                   if self.rank == root else (None, None))
        return self._planned(("gather", xa.dtype, k, root, algorithm), k * self.size * xa.itemsize,
                             partial(self._planner.gather, dtype=xa.dtype, count=k, root=root),
                             xa, oa, stage, out, async_op)

    def scatter(self, x: Any, out: Any, root: int = 0, *, algorithm: str | None = None,
                async_op: bool = False) -> Any:
        """Split the root's ``x`` (size·k elements) into blocks; rank r receives block r in
        ``out`` (k elements). ``x`` is ignored (may be None) on other ranks. Returns ``out``."""
        if not async_op and self._worker is None and self._fast.scatter(self, x, out, root, algorithm):
            return out
        root = check.rank_in(root, "root", self.size)
        stage = Staging(self._note_staged)
        oa = stage.flat(out, "out", writable=True, load=False)
        k = oa.size
        xa: np.ndarray | None = None
        if self.rank == root:
            xa = stage.flat(x, "x")
            check_same_dtype(oa, xa, "out", "x")
            check_count(xa, k * self.size, "x", f"world size {self.size} × {k} elements of out")
        return self._planned(("scatter", oa.dtype, k, root, algorithm), k * self.size * oa.itemsize,
                             partial(self._planner.scatter, dtype=oa.dtype, count=k, root=root),
                             xa, oa, stage, out, async_op)

    def all_to_all(self, x: Any, out: Any = None, *, algorithm: str | None = None, async_op: bool = False) -> Any:
        """Rank r sends block j of ``x`` (size·k elements) to rank j, which stores it as
        block r of ``out``. Returns ``out`` (allocated when None)."""
        if not async_op and self._worker is None and out is not None and self._fast.all_to_all(
                self, x, out, algorithm):
            return out
        stage = Staging(self._note_staged)
        xa = stage.flat(x, "x")
        check.per_rank(xa, "x", self.size)
        out, oa = check.output(stage, out, x, xa, xa.size, "all_to_all output is as large as its input")
        return self._planned(("all_to_all", xa.dtype, xa.size, algorithm), xa.nbytes,
                             partial(self._planner.all_to_all, dtype=xa.dtype, count=xa.size),
                             xa, oa, stage, out, async_op)

    def all_to_all_v(self, x: Any, in_splits: Sequence[int], out_splits: Sequence[int], out: Any = None, *,
                     algorithm: str | None = None, async_op: bool = False) -> Any:
        """All-to-all with a count per pair (MPI_Alltoallv; torch's ``all_to_all_single`` with split sizes):
        rank r sends ``in_splits[j]`` elements of ``x`` (consecutive blocks in rank order) to rank j and
        receives ``out_splits[j]`` from rank j into consecutive blocks of ``out`` (allocated when None). Rank
        r's ``out_splits[j]`` must equal rank j's ``in_splits[r]``: else the receiver raises MessageMismatchError."""
        sends, recvs = check.splits(in_splits, out_splits, self.rank, self.size)
        stage = Staging(self._note_staged)
        xa = stage.flat(x, "x")
        check_count(xa, sum(sends), "x", "the sum of in_splits")
        out, oa = check.output(stage, out, x, xa, sum(recvs), "the sum of out_splits")
        check_same_or_apart(xa, oa, "x", "out")
        key = ("all_to_all_v", xa.dtype, tuple(sends), tuple(recvs), algorithm)
        return self._planned(key, xa.nbytes, lambda a: self._planner.all_to_all_v(sends, recvs), xa, oa, stage, out, async_op)
