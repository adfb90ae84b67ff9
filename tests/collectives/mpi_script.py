"""Run under mpiexec: our collectives against MPI's own, over the MPI transport and the
default transports, plus the MPI transport's conformance suite, communicators made by
Split, and ``init()`` under mpiexec.

    mpiexec -n 4 python tests/collectives/mpi_script.py

Every collective x algorithm x dtype (x op for all_reduce) runs on the same inputs as
MPI's Allreduce, Reduce_scatter_block, Allgather, Bcast, Reduce, Gather, Scatter and
Alltoall; integers must be exactly equal, floats within tolerance, and all_reduce must
give the same bits on every rank. Rank 0 prints one line per part and "ALL OK" at the
end; any failure prints the traceback and aborts the MPI job (exit status non-zero).
tests/collectives/test_mpi.py runs this at 2, 3 and 4 ranks.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
from mpi4py import MPI

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import collectives  # noqa: E402
import mpi_conformance  # noqa: E402
from collectives import ReduceOp  # noqa: E402
from collectives.errors import InvalidArgumentError  # noqa: E402
from collectives.mpi import mpiexec_environment  # noqa: E402

WORLD = MPI.COMM_WORLD
ALGORITHMS = ("ring", "tree", "recursive")
INT_DTYPES = (np.int64, np.int32)
FLOAT_DTYPES = (np.float32, np.float64)
COUNTS = (1, 1000, 40000)  # elements per rank block; 40000 x 8 B crosses the 64 KiB chunk
CHUNK_BYTES = 64 << 10
MPI_OPS = {
    ReduceOp.SUM: MPI.SUM,
    ReduceOp.PROD: MPI.PROD,
    ReduceOp.MIN: MPI.MIN,
    ReduceOp.MAX: MPI.MAX,
    ReduceOp.BAND: MPI.BAND,
    ReduceOp.BOR: MPI.BOR,
    ReduceOp.BXOR: MPI.BXOR,
}


def say(text: str) -> None:
    if WORLD.Get_rank() == 0:
        print(f"[n={WORLD.Get_size()}] {text}", flush=True)


def inputs(count: int, dtype: Any, seed: int, op: ReduceOp = ReduceOp.SUM) -> np.ndarray:
    """Per-rank input: different on every rank, and in a range where PROD stays exact."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        if op == ReduceOp.PROD:
            return rng.uniform(0.5, 1.5, count).astype(dtype)
        return rng.standard_normal(count).astype(dtype)
    if op == ReduceOp.PROD:
        return rng.integers(-3, 4, count).astype(dtype)
    return rng.integers(-(1 << 20), 1 << 20, count).astype(dtype)


def same(got: Any, want: np.ndarray, what: str) -> None:
    got = np.asarray(got)
    if got.shape != want.shape or got.dtype != want.dtype:
        raise AssertionError(f"{what}: got {got.dtype}{got.shape}, MPI gives {want.dtype}{want.shape}")
    if want.dtype.kind == "f":
        tol = 1e-5 if want.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * WORLD.Get_size(), err_msg=what)
    elif not np.array_equal(got, want):
        bad = int(np.flatnonzero(got != want)[0])
        raise AssertionError(f"{what}: element {bad} is {got[bad]}, MPI gives {want[bad]}")


def identical_everywhere(comm: Any, x: np.ndarray, what: str) -> None:
    """The same bits on every rank of ``comm`` (our all_reduce promises it)."""
    import hashlib

    mine = np.frombuffer(hashlib.sha256(x.tobytes()).digest(), dtype=np.uint8).copy()
    every = np.empty((comm.Get_size(), 32), dtype=np.uint8)
    comm.Allgather([mine, MPI.BYTE], [every, MPI.BYTE])
    if not (every == every[0]).all():
        raise AssertionError(f"{what}: ranks ended with different bits")


# -- every collective against MPI's ------------------------------------------------------------


