"""Text layout of nccl-tests v2.19.6 (src/util.cu), reproduced printf for printf.

Everything the harness prints on stdout goes through these functions, so that scripts
written for nccl-tests' output read ours: the header, one ``#  Rank`` line per rank,
the three column-head lines, one row per size (preamble, out-of-place body, in-place
body), and the footer. Our own columns (``--vs`` ratios) come *after* nccl-tests' 13
columns, and our own header lines are ``#`` comments in the places where nccl-tests
itself prints optional lines.

:func:`parse_table` reads such output back (used by the tests; handy for users too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

NCCL_TESTS_VERSION = "2.19.6"


def c_format(fmt: str, *args: object) -> str:
    """printf: Python's ``%`` operator follows C for every conversion used here."""
    return fmt % args


def float_str(value: float, width: int) -> str:
    """nccl-tests' ``getFloatStr``: ``%*.2f``, else ``%*.1f``, else ``%*.0f`` if it fits
    the field, else ``%*.1e`` (width >= 7) or ``%*.0e``. snprintf cuts at ``width``."""
    for fmt in ("%*.2f", "%*.1f", "%*.0f"):
        text = fmt % (width, value)
        if len(text) <= width:
            return text
    text = ("%*.1e" if width >= 7 else "%*.0e") % (width, value)
    return text[:width]


# -- header ---------------------------------------------------------------------------------


def banner_lines(program: str, *, nthreads: int, ngpus: int, minbytes: int, maxbytes: int, stepbytes: int,
                 stepfactor: int, warmup_iters: int, iters: int, agg_iters: int, check: int, graph: int,
                 unalign: int, blocking: int, library_code: int = 0) -> list[str]:
    """The first header lines (writeDeviceReport up to the ``#`` line)."""
    lines = [
        c_format("# nccl-tests version %s nccl-headers=%d nccl-library=%d", NCCL_TESTS_VERSION, library_code,
                 library_code),
        c_format("# Collective test starting: %s", program),
        c_format(
            "# nThread %d nGpus %d minBytes %ld maxBytes %ld step: %ld(%s) warmup iters: %d iters: %d "
            "agg iters: %d validation: %d graph: %d unalign: %d",
            nthreads, ngpus, minbytes, maxbytes, stepfactor if stepfactor > 1 else stepbytes,
            "factor" if stepfactor > 1 else "bytes", warmup_iters, iters, agg_iters, check, graph, unalign,
        ),
    ]
    if blocking == 1:
        lines.append("# Blocking Enabled: wait and barrier after each inner iteration (-m) ")
    elif blocking == 2:
        lines.append("# Blocking Enabled: wait after each inner iteration (-m), no barrier ")
    elif blocking == 3:
        lines.append("# Blocking Enabled: wait and barrier after each outer iteration (-n); time excludes barrier ")
    return lines


@dataclass(frozen=True)
class RankInfo:
    rank: int
    pid: int
    host: str
    device: int = 0
    group: int = 0
    device_name: str = "cpu"


def short_host(host: str) -> str:
    """nccl-tests' getHostName: the name up to the first dot."""
    return host.split(".", 1)[0]


def device_lines(ranks: Sequence[RankInfo]) -> list[str]:
    lines = ["# Using devices"]
    for r in ranks:
        lines.append(
            c_format("#  Rank %2d Group %2d Pid %6d on %10s device %2d [%04x:%02x:%02x] %s",
                     r.rank, r.group, r.pid, short_host(r.host), r.device, 0, 0, 0, r.device_name)
        )
    return lines


def column_head_lines(*, cputime: bool = False, timestamps: bool = False, extra: Sequence[str] = ()) -> list[str]:
    """writeResultHeader: ``#``, the placement banner, the names and the units.

    ``extra`` names our additional columns (``vs_mpi``...), printed as ``  %7s`` after
    nccl-tests' last column, with units ``(x)``.
    """
    ts_pad, ts_label, ts_fmt = (19, "timestamp", "%Y-%m-%d %H:%M:%S") if timestamps else (0, "", "")
    time_name = "cputime" if cputime else "time"
    head = "# %10s  %12s  %8s  %6s  %6s  %7s  %6s  %6s  %6s  %7s  %6s  %6s  %6s %*s"
    names = head % ("size", "count", "type", "redop", "root", time_name, "algbw", "busbw", "#wrong",
                    time_name, "algbw", "busbw", "#wrong", ts_pad, ts_label)
    units = head % ("(B)", "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)",
                    "(GB/s)", "", ts_pad, ts_fmt)
    if extra:
        # the line already ends in the one space of ``%*s``: add one more, then the fields
        names += "".join("  %7s" % e for e in extra)[1:]
        units += "".join("  %7s" % "(x)" for _ in extra)[1:]
    return [
        "#",
        c_format("# %10s  %12s  %8s  %6s  %6s           out-of-place                       in-place          ",
                 "", "", "", "", ""),
        names,
        units,
    ]


