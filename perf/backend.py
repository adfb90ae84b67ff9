"""Backends: one rank's way of running the collectives the harness times.

Every backend takes nccl-tests' (send, recv) buffers, where in-place means the two are
the same memory (or, for all_gather / reduce_scatter, one is the rank's block of the
other). Calls that are in place only (MPI's broadcast; gloo's) get the send data copied
into recv first, inside the timed call: that copy is part of what an out-of-place
collective costs with such an API. Our broadcast and reduce take ``out=`` (ncclBroadcast's
and ncclReduce's recvbuff) and copy on the root themselves.

``CollectivesBackend`` runs our library; ``perf.peers.mpi`` and ``perf.peers.gloo`` run
the same calls through mpi4py and torch.distributed (gloo) for ``--vs``.
"""

from __future__ import annotations

import platform
import socket
from typing import Any

import numpy as np

from .colls import DTYPE_NAMES, OP_NAMES


def same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two buffers are the same memory (the in-place rows), cheaply: the timed
    loop calls this on every iteration."""
    if a is b:
        return True
    if a.size == 0 or not np.may_share_memory(a, b):  # bounds only: 0.5 us, no dict built
        return False
    return np.shares_memory(a, b)


def copy_into(dst: np.ndarray, src: np.ndarray) -> None:
    if not same_memory(dst, src):
        dst[...] = src


class Backend:
    """Interface (and the parts every backend shares)."""

    name = "?"
    rank = 0
    size = 1
    #: dtype names (nccl-tests spelling) and ops this backend can run
    dtypes: tuple[str, ...] = DTYPE_NAMES
    ops: tuple[str, ...] = OP_NAMES

    def supports(self, dtype: str, op: str | None) -> str | None:
        """None if (dtype, op) can run, else why not."""
        if dtype not in self.dtypes:
            return f"{self.name} has no {dtype}"
        if op is not None and op not in self.ops:
            return f"{self.name} has no {op}"
        return None

    def describe(self) -> dict[str, Any]:
        """Versions and settings, for the header and --json."""
        return {"backend": self.name}

    # the collectives ------------------------------------------------------------------
    def all_reduce(self, send: np.ndarray, recv: np.ndarray, op: str) -> None: raise NotImplementedError
    def all_gather(self, send: np.ndarray, recv: np.ndarray) -> None: raise NotImplementedError
    def reduce_scatter(self, send: np.ndarray, recv: np.ndarray, op: str) -> None: raise NotImplementedError
    def broadcast(self, send: np.ndarray, recv: np.ndarray, root: int) -> None: raise NotImplementedError
    def reduce(self, send: np.ndarray, recv: np.ndarray, op: str, root: int) -> None: raise NotImplementedError
    def alltoall(self, send: np.ndarray, recv: np.ndarray) -> None: raise NotImplementedError
    def alltoallv(self, send: np.ndarray, recv: np.ndarray, send_counts: list[int], recv_counts: list[int]) -> None:
        raise NotImplementedError
    def sendrecv(self, send: np.ndarray, recv: np.ndarray) -> None: raise NotImplementedError
    def gather(self, send: np.ndarray, recv: np.ndarray, root: int) -> None: raise NotImplementedError
    def scatter(self, send: np.ndarray, recv: np.ndarray, root: int) -> None: raise NotImplementedError
    def exchange(self, send: np.ndarray, recv: np.ndarray, peer: int) -> None:
        """Send ``send`` to ``peer`` and receive ``recv`` from it, both at once (a round of
        hypercube_perf; the two buffers never overlap)."""
        raise NotImplementedError
    def barrier(self) -> None: raise NotImplementedError

    def gather_all(self, values: np.ndarray) -> np.ndarray:
        """Every rank's ``values`` (same length everywhere), as a (size, len) array on all
        ranks. Used to combine timings and error counts when no coordinator does."""
        raise NotImplementedError

    def close(self) -> None:
        pass


def host_name() -> str:
    return socket.gethostname()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class CollectivesBackend(Backend):
    """Our library, through the public Communicator API."""

    name = "collectives"

    def __init__(self, comm: Any, *, algorithm: str | None = None) -> None:
        self.comm = comm
        self.rank = comm.rank
        self.size = comm.size
        self.algorithm = None if algorithm in (None, "auto") else algorithm

    @classmethod
    def connect(cls, rank: int | None = None, size: int | None = None, store: Any = None, *,
                transport: str | None = None, algorithm: str | None = None,
                timeout: float | None = None) -> CollectivesBackend:
        import collectives

        comm = collectives.init(rank, size, store, transport=transport, algorithm=algorithm, timeout=timeout)
        return cls(comm, algorithm=algorithm)

    def describe(self) -> dict[str, Any]:
        import collectives

        names = sorted(set(self.comm.transport_names.values())) if self.size > 1 else []
        return {
            "backend": self.name,
            "version": collectives.__version__,
            "transport": ",".join(names) or "none",
            "algorithm": self.algorithm or "auto",
        }

    def all_reduce(self, send: np.ndarray, recv: np.ndarray, op: str) -> None:
        if same_memory(send, recv):
            self.comm.all_reduce(recv, op=op, algorithm=self.algorithm)
        else:
            self.comm.all_reduce(send, op=op, out=recv, algorithm=self.algorithm)

    def all_gather(self, send: np.ndarray, recv: np.ndarray) -> None:
        self.comm.all_gather(send, recv, algorithm=self.algorithm)

    def reduce_scatter(self, send: np.ndarray, recv: np.ndarray, op: str) -> None:
        self.comm.reduce_scatter(send, recv, op=op, algorithm=self.algorithm)

    def broadcast(self, send: np.ndarray, recv: np.ndarray, root: int) -> None:
        if send is recv:
            self.comm.broadcast(recv, root=root, algorithm=self.algorithm)
        else:
            self.comm.broadcast(send, root=root, out=recv, algorithm=self.algorithm)

    def reduce(self, send: np.ndarray, recv: np.ndarray, op: str, root: int) -> None:
        self.comm.reduce(send, root=root, op=op, out=None if send is recv else recv, algorithm=self.algorithm)

    def alltoall(self, send: np.ndarray, recv: np.ndarray) -> None:
        self.comm.all_to_all(send, recv, algorithm=self.algorithm)

    def alltoallv(self, send: np.ndarray, recv: np.ndarray, send_counts: list[int], recv_counts: list[int]) -> None:
        self.comm.all_to_all_v(send, send_counts, recv_counts, recv, algorithm=self.algorithm)

    def sendrecv(self, send: np.ndarray, recv: np.ndarray) -> None:
        """Ring shift: send to rank+1, receive from rank-1, both at once (``comm.sendrecv``, as
        MPI's peer calls ``Sendrecv``, and in place ``Sendrecv_replace``: the library saves
        the outgoing data itself)."""
        n, r = self.size, self.rank
        if n == 1:
            copy_into(recv, send)
            return
        self.comm.sendrecv(send, (r + 1) % n, recv, (r - 1) % n)

    def gather(self, send: np.ndarray, recv: np.ndarray, root: int) -> None:
        """``comm.gather``; ``recv`` (ncclGather's recvbuff) is the root's only."""
        self.comm.gather(send, recv if self.rank == root else None, root=root, algorithm=self.algorithm)

    def scatter(self, send: np.ndarray, recv: np.ndarray, root: int) -> None:
        """``comm.scatter``; ``send`` is read on the root only."""
        self.comm.scatter(send if self.rank == root else None, recv, root=root, algorithm=self.algorithm)

    def exchange(self, send: np.ndarray, recv: np.ndarray, peer: int) -> None:
        """``comm.sendrecv`` with ``peer``: both directions at once."""
        self.comm.sendrecv(send, peer, recv, peer)

    def barrier(self) -> None:
        if self.size > 1:
            self.comm.barrier()

    def gather_all(self, values: np.ndarray) -> np.ndarray:
        values = np.ascontiguousarray(values)
        out = np.empty(values.size * self.size, dtype=values.dtype)
        if self.size == 1:
            out[...] = values
        else:
            self.comm.all_gather(values, out)
        return out.reshape(self.size, values.size)

    def close(self) -> None:
        self.comm.close()


def local_device_index() -> int:
    """The rank's index among the ranks of its host, where a launcher says so, else -1."""
    from collectives.environment import local_rank

    found = local_rank()
    return -1 if found is None else found
