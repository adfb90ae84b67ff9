"""Point-to-point of the process group: send, recv and recv from any source, on the
group's second communicator (so that a pending ``irecv`` never holds up a collective)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from .arguments import one
from .errors import InvalidOperation, to_torch_error
from .p2p import P2PEngine
from .tensors import Staged, bytes_view
from .work import CollectivesWork


class PointToPoint:
    """send, recv and recv_anysource for :class:`CollectivesProcessGroup`."""

    _rank: int
    _size: int
    _timeout: float
    _closed: bool
    _p2p: P2PEngine
    _coalescing: list[CollectivesWork] | None
    _where: Callable[[], str]
    _issue_lock: threading.Lock
    _p2p_seq: int
    _completer_for: Callable[[], Any]

    # -- point to point ---------------------------------------------------------------------------------

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

    def _p2p_finisher(self, work: CollectivesWork, what: str, stage: Staged | None = None) -> Callable:
        def finish(error: BaseException | None, source: int | None) -> None:
            if error is None and stage is not None:
                try:
                    stage.finish()
                except BaseException as exc:  # noqa: BLE001
                    error = exc
            if error is not None:
                error = to_torch_error(error, f"{self._where()}: {what}")
                if not isinstance(error, dist.DistError):
                    wrapped = dist.DistBackendError(f"{self._where()}: {what} failed: {error}")
                    wrapped.__cause__ = error
                    error = wrapped
            work._finish(error, source=source, on_worker=True)

        return finish

    def _p2p_peer(self, peer: Any, name: str) -> int:
        if isinstance(peer, bool) or not isinstance(peer, int) or not 0 <= peer < self._size:
            raise InvalidOperation(f"{name}: rank {peer!r} is not a rank of this group (size {self._size})")
        return peer

    def send(self, tensors: Any, dst: int, tag: int = 0) -> CollectivesWork:
        tensor = one(tensors, "send: tensors")
        dst = self._p2p_peer(dst, "send: dst")
        stage = Staged(tensor, load=True)
        work = self._p2p_work("send", [tensor])
        deadline = time.monotonic() + self._timeout
        what = f"send #{work.seq} to rank {dst} (tag {tag})"
        self._p2p.send(bytes_view(stage.host), dst, int(tag), deadline, self._p2p_finisher(work, what))
        return work

    def recv(self, tensors: Any, src: int, tag: int = 0) -> CollectivesWork:
        tensor = one(tensors, "recv: tensors")
        src = self._p2p_peer(src, "recv: src")
        return self._recv(tensor, src, tag)

    def recv_anysource(self, tensors: Any, tag: int = 0) -> CollectivesWork:
        return self._recv(one(tensors, "recv_anysource: tensors"), None, tag)

    recvAnysource = recv_anysource  # noqa: N815 - the C++ spelling

    def _recv(self, tensor: torch.Tensor, src: int | None, tag: int) -> CollectivesWork:
        stage = Staged(tensor, load=False, store=True)
        work = self._p2p_work("recv", [tensor])
        deadline = time.monotonic() + self._timeout
        who = f"rank {src}" if src is not None else "any rank"
        what = f"recv #{work.seq} from {who} (tag {tag})"
        self._p2p.recv(bytes_view(stage.host), src, int(tag), deadline, self._p2p_finisher(work, what, stage))
        return work
