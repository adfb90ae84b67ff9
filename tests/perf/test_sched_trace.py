"""perf/sched_trace.py: reading a tracefs trace and lining a cell's slow calls up with it, and the harness's call
log (perf/bench.py) it reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from perf import bench, sched_trace
from perf.bench import RowSpec, run_row


def _line(comm: str, pid: int, cpu: int, ts: str, event: str, text: str) -> str:
    return f"{comm:>16}-{pid:<6} [{cpu:03d}] d..2. {ts:>12}: {event}: {text}"


def _switch(cpu: int, ts: str, prev: str, prev_pid: int, state: str, nxt: str, next_pid: int) -> str:
    return _line(prev, prev_pid, cpu, ts, "sched_switch", f"prev_comm={prev} prev_pid={prev_pid} prev_prio=120 "
                 f"prev_state={state} ==> next_comm={nxt} next_pid={next_pid} next_prio=120")


# Two CPUs, 10 ms: our rank 0 (pid 100) runs on cpu0 until an outsider (cc1, pid 900) preempts it for 4 ms
# at 1.000 s; our rank 1 (pid 101) yields on cpu1 and sleeps on a futex from 1.002 s, woken by rank 0 at 1.0055,
# and runs 300 us later.
TRACE = "\n".join([
    "# tracer: nop",
    "#",
    _switch(0, "1.000000", "python", 100, "R", "cc1", 900),
    _line("python", 101, 1, "1.002000", "sys_enter", "NR 202 (7f, 80, 0, 0, 0, 0)"),
    _switch(1, "1.002010", "python", 101, "S", "swapper/1", 0),
    _line("cc1", 900, 0, "1.002500", "local_timer_entry", "vector=236"),
    _switch(0, "1.004000", "cc1", 900, "R", "python", 100),
    _line("python", 100, 0, "1.005500", "sched_waking", "comm=python pid=101 prio=120 target_cpu=001"),
    _line("python", 100, 0, "1.005501", "sched_wakeup", "comm=python pid=101 prio=120 target_cpu=001"),
    _line("python", 100, 0, "1.005600", "sched_migrate_task", "comm=python pid=101 prio=120 orig_cpu=1 dest_cpu=0"),
    _switch(0, "1.005800", "python", 100, "S", "python", 101),
    _line("python", 101, 0, "1.005810", "sys_exit", "NR 202 = 0"),
    _switch(0, "1.010000", "python", 101, "S", "swapper/0", 0),
]) + "\n"

S = 1_000_000_000


def _cell(pid: int, rank: int, start_ms: float, ends_ms: list[float]) -> dict:
    """A record of perf/bench.py's call log: our library's 4 MiB sendrecv, times in ms after 1 s."""
    return {"pid": pid, "rank": rank, "size_ranks": 2, "backend": "CollectivesBackend", "coll": "sendrecv",
            "bytes": 4 << 20, "in_place": False, "start": int(S + start_ms * 1e6),
            "ends": [int(S + x * 1e6) for x in ends_ms]}


def test_a_line_of_the_trace_reads_as_its_time_cpu_task_and_fields() -> None:
    e = sched_trace.parse_line(TRACE.splitlines()[2])
    assert e is not None
    assert (e.ns, e.cpu, e.comm, e.pid, e.name) == (S, 0, "python", 100, "sched_switch")
    f = e.fields()
    assert (f["prev_pid"], f["prev_state"], f["next_comm"], f["next_pid"]) == ("100", "R", "cc1", "900")
    assert sched_trace.parse_line("# tracer: nop") is None


def test_the_timeline_says_who_ran_where_and_each_stretch_off_the_cpu() -> None:
    t = sched_trace.Timeline.build(sched_trace.parse(TRACE.splitlines()))
    assert t.share(0, S, S + 4_000_000) == {(900, "cc1"): 4_000_000}
    assert t.ran(100, S, S + 10_000_000) == {0: 1_800_000}
    [off] = t.offs[100]
    assert (off.out, off.back, off.state) == (S, S + 4_000_000, "R")
    [sleep] = t.offs[101]
    assert (sleep.state, sleep.woken, sleep.waker) == ("S", S + 5_500_000, "python-100")
    assert t.moves[101] == [(S + 5_600_000, 1, 0, "python-100")]
    assert t.futex[101] == [(S + 2_000_000, S + 5_810_000)]


def test_a_rank_preempted_by_an_outsider_counts_as_runnable_off_its_cpu_and_a_late_wake_is_named() -> None:
    t = sched_trace.Timeline.build(sched_trace.parse(TRACE.splitlines()))
    p0 = sched_trace.rank_part(t, 100, S, S + 5_800_000)
    assert p0.runnable_off == 4_000_000 and p0.asleep == 0
    p1 = sched_trace.rank_part(t, 101, S + 2_000_000, S + 6_000_000)
    assert p1.asleep == 3_490_000 and p1.woken_waiting == 300_000
    assert p1.late_wakes == []  # 300 us: not over the mark
    assert p1.long_syscalls == [3_810_000]
    assert sched_trace.outsider_ns(t, S, S + 6_000_000, {100: "O0", 101: "O1"}) == (4_000_000, "cc1-900 on cpu0")


def test_the_report_finds_the_slow_call_and_the_outsider_that_held_a_cpu(tmp_path: Path) -> None:
    (tmp_path / "trace.txt").write_text(TRACE)
    (tmp_path / "calls").mkdir()
    # calls of ~0.25 ms, but the 4th ends 6.8 ms after the 3rd on rank 0 (1.0000 .. 1.0058)
    ends0 = [-0.75, -0.5, -0.25, 5.8, 6.0, 6.25]
    ends1 = [-0.75, -0.5, -0.25, 6.0, 6.25, 6.5]
    for pid, rank, ends in ((100, 0, ends0), (101, 1, ends1)):
        c = _cell(pid, rank, -1.0, ends)
        (tmp_path / "calls" / f"{pid}.jsonl").write_text(json.dumps(c) + "\n")
    lines, records = sched_trace.report(str(tmp_path), slow_ms=1.0, factor=3.0, show=5, outsider_ms=1.0)
    assert [r["call"] for r in records] == [3]
    assert records[0]["outsider"] == "cc1-900 on cpu0" and records[0]["outsider_us"] == pytest.approx(4000)
    assert "O sendrecv 4194304 out: 1 (1) of 6" in "\n".join(lines)


def test_worlds_pair_each_ranks_kth_cell_and_keep_a_peer_library_apart() -> None:
    cells = [sched_trace.Cell(pid, rank, peer, "broadcast", 8, ip, start, [start + 10])
             for pid, rank, peer, ip, start in ((1, 0, False, False, 0), (2, 1, False, False, 1),
                                                (1, 0, False, True, 100), (2, 1, False, True, 101),
                                                (7, 0, True, False, 50), (8, 1, True, False, 51))]
    ws = sched_trace.worlds(cells)
    assert [[(c.name, c.in_place) for c in w] for w in ws] == [
        [("O0", False), ("O1", False)], [("O0", True), ("O1", True)], [("M0", False), ("M1", False)]]


def test_crowding_counts_an_idle_cpu_beside_a_queued_rank_and_a_yield_that_kept_the_cpu() -> None:
    # cpu1 goes idle at 2.0 ms while rank 100 waits in cpu0's queue behind the outsider; the outsider gives cpu0
    # back at 4.0 ms. Rank 102 yields on cpu1 with rank 103 queued there: once without a switch, once with one.
    trace = [
        _switch(0, "1.000000", "python", 100, "R", "cc1", 900),
        _switch(1, "1.002000", "python", 101, "S", "swapper/1", 0),
        _switch(0, "1.004000", "cc1", 900, "R", "python", 100),
        _line("swapper/1", 0, 1, "1.005000", "sched_wakeup", "comm=python pid=103 prio=120 target_cpu=001"),
        _switch(1, "1.005001", "swapper/1", 0, "R", "python", 102),
        _line("python", 102, 1, "1.005010", "sys_enter", "NR 24 (0, 0, 0, 0, 0, 0)"),
        _line("python", 102, 1, "1.005011", "sys_exit", "NR 24 = 0"),
        _line("python", 102, 1, "1.005020", "sys_enter", "NR 24 (0, 0, 0, 0, 0, 0)"),
        _switch(1, "1.005021", "python", 102, "R", "python", 103),
        _switch(1, "1.005100", "python", 103, "R", "python", 102),
        _line("python", 102, 1, "1.005101", "sys_exit", "NR 24 = 0"),
    ]
    events = sched_trace.parse(trace)
    ours = {100: "O", 101: "O", 102: "O", 103: "O"}
    c = sched_trace.Crowding.measure(events, ours, [(S, S + 10_000_000, "O")])
    assert c.idle_beside_queued["O"] == [2_000_000]
    assert (c.yields[("O", "all")], c.yields[("O", "queued")], c.yields[("O", "kept")]) == (2, 2, 1)
    outside = sched_trace.Crowding.measure(events, ours, [(S + 20_000_000, S + 30_000_000, "O")])
    assert outside.idle_beside_queued["O"] == [] and outside.yields[("O", "all")] == 0
    [line, yields] = c.lines({"O": 10_000_000})
    assert "2.0 ms of 10.0 ms of timed cells, 1 stretches over 100 us, longest 2000 us" in line
    assert "sched_yield calls 2, 2 of them" in yields and "of which 1 returned without a switch" in yields


class _Echo:
    """One rank whose all-reduce copies."""

    rank, size = 0, 1

    def all_reduce(self, send: np.ndarray, recv: np.ndarray, op: str) -> None:
        if not np.shares_memory(send, recv):
            recv[...] = send

    def barrier(self) -> None:
        pass


def test_the_harness_logs_every_timed_call_on_the_trace_clock_only_when_asked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert bench.CALL_LOG_ENV == sched_trace.CALL_LOG_ENV
    spec = RowSpec("all_reduce", "float", "sum", 0, 1024, iters=5, check=1)
    monkeypatch.delenv(bench.CALL_LOG_ENV, raising=False)
    run_row(_Echo(), spec)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv(bench.CALL_LOG_ENV, str(tmp_path))
    row = run_row(_Echo(), spec)
    assert row.wrong == [[0], [0]]  # the cells are still checked
    [log] = list(tmp_path.iterdir())
    assert log.name == f"{os.getpid()}.jsonl"
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["in_place"] for r in recs] == [False, True]
    for r in recs:
        assert len(r["ends"]) == 5 and r["start"] <= r["ends"][0] and r["ends"] == sorted(r["ends"])
        assert (r["coll"], r["bytes"], r["rank"], r["backend"]) == ("all_reduce", 1024, 0, "_Echo")
    cells = sched_trace.read_cells(str(tmp_path))
    assert [c.peer for c in cells] == [True, True]  # not our library's backend class
