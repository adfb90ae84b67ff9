"""In-process transport: ranks are threads of one process (tests, users' property tests).

Each ordered pair of ranks shares a bounded byte pipe; a full pipe makes the writer wait,
exactly as a full socket or shared-memory ring would, so flow-control paths are exercised.
Each rank has one condition variable that its peers notify after they write or read.
"""

from __future__ import annotations

import threading
import uuid
import weakref
from collections import deque
from collections.abc import Iterable, Sequence

from ..config import Config
from ..errors import PeerLostError
from ..store import Store
from .base import Channel, Transport

PIPE_CAPACITY = 1 << 20


class _Doorbell:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.rings = 0

    def ring(self) -> None:
        with self.cond:
            self.rings += 1
            self.cond.notify_all()


class _BytePipe:
    """A bounded FIFO of bytes between two threads."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.lock = threading.Lock()
        self.chunks: deque[memoryview] = deque()
        self.size = 0
        self.writer_closed = False
        self.reader_closed = False


class _World:
    """Pipes and doorbells shared by the threads of one inproc job."""

    def __init__(self, size: int) -> None:
        self.doorbells = [_Doorbell() for _ in range(size)]
        self.pipes = {(a, b): _BytePipe(PIPE_CAPACITY) for a in range(size) for b in range(size) if a != b}


_WORLDS: weakref.WeakValueDictionary[str, _World] = weakref.WeakValueDictionary()
_WORLDS_LOCK = threading.Lock()


class InprocChannel(Channel):
    def __init__(self, rank: int, peer: int, world: _World, max_frame_bytes: int) -> None:
        super().__init__(peer, max_frame_bytes=max_frame_bytes)
        self._out = world.pipes[(rank, peer)]
        self._in = world.pipes[(peer, rank)]
        self._peer_bell = world.doorbells[peer]

    def _write_some(self, views: Sequence[memoryview]) -> int:
        pipe = self._out
        written = 0
        with pipe.lock:
            if pipe.reader_closed:
                raise PeerLostError(f"rank {self.peer} closed its inproc channel", peer=self.peer)
            for view in views:
                room = pipe.capacity - pipe.size
                if room <= 0:
                    break
                piece = bytes(view[:room])
                pipe.chunks.append(memoryview(piece))
                pipe.size += len(piece)
                written += len(piece)
                if len(piece) < len(view):
                    break
        if written:
            self._peer_bell.ring()
        return written

    def _read_some(self, into: memoryview) -> int:
        pipe = self._in
        got = 0
        with pipe.lock:
            while got < len(into) and pipe.chunks:
                head = pipe.chunks[0]
                n = min(len(head), len(into) - got)
                into[got : got + n] = head[:n]
                got += n
                if n == len(head):
                    pipe.chunks.popleft()
                else:
                    pipe.chunks[0] = head[n:]
            pipe.size -= got
            if not got and pipe.writer_closed and len(into):
                raise PeerLostError(f"rank {self.peer} closed its inproc channel", peer=self.peer)
        if got:
            self._peer_bell.ring()
        return got

    def _close_stream(self) -> None:
        with self._out.lock:
            self._out.writer_closed = True
        with self._in.lock:
            self._in.reader_closed = True
        self._peer_bell.ring()


class InprocTransport(Transport):
    """Channels between threads of this process that share one store."""

    name = "inproc"

    def __init__(
        self,
        rank: int,
        size: int,
        peers: Sequence[int],
        store: Store,
        config: Config,
        timeout: float,
    ) -> None:
        if rank == min([rank, *peers]):
            world_id = uuid.uuid4().hex
            with _WORLDS_LOCK:
                world = _World(size)
                _WORLDS[world_id] = world
            store.set("inproc/world", world_id.encode())
        else:
            world_id = store.get("inproc/world", timeout).decode()
        with _WORLDS_LOCK:
            found = _WORLDS.get(world_id)
        if found is None:
            raise PeerLostError(
                "inproc transport: the ranks of this job are not threads of one process "
                "(use COLLECTIVES_TRANSPORT=shm or tcp across processes)"
            )
        self._world = found
        self._bell = found.doorbells[rank]
        self.channels = {p: InprocChannel(rank, p, found, config.max_frame_bytes) for p in peers}

    def activity_token(self) -> int | None:
        return self._bell.rings

    def wait_for_activity(self, timeout: float, token: int | None = None) -> None:
        bell = self._bell
        with bell.cond:
            seen = bell.rings if token is None else token
            bell.cond.wait_for(lambda: bell.rings != seen, timeout)

    def check_peers(self, peers: Iterable[int]) -> None:
        return None

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()
