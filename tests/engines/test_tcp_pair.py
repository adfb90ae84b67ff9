"""The 2-rank all-reduce over tcp in C (engines/tcp_pair.py, engines/_tcp_pair_c.c): a sum of
float32, float64, int32 or int64 from ``PAIR_FROM_BYTES`` runs the recursive schedule's two halves as
byte streams in one C call a slice, frame for frame the executor's messages, so that it matches a
peer on the executor; it gives the same bits as the executor in place and out of place, at odd
sizes and segments; a frame of another tag between its frames is kept for its receive; a peer
killed mid-call is a PeerLostError, a silent one the communicator's timeout, ranks that disagree on
the size a MessageMismatchError. Every world runs with the C part and without it (``pure_python``)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from collectives.engines import tcp_pair
from collectives.ops import ReduceOp
from collectives.testing import RankError, run_world
from collectives.transports.shm import ShmChannel
from collectives.transports.tcp import TcpChannel

pytestmark = pytest.mark.multiprocess  # (no skip where the C part is not built: its tests fail, as they should)

PATHS = [False, True]  # pure_python
IDS = ["c", "python"]
DTYPES = [np.float32, np.float64, np.int32, np.int64]
SEGMENT_BYTES = 4096  # chunk_bytes of the small worlds: many frames a call
COUNT = 100_003  # odd: block 0 has one element more, and no half is whole segments


class _Counted:
    """``pair_all_reduce``, counting its calls, the calls that finished an all-reduce, and those that
    stopped at a frame of another tag."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.calls, self.done, self.foreign = fn, 0, 0, 0

    def __call__(self, *args: Any) -> int:
        self.calls += 1
        code: int = self.fn(*args)
        self.done += code == 0
        self.foreign += code == 2
        return code


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> _Counted:
    """The C call counted, in every rank (the worlds fork after this)."""
    counter = _Counted(tcp_pair.pair_all_reduce)
    monkeypatch.setattr(tcp_pair, "pair_all_reduce", counter)
    return counter


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop from any size (the worlds then step in ``SEGMENT_BYTES``)."""
    monkeypatch.setattr(tcp_pair, "PAIR_FROM_BYTES", 0)


def _inputs(dtype: Any, count: int, rank: int) -> np.ndarray:
    """Rank ``rank``'s input: random floats (sums that round), integers near the top (sums that wrap)."""
    rng = np.random.default_rng(rank + 10 * np.dtype(dtype).itemsize)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(count).astype(dtype)
    top = np.iinfo(dtype).max
    return rng.integers(top - 1000, top, count, dtype=dtype)


Rows = list[tuple[str, str, bool, bool]]


def _sums(counter: _Counted, count: int, algorithm: str | None = None) -> Callable[[Any], tuple[Rows, int]]:
    """Each rank's rows (dtype, placement, the sum exact, the input kept) and its finished C calls."""

    def fn(comm: Any) -> tuple[Rows, int]:
        rows = []
        for dtype in DTYPES:
            mine, theirs = _inputs(dtype, count, comm.rank), _inputs(dtype, count, 1 - comm.rank)
            with np.errstate(over="ignore"):
                expected = mine + theirs if comm.rank == 0 else theirs + mine
            x = mine.copy()
            comm.all_reduce(x, algorithm=algorithm)
            rows.append((np.dtype(dtype).name, "in place", bool(np.array_equal(x, expected)), True))
            x = mine.copy()
            out = np.full_like(x, 7)
            comm.all_reduce(x, out=out, algorithm=algorithm)
            rows.append((np.dtype(dtype).name, "out of place", bool(np.array_equal(out, expected)),
                         bool(np.array_equal(x, mine))))
        return rows, counter.done
    return fn


@pytest.mark.parametrize("pure_python", PATHS, ids=IDS)
def test_sums_equal_the_executors_at_odd_sizes_in_and_out_of_place(pure_python, counted, small):
    results = run_world(_sums(counted, COUNT, "recursive"), 2, "tcp", timeout=120, pure_python=pure_python,
                        chunk_bytes=SEGMENT_BYTES)
    for rows, done in results:
        assert all(ok and kept for _, _, ok, kept in rows), rows
        assert done == (0 if pure_python else 2 * len(DTYPES))


def test_sums_at_the_size_it_takes_by_default(counted):
    count = tcp_pair.PAIR_FROM_BYTES // 4 + 3  # float32 from the first size it takes, odd; the 2 MiB step
    results = run_world(_sums(counted, count), 2, "tcp", timeout=300)
    for rows, done in results:
        assert all(ok and kept for _, _, ok, kept in rows), rows
        assert done == 2 * len(DTYPES)


def test_a_peer_on_the_executor_matches_it_message_by_message(counted, small):
    """Rank 1 without the C part: its executor's frames against rank 0's loop's."""
    inner = _sums(counted, COUNT, "recursive")

    def fn(comm: Any) -> Any:
        if comm.rank == 1:
            tcp_pair.pair_all_reduce = None  # (this rank's process only)
        return inner(comm)

    (rows0, done0), (rows1, done1) = run_world(fn, 2, "tcp", timeout=120, chunk_bytes=SEGMENT_BYTES)
    assert all(ok and kept for _, _, ok, kept in rows0 + rows1), (rows0, rows1)
    assert (done0, done1) == (2 * len(DTYPES), 0)