def check_collectives(comm: collectives.Communicator, mpi: Any, label: str) -> int:
    """Every collective x algorithm x dtype x size on ``comm`` against MPI on ``mpi``
    (the same ranks). Returns how many comparisons passed."""
    r, n = mpi.Get_rank(), mpi.Get_size()
    assert (comm.rank, comm.size) == (r, n), f"{label}: rank {comm.rank}/{comm.size}, MPI says {r}/{n}"
    done = 0
    root_a, root_b = n - 1, 1 % n
    for count in COUNTS:
        for dtype in INT_DTYPES + FLOAT_DTYPES:
            name = np.dtype(dtype).name
            for algo in ALGORITHMS:
                tag = f"{label} count={count} {name} {algo}"
                ops = [ReduceOp.SUM, ReduceOp.MAX, ReduceOp.MIN, ReduceOp.PROD]
                if np.dtype(dtype).kind == "i":
                    ops += [ReduceOp.BAND, ReduceOp.BOR, ReduceOp.BXOR]
                for op in ops:
                    x = inputs(count * n, dtype, 1000 * r + count, op)
                    want = np.empty_like(x)
                    mpi.Allreduce(x, want, op=MPI_OPS[op])
                    got = comm.all_reduce(x.copy(), op=op, algorithm=algo)
                    same(got, want, f"all_reduce {op.name} {tag}")
                    identical_everywhere(mpi, got, f"all_reduce {op.name} {tag}")
                    done += 1

                x = inputs(count * n, dtype, 2000 * r + count)
                want = np.empty(count, dtype)
                mpi.Reduce_scatter_block(x, want, op=MPI.SUM)
                same(comm.reduce_scatter(x, algorithm=algo), want, f"reduce_scatter {tag}")

                x = inputs(count, dtype, 3000 * r + count)
                want = np.empty(count * n, dtype)
                mpi.Allgather(x, want)
                same(comm.all_gather(x, algorithm=algo), want, f"all_gather {tag}")

                x = inputs(count, dtype, 4000 * r + count)
                want = x.copy()
                mpi.Bcast(want, root=root_a)
                same(comm.broadcast(x.copy(), root=root_a, algorithm=algo), want, f"broadcast {tag}")

                x = inputs(count, dtype, 5000 * r + count)
                want = np.empty_like(x)
                mpi.Reduce(x, want, op=MPI.SUM, root=root_b)
                got = comm.reduce(x.copy(), root=root_b, algorithm=algo)
                same(got, want if r == root_b else x, f"reduce {tag}")

                x = inputs(count, dtype, 6000 * r + count)
                want = np.empty(count * n, dtype) if r == 0 else None
                mpi.Gather(x, want, root=0)
                got = comm.gather(x, root=0, algorithm=algo)
                if r == 0:
                    same(got, want, f"gather {tag}")
                elif got is not None:
                    raise AssertionError(f"gather {tag}: a non-root rank got {type(got).__name__}, not None")

                x = inputs(count * n, dtype, 7000 + count) if r == 0 else None
                want = np.empty(count, dtype)
                mpi.Scatter(x, want, root=0)
                same(comm.scatter(x, np.empty(count, dtype), root=0, algorithm=algo), want, f"scatter {tag}")

                x = inputs(count * n, dtype, 8000 * r + count)
                want = np.empty_like(x)
                mpi.Alltoall(x, want)
                same(comm.all_to_all(x, algorithm=algo), want, f"all_to_all {tag}")
                done += 7
    # point to point around a ring, and a barrier
    if n > 1:
        right, left = (r + 1) % n, (r - 1) % n
        out = np.arange(10, dtype=np.int64) + r
        work = comm.send(out, dst=right, tag=7, async_op=True)
        got = comm.recv(np.empty(10, np.int64), src=left, tag=7)
        work.wait()
        same(got, np.arange(10, dtype=np.int64) + left, f"{label} send/recv")
    comm.barrier()
    return done + 1


def part_collectives() -> None:
    for transport in ("mpi", None):
        start = time.monotonic()
        with collectives.from_mpi(WORLD, transport=transport, chunk_bytes=CHUNK_BYTES) as comm:
            names = set(comm.transport_names.values())
            if transport == "mpi":
                assert names <= {"mpi"}, f"transport='mpi' gave {names}"
            else:
                assert names <= {"shm", "tcp"}, f"the default transports are {names}"
            done = check_collectives(comm, WORLD, f"from_mpi(transport={transport!r})")
        say(f"collectives over {transport or 'default'} transports ({', '.join(sorted(names)) or 'none'}): "
            f"{done} comparisons with MPI equal, {time.monotonic() - start:.1f} s")


# -- communicators made by Split ---------------------------------------------------------------


