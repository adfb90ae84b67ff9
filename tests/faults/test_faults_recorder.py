"""The flight recorder and ``collectives-trace`` (issue 16: the recorder, and case 3's
"each rank's flight-recorder dump parses").

The CLI is tested on real dumps of real multi-process jobs, per transport (shm, tcp) at
2 and 4 ranks: one where the last rank skips a collective (the others fail and dump on
their own, to COLLECTIVES_TRACE_FILE), one where it calls another collective (caught by
COLLECTIVES_CHECK, dumped with ``comm.dump_trace``), and SIGUSR2 on a healthy job.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import collectives
from checks_helpers import fresh
from collectives.errors import CollectivesError
from collectives.flight_recorder import TRACE_ENTRIES, FlightRecorder, expand
from collectives.testing import run_world
from collectives.trace import main as trace_main

REPO = Path(__file__).resolve().parents[2]


def _trace_cli(*files: str) -> subprocess.CompletedProcess[str]:
    """``python -m collectives.trace FILES`` (what the console script runs)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "collectives.trace", *files], capture_output=True, text=True,
                          timeout=60, env=env)


def _trace(capsys: pytest.CaptureFixture[str], *files: str) -> tuple[int, str]:
    """``collectives-trace FILES`` in this process: (exit status, what it printed)."""
    capsys.readouterr()
    status = trace_main(list(files))
    return status, capsys.readouterr().out


