"""``collectives.timing``: every collective it knows runs by every algorithm and gets a time."""

from __future__ import annotations

import math
import time

import pytest

from collectives.errors import InvalidArgumentError
from collectives.timing import (COLLECTIVES, calls_for, machine_cpu, measure, measure_outside, measure_repeats,
                                outside_shares, round_order)


def test_every_collective_and_algorithm_is_timed() -> None:
    cases = [(c, 4096, a) for c in COLLECTIVES for a in ("auto", "ring", "tree", "recursive")]
    times = measure(cases, 3, "inproc", rounds=1)
    assert len(times) == len(cases) and all(t > 0 for t in times)


def test_batches_shrink_as_calls_grow() -> None:
    assert calls_for(8) == 50 and calls_for(64 << 20) == 1


def test_an_unknown_collective_is_named() -> None:
    with pytest.raises(InvalidArgumentError, match="'barrier' is not one of"):
        measure([("barrier", 8, "auto")], 1, "inproc")


def test_repeats_give_one_time_per_case_and_repeat_and_measure_their_median() -> None:
    cases = [("all_reduce", 64, "ring"), ("broadcast", 4096, "tree")]
    per_repeat = measure_repeats(cases, 2, "inproc", rounds=1, repeats=3)
    assert [len(r) for r in per_repeat] == [3, 3] and all(t > 0 for r in per_repeat for t in r)
    assert len(measure(cases, 2, "inproc", rounds=1, repeats=2)) == 2


def test_repeats_below_one_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="repeats \\(0\\) must be at least 1"):
        measure_repeats([("all_reduce", 8, "auto")], 1, "inproc", repeats=0)


def test_each_round_times_every_case_once_after_other_predecessors() -> None:
    rounds = [round_order(4, k) for k in range(4)]
    assert all(sorted(r) == [0, 1, 2, 3] for r in rounds)
    before = {case: {r[j - 1] for r in rounds for j in range(1, 4) if r[j] == case} for case in range(4)}
    assert all(len(b) >= 2 for b in before.values())  # a fixed order gives each case one predecessor
    assert round_order(1, 3) == [0] and round_order(0, 2) == []


def test_the_machines_cpu_time_counts_this_process_work() -> None:
    reader = machine_cpu()
    assert reader is not None, "a Linux machine has /proc/stat at least"
    read, source = reader
    assert source in ("cpuacct.usage", "cpu.stat", "/proc/stat")
    used, own = read(), time.process_time()
    while time.process_time() - own < 0.1:
        pass
    assert read() - used >= 0.07  # every task's time, this loop's 0.1 s among it (/proc/stat: 10 ms ticks)


def test_outside_work_is_the_machines_time_less_each_process_once_over_the_span() -> None:
    """Per case (span s, own CPU s, machine CPU s); rank 0 alone reads the machine (others NaN)."""
    nan = math.nan
    rank0 = [[2.0, 1.5, 4.0], [1.0, 0.5, 1.0]]
    rank1 = [[2.0, 1.0, nan], [1.0, 0.5, nan]]
    assert outside_shares([(rank0, 10), (rank1, 11)]) == [0.75, 0.0]  # (4 - 2.5) / 2, (1 - 1) / 1
    assert outside_shares([(rank0, 10), (rank1, 10)]) == [1.25, 0.5]  # threads of one process: its time once
    assert outside_shares([(rank1, 11), (rank0, 10)]) == [None, None]  # rank 0 could not read the machine


def test_measure_outside_gives_the_times_of_measure_repeats_and_a_share_per_case() -> None:
    cases = [("all_reduce", 64, "ring"), ("broadcast", 4096, "tree")]
    times, outside = measure_outside(cases, 2, "inproc", rounds=1, repeats=2)
    assert [len(r) for r in times] == [2, 2] and all(t > 0 for r in times for t in r)
    assert len(outside) == 2 and all(isinstance(o, float) and math.isfinite(o) for o in outside)
