"""The sweep's order of the worlds and its per-row warm-up (perf/sweep.py, perf/bench.py), on worlds
that only record what they are asked (no processes)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perf.bench import RankRow, RowSpec, run_row
from perf.colls import COLLECTIVES
from perf.options import UsageExit, parse
from perf.progress import Printer
from perf.sweep import sweep


class _Recording:
    """A world of 2 that logs every call into a shared list and answers each row with a time per call
    proportional to the size (``us_per_byte``, 1 µs at least)."""

    nranks = 2

    def __init__(self, name: str, log: list[tuple[str, str, int, int]], us_per_byte: float = 0.001) -> None:
        self.name, self.log, self.us_per_byte = name, log, us_per_byte

    def warmup(self, *args: object) -> None:
        self.log.append((self.name, "warmup", 0, 0))

    def row(self, spec: RowSpec) -> list[RankRow]:
        self.log.append((self.name, "row", spec.size, spec.warm))
        t = max(spec.size * self.us_per_byte, 1.0)
        return [RankRow([t, t]), RankRow([t, t])]

    def supports(self, dtype: str, op: str | None) -> str | None:
        return None

    def info(self) -> dict[str, object]:
        return {}


def _run(argv: list[str], us_per_byte: float = 0.001) -> list[tuple[str, str, int, int]]:
    log: list[tuple[str, str, int, int]] = []
    opts = parse([*argv, "--vs", "mpi", "-c", "0"], "all_reduce_perf")
    sweep(opts, COLLECTIVES["all_reduce"], _Recording("collectives", log, us_per_byte),
          [_Recording("mpi", log, us_per_byte)], Printer(False))
    return log


def _firsts(log: list[tuple[str, str, int, int]]) -> list[str]:
    """Which world ran each row first."""
    rows = [entry for entry in log if entry[1] == "row"]
    return [rows[i][0] for i in range(0, len(rows), 2)]


def test_our_world_runs_every_row_first_by_default() -> None:
    assert _firsts(_run(["-b", "8", "-e", "64", "-f", "2"])) == ["collectives"] * 4


def test_peers_first_runs_the_peer_before_ours_in_every_row() -> None:
    log = _run(["-b", "8", "-e", "64", "-f", "2", "--order", "peers"])
    assert _firsts(log) == ["mpi"] * 4
    assert [e[2] for e in log if e[1] == "row"] == [8, 8, 16, 16, 32, 32, 64, 64]


def test_alternate_flips_the_first_world_by_row_by_cycle_and_by_block() -> None:
    sizes = ["-b", "8", "-e", "64", "-f", "2"]
    assert _firsts(_run([*sizes, "--order", "alternate"])) == ["collectives", "mpi"] * 2
    # three rows a cycle: the first row of the second cycle goes the other way round from the first's
    assert _firsts(_run(["-b", "8", "-e", "32", "-f", "2", "-N", "2", "--order", "alternate"])) == [
        "collectives", "mpi", "collectives", "mpi", "collectives", "mpi"]
    two_blocks = _firsts(_run([*sizes, "-o", "all", "--order", "alternate"]))
    assert two_blocks[:8] == ["collectives", "mpi"] * 2 + ["mpi", "collectives"] * 2
    assert two_blocks.count("mpi") == two_blocks.count("collectives")


def test_each_world_is_warmed_up_once_a_block_before_its_rows() -> None:
    log = _run(["-b", "8", "-e", "64", "-f", "2", "--order", "peers"])
    assert log[:2] == [("collectives", "warmup", 0, 0), ("mpi", "warmup", 0, 0)]


def test_a_row_warmup_by_default_and_none_with_0() -> None:
    assert {e[3] for e in _run(["-b", "8", "-e", "64", "-f", "2"]) if e[1] == "row"} == {20}  # -n 20 calls
    assert {e[3] for e in _run(["-b", "8", "-e", "64", "-f", "2", "--row_warmup", "0"]) if e[1] == "row"} == {0}


def test_row_warmup_fills_the_budget_at_the_time_the_last_row_predicts() -> None:
    # 1 µs a byte: 1 MiB takes 1048576 µs, so a 2 MiB row is predicted at 2.1 s and 100 ms needs one call;
    # 4 KiB -> 4096 µs -> 8 KiB predicted at 8192 µs: 13 calls fill 100 ms
    log = _run(["-b", "4K", "-e", "16K", "-f", "2", "-n", "20", "--row_warmup", "100"], us_per_byte=1.0)
    warms = [(e[0], e[2], e[3]) for e in log if e[1] == "row"]
    assert warms == [
        ("collectives", 4096, 20), ("mpi", 4096, 20),  # nothing predicts the first row: the timed loop's count
        ("collectives", 8192, math.ceil(100_000 / 8192)), ("mpi", 8192, math.ceil(100_000 / 8192)),
        ("collectives", 16384, math.ceil(100_000 / 16384)), ("mpi", 16384, math.ceil(100_000 / 16384)),
    ]


def test_row_warmup_is_capped_by_the_timed_loop_and_floored_at_one_call() -> None:
    fast = _run(["-b", "8", "-e", "16", "-f", "2", "-n", "30", "--row_warmup", "100"], us_per_byte=0.0)
    assert [e[3] for e in fast if e[1] == "row"] == [30, 30, 30, 30]  # 1 µs a call: 100 000 calls, capped at -n
    slow = _run(["-b", "1M", "-e", "2M", "-f", "2", "--row_warmup", "100"], us_per_byte=1.0)
    assert [e[3] for e in slow if e[1] == "row"][2:] == [1, 1]


@pytest.mark.parametrize("args", [["--order", "mpi"], ["--row_warmup", "-5"], ["--row_warmup", "soon"]])
def test_bad_order_or_row_warmup_exits_255(args: list[str]) -> None:
    with pytest.raises(UsageExit) as exc:
        parse(args, "all_reduce_perf")
    assert exc.value.code == 255


class _CountingBackend:
    """One rank whose all-reduce copies and counts its calls."""

    rank, size = 0, 1

    def __init__(self) -> None:
        self.calls = 0

    def all_reduce(self, send: np.ndarray, recv: np.ndarray, op: str) -> None:
        self.calls += 1
        if not np.shares_memory(send, recv):
            recv[...] = send

    def barrier(self) -> None:
        pass


def test_the_row_warmup_runs_untimed_calls_before_the_out_of_place_cell_only() -> None:
    spec = RowSpec("all_reduce", "float", "sum", 0, 1024, iters=5, check=0)
    plain, warmed = _CountingBackend(), _CountingBackend()
    run_row(plain, spec)
    run_row(warmed, RowSpec(**{**spec.__dict__, "warm": 7}))
    assert plain.calls == 2 * (1 + 5)  # per cell: the sync call and the timed loop
    assert warmed.calls == plain.calls + 7