def part_split() -> None:
    r, n = WORLD.Get_rank(), WORLD.Get_size()
    # Halves in reverse order: sub-communicator ranks differ from world ranks.
    sub = WORLD.Split(r % 2, -r)
    members = np.empty(sub.Get_size(), dtype=np.int64)
    sub.Allgather(np.array([r], dtype=np.int64), members)
    for transport in ("mpi", None):
        with collectives.from_mpi(sub, transport=transport) as comm:
            assert (comm.rank, comm.size) == (sub.Get_rank(), sub.Get_size())
            got = comm.all_gather(np.array([r], dtype=np.int64))
            same(got, members, f"Split halves, transport={transport!r}: who is in the communicator")
            x = inputs(999, np.int64, r)
            want = np.empty_like(x)
            sub.Allreduce(x, want)
            same(comm.all_reduce(x.copy()), want, f"Split halves, transport={transport!r}: all_reduce")
            if transport == "mpi" and n >= 4:
                check_collectives(comm, sub, "Split halves over mpi")
    sub.Free()
    # World rank 0 stays out, and makes no MPI call while the others work: only members take part.
    color = MPI.UNDEFINED if r == 0 else 0
    sub = WORLD.Split(color, r)
    if r == 0:
        try:
            collectives.from_mpi(sub)
        except InvalidArgumentError as exc:
            assert "COMM_NULL" in str(exc), exc
        else:
            raise AssertionError("from_mpi(MPI.COMM_NULL) did not raise")
        time.sleep(0.5)
    else:
        for transport in ("mpi", None):
            with collectives.from_mpi(sub, transport=transport) as comm:
                assert comm.size == n - 1
                x = np.full(5, r, dtype=np.int64)
                same(comm.all_reduce(x), np.full(5, sum(range(1, n)), dtype=np.int64),
                     f"Split without rank 0, transport={transport!r}")
        sub.Free()
    mpi_conformance.nap_barrier(WORLD)
    # Our own split of a from_mpi communicator gives MPI's Split ranks; over the mpi
    # transport it points to MPI's Split instead.
    sub = WORLD.Split(r % 2, -r)
    with collectives.from_mpi(WORLD) as comm:
        with comm.split(r % 2, -r) as ours:
            assert (ours.rank, ours.size) == (sub.Get_rank(), sub.Get_size()), (ours.rank, sub.Get_rank())
            x = inputs(999, np.int64, r)
            want = np.empty_like(x)
            sub.Allreduce(x, want)
            same(ours.all_reduce(x.copy()), want, "comm.split halves: all_reduce")
    sub.Free()
    with collectives.from_mpi(WORLD, transport="mpi") as comm:
        ours = comm.split(None if r == 0 else 1, -r)  # over the mpi transport: through MPI's Split
        if r == 0:
            assert ours is None
        else:
            with ours:
                assert (ours.rank, ours.size) == (n - 1 - r, n - 1), (ours.rank, r)
                assert set(ours.transport_names.values()) <= {"mpi"}
                x = np.full(3, r, dtype=np.int64)
                same(ours.all_reduce(x), np.full(3, sum(range(1, n)), dtype=np.int64), "comm.split over mpi")
    mpi_conformance.nap_barrier(WORLD)
    say("from_mpi on Split communicators: members only, ranks and results as MPI's; comm.split as MPI's Split")


def part_hosts() -> None:
    """Ranks that claim different hosts (COLLECTIVES_HOSTNAME): shared memory within a
    'host', TCP across, the store reachable from every 'host'."""
    r, n = WORLD.Get_rank(), WORLD.Get_size()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTIVES_")}
    env["COLLECTIVES_HOSTNAME"] = f"host{r % 2}"
    with collectives.from_mpi(WORLD, env=env) as comm:
        names = comm.transport_names
        for peer, name in names.items():
            expected = "shm" if peer % 2 == r % 2 else "tcp"
            assert name == expected, f"rank {r} reaches rank {peer} by {name}, expected {expected}"
        x = inputs(5000, np.float64, r)
        want = np.empty_like(x)
        WORLD.Allreduce(x, want)
        same(comm.all_reduce(x.copy()), want, "two 'hosts': all_reduce")
    say(f"from_mpi across {min(n, 2)} 'hosts' (COLLECTIVES_HOSTNAME): shm within, tcp across, store reachable")


