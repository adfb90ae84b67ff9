"""The collectives through torch.distributed with the gloo backend (CPU tensors that share
the harness's numpy memory, so no copies are added beyond what each call needs).

=================  ===========================================================
harness            torch.distributed call
=================  ===========================================================
all_reduce         ``all_reduce`` (in place only: out of place copies send first)
all_gather         ``all_gather_single`` / ``all_gather_into_tensor``
reduce_scatter     ``reduce_scatter_single`` / ``reduce_scatter_tensor`` (in place:
                   the input is the whole buffer, the output the rank's block of it,
                   so the input is copied first)
broadcast          ``broadcast`` (root copies send into recv first when out of place)
reduce             ``reduce``: gloo overwrites non-root buffers, so a non-root works
                   on a copy when its buffer must stay unchanged (in place)
alltoall           ``all_to_all_single`` (in place: the input is copied first)
alltoallv          ``all_to_all_single`` with split sizes (likewise)
sendrecv           ``isend`` to rank+1 and ``irecv`` from rank-1, then wait
gather             ``gather`` (the root's list: views of its recv blocks; in place,
                   the root's input is copied first)
scatter            ``scatter`` (the root's list: views of its send blocks; in place,
                   the root's own block is copied first)
hypercube          lg(n) rounds of ``isend``/``irecv`` with rank ^ mask, then wait
barrier            ``barrier``
=================  ===========================================================

gloo has no unsigned 32/64-bit integers (``n/a``). ``avg`` is gloo's own ``AVG`` for
floating types and SUM followed by a truncating division for integers. Each rank uses one
intra-op thread (``torch.set_num_threads(1)``), as our library's numpy kernels do.

Run by the harness for ``--vs gloo``: N processes of ``python -m perf.peers.gloo``.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import numpy as np

from ..backend import Backend
from ..verify import finalize_average, is_float


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a is b or bool(a.size and np.shares_memory(a, b))


class GlooBackend(Backend):
    name = "gloo"
    dtypes = ("int8", "uint8", "int32", "int64", "half", "float", "double", "bfloat16")

    def __init__(self, rank: int, size: int, init_method: str, timeout: float | None = None) -> None:
        import torch
        import torch.distributed as dist

        torch.set_num_threads(1)
        self.torch, self.dist = torch, dist
        kwargs: dict[str, Any] = {}
        if timeout:
            kwargs["timeout"] = datetime.timedelta(seconds=timeout)
        dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=size, **kwargs)
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        R = dist.ReduceOp
        self._ops = {"sum": R.SUM, "prod": R.PRODUCT, "max": R.MAX, "min": R.MIN,
                     "avg": R.AVG}
        self._all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        self._reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "version": self.torch.__version__}

    def t(self, array: np.ndarray) -> Any:
        """A tensor sharing ``array``'s memory (bfloat16 through an int16 view)."""
        if array.dtype.name == "bfloat16":
            return self.torch.from_numpy(array.view(np.int16)).view(self.torch.bfloat16)
        return self.torch.from_numpy(array)

    def _op(self, op: str, array: np.ndarray) -> tuple[Any, bool]:
        """(torch op, whether to divide afterwards)."""
        if op == "avg" and not is_float(array.dtype):
            return self._ops["sum"], True
        return self._ops[op], False

    def all_reduce(self, send: np.ndarray, recv: np.ndarray, op: str) -> None:
        if not _same(send, recv):
            recv[...] = send
        top, divide = self._op(op, recv)
        self.dist.all_reduce(self.t(recv), op=top)
        if divide:
            finalize_average(recv, self.size)

    def all_gather(self, send: np.ndarray, recv: np.ndarray) -> None:
        source = send.copy() if _same(send, recv) else send
        self._all_gather(self.t(recv), self.t(source))

    def reduce_scatter(self, send: np.ndarray, recv: np.ndarray, op: str) -> None:
        source = send.copy() if _same(send, recv) else send
        top, divide = self._op(op, recv)
        self._reduce_scatter(self.t(recv), self.t(source), op=top)
        if divide:
            finalize_average(recv, self.size)

    def broadcast(self, send: np.ndarray, recv: np.ndarray, root: int) -> None:
        if self.rank == root and not _same(send, recv):
            recv[...] = send
        self.dist.broadcast(self.t(recv), src=root)

    def reduce(self, send: np.ndarray, recv: np.ndarray, op: str, root: int) -> None:
        top, divide = self._op(op, send)
        if self.rank == root:
            if not _same(send, recv):
                recv[...] = send
            self.dist.reduce(self.t(recv), dst=root, op=top)
            if divide:
                finalize_average(recv, self.size)
        else:
            work = send.copy() if _same(send, recv) else send
            self.dist.reduce(self.t(work), dst=root, op=top)

    def alltoall(self, send: np.ndarray, recv: np.ndarray) -> None:
        source = send.copy() if _same(send, recv) else send
        self.dist.all_to_all_single(self.t(recv), self.t(source))

    def alltoallv(self, send: np.ndarray, recv: np.ndarray, send_counts: list[int], recv_counts: list[int]) -> None:
        source = send.copy() if _same(send, recv) else send
        self.dist.all_to_all_single(self.t(recv), self.t(source), output_split_sizes=recv_counts,
                                    input_split_sizes=send_counts)

    def sendrecv(self, send: np.ndarray, recv: np.ndarray) -> None:
        n, r = self.size, self.rank
        if n == 1:
            if not _same(send, recv):
                recv[...] = send
            return
        source = send.copy() if _same(send, recv) else send
        reqs = [self.dist.isend(self.t(source), (r + 1) % n), self.dist.irecv(self.t(recv), (r - 1) % n)]
        for req in reqs:
            req.wait()

    def _blocks(self, array: np.ndarray) -> list[Any]:
        """Tensors viewing the ``size`` equal blocks of ``array``."""
        k = array.size // self.size
        return [self.t(array[i * k:(i + 1) * k]) for i in range(self.size)]

    def gather(self, send: np.ndarray, recv: np.ndarray, root: int) -> None:
        if self.rank == root:
            source = send.copy() if _same(send, recv) else send
            self.dist.gather(self.t(source), gather_list=self._blocks(recv), dst=root)
        else:
            self.dist.gather(self.t(send), dst=root)

    def scatter(self, send: np.ndarray, recv: np.ndarray, root: int) -> None:
        if self.rank == root:
            blocks = self._blocks(send)
            if _same(send, recv):
                blocks[root] = blocks[root].clone()
            self.dist.scatter(self.t(recv), scatter_list=blocks, src=root)
        else:
            self.dist.scatter(self.t(recv), src=root)

    def exchange(self, send: np.ndarray, recv: np.ndarray, peer: int) -> None:
        reqs = [self.dist.isend(self.t(send), peer), self.dist.irecv(self.t(recv), peer)]
        for req in reqs:
            req.wait()

    def barrier(self) -> None:
        self.dist.barrier()

    def gather_all(self, values: np.ndarray) -> np.ndarray:
        values = np.ascontiguousarray(values)
        out = np.empty((self.size, values.size), dtype=values.dtype)
        self._all_gather(self.t(out.reshape(-1)), self.t(values))
        return out

    def close(self) -> None:
        try:
            self.dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def main() -> None:
    import argparse

    from ..worker import serve

    parser = argparse.ArgumentParser(prog="python -m perf.peers.gloo")
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--init-method", required=True)
    parser.add_argument("--timeout", type=float, default=None)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    serve(lambda: GlooBackend(args.rank, args.size, args.init_method, args.timeout), rank_hint=args.rank)


if __name__ == "__main__":
    main()
