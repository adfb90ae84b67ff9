"""Point-to-point of the process group: send, recv and recv from any source, on the
group's second communicator, whose point-to-point engine posts them at once (so that
``irecv`` before ``isend`` on both ranks completes, and a pending ``irecv`` never holds
up a collective, nor a collective it)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from ..communicator import Communicator
from ..work import Work
from .arguments import one
from .errors import InvalidOperation, to_torch_error
from .tensors import StandIn, raw
from .work import CollectivesWork, Completer


class PointToPoint:
    """send, recv and recv_anysource for :class:`CollectivesProcessGroup`."""

    _size: int
    _closed: bool
    _p2p: Communicator
    _coalescing: list[CollectivesWork] | None
    _where: Callable[[], str]
    _issue_lock: threading.Lock
    _p2p_seq: int
    _completer_for: Callable[[], Completer]

    def _p2p_work(self, name: str, outputs: list[torch.Tensor]) -> CollectivesWork:
        if self._closed:
            raise dist.DistBackendError(f"{self._where()}: {name}: the process group was shut down")
        with self._issue_lock:
            self._p2p_seq += 1
            seq = self._p2p_seq
        work = CollectivesWork(name, seq, outputs, self._where)
        work._completer = self._completer_for()
        if self._coalescing is not None:
            self._coalescing.append(work)
        return work

    def _p2p_peer(self, peer: Any, name: str) -> int:
        if isinstance(peer, bool) or not isinstance(peer, int) or not 0 <= peer < self._size:
            raise InvalidOperation(f"{name}: rank {peer!r} is not a rank of this group (size {self._size})")
        return peer

    def _post(self, work: CollectivesWork, what: str, post: Callable[[], Work],
              after: Callable[[], None] | None = None) -> CollectivesWork:
        """Post on the core (``post``) and finish ``work`` with its Work: ``after`` (copy back) first."""
        where = f"{self._where()}: {what}"
        try:
            core = post()
        except Exception as exc:  # noqa: BLE001 - a wrong or late call: torch's error, raised now
            raise to_torch_error(exc, where) from exc

        def done(finished: Work) -> None:
            error = finished.exception()
            if error is None and after is not None:
                try:
                    after()
                except BaseException as exc:  # noqa: BLE001 - handed to the waiter
                    error = exc
            if error is not None:
                error = to_torch_error(error, where)
                if not isinstance(error, dist.DistError):
                    wrapped = dist.DistBackendError(f"{where} failed: {error}")
                    wrapped.__cause__ = error
                    error = wrapped
            work._finish(error, source=getattr(finished, "source", None), on_worker=True)

        core.add_done_callback(done)
        return work

    def send(self, tensors: Any, dst: int, tag: int = 0) -> CollectivesWork:
        tensor = one(tensors, "send: tensors")
        dst = self._p2p_peer(dst, "send: dst")
        data = raw(StandIn(tensor).tensor)
        work = self._p2p_work("send", [tensor])
        return self._post(work, f"send #{work.seq} to rank {dst} (tag {tag})",
                          lambda: self._p2p.send(data, dst, tag=int(tag), async_op=True))

    def recv(self, tensors: Any, src: int, tag: int = 0) -> CollectivesWork:
        tensor = one(tensors, "recv: tensors")
        src = self._p2p_peer(src, "recv: src")
        return self._recv(tensor, src, tag)

    def recv_anysource(self, tensors: Any, tag: int = 0) -> CollectivesWork:
        return self._recv(one(tensors, "recv_anysource: tensors"), None, tag)

    recvAnysource = recv_anysource  # noqa: N815 - the C++ spelling

    def _recv(self, tensor: torch.Tensor, src: int | None, tag: int) -> CollectivesWork:
        stand_in = StandIn(tensor, load=False, store=True)
        work = self._p2p_work("recv", [tensor])
        who = f"rank {src}" if src is not None else "any rank"
        return self._post(work, f"recv #{work.seq} from {who} (tag {tag})",
                          lambda: self._p2p.recv(raw(stand_in.tensor), src, tag=int(tag), async_op=True),
                          stand_in.finish)
