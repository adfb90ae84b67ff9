"""``CollectivesProcessGroup``: a ``torch.distributed.ProcessGroup`` over our Communicator.

torch creates one per group (the default group, every ``new_group`` and DeviceMesh
dimension) on the member ranks, handing it a store already prefixed for that group. The
group connects two communicators through that store: one runs the collectives, in the
order they are issued, and one carries point-to-point traffic (the core's point-to-point
engine, see :mod:`.point_to_point`), so that ``irecv`` never blocks the collectives nor they it.

Every method receives torch's arguments (lists of tensors and an options object), checks
them on the caller's thread (a wrong call raises at once and sends nothing), stands in for
what the core does not take as it is (:mod:`.tensors`), and returns a :class:`CollectivesWork`.
A synchronous call (``opts.asyncOp`` false) with nothing queued runs on the caller's
thread; the rest run on the group's worker thread, in order.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

import collectives

from ..config import Config
from ..store import PrefixStore
from ..store.torch_store import TorchStore
from .errors import BACKEND_NAME, InvalidOperation, to_torch_error
from .monitored import monitored_barrier_on
from .arguments import _C10D, timeout_seconds
from .movement import DataMovement
from .point_to_point import PointToPoint
from .reductions import Reductions
from .tensors import caller_stream
from .work import AggregateWork, Completer, CollectivesWork, OrderedRunner

if TYPE_CHECKING:
    from torch.distributed.distributed_c10d import GroupName
else:  # a NewType of str in the stubs; older torch has no such name
    GroupName = str

logger = logging.getLogger("collectives")

SHUTDOWN_GRACE = 60.0  # seconds shutdown() lets queued operations finish before aborting


# The ignore below (misc): the mixins' methods take every form torch calls them in (the
# stubs' overloads, and the argument lists C++ passes) as one signature of Any arguments.
class CollectivesProcessGroup(Reductions, DataMovement, PointToPoint, dist.ProcessGroup):  # type: ignore[misc]
    """A torch process group whose collectives run on :class:`collectives.Communicator`."""

    def __init__(
        self,
        store: Any,
        rank: int,
        size: int,
        timeout: datetime.timedelta | float = datetime.timedelta(minutes=30),
        *,
        config: Config | None = None,
    ) -> None:
        super().__init__(rank, size)  # type: ignore[call-arg]  # the (rank, size) constructor, missing from the stubs
        self._rank = rank
        self._size = size
        self._timeout = timeout_seconds(timeout, 1800.0)
        self._config = dataclasses.replace(config or Config.from_env(), timeout=self._timeout)
        self._group_name = GroupName("")
        self._group_desc = ""
        self._store = TorchStore(store, self._timeout)
        self._issue_lock = threading.Lock()
        self._seq = 0
        self._p2p_seq = 0
        self._monitored_seq = 0
        self._coalescing: list[CollectivesWork] | None = None
        self._completer: Completer | None = None
        self._closed = False
        settings = dataclasses.asdict(self._config)
        self.comm = collectives.init(rank, size, PrefixStore("coll", self._store), **settings)
        try:
            p2p_comm = collectives.init(rank, size, PrefixStore("p2p", self._store), **settings)
        except BaseException:
            self.comm.close()
            raise
        self._p2p = p2p_comm
        self._runner = OrderedRunner(f"collectives-pg-r{rank}")

    # -- identity -------------------------------------------------------------------------

    def getBackendName(self) -> str:  # noqa: N802 - torch's name
        return BACKEND_NAME

    def _set_group_name(self, name: str) -> None:
        self._group_name = GroupName(name)

    @property
    def group_name(self) -> GroupName:
        return self._group_name

    def _set_group_desc(self, desc: str) -> None:
        self._group_desc = desc

    @property
    def group_desc(self) -> str:
        return self._group_desc

    def __repr__(self) -> str:
        return f"<CollectivesProcessGroup {self._group_name or '?'} rank {self._rank}/{self._size}>"

    def _where(self) -> str:
        try:
            ranks = dist.get_process_group_ranks(self)
        except Exception:  # noqa: BLE001 - not registered (yet)
            ranks = None
        members = f" (global ranks {ranks})" if ranks is not None else ""
        return f"[collectives] group '{self._group_name or '?'}'{members} rank {self._rank}/{self._size}"

    # -- lifecycle --------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Finish queued work, then close both communicators (``destroy_process_group``)."""
        if self._closed:
            return
        self._closed = True
        self._runner.stop(timeout=min(self._timeout, SHUTDOWN_GRACE))
        if not self._runner.drain(timeout=0):
            self.comm.abort()  # an operation still hangs: fail it instead of waiting longer
        self._p2p.close()
        self.comm.close()
        if self._completer is not None:
            self._completer.stop()

    def abort(self) -> None:
        """Tear down at once: blocked and later operations fail."""
        if self._closed:
            return
        self._closed = True
        self.comm.abort()
        self._p2p.abort()
        self._runner.stop(timeout=0)
        if self._completer is not None:
            self._completer.stop()

    def _start_coalescing(self, device: Any = None) -> None:
        if self._coalescing is not None:
            raise InvalidOperation("coalescing already started on this group")
        self._coalescing = []

    def _end_coalescing(self, device: Any = None) -> CollectivesWork:
        works, self._coalescing = self._coalescing or [], None
        return AggregateWork(works, self._where)

    # -- issuing ------------------------------------------------------------------------------

    def _completer_for(self) -> Completer:
        if self._completer is None:
            with self._issue_lock:
                if self._completer is None:
                    self._completer = Completer(f"collectives-pg-r{self._rank}-futures")
        return self._completer

    def _launch(
        self,
        name: str,
        body: Callable[[int, float], None],
        outputs: list[torch.Tensor],
        opts: Any,
    ) -> CollectivesWork:
        """Number the collective and run ``body(seq, timeout_seconds)`` in issue order."""
        if self._closed:
            raise dist.DistBackendError(f"{self._where()}: {name}: the process group was shut down")
        async_op = bool(getattr(opts, "asyncOp", True))
        seconds = timeout_seconds(getattr(opts, "timeout", None), self._timeout)
        completer = self._completer_for()
        with self._issue_lock:
            self._seq += 1
            seq = self._seq
            work = CollectivesWork(name, seq, outputs, self._where)
            work._completer = completer
            ordered_on = caller_stream(outputs)  # the issuing thread's, also where the body runs on ours

            def run() -> None:
                on_worker = threading.get_ident() == self._runner.worker_ident
                error: BaseException | None = None
                try:  # the call's timeout (torch's opts.timeout), for this thread's calls only
                    with ordered_on, self.comm.op_timeout(seconds):
                        body(seq, seconds)
                except BaseException as exc:  # noqa: BLE001 - handed to the waiter
                    error = to_torch_error(exc, f"{self._where()}: {name} #{seq}")
                work._finish(error, on_worker=on_worker)

            inline = self._runner.claim_or_queue(run, inline=not async_op)
            if self._coalescing is not None:
                self._coalescing.append(work)
        if inline:
            try:
                run()
            finally:
                self._runner.release()
        return work

    # -- barrier ---------------------------------------------------------------------------------------

    def barrier(self, opts: Any = None) -> CollectivesWork:
        opts = opts if opts is not None else _C10D.BarrierOptions()

        def body(seq: int, timeout: float) -> None:
            self.comm.barrier()

        return self._launch("barrier", body, [], opts)

    def monitored_barrier(self, timeout: Any = None, wait_all_ranks: bool = False) -> None:
        monitored_barrier_on(self, timeout, wait_all_ranks)

    # -- checks -------------------------------------------------------------------------------------

    def _check_root(self, root: Any, what: str) -> int:
        if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < self._size:
            raise InvalidOperation(f"{what}: root rank {root!r} is not a rank of this group (size {self._size})")
        return root

    def _check_count(self, tensors: Sequence[torch.Tensor], name: str) -> None:
        if len(tensors) != self._size:
            raise InvalidOperation(f"{name}: expected one tensor per rank ({self._size}), got {len(tensors)}")


def create_process_group(store: Any, rank: int, size: int, timeout: datetime.timedelta) -> CollectivesProcessGroup:
    """The creator torch calls (``Backend.register_backend``) for every group of this backend."""
    return CollectivesProcessGroup(store, rank, size, timeout)
