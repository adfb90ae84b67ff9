"""Real processes over shared memory and TCP, at world sizes 2, 3 and 4: every collective
gives the numpy reference on every rank, a dead peer is reported, a missing rank times
out with its name, and nothing is left in /dev/shm.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import collectives
from collectives import ReduceOp
from collectives.testing import RankError, run_world
from collectives.testing import reference as ref

pytestmark = pytest.mark.multiprocess

TRANSPORTS = ["shm", "tcp"]
SIZES = [2, 3, 4]
REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 0.5
"""The timeout tests' timeout. A rank that times out waits as long again (up to 1 s) for the
others to say they are in the operation; the two ranks present must enter it within that
wait of each other, which ranks fresh from init or from a collective they finished together
do on a loaded 2-core machine."""


def shm_entries() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith("collectives-")}


def every_collective(comm: collectives.Communicator) -> dict[str, object]:
    """Run each collective once with rank-and-index inputs; return what this rank saw."""
    r, n = comm.rank, comm.size
    got: dict[str, object] = {}
    for algo in ("ring", "tree", "recursive"):
        x = np.arange(1001, dtype=np.int64) + 1000 * r
        comm.all_reduce(x, algorithm=algo)
        got[f"all_reduce/{algo}"] = x.copy()
        y = np.arange(7 * n, dtype=np.float64) * (r + 1)
        got[f"reduce_scatter/{algo}"] = comm.reduce_scatter(y, algorithm=algo).copy()
        got[f"all_gather/{algo}"] = comm.all_gather(np.full(5, r, dtype=np.int32), algorithm=algo).copy()
        b = np.arange(9, dtype=np.float32) if r == n - 1 else np.zeros(9, np.float32)
        got[f"broadcast/{algo}"] = comm.broadcast(b, root=n - 1, algorithm=algo).copy()
        m = np.arange(6, dtype=np.int64) + r
        comm.reduce(m, root=0, op=ReduceOp.MAX, algorithm=algo)
        got[f"reduce/{algo}"] = m.copy()
        g = comm.gather(np.full(3, r, dtype=np.int16), root=1, algorithm=algo)
        got[f"gather/{algo}"] = None if g is None else g.copy()
        src = np.arange(4 * n, dtype=np.int64) if r == 0 else None
        got[f"scatter/{algo}"] = comm.scatter(src, np.empty(4, np.int64), root=0, algorithm=algo).copy()
    got["all_to_all"] = comm.all_to_all(np.arange(2 * n, dtype=np.int64) + 100 * r).copy()
    ins = [(r + 2 * j) % 3 for j in range(n)]  # uneven, zeros among them
    got["all_to_all_v"] = comm.all_to_all_v(np.arange(sum(ins), dtype=np.int64) + 100 * r, ins,
                                            [(q + 2 * r) % 3 for q in range(n)]).copy()
    if n > 1:
        if r == 0:
            comm.send(np.array([42, 43]), dst=1)
        elif r == 1:
            got["recv"] = comm.recv(np.empty(2, np.int64), src=0).copy()
    comm.barrier()
    return got


def expected(rank: int, n: int) -> dict[str, object]:
    out: dict[str, object] = {}
    for algo in ("ring", "tree", "recursive"):
        out[f"all_reduce/{algo}"] = sum(np.arange(1001, dtype=np.int64) + 1000 * q for q in range(n))
        full = sum(np.arange(7 * n, dtype=np.float64) * (q + 1) for q in range(n))
        out[f"reduce_scatter/{algo}"] = full[7 * rank : 7 * rank + 7]
        out[f"all_gather/{algo}"] = np.repeat(np.arange(n, dtype=np.int32), 5)
        out[f"broadcast/{algo}"] = np.arange(9, dtype=np.float32)
        out[f"reduce/{algo}"] = np.arange(6) + (n - 1) if rank == 0 else np.arange(6) + rank
        out[f"gather/{algo}"] = np.repeat(np.arange(n, dtype=np.int16), 3) if rank == 1 else None
        out[f"scatter/{algo}"] = np.arange(4 * rank, 4 * rank + 4)
    out["all_to_all"] = np.array([100 * q + 2 * rank + i for q in range(n) for i in range(2)])
    splits = [[(q + 2 * j) % 3 for j in range(n)] for q in range(n)]
    out["all_to_all_v"] = ref.all_to_all_v([np.arange(sum(s), dtype=np.int64) + 100 * q for q, s in enumerate(splits)],
                                           splits)[rank]
    if rank == 1:
        out["recv"] = np.array([42, 43])
    return out


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_every_collective_over_real_processes(transport, size):
    before = shm_entries()
    results = run_world(every_collective, size, transport, timeout=60)
    for rank, got in enumerate(results):
        want = expected(rank, size)
        assert got.keys() == want.keys()
        for key, value in want.items():
            if value is None:
                assert got[key] is None, key
            else:
                np.testing.assert_array_equal(got[key], value, err_msg=f"rank {rank} {key}")
    assert shm_entries() <= before, "shared-memory segments were left behind"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_zero_element_collectives_move_nothing_and_wait_for_no_one(transport):
    """As in NCCL and MPI, a collective of zero elements returns at once: a rank that
    arrives late holds nobody up, and the calls after it still line up."""

    def fn(comm):
        if comm.rank == 1:
            time.sleep(1.0)
        start = time.monotonic()
        empty = np.zeros(0, np.float32)
        comm.all_reduce(empty)
        comm.all_reduce(empty, out=np.zeros(0, np.float32))
        got = comm.all_gather(empty)
        comm.reduce_scatter(empty, np.zeros(0, np.float32))
        comm.broadcast(empty, root=1)
        elapsed = time.monotonic() - start
        x = np.full(3, comm.rank + 1.0)
        comm.all_reduce(x)
        return elapsed, got.size, x.tolist()

    results = run_world(fn, 3, transport, timeout=60)
    for elapsed, size, x in results:
        assert elapsed < 0.5, f"a zero-element collective waited {elapsed:.2f} s"
        assert (size, x) == (0, [6.0, 6.0, 6.0])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_large_all_reduce_is_bitwise_identical_on_every_rank(transport):
    def fn(comm):
        rng = np.random.default_rng(comm.rank)
        x = rng.standard_normal(3 << 20 // 4 + 17).astype(np.float32)  # ~3 MiB, several chunks
        comm.all_reduce(x, algorithm="ring")
        return x.view(np.uint32).copy()

    results = run_world(fn, 3, transport, timeout=60, chunk_bytes=256 << 10)
    for r in results[1:]:
        assert np.array_equal(r, results[0])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_dead_peer_is_named_within_seconds(transport, tmp_path):
    report = tmp_path / "rank0.txt"

    def fn(comm):
        comm.barrier()
        if comm.rank == 1:
            time.sleep(0.2)
            os.kill(os.getpid(), 9)
        start = time.monotonic()
        try:
            comm.all_reduce(np.ones(1 << 16))
            report.write_text("completed")
        except collectives.PeerLostError as exc:
            report.write_text(f"{exc.peer}|{time.monotonic() - start:.2f}|{exc}")
        return None

    with pytest.raises(RankError) as info:
        run_world(fn, 2, transport, timeout=60)
    assert info.value.rank == 1  # the killed rank is the one reported
    peer, seconds, message = report.read_text().split("|", 2)
    assert peer == "1", message
    assert float(seconds) < 10, message
    assert "all_reduce" in message


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_timeout_names_the_rank_that_never_joined(transport, arrivals):
    def fn(comm):
        comm.timeout = TIMEOUT
        if comm.rank == 2:
            arrivals.wait(2)  # alive, not joining, until both others timed out
            return "skipped"
        try:
            comm.all_reduce(np.ones(4))
        except collectives.CollectiveTimeoutError as exc:
            return (exc.collective, exc.seq, exc.absent)
        finally:
            arrivals.arrive()
        return "completed"

    results = run_world(fn, 3, transport, timeout=30)
    assert results[2] == "skipped"
    for name, seq, absent in results[:2]:
        assert (name, seq) == ("all_reduce", 1)
        assert absent == [2]


REPEATED_CALLS = {
    "all_reduce": lambda comm: comm.all_reduce(np.ones(4, np.float32)),
    "broadcast": lambda comm: comm.broadcast(np.ones(4, np.float32), root=2),  # the absent rank's data
    "all_gather": lambda comm: comm.all_gather(np.ones(4, np.float32), np.zeros(4 * comm.size, np.float32)),
    "reduce_scatter": lambda comm: comm.reduce_scatter(np.ones(3 * comm.size, np.float32), np.zeros(3, np.float32)),
}


@pytest.mark.parametrize(("transport", "collective"), [("shm", c) for c in sorted(REPEATED_CALLS)] + [("tcp", "all_reduce")])
def test_a_repeated_small_collective_that_times_out_names_itself(transport, collective, arrivals):
    """Repeated small collectives run kept plans (a fast path of their own: windows over
    shared memory, kept schedules over TCP): their timeouts still name the collective, its
    operation number and the rank that never joined."""
    call = REPEATED_CALLS[collective]

    def fn(comm):
        for _ in range(3):
            call(comm)
        if comm.rank == 2:
            arrivals.wait(2)  # alive, not joining, until both others timed out
            return "skipped"
        comm.timeout = TIMEOUT
        try:
            call(comm)
        except collectives.CollectiveTimeoutError as exc:
            return (exc.collective, exc.seq, exc.absent)
        finally:
            arrivals.arrive()
        return "completed"

    results = run_world(fn, 3, transport, timeout=30)
    assert results[2] == "skipped"
    for result in results[:2]:
        assert result == (collective, 4, [2])


LAUNCHED_SCRIPT = textwrap.dedent(
    """
    import numpy as np, collectives
    comm = collectives.init()
    x = np.arange(10, dtype=np.float64) + comm.rank
    comm.all_reduce(x)
    n = comm.size
    assert np.array_equal(x, n * np.arange(10) + n * (n - 1) / 2), x
    print("ok", comm.rank, comm.size, sorted(set(comm.transport_names.values())))
    comm.close()
    """
)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_launcher_runs_a_script_on_every_transport(transport, tmp_path):
    script = tmp_path / "job.py"
    script.write_text(LAUNCHED_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "collectives.run", "-n", "3", "--transport", transport, str(script)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    for rank in range(3):
        assert f"[rank {rank}] ok {rank} 3 ['{transport}']" in proc.stdout


def test_default_transport_on_one_host_is_shared_memory(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(LAUNCHED_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "COLLECTIVES_TRANSPORT"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "collectives.run", "-n", "2", str(script)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "[rank 0] ok 0 2 ['shm']" in proc.stdout


def test_init_reads_torchrun_environment(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(LAUNCHED_SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTIVES_")}
        env.update(
            PYTHONPATH=str(REPO), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
        )
        procs.append(subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=120) for p in procs]
    for rank, (p, (out, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, err
        assert f"ok {rank} 2" in out


def test_init_under_real_torchrun_meets_in_the_agent_store(tmp_path):
    pytest.importorskip("torch")
    script = tmp_path / "job.py"
    # ranks share torchrun's stdout, where their lines can interleave: each writes a file
    script.write_text(textwrap.dedent(
        f"""
        import numpy as np, collectives
        comm = collectives.init()
        x = np.arange(10, dtype=np.float64) + comm.rank
        comm.all_reduce(x)
        assert np.array_equal(x, 2 * np.arange(10) + 1), x
        kinds = sorted(set(comm.transport_names.values()))
        with open({str(tmp_path)!r} + f"/rank{{comm.rank}}.txt", "w") as f:
            f.write(f"ok {{comm.rank}} {{comm.size}} {{kinds}}")
        comm.close()
        """
    ))
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTIVES_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in range(2):
        assert (tmp_path / f"rank{rank}.txt").read_text() == f"ok {rank} 2 ['shm']"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_abort_from_another_thread_unblocks_a_waiting_collective(transport, arrivals):
    """comm.abort() from a watchdog thread: the blocked call fails within about a second
    (not at the timeout), and later calls say the communicator is closed."""
    import threading

    def fn(comm):
        if comm.rank == 1:
            arrivals.wait(1)  # never joins: rank 0 would wait until its timeout
            return "absent"
        threading.Timer(0.5, comm.abort).start()
        start = time.monotonic()
        try:
            with pytest.raises(collectives.CollectivesError):
                comm.all_reduce(np.ones(8))
            took = time.monotonic() - start
            with pytest.raises(collectives.CommunicatorClosedError):
                comm.barrier()
        finally:
            arrivals.arrive()
        return took

    took, absent = run_world(fn, 2, transport, timeout=60)
    assert absent == "absent"
    assert took < 2.0


def shared_mappings() -> int:
    """This process's shared mappings: what the library maps (its windows and rings, files of
    /dev/shm). Private anonymous ones are the allocators' (thread stacks, malloc arenas,
    Python's and numpy's blocks), which keep what a busier moment took."""
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if line.split()[1][3] == "s")


def settled(want: tuple[int, ...], measure: Callable[[], tuple[int, ...]], within: float = 10.0) -> tuple[int, ...]:
    """``measure()`` once it reads ``want``, or its last reading after ``within`` seconds:
    ``close()`` returns once its revoke watcher's wait on the store ran out (bounded, for a
    store that went away), so on a busy host a thread may still be ending, a store
    connection still open; a leaked one stays, and the caller sees it."""
    deadline = time.monotonic() + within
    while (now := measure()) != want and time.monotonic() < deadline:
        time.sleep(0.05)
    return now


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_repeated_init_and_close_leak_no_fds_mappings_or_threads(transport):
    """Thirty init/all_reduce/close cycles, each meeting in a store client of its own that it
    closes, leave a rank with the fds, threads and shared mappings one warm-up cycle left.
    (Over one client shared by the cycles, its pool of connections keeps as many as were
    ever busy at once, which a slow close decides; and a leaked window is a shared mapping.)"""
    import gc
    import threading

    from collectives.store import PrefixStore, TCPStore, TCPStoreServer

    def counts() -> tuple[int, int, int]:
        gc.collect()
        return len(os.listdir("/proc/self/fd")), threading.active_count(), shared_mappings()

    def cycle(comm, name):
        with TCPStore(server.host, server.port, "leak-test", timeout=60) as store:
            c = collectives.init(comm.rank, comm.size, PrefixStore(name, store), transport=transport)
            c.all_reduce(np.ones(50000))
            c.close()

    def fn(comm):
        threads = threading.active_count()
        cycle(comm, "warm-up")
        settled((threads,), lambda: (threading.active_count(),))  # the warm-up's own have ended
        before = counts()
        for i in range(30):
            cycle(comm, f"cycle{i}")
        return before, settled(before, counts)

    existing = shm_entries()
    server = TCPStoreServer(secret="leak-test")
    try:
        for before, after in run_world(fn, 2, transport, timeout=120):
            assert after == before, "(fds, threads, shared mappings) after 30 cycles vs after one"
    finally:
        server.close()
    assert shm_entries() <= existing
