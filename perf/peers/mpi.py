"""The collectives through mpi4py (buffer interface, no pickling).

=================  ===========================================================
harness            MPI call
=================  ===========================================================
all_reduce         ``Allreduce`` (``MPI.IN_PLACE`` in place)
all_gather         ``Allgather`` (``MPI.IN_PLACE``: the rank's block is in recv)
reduce_scatter     ``Reduce_scatter_block`` (in place: ``MPI.IN_PLACE`` leaves the
                   result in block 0; it is then copied to the rank's block)
broadcast          ``Bcast`` (root copies send into recv first when out of place)
reduce             ``Reduce`` (``MPI.IN_PLACE`` on the root in place)
alltoall           ``Alltoall`` (``MPI.IN_PLACE`` in place)
alltoallv          ``Alltoallv`` (in place: the input is copied first)
sendrecv           ``Sendrecv`` to rank+1 from rank-1 (``Sendrecv_replace`` in place)
gather             ``Gather`` (``MPI.IN_PLACE`` on the root in place)
scatter            ``Scatter`` (``MPI.IN_PLACE`` on the root in place)
hypercube          lg(n) rounds of ``Sendrecv`` with rank ^ mask (perf.colls.hypercube)
barrier            ``Barrier``
=================  ===========================================================

MPI has no average: ``avg`` is ``SUM`` followed by the division nccl-tests expects
(included in the time). MPI has no bfloat16 datatype, so bfloat16 rows show ``n/a``.

Run as ``mpiexec -n N python -m perf.peers.mpi`` by the harness (``--vs mpi``): every rank
connects to the harness's control socket and waits for commands (see perf.worker).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import Backend
from ..verify import finalize_average


class MpiBackend(Backend):
    name = "mpi"
    dtypes = ("int8", "uint8", "int32", "uint32", "int64", "uint64", "half", "float", "double")

    def __init__(self, comm: Any = None) -> None:
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self._ops = {"sum": MPI.SUM, "avg": MPI.SUM, "prod": MPI.PROD, "max": MPI.MAX, "min": MPI.MIN}

    def describe(self) -> dict[str, Any]:
        import mpi4py

        library = self.MPI.Get_library_version().strip().splitlines()[0]
        return {"backend": self.name, "version": mpi4py.__version__, "library": " ".join(library.split())}

    def _in(self, send: np.ndarray, recv: np.ndarray) -> Any:
        return self.MPI.IN_PLACE if (send is recv or (send.size and np.shares_memory(send, recv))) else send

    def all_reduce(self, send: np.ndarray, recv: np.ndarray, op: str) -> None:
        self.comm.Allreduce(self._in(send, recv), recv, op=self._ops[op])
        if op == "avg":
            finalize_average(recv, self.size)

    def all_gather(self, send: np.ndarray, recv: np.ndarray) -> None:
        self.comm.Allgather(self._in(send, recv), recv)

    def reduce_scatter(self, send: np.ndarray, recv: np.ndarray, op: str) -> None:
        if send.size and np.shares_memory(send, recv):
            self.comm.Reduce_scatter_block(self.MPI.IN_PLACE, send, op=self._ops[op])
            k = recv.size
            if self.rank:
                recv[...] = send[:k]
        else:
            self.comm.Reduce_scatter_block(send, recv, op=self._ops[op])
        if op == "avg":
            finalize_average(recv, self.size)

    def broadcast(self, send: np.ndarray, recv: np.ndarray, root: int) -> None:
        if self.rank == root and send is not recv and not (send.size and np.shares_memory(send, recv)):
            recv[...] = send
        self.comm.Bcast(recv, root=root)

    def reduce(self, send: np.ndarray, recv: np.ndarray, op: str, root: int) -> None:
        if self.rank == root:
            self.comm.Reduce(self._in(send, recv), recv, op=self._ops[op], root=root)
            if op == "avg":
                finalize_average(recv, self.size)
        else:
            self.comm.Reduce(send, None, op=self._ops[op], root=root)

    def alltoall(self, send: np.ndarray, recv: np.ndarray) -> None:
        self.comm.Alltoall(self._in(send, recv), recv)

    def alltoallv(self, send: np.ndarray, recv: np.ndarray, send_counts: list[int], recv_counts: list[int]) -> None:
        source = send.copy() if send is recv or (send.size and np.shares_memory(send, recv)) else send
        self.comm.Alltoallv([source, send_counts], [recv, recv_counts])

    def sendrecv(self, send: np.ndarray, recv: np.ndarray) -> None:
        n, r = self.size, self.rank
        if send is recv or (send.size and np.shares_memory(send, recv)):
            self.comm.Sendrecv_replace(recv, dest=(r + 1) % n, source=(r - 1) % n)
        else:
            self.comm.Sendrecv(send, dest=(r + 1) % n, recvbuf=recv, source=(r - 1) % n)

    def gather(self, send: np.ndarray, recv: np.ndarray, root: int) -> None:
        if self.rank == root:
            self.comm.Gather(self._in(send, recv), recv, root=root)
        else:
            self.comm.Gather(send, None, root=root)

    def scatter(self, send: np.ndarray, recv: np.ndarray, root: int) -> None:
        if self.rank == root:
            in_place = recv.size and np.shares_memory(send, recv)
            self.comm.Scatter(send, self.MPI.IN_PLACE if in_place else recv, root=root)
        else:
            self.comm.Scatter(None, recv, root=root)

    def exchange(self, send: np.ndarray, recv: np.ndarray, peer: int) -> None:
        self.comm.Sendrecv(send, dest=peer, recvbuf=recv, source=peer)

    def barrier(self) -> None:
        self.comm.Barrier()

    def gather_all(self, values: np.ndarray) -> np.ndarray:
        values = np.ascontiguousarray(values)
        out = np.empty((self.size, values.size), dtype=values.dtype)
        self.comm.Allgather(values, out)
        return out


def main() -> None:
    from ..worker import serve

    serve(MpiBackend)


if __name__ == "__main__":
    main()