def _records(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_the_ring_keeps_the_last_operations_of_every_path() -> None:
    """A world of one: the fast path and the general one both record, the ring keeps the
    last TRACE_ENTRIES, and the fields are read back from the plan's signature."""
    comm = collectives.init(rank=0, size=1)
    try:
        x = np.ones(2, np.float32)
        for _ in range(TRACE_ENTRIES + 100):
            comm.all_reduce(x)  # kept: the fast path after the first
        comm.broadcast(np.zeros(3, np.int64), 0, algorithm="ring")
        comm.all_reduce(x, op="max", async_op=True).wait()
        trace = comm.trace()
    finally:
        comm.close()
    assert len(trace) == TRACE_ENTRIES
    assert [r["seq"] for r in trace] == list(range(TRACE_ENTRIES + 103 - TRACE_ENTRIES, TRACE_ENTRIES + 103))
    assert all(r["state"] == "completed" and r["duration_us"] >= 0 for r in trace)
    assert {k: trace[-3][k] for k in ("op", "dtype", "count", "reduce_op")} == {
        "op": "all_reduce", "dtype": "float32", "count": 2, "reduce_op": "sum"}
    assert {k: trace[-2][k] for k in ("op", "dtype", "count", "root", "algorithm")} == {
        "op": "broadcast", "dtype": "int64", "count": 3, "root": 0, "algorithm": "ring"}
    assert trace[-1]["reduce_op"] == "max" and "issued_at" in trace[-1]


def test_states_from_issued_to_failed(tmp_path: Path) -> None:
    chosen: dict[Any, str] = {}
    recorder = FlightRecorder(3, 4, None, str(tmp_path / "t.%r.jsonl"), chosen)
    key = ("all_reduce", np.dtype(np.float32), 8, collectives.ReduceOp.SUM, None)
    chosen[key] = "ring"
    recorder.issue(key, 1)
    assert recorder.entries()[-1]["state"] == "issued"
    slot = recorder.start(key, 1, 100.0)
    assert recorder.entries()[-1]["state"] == "started"
    slot[3] = 100.5
    assert recorder.entries()[-1]["state"] == "completed" and recorder.entries()[-1]["duration_us"] == 500000.0
    recorder.start(key, 2, 101.0)
    recorder.fail(2, collectives.CollectiveTimeoutError("all_reduce", 2, [1], 1.0))  # dumps: a file is set
    last = _records(str(tmp_path / "t.3.jsonl"))[-1]
    assert last["state"] == "failed" and "timed out" in last["error"] and last["algorithm"] == "ring"
    assert expand("x.%r.%p.%%", 3) == f"x.3.{os.getpid()}.%"


def _diverging_job(tmp: str, transport: str) -> Any:
    def fn(comm: Any) -> dict[str, Any]:
        last = comm.rank == comm.size - 1
        x = np.ones(4, np.float32)
        # 1. the last rank calls broadcast where the others all-reduce; COLLECTIVES_CHECK
        # catches it, every rank dumps on demand
        checked = fresh(comm, "op", transport, check=True)
        checked.all_reduce(x)
        checked.all_reduce(x)
        try:
            checked.broadcast(x, 0) if last else checked.all_reduce(x)
        except collectives.CollectiveMismatchError:
            pass
        op_dump = checked.dump_trace(os.path.join(tmp, "op.%r.jsonl"))
        checked.close()
        # 2. the last rank skips the 4th all-reduce: the others fail (their peer is gone,
        # or time out) and dump on their own to COLLECTIVES_TRACE_FILE
        skipping = fresh(comm, "skip", transport, timeout=2.0, trace_file=os.path.join(tmp, "skip.%r.jsonl"))
        failed = ""
        try:
            for _ in range(3 if last else 4):
                skipping.all_reduce(x)
        except CollectivesError as exc:
            failed = type(exc).__name__
        if last:
            skipping.dump_trace()  # to its COLLECTIVES_TRACE_FILE
        skipping.close()
        return {"op_dump": op_dump, "failed": failed}

    return fn


@pytest.mark.multiprocess
@pytest.mark.parametrize("transport", ["shm", "tcp"])
@pytest.mark.parametrize("size", [2, 4])
def test_the_cli_names_the_first_operation_where_ranks_differ(tmp_path: Path, transport: str, size: int,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    results = run_world(_diverging_job(str(tmp_path), transport), size, transport, timeout=90)
    odd = size - 1
    assert all(r["failed"] for r in results[:-1]) and not results[-1]["failed"]

    status, out = _trace(capsys, *(r["op_dump"] for r in results))
    assert status == 1, out
    assert "first difference at #3: the ranks differ on op" in out, out
    assert f"rank {odd}: broadcast" in out and "rank 0: all_reduce" in out

    skip_files = [str(tmp_path / f"skip.{r}.jsonl") for r in range(size)]
    for r, path in enumerate(skip_files):  # every rank's dump parses, the failure noted
        ops = [rec for rec in _records(path) if rec["kind"] == "op"]
        assert ops[-1]["state"] == ("completed" if r == odd else "failed"), ops[-1]
    status, out = _trace(capsys, *skip_files)
    assert status == 1, out
    assert "first difference at #4" in out, out
    assert f"rank {odd} never reached it (its last: #3 all_reduce float32 x4 sum [completed])" in out
    if size == 2 and transport == "shm":  # the module runs as a program too
        assert _trace_cli(*skip_files).stdout == out


@pytest.mark.multiprocess
def test_sigusr2_dumps_a_running_job_and_the_cli_finds_it_agreeing(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    def fn(comm: Any) -> str:
        for _ in range(5):
            comm.all_reduce(np.ones(3, np.float64))
        os.kill(os.getpid(), signal.SIGUSR2)  # handled between two bytecodes of this thread
        comm.barrier()
        return expand(str(tmp_path / "sig.%r.%p.jsonl"), comm.rank)

    files = run_world(fn, 2, "shm", timeout=60, trace_file=str(tmp_path / "sig.%r.%p.jsonl"))
    for path in files:
        records = _records(path)
        assert records[0]["kind"] == "communicator" and records[0]["reason"] == "signal SIGUSR2"
        assert [r["seq"] for r in records[1:]] == list(range(6))  # the connect barrier, then five
    status, out = _trace(capsys, *files)
    assert status == 0 and "the ranks agree on every operation they all remember (#0 to #5)" in out, out
    assert _trace(capsys, str(tmp_path / "missing.jsonl"))[0] == 2


def test_the_cli_is_a_console_script() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["collectives-trace"] == "collectives.trace:main"
    assert scripts["collectives-run"] == "collectives.run:main"