def part_init() -> None:
    r, n = WORLD.Get_rank(), WORLD.Get_size()
    found = mpiexec_environment()
    assert found is not None and found["rank"] == r and found["size"] == n, f"mpiexec_environment() gave {found}"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("COLLECTIVES_") and k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    with collectives.init(env=env) as comm:
        assert (comm.rank, comm.size) == (r, n), f"init() under mpiexec: rank {comm.rank}/{comm.size}"
        assert set(comm.transport_names.values()) <= {"shm", "tcp"}
        same(comm.all_reduce(np.full(3, r + 1, dtype=np.int64)), np.full(3, n * (n + 1) // 2, dtype=np.int64),
             "init() under mpiexec")
    with collectives.init(env={**env, "COLLECTIVES_TRANSPORT": "mpi"}) as comm:
        assert set(comm.transport_names.values()) <= {"mpi"}, comm.transport_names
        same(comm.all_reduce(np.full(3, r + 1, dtype=np.int64)), np.full(3, n * (n + 1) // 2, dtype=np.int64),
             "init() under mpiexec with COLLECTIVES_TRANSPORT=mpi")
    say(f"init() under mpiexec: rank and size from MPI ({found['launcher']}), "
        "default transports and COLLECTIVES_TRANSPORT=mpi")


def part_lookup() -> None:
    """Where an MPI transport built with the shared constructor signature (as ``connect()``
    builds transports) finds its MPI communicator: the MPIStore behind PrefixStores, else
    MPI.COMM_WORLD when the ranks are the world's."""
    from collectives.config import Config
    from collectives.errors import UnsupportedError
    from collectives.store import HashStore, PrefixStore
    from collectives.store.mpi_store import MPIStore
    from collectives.transports import transport_class

    r, n = WORLD.Get_rank(), WORLD.Get_size()
    cls = transport_class("mpi")
    peers = [p for p in range(n) if p != r]
    sub = WORLD.Split(0, -r)  # same members, reversed ranks: only the store can say which is meant
    store = MPIStore(sub)
    try:
        for where, transport in (
            ("an MPIStore behind PrefixStores",
             cls(sub.Get_rank(), n, [p for p in range(n) if p != sub.Get_rank()],
                 PrefixStore("mpi/0", PrefixStore("collectives/1", store)), Config(), 20.0)),
            ("MPI.COMM_WORLD", cls(r, n, peers, HashStore(), Config(), 20.0)),
        ):
            me = sub.Get_rank() if where.startswith("an MPIStore") else r
            with collectives.Communicator(me, n, [transport], Config()) as comm:
                got = comm.all_gather(np.array([r], dtype=np.int64))
                want = np.arange(n, dtype=np.int64)[::-1] if where.startswith("an MPIStore") else np.arange(n)
                same(got, want, f"MPI transport on {where}: world ranks in rank order")
    finally:
        store.close()
    sub.Free()
    if n > 1:
        try:
            cls(0, 1, [], HashStore(), Config(), 20.0)
        except UnsupportedError as exc:
            assert "from_mpi" in str(exc), exc
        else:
            raise AssertionError("an MPI transport for a world that is not MPI.COMM_WORLD was built")
    say("MPI transport finds its communicator: MPIStore behind PrefixStores, MPI.COMM_WORLD, else a clear error")


def part_conformance() -> None:
    start = time.monotonic()
    ran = mpi_conformance.run_all(WORLD)
    say(f"MPI transport conformance ({len(ran)} checks, ranks as processes): {', '.join(ran)}, "
        f"{time.monotonic() - start:.1f} s")


PARTS: dict[str, Callable[[], None]] = {
    "conformance": part_conformance,
    "collectives": part_collectives,
    "split": part_split,
    "hosts": part_hosts,
    "init": part_init,
    "lookup": part_lookup,
}


def main(argv: list[str]) -> None:
    chosen = argv or list(PARTS)
    start = time.monotonic()
    for name in chosen:
        PARTS[name]()
        mpi_conformance.nap_barrier(WORLD)
    say(f"ALL OK ({time.monotonic() - start:.1f} s)")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except BaseException:
        sys.stdout.flush()
        print(f"rank {WORLD.Get_rank()} of {WORLD.Get_size()} failed:", file=sys.stderr)
        traceback.print_exc()
        sys.stderr.flush()
        WORLD.Abort(1)