def test_a_message_of_another_tag_between_its_frames_is_kept_for_its_receive(counted, small):
    def fn(comm: Any) -> tuple[bool, bool, int, int]:
        note = np.arange(10, dtype=np.int64)
        x = np.full(COUNT, comm.rank + 1, dtype=np.float64)
        if comm.rank == 1:
            comm.send(note, 0, tag=5)  # on the stream before the all-reduce's frames
            comm.all_reduce(x, algorithm="recursive")
            got = note
        else:
            time.sleep(0.2)
            comm.all_reduce(x, algorithm="recursive")
            got = np.zeros(10, dtype=np.int64)
            comm.recv(got, 1, tag=5)
        return (bool(np.array_equal(x, np.full(COUNT, 3.0))), bool(np.array_equal(got, note)), counted.done,
                counted.foreign)

    # rank 0's loop met the message's header first, handed the frame to its channel, and went on
    assert run_world(fn, 2, "tcp", timeout=60, chunk_bytes=SEGMENT_BYTES) == [(True, True, 1, 1), (True, True, 1, 0)]


def _report(folder: Path, rank: int, exc: BaseException) -> None:
    (folder / f"{rank}.json").write_text(json.dumps({"type": type(exc).__name__, "peer": getattr(exc, "peer", None),
                                                     "message": str(exc)}))


def test_a_peer_killed_mid_call_is_a_peer_lost_error(counted, tmp_path):
    count = (64 << 20) // 4  # calls long enough that the kill lands inside one

    def fn(comm: Any) -> str:
        x = np.ones(count, dtype=np.float32)
        comm.all_reduce(x)  # both ranks in the loop once
        if comm.rank == 1:
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGKILL)).start()
        try:
            for _ in range(1000):
                comm.all_reduce(x)
        except Exception as exc:  # noqa: BLE001 - reported for the test
            _report(tmp_path, comm.rank, exc)
            (tmp_path / "entered").write_text(str(counted.calls))
            return "raised"
        return "finished"

    with pytest.raises(RankError) as info:
        run_world(fn, 2, "tcp", timeout=60)
    assert info.value.rank == 1 and info.value.exitcode == -signal.SIGKILL
    report = json.loads((tmp_path / "0.json").read_text())
    assert report["type"] == "PeerLostError" and report["peer"] == 1, report
    assert "rank 1 died" in report["message"], report
    assert int((tmp_path / "entered").read_text()) >= 2  # rank 0 was in the loop when it heard


@pytest.mark.parametrize("pure_python", PATHS, ids=IDS)
def test_a_silent_peer_is_the_communicators_timeout(pure_python, counted, small):
    def fn(comm: Any) -> str:
        comm.timeout = 1.0
        if comm.rank == 1:
            time.sleep(2.5)  # never calls: its end of the stream stays open and silent
            return "silent"
        started = time.monotonic()
        try:
            comm.all_reduce(np.ones(COUNT, dtype=np.float32), algorithm="recursive")
        except Exception as exc:  # noqa: BLE001 - its type is the answer
            return f"{type(exc).__name__} after {time.monotonic() - started:.1f} s, {counted.calls} C calls"
        return "returned"

    first, second = run_world(fn, 2, "tcp", timeout=60, pure_python=pure_python, chunk_bytes=SEGMENT_BYTES)
    assert second == "silent"
    kind, _, after, _, calls, *_ = first.split()
    assert kind == "CollectiveTimeoutError" and 0.9 <= float(after) < 3.5, first  # the timeout (and its diagnosis)
    assert (int(calls) == 0) == pure_python, first


def test_ranks_that_disagree_on_the_size_get_a_message_mismatch(counted, small):
    segment = SEGMENT_BYTES // 4

    def fn(comm: Any) -> str:
        comm.timeout = 5.0
        count = COUNT + 2 * segment * comm.rank  # rank 1's half 0 is one segment longer
        try:
            comm.all_reduce(np.ones(count, dtype=np.float32), algorithm="recursive")
        except Exception as exc:  # noqa: BLE001 - its type is the answer
            return type(exc).__name__
        return "returned"

    kinds = run_world(fn, 2, "tcp", timeout=60, chunk_bytes=SEGMENT_BYTES)
    assert "MessageMismatchError" in kinds and set(kinds) <= {"MessageMismatchError", "PeerLostError"}, kinds


def test_takes_large_sums_of_its_dtypes_over_tcp_only():
    tcp = {1: TcpChannel.__new__(TcpChannel)}
    tcp[1].max_frame_bytes = 64 << 20
    big = tcp_pair.PAIR_FROM_BYTES // 4
    f32 = np.dtype(np.float32)
    assert tcp_pair.takes(tcp, 2, f32, big, ReduceOp.SUM, 1 << 19, True)
    assert not tcp_pair.takes(tcp, 2, f32, big - 1, ReduceOp.SUM, 1 << 19, True)  # below the size
    assert not tcp_pair.takes(tcp, 2, f32, big, ReduceOp.SUM, 1 << 19, False)  # pure_python
    assert not tcp_pair.takes(tcp, 2, f32, big, ReduceOp.MAX, 1 << 19, True)  # not a sum
    assert not tcp_pair.takes(tcp, 2, np.dtype(np.float16), 2 * big, ReduceOp.SUM, 1 << 19, True)
    assert not tcp_pair.takes(tcp, 2, f32, big, ReduceOp.SUM, 1 << 25, True)  # a segment over one frame
    assert not tcp_pair.takes(tcp, 3, f32, big, ReduceOp.SUM, 1 << 19, True)
    shm = {1: ShmChannel.__new__(ShmChannel)}
    assert not tcp_pair.takes(shm, 2, f32, big, ReduceOp.SUM, 1 << 19, True)