# -- rows -----------------------------------------------------------------------------------


def row_preamble(nbytes: int, count: int, type_name: str, op_name: str, root: int) -> str:
    return c_format("%12li  %12li  %8s  %6s  %6s", nbytes, count, type_name, op_name, "%6i" % root)


def row_body(time_us: float, algbw: float, busbw: float, wrong: float | None) -> str:
    """One placement: ``  %7s  %6s  %6s  %6g``, or ``    N/A`` when not verified."""
    strs = (float_str(time_us, 7), float_str(algbw, 6), float_str(busbw, 6))
    if wrong is None:
        return c_format("  %7s  %6s  %6s    N/A", *strs)
    return c_format("  %7s  %6s  %6s  %6g", *strs, float(wrong))


def ratio_cell(value: float | None) -> str:
    """One of our ratio columns: ``  %7s`` of getFloatStr, or ``n/a``."""
    if value is None or math.isnan(value):
        return "  %7s" % "n/a"
    return "  %7s" % float_str(value, 7)


# -- footer ---------------------------------------------------------------------------------


def footer_lines(program: str, out_of_bounds: int, avg_busbw: float, min_bw: float | None = None) -> list[str]:
    """writeResultFooter + finalizeFooter + writeErrors (no error: an empty line)."""
    if min_bw is None:
        verdict = ""
    else:
        verdict = "FAILED" if avg_busbw < min_bw * 0.9 else "OK"
    return [
        c_format("# %-20s : %d %s", "Out of bounds values", out_of_bounds, "FAILED" if out_of_bounds else "OK"),
        # no cells (hypercube_perf skipped): C's 0.0/0 is the x86 default NaN, printed -nan
        c_format("# %-20s : %s %s", "Avg bus bandwidth", "-nan", verdict) if math.isnan(avg_busbw)
        else c_format("# %-20s : %g %s", "Avg bus bandwidth", avg_busbw, verdict),
        "#",
        c_format("# Collective test concluded: %s", program),
        "#",
        "",
    ]


# -- reading it back ------------------------------------------------------------------------


@dataclass
class ParsedRow:
    size: int
    count: int
    type: str
    redop: str
    root: int
    oop_time: float
    oop_algbw: float
    oop_busbw: float
    oop_wrong: float | None
    ip_time: float
    ip_algbw: float
    ip_busbw: float
    ip_wrong: float | None
    extra: list[str] = field(default_factory=list)


@dataclass
class ParsedTable:
    header: list[str]
    rows: list[ParsedRow]
    out_of_bounds: int | None = None
    out_of_bounds_ok: bool | None = None
    avg_busbw: float | None = None
    ranks: list[str] = field(default_factory=list)


def _num(text: str) -> float | None:
    return None if text == "N/A" else float(text)


def parse_table(text: str) -> ParsedTable:
    """Read nccl-tests style output: every non-``#`` line with at least 13 fields is a row
    (12 where the redop is empty, as hypercube_perf prints it)."""
    table = ParsedTable(header=[], rows=[])
    for line in text.splitlines():
        if line.startswith("#"):
            table.header.append(line)
            if line.startswith("#  Rank "):
                table.ranks.append(line)
            elif line.startswith("# Out of bounds values"):
                parts = line.split(":", 1)[1].split()
                table.out_of_bounds, table.out_of_bounds_ok = int(parts[0]), parts[1] == "OK"
            elif line.startswith("# Avg bus bandwidth"):
                table.avg_busbw = float(line.split(":", 1)[1].split()[0])
            continue
        fields = line.split()
        if len(fields) >= 12 and fields[3].lstrip("-").isdigit():
            fields.insert(3, "")  # an empty redop (hypercube_perf): the root came fourth
        if len(fields) < 13:
            continue
        table.rows.append(ParsedRow(
            int(fields[0]), int(fields[1]), fields[2], fields[3], int(fields[4]),
            float(fields[5]), float(fields[6]), float(fields[7]), _num(fields[8]),
            float(fields[9]), float(fields[10]), float(fields[11]), _num(fields[12]),
            fields[13:],
        ))
    return table
