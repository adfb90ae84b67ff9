"""The harness's arithmetic and text layout, against nccl-tests v2.19.6 (no processes)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from perf import report
from perf.colls import COLLECTIVES, sweep_sizes, warmup_sizes
from perf.options import parse

# -- size -> count (16-byte per-rank trimming) ----------------------------------------------


@pytest.mark.parametrize(
    ("coll", "size", "itemsize", "nranks", "count", "size_col"),
    [
        # the spec's own examples (§4)
        ("all_gather", 8, 4, 2, 0, 0),
        ("all_gather", 16, 4, 2, 0, 0),
        ("all_gather", 32, 4, 2, 4, 32),
        ("all_gather", 1024, 4, 3, 84, 1008),
        # 16-byte granules for every element size
        ("reduce_scatter", 1000, 1, 4, 240, 960),   # 250 -> 240 (multiple of 16 int8)
        ("reduce_scatter", 1000, 8, 4, 30, 960),    # 31 -> 30 (multiple of 2 doubles)
        ("alltoall", 4096, 2, 3, 680, 4080),        # 682 -> 680 (multiple of 8 halves)
        ("alltoall", 4096, 4, 1, 1024, 4096),
        # undivided collectives: k = S // e, no trimming
        ("all_reduce", 8, 4, 2, 2, 8),
        ("all_reduce", 10, 4, 2, 2, 8),
        ("broadcast", 1 << 20, 8, 7, 131072, 1 << 20),
        ("reduce", 3, 1, 5, 3, 3),
        ("sendrecv", 4096, 4, 3, 1024, 4096),
        ("barrier", 4096, 4, 3, 0, 0),
        # gather, scatter, hypercube: all_gather's trimming (nccl-tests' *GetCollByteCount)
        ("gather", 16, 4, 2, 0, 0),
        ("gather", 1024, 4, 3, 84, 1008),
        ("scatter", 1000, 8, 4, 30, 960),
        ("scatter", 32, 4, 2, 4, 32),
        ("hypercube", 1024, 4, 4, 64, 1024),
        ("hypercube", 1000, 1, 8, 112, 896),        # 125 -> 112 (multiple of 16 int8)
    ],
)
def test_size_to_count(coll, size, itemsize, nranks, count, size_col):
    got = COLLECTIVES[coll].counts(size, itemsize, nranks)
    assert got[:2] == (count, size_col)


def test_divided_buffer_counts():
    ag = COLLECTIVES["all_gather"].counts(1024, 4, 3)
    rs = COLLECTIVES["reduce_scatter"].counts(1024, 4, 3)
    a2a = COLLECTIVES["alltoall"].counts(1024, 4, 3)
    assert ag[2:] == (84, 252)
    assert rs[2:] == (252, 84)
    assert a2a[2:] == (252, 252)
    # (send, recv): gather and hypercube send a block and receive n, scatter the other way
    assert COLLECTIVES["gather"].counts(1024, 4, 3)[2:] == (84, 252)
    assert COLLECTIVES["hypercube"].counts(1024, 4, 4)[2:] == (64, 256)
    assert COLLECTIVES["scatter"].counts(1024, 4, 3)[2:] == (252, 84)


# -- bandwidth factors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("coll", "nranks", "factor"),
    [
        ("all_reduce", 4, 1.5), ("all_reduce", 2, 1.0), ("all_reduce", 1, 0.0), ("all_reduce", 8, 1.75),
        ("all_gather", 4, 0.75), ("reduce_scatter", 4, 0.75), ("alltoall", 4, 0.75), ("alltoall", 1, 0.0),
        ("broadcast", 4, 1.0), ("reduce", 4, 1.0), ("sendrecv", 4, 1.0),
        ("gather", 4, 0.75), ("scatter", 4, 0.75), ("gather", 2, 0.5), ("scatter", 1, 0.0),
    ],
)
def test_busbw_factor(coll, nranks, factor):
    assert COLLECTIVES[coll].factor(nranks) == pytest.approx(factor)
    algbw, busbw = COLLECTIVES[coll].bandwidth(2_000_000, 1000.0, nranks)  # 2 MB in 1 ms
    assert algbw == pytest.approx(2.0)  # GB/s, decimal
    assert busbw == pytest.approx(2.0 * factor)


def test_hypercube_bandwidth_counts_what_a_rank_receives():
    """HyperCubeGetBw: algbw from (n-1)·count·e (not the size column), busbw = algbw."""
    hc = COLLECTIVES["hypercube"]
    assert hc.factor(4) == 1.0
    algbw, busbw = hc.bandwidth(2_000_000, 1000.0, 4)  # size column 2 MB: a rank receives 1.5 MB in 1 ms
    assert algbw == pytest.approx(1.5) and busbw == algbw
    assert hc.bandwidth(2_000_000, 1000.0, 1) == (0.0, 0.0)


def test_hypercube_runs_on_powers_of_two_only():
    hc = COLLECTIVES["hypercube"]
    assert [n for n in range(1, 10) if hc.skips(n) is None] == [1, 2, 4, 8]
    assert hc.skips(6) == "nRanks 6 is not a power of 2, skipping"
    assert COLLECTIVES["all_gather"].skips(3) is None and COLLECTIVES["gather"].skips(6) is None


def test_gather_scatter_hypercube_in_place_layouts():
    """send = recv + r·count·e (gather, hypercube), recv = send + r·count·e (scatter)."""
    for name in ("gather", "hypercube"):
        send, recv = COLLECTIVES[name].buffers(2, 4, 8, np.dtype(np.int32), True)
        assert (send.size, recv.size) == (8, 32) and send.ctypes.data - recv.ctypes.data == 2 * 8 * 4
    send, recv = COLLECTIVES["scatter"].buffers(3, 4, 8, np.dtype(np.int32), True)
    assert (send.size, recv.size) == (32, 8) and recv.ctypes.data - send.ctypes.data == 3 * 8 * 4
    send, recv = COLLECTIVES["scatter"].buffers(3, 4, 8, np.dtype(np.int32), False)
    assert (send.size, recv.size) == (32, 8) and not np.shares_memory(send, recv)


class _NoRows:
    """A world of 3 that fails the test if anything is run on it."""

    name, nranks = "collectives", 3

    def warmup(self, *args):
        raise AssertionError("warmed up")

    def row(self, spec):
        raise AssertionError(f"ran {spec}")

    def supports(self, dtype, op):
        return None

    def info(self):
        return {}


def test_hypercube_on_three_ranks_prints_the_skip_line_and_runs_nothing(capsys):
    from perf.progress import Printer
    from perf.sweep import sweep

    opts = parse(["-b", "8", "-e", "1K", "-f", "2", "-d", "all"], "hypercube_perf")
    result = sweep(opts, COLLECTIVES["hypercube"], _NoRows(), [], Printer(True))
    assert capsys.readouterr().out == "nRanks 3 is not a power of 2, skipping\n"
    assert result.rows == [] and result.out_of_bounds == 0
    # the footer of nccl-tests' 0.0/0: -nan, and no verdict against NCCL_TESTS_MIN_BW fails on it
    footer = report.footer_lines("hypercube_perf", 0, result.avg_busbw, min_bw=5.0)
    assert footer[:2] == ["# Out of bounds values : 0 OK", "# Avg bus bandwidth    : -nan OK"]


# -- sweep ----------------------------------------------------------------------------------


def test_sweep_sizes():
    assert sweep_sizes(8, 64 << 20, 0, 4)[-1] == 32 << 20
    assert len(sweep_sizes(8, 64 << 20, 0, 4)) == 12
    assert sweep_sizes(8, 128 << 20, 1 << 20, 2) == [8 << i for i in range(25)]
    assert sweep_sizes(0, 40, 10, 1) == [0, 10, 20, 30, 40]
    assert sweep_sizes(0, 16, 10, 4) == [0, 1, 4, 16]  # C would loop forever at 0
    assert warmup_sizes(8, 100) == [8, 16, 32, 64]


# -- getFloatStr and the printf layout --------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "width", "text"),
    [
        (9.8, 7, "   9.80"), (1234.56, 7, "1234.56"), (12345.67, 7, "12345.7"), (123456.7, 7, " 123457"),
        (0.001, 6, "  0.00"), (146.42, 6, "146.42"), (1234.56, 6, "1234.6"), (123456.7, 6, "123457"),
        (12345678.9, 7, "1.2e+07"), (12345678.9, 6, " 1e+07"), (float("inf"), 6, "   inf"),
    ],
)
def test_float_str(value, width, text):
    assert report.float_str(value, width) == text


# Lines of the spec's §10 example (nccl-tests v2.19.6 format strings), byte for byte.
SPEC_HEAD = [
    "#",
    "#                                                              out-of-place                       in-place          ",
    "#       size         count      type   redop    root     time   algbw   busbw  #wrong     time   algbw   busbw  #wrong ",
    "#        (B)    (elements)                               (us)  (GB/s)  (GB/s)             (us)  (GB/s)  (GB/s)         ",
]
SPEC_ROWS = [
    ((8, 2, 9.80, 0.0, 0.0, 9.60, 0.0, 0.0),
     "           8             2     float     sum      -1     9.80    0.00    0.00       0     9.60    0.00    0.00       0"),
    ((134217728, 33554432, 916.68, 146.42, 146.42, 910.39, 147.43, 147.43),
     "   134217728      33554432     float     sum      -1   916.68  146.42  146.42       0   910.39  147.43  147.43       0"),
]


def test_column_heads_match_nccl_tests():
    assert report.column_head_lines() == SPEC_HEAD


def test_extra_columns_follow_the_thirteen():
    lines = report.column_head_lines(extra=["vs_mpi", "vs_gloo"])
    assert lines[2].startswith(SPEC_HEAD[2]) and lines[2].endswith("#wrong   vs_mpi  vs_gloo")
    assert lines[3].startswith(SPEC_HEAD[3])
    row = SPEC_ROWS[0][1] + report.ratio_cell(1.5) + report.ratio_cell(None)
    assert row.split()[13:] == ["1.50", "n/a"]
    # the ratio column ends where its head ends
    assert len(row) == len(lines[2])


@pytest.mark.parametrize(("values", "line"), SPEC_ROWS)
def test_row_layout(values, line):
    size, count, t1, a1, b1, t2, a2, b2 = values
    text = (report.row_preamble(size, count, "float", "sum", -1) + report.row_body(t1, a1, b1, 0)
            + report.row_body(t2, a2, b2, 0))
    assert text == line


def test_wrong_and_not_checked_cells():
    assert report.row_body(1.0, 0, 0, None).endswith("    N/A")
    assert report.row_body(1.0, 0, 0, 1048576).endswith("1.04858e+06")  # %6g
    assert report.row_body(1.0, 0, 0, 7).endswith("       7")


def test_header_and_footer():
    banner = report.banner_lines("all_reduce_perf", nthreads=1, ngpus=2, minbytes=8, maxbytes=134217728,
                                 stepbytes=1048576, stepfactor=2, warmup_iters=1, iters=20, agg_iters=1, check=1,
                                 graph=0, unalign=0, blocking=0)
    assert banner[1] == "# Collective test starting: all_reduce_perf"
    assert banner[2] == ("# nThread 1 nGpus 2 minBytes 8 maxBytes 134217728 step: 2(factor) warmup iters: 1 "
                         "iters: 20 agg iters: 1 validation: 1 graph: 0 unalign: 0")
    additive = report.banner_lines("x", nthreads=1, ngpus=1, minbytes=0, maxbytes=0, stepbytes=1048576,
                                   stepfactor=1, warmup_iters=1, iters=1, agg_iters=1, check=0, graph=0, unalign=0,
                                   blocking=1)
    assert "step: 1048576(bytes)" in additive[2]
    assert additive[3] == "# Blocking Enabled: wait and barrier after each inner iteration (-m) "
    dev = report.device_lines([report.RankInfo(0, 4242, "node01.example.com", 0, device_name="cpu")])
    assert dev == ["# Using devices", "#  Rank  0 Group  0 Pid   4242 on     node01 device  0 [0000:00:00] cpu"]
    assert report.footer_lines("all_reduce_perf", 0, 41.8931) == [
        "# Out of bounds values : 0 OK", "# Avg bus bandwidth    : 41.8931 ", "#",
        "# Collective test concluded: all_reduce_perf", "#", ""]
    failed = report.footer_lines("all_reduce_perf", 3, 1.0, min_bw=5.0)
    assert failed[:2] == ["# Out of bounds values : 3 FAILED", "# Avg bus bandwidth    : 1 FAILED"]


def test_parse_table_reads_the_layout():
    text = "\n".join(SPEC_HEAD + [SPEC_ROWS[0][1] + report.ratio_cell(2.0)]
                     + report.footer_lines("all_reduce_perf", 0, 41.8931))
    table = report.parse_table(text)
    assert len(table.rows) == 1 and table.rows[0].size == 8 and table.rows[0].extra == ["2.00"]
    assert table.out_of_bounds == 0 and table.out_of_bounds_ok and table.avg_busbw == 41.8931


def test_parse_table_reads_an_empty_redop():
    """hypercube_perf prints its op name "" in the 6-wide redop column: 12 fields."""
    line = (report.row_preamble(1024, 64, "float", "", -1) + report.row_body(9.8, 0.08, 0.08, 0)
            + report.row_body(9.6, 0.08, 0.08, None) + report.ratio_cell(1.25))
    assert line.startswith("        1024            64     float              -1     9.80")
    table = report.parse_table("\n".join(SPEC_HEAD + [line, SPEC_ROWS[0][1]]))
    hc, ar = table.rows
    assert (hc.size, hc.count, hc.type, hc.redop, hc.root, hc.oop_time) == (1024, 64, "float", "", -1, 9.8)
    assert (hc.oop_wrong, hc.ip_wrong, hc.extra) == (0, None, ["1.25"])
    assert (ar.redop, ar.root) == ("sum", -1)


def test_every_program_is_a_console_script_and_a_cli_name():
    import tomllib

    from perf import cli
    from perf.colls import BY_PROGRAM

    root = Path(__file__).resolve().parents[2]
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"gather_perf", "scatter_perf", "hypercube_perf"} <= set(BY_PROGRAM)
    readme = (root / "perf" / "README.md").read_text()
    for program in BY_PROGRAM:
        assert scripts[program] == f"perf.cli:{program}"
        assert callable(getattr(cli, program)) and getattr(cli, program).__name__ == program
        assert program in cli.PROGRAMS and f"`{program}`" in readme


def test_combining_ranks():
    from perf.bench import RankRow, combine_time, combine_wrong, pack, unpack

    times = [4.0, 1.0, 7.0]
    assert [combine_time(times, a) for a in range(4)] == [4.0, 4.0, 1.0, 7.0]
    # the first round with errors counts, summed over ranks; failing ranks are counted
    assert combine_wrong([[0, 2], [0, 3], [0, 0]]) == (5, 2)
    assert combine_wrong([[1, 0], [0, 9]]) == (1, 1)
    assert combine_wrong([[0], [0]]) == (0, 0)
    assert combine_wrong([None, None]) == (None, 0)
    row = RankRow([1.5, 2.5], [[0, 4], None])
    assert unpack(pack(row, 2), 2) == row
    assert unpack(pack(RankRow([1.0, 2.0], [None, None]), 0), 0) == RankRow([1.0, 2.0], [None, None])


def test_the_readme_main_job_ends_where_it_says() -> None:
    """README's main job: the sweep its flags make (nccl-tests' loop, last size <= -e)
    runs from the smallest to the largest size the README names, and -e is printed."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    command = re.search(r"&& (all_reduce_perf [^\n`]*)", readme)
    assert command, "README has no main-job command"
    opts = parse(shlex.split(command.group(1))[1:], "all_reduce_perf")
    sizes = sweep_sizes(opts.minbytes, opts.maxbytes, opts.stepbytes, opts.stepfactor)
    assert sizes[-1] == opts.maxbytes, f"the sweep ends at {sizes[-1]}, not at -e {opts.maxbytes}"
    said = re.search(r"(\d+) B to (\d+) MiB", readme)
    assert said and (int(said.group(1)), int(said.group(2)) << 20) == (sizes[0], sizes[-1])
