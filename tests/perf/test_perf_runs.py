"""The commands end to end: flags and exit codes, a real small run parsed back, a corrupted
result, the peers' skip message, JSON, and direct mode."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from perf import harness, report
from perf.options import parse, parse_size

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["-b", "8", "-e", "4K", "-f", "4", "-n", "2", "-w", "1", "-c", "1"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLLECTIVES_", "PMI_", "OMPI_"))
           and k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def run_cli(*args: str, timeout: float = 120, code: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "perf.cli", *args]
    return subprocess.run(cmd, cwd=ROOT, env=_env(**env), capture_output=True, text=True, timeout=timeout)


_EACH = textwrap.dedent("""
    import sys
    from perf.harness import main
    from perf.kept import keep_worlds
    with keep_worlds():
        for program in sys.argv[1].split(","):
            code = main(program, sys.argv[2:])
            print(f"#> {program} exited {code}", flush=True)
""")


def run_programs(programs: list[str], *args: str, timeout: float = 120, **env: str) -> dict[str, tuple[int, str]]:
    """Each program with the same flags, one after another in one driver process, on the
    same worlds (perf.kept: ours and the peers' start once, not once per program):
    program -> (exit code, its stdout)."""
    done = run_cli(",".join(programs), *args, timeout=timeout, code=_EACH, **env)
    assert done.returncode == 0, done.stdout + done.stderr
    runs, rest = {}, done.stdout
    for program in programs:
        marker = re.search(rf"^#> {program} exited (\d+)\n", rest, re.MULTILINE)
        assert marker, f"{program} did not finish:\n{rest}{done.stderr}"
        runs[program] = (int(marker[1]), rest[:marker.start()])
        rest = rest[marker.end():]
    return runs


# -- flags ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [("8", 8), ("64K", 65536), ("128M", 134217728), ("1G", 1073741824),
                                             ("64k", 65536), ("0.5M", 524288), ("1g", 1 << 30), ("0", 0)])
def test_sizes(text, value):
    assert parse_size(text) == value
    opts = parse(["-b", text, "-e", "2G"], "all_reduce_perf")
    assert opts.minbytes == value and opts.maxbytes == 2 << 30


def test_flag_values_and_long_names():
    o = parse(["--minbytes=1K", "--maxbytes", "1M", "-f", "2", "-n", "0x10", "-w", "010", "-c", "0", "-d", "half",
               "-o", "max", "-r", "-1", "-z", "1", "-a", "3", "-m", "4", "-N", "2", "--np", "3", "--algo", "ring",
               "--transport", "tcp", "--vs", "mpi,gloo", "--json", "x.json", "--plot", "x.png"], "reduce_perf")
    assert (o.minbytes, o.maxbytes, o.stepfactor, o.iters, o.warmup_iters, o.check) == (1024, 1 << 20, 2, 16, 8, 0)
    assert (o.dtype, o.op, o.root, o.blocking, o.average, o.agg_iters, o.run_cycles) == ("half", "max", -1, 1, 3, 4, 2)
    assert (o.np, o.algo, o.transport, o.vs, o.json, o.plot) == (3, "ring", "tcp", ["mpi", "gloo"], "x.json", "x.png")
    assert parse(["-f", "1.5"], "x").stepfactor == 1  # an integer, as strtol reads it


@pytest.mark.parametrize(("args", "message"), [
    (["-b", "8x"], "invalid size specified for 'minbytes'"),
    (["-e", "lots"], "invalid size specified for 'maxbytes'"),
    (["-b", "64M", "-e", "8"], "invalid sizes for 'minbytes' and 'maxbytes': 67108864 > 8"),
])
def test_bad_sizes_exit_255(capsys, args, message):
    assert harness.main("all_reduce_perf", args) == 255
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_unknown_option_prints_usage_and_exits_0(capsys):
    assert harness.main("all_reduce_perf", ["--bogus", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("invalid option '?'\nUSAGE: all_reduce_perf")
    assert harness.main("all_reduce_perf", ["-h"]) == 0
    assert "[-b,--minbytes <min size in bytes>]" in capsys.readouterr().out


def test_help_names_every_flag_that_means_nothing_on_a_cpu_and_why(capsys):
    from perf.options import NO_MEANING_ON_CPU, SAME_ON_CPU

    assert harness.main("all_reduce_perf", ["--help"]) == 0
    text = capsys.readouterr().out
    notes = text[text.index("meaningless on a CPU"):]
    for letter, name, why in NO_MEANING_ON_CPU:
        assert re.search(rf"\t-{letter},--{name} +{re.escape(why)}\n", notes), letter
    for flag, why in SAME_ON_CPU:
        assert f"{flag}" in notes and why in notes
    assert {letter for letter, _, _ in NO_MEANING_ON_CPU} == set("tgpyGRxDVMIK")


def test_gpu_flags_are_explained_not_ignored():
    opts = parse(["-g", "4", "-G", "10", "-t", "2"], "all_reduce_perf")
    text = "\n".join(opts.warnings)
    assert "-g 4" in text and "--np" in text and "-G 10" in text and "-t 2" in text
    assert (opts.ngpus, opts.cudagraph, opts.nthreads) == (1, 0, 1)
    bad = parse(["-d", "fp99", "-o", "mulsum"], "all_reduce_perf")
    assert bad.notes[0] == "invalid type fp99, defaulting to float .. "
    assert bad.notes[1].startswith("invalid op mulsum") and (bad.dtype, bad.op) == ("float", "sum")


# -- a real run ------------------------------------------------------------------------------

_PROBE = textwrap.dedent("""
    import subprocess, sys
    import numpy as np
    if len(sys.argv) > 2:
        import collectives
        from collectives.store.tcp_store import TCPStore
        transport, rank, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
        comm = collectives.init(rank, 2, TCPStore("127.0.0.1", port, secret="p", timeout=20),
                                transport=transport, timeout=20)
        x = np.full(1000, rank + 1, np.float32)
        comm.all_reduce(x)
        assert (x == 3).all()
        comm.close()
    else:
        from collectives.store.tcp_store import TCPStoreServer
        server = TCPStoreServer(port=0, secret="p")
        procs = [subprocess.Popen([sys.executable, __file__, sys.argv[1], str(r), str(server.port)])
                 for r in range(2)]
        sys.exit(max(p.wait(timeout=60) for p in procs))
""")


@pytest.fixture(scope="module")
def transport(tmp_path_factory) -> str:
    """A process transport that works in this checkout (the run tests fail if none does)."""
    script = tmp_path_factory.mktemp("probe") / "probe.py"
    script.write_text(_PROBE)
    reasons = []
    for name in ("shm", "tcp"):
        try:
            probe = subprocess.run([sys.executable, str(script), name], cwd=ROOT, env=_env(), capture_output=True,
                                   text=True, timeout=90)
        except subprocess.TimeoutExpired:
            reasons.append(f"{name}: timed out")
            continue
        if probe.returncode == 0:
            return name
        reasons.append(f"{name}: {(probe.stderr.strip().splitlines() or ['?'])[-1]}")
    pytest.fail("no process transport works: " + "; ".join(reasons))


@pytest.mark.multiprocess
def test_small_run_parses_like_nccl_tests(transport):
    done = run_cli("all_reduce_perf", "--np", "2", "--transport", transport, *SMALL)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    table = report.parse_table(done.stdout)
    assert lines[0] == "# nccl-tests version 2.19.6 nccl-headers=0 nccl-library=0"
    assert lines[1] == "# Collective test starting: all_reduce_perf"
    assert lines[2] == ("# nThread 1 nGpus 1 minBytes 8 maxBytes 4096 step: 4(factor) warmup iters: 1 iters: 2 "
                        "agg iters: 1 validation: 1 graph: 0 unalign: 0")
    assert "# Using devices" in lines
    assert len(table.ranks) == 2
    for r, line in enumerate(table.ranks):
        # what nccl-tests' own parseRankInfo (sscanf) reads
        m = re.fullmatch(r"#  Rank +(\d+) Group +(\d+) Pid +(\d+) on +(\S+) device +(\d+) \[([^]]+)\] (.*)", line)
        assert m, line
        assert int(m[1]) == r and m[6] == "0000:00:00" and m[7].startswith("cpu")
    assert report.column_head_lines() == lines[lines.index(table.ranks[-1]) + 1:][:4]
    assert [r.size for r in table.rows] == [8, 32, 128, 512, 2048]
    for row in table.rows:
        assert (row.count, row.type, row.redop, row.root) == (row.size // 4, "float", "sum", -1)
        assert row.oop_wrong == 0 and row.ip_wrong == 0 and row.extra == []
        assert row.oop_time > 0 and row.ip_time > 0
        # algbw = size / time, busbw = algbw * 2(n-1)/n = algbw for n = 2 (2-decimal fields)
        assert row.oop_algbw == pytest.approx(row.size / row.oop_time / 1e3, abs=0.006)
        assert row.oop_busbw == row.oop_algbw and row.ip_busbw == row.ip_algbw
    for line in lines:
        if not line.startswith("#") and line:
            assert len(line.split()) == 13
    assert table.out_of_bounds == 0 and table.out_of_bounds_ok
    tail = done.stdout.split("# Out of bounds values : 0 OK\n", 1)[1]
    assert tail.startswith("# Avg bus bandwidth    : ")
    assert tail.split("\n", 1)[1] == "#\n# Collective test concluded: all_reduce_perf\n#\n\n"
    assert "Test failure" not in done.stdout


@pytest.mark.multiprocess
def test_corrupted_result_is_counted_and_fails(transport, tmp_path):
    out = tmp_path / "r.json"
    done = run_cli("all_reduce_perf", "--np", "2", "--transport", transport, *SMALL, "--json", str(out),
                   COLLECTIVES_PERF_CORRUPT="1")
    assert done.returncode == 7, done.stdout + done.stderr
    table = report.parse_table(done.stdout)
    assert all(r.oop_wrong and r.oop_wrong > 0 and r.ip_wrong and r.ip_wrong > 0 for r in table.rows)
    assert table.out_of_bounds == 2 * len(table.rows) and table.out_of_bounds_ok is False
    assert f"# Out of bounds values : {2 * len(table.rows)} FAILED" in done.stdout
    assert " Test failure " in done.stdout
    doc = json.loads(out.read_text())
    assert doc["out_of_bounds"] == {"count": 2 * len(table.rows), "okay": "false"}
    assert len(doc["results"]) == len(table.rows) and doc["results"][0]["out_of_place"]["nwrong"] >= 1
    assert doc["environment"]["world_size"] == 2 and doc["environment"]["transport"] == transport


@pytest.mark.multiprocess
def test_every_collective_verifies(transport):
    programs = ["all_gather_perf", "reduce_scatter_perf", "broadcast_perf", "reduce_perf", "alltoall_perf",
                "alltoallv_perf", "sendrecv_perf", "gather_perf", "scatter_perf"]
    runs = run_programs(programs, "--np", "3", "--transport", transport, "-b", "64", "-e", "1K", "-f", "16", "-n", "1",
                        "-d", "int32", "-r", "2", timeout=300)
    pids = {tuple(re.findall(r" Pid +(\d+) ", "\n".join(report.parse_table(stdout).ranks)))
            for _, stdout in runs.values()}
    assert len(pids) == 1 and len(next(iter(pids))) == 3, f"one world of 3 ranks for the 9 programs: {pids}"
    for program, (code, stdout) in runs.items():
        assert code == 0, program + stdout
        table = report.parse_table(stdout)
        assert len(table.rows) == 2
        for row in table.rows:
            assert row.oop_wrong == 0
            assert row.ip_wrong == (None if program in ("alltoall_perf", "sendrecv_perf") else 0)
            if program in ("alltoallv_perf", "gather_perf", "scatter_perf"):  # size = n x count x 4; busbw (n-1)/n
                assert row.size == 3 * row.count * 4
                assert row.oop_busbw == pytest.approx(row.oop_algbw * 2 / 3, rel=0.02, abs=0.011)
            assert row.root == (2 if program in ("broadcast_perf", "reduce_perf", "gather_perf", "scatter_perf") else -1)
            assert row.redop == ("sum" if program in ("reduce_scatter_perf", "reduce_perf", "sendrecv_perf") else "none")


@pytest.mark.multiprocess
def test_hypercube_verifies_on_four_ranks(transport):
    """lg 4 = 2 rounds of send/recv; an empty redop; algbw from the 3/4 of the size a rank receives."""
    done = run_cli("hypercube_perf", "--np", "4", "--transport", transport, "-b", "64", "-e", "1K", "-f", "16",
                   "-n", "1", "-d", "int32")
    assert done.returncode == 0, done.stdout + done.stderr
    table = report.parse_table(done.stdout)
    assert [(r.size, r.count, r.redop, r.root) for r in table.rows] == [(64, 4, "", -1), (1024, 64, "", -1)]
    for row in table.rows:
        assert row.oop_wrong == 0 and row.ip_wrong == 0
        assert row.oop_algbw == pytest.approx(row.size * 3 / 4 / row.oop_time / 1e3, abs=0.006)
        assert row.oop_busbw == row.oop_algbw


@pytest.mark.multiprocess
def test_corrupted_gather_scatter_hypercube_fail(transport):
    """Rank 1 flips a bit of its result (gather's root with -r 1): every cell is caught."""
    runs = run_programs(["gather_perf", "scatter_perf", "hypercube_perf"], "--np", "2", "--transport", transport,
                        "-b", "64", "-e", "1K", "-f", "16", "-n", "1", "-r", "1", COLLECTIVES_PERF_CORRUPT="1")
    for program, (code, stdout) in runs.items():
        assert code == 7, program + stdout
        table = report.parse_table(stdout)
        assert len(table.rows) == 2
        assert all(r.oop_wrong == 1 and r.ip_wrong == 1 for r in table.rows)
        assert table.out_of_bounds == 4 and table.out_of_bounds_ok is False and " Test failure " in stdout


_NO_PEERS = ("import sys; sys.modules['mpi4py'] = None; sys.modules['torch'] = None; "
             "from perf.cli import main; sys.exit(main(sys.argv[1:]))")


@pytest.mark.multiprocess
def test_vs_with_missing_peers_prints_skip(transport):
    done = run_cli("all_reduce_perf", "--np", "2", "--transport", transport, "-b", "8", "-e", "8", "-n", "1",
                   "--vs", "mpi,gloo", code=_NO_PEERS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "# skipping --vs mpi: mpi4py is not installed" in done.stdout
    assert "# skipping --vs gloo: torch is not installed" in done.stdout
    assert [len(line.split()) for line in done.stdout.splitlines() if line and line[0] != "#"] == [13]


@pytest.fixture(scope="module")
def peer_runs(transport) -> dict[str, tuple[int, str]]:
    """all_reduce, gather, scatter and hypercube with ``--vs mpi,gloo`` in one driver (the
    peers' worlds start once for the four); skipped where a peer is missing."""
    from perf.peers import missing

    if missing("mpi") or missing("gloo"):
        pytest.skip(f"peers not available: mpi: {missing('mpi')}, gloo: {missing('gloo')}")
    return run_programs(["all_reduce_perf", "gather_perf", "scatter_perf", "hypercube_perf"], "--np", "2",
                        "--transport", transport, "-b", "64", "-e", "1K", "-f", "16", "-n", "2", "-r", "-1",
                        "--vs", "mpi,gloo", timeout=300)


@pytest.mark.multiprocess
@pytest.mark.slow
def test_vs_peers_add_ratio_columns(peer_runs):
    code, stdout = peer_runs["all_reduce_perf"]
    assert code == 0, stdout
    table = report.parse_table(stdout)
    assert len(table.rows) == 2
    for row in table.rows:
        assert len(row.extra) == 2 and all(float(x) > 0 for x in row.extra)
    assert any(line.endswith("#wrong   vs_mpi  vs_gloo") for line in table.header)
    assert "# mpi avg bus bw" in stdout and "# gloo avg bus bw" in stdout


@pytest.mark.multiprocess
@pytest.mark.slow
def test_vs_peers_run_gather_scatter_hypercube(peer_runs):
    """MPI's Gather/Scatter/Sendrecv and gloo's gather/scatter/isend+irecv, verified, with a ratio each."""
    for program in ("gather_perf", "scatter_perf", "hypercube_perf"):
        code, stdout = peer_runs[program]
        assert code == 0, program + stdout
        table = report.parse_table(stdout)
        assert len(table.rows) == (2 if program == "hypercube_perf" else 4)  # -r -1: a block per root
        for row in table.rows:
            assert len(row.extra) == 2 and all(float(x) > 0 for x in row.extra)
        assert "# mpi avg bus bw       : " in stdout and "# gloo avg bus bw      : " in stdout
        assert stdout.count("(0 cells with wrong values)") == 2


def test_alone_in_process(capsys):
    """No --np and no launcher: a world of one, in this process (nccl-tests without MPI)."""
    code = harness.main("all_gather_perf", ["-b", "64", "-e", "256", "-f", "2", "-n", "1", "-d", "double"])
    out = capsys.readouterr().out
    assert code == 0, out
    table = report.parse_table(out)
    assert [(r.size, r.count) for r in table.rows] == [(64, 8), (128, 16), (256, 32)]
    assert all(r.oop_busbw == 0 for r in table.rows)  # (n-1)/n = 0 for one rank
    assert len(table.ranks) == 1


@pytest.mark.multiprocess
def test_under_collectives_run(transport):
    """Each process one rank (collectives.init()), rank 0 prints; --vs needs --np."""
    done = subprocess.run(
        [sys.executable, "-m", "collectives.run", "--no-prefix", "--transport", transport, "-n", "2", "-m", "perf.cli",
         "reduce_perf", *SMALL, "-r", "1", "--vs", "mpi"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    table = report.parse_table(done.stdout)
    assert len(table.rows) == 5 and len(table.ranks) == 2
    assert all(r.root == 1 and r.oop_wrong == 0 and r.ip_wrong == 0 for r in table.rows)
    assert "(collectives-run)" in done.stdout
    assert "# skipping --vs mpi: --vs needs --np N" in done.stdout
    assert done.stdout.count("# Collective test concluded") == 1  # only rank 0 prints


@pytest.mark.multiprocess
def test_progress_bar_stays_on_stderr(transport):
    done = run_cli("all_reduce_perf", "--np", "2", "--transport", transport, *SMALL, "--progress", "on")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "row/s" not in done.stdout and "%|" not in done.stdout
    assert len(report.parse_table(done.stdout).rows) == 5
    from perf.peers import importable

    if importable("tqdm"):
        assert "row/s" in done.stderr and "all_reduce_perf:" in done.stderr


def test_plot_and_json_alone(tmp_path, capsys):
    from perf.peers import importable

    png, doc = tmp_path / "ar.png", tmp_path / "ar.json"
    code = harness.main("all_reduce_perf", ["-b", "8", "-e", "1K", "-f", "8", "-n", "1", "--plot", str(png),
                                            "--json", str(doc)])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    data = json.loads(doc.read_text())
    assert [r["size"] for r in data["results"]] == [8, 64, 512]
    assert data["results"][0]["root"] == "    -1" and data["out_of_bounds"]["okay"] == "true"
    env = data["environment"]
    assert env["world_size"] == 1 and env["cores"] >= 1 and env["versions"]["numpy"]
    assert env["algorithm"] == "auto" and "transport" in env
    if importable("matplotlib"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "matplotlib is not installed" in captured.err


@pytest.mark.parametrize("transport", ["mpi", "shm"])
@pytest.mark.mpi
def test_harness_under_mpiexec_like_nccl_tests_built_with_mpi(transport):
    """mpiexec -n 2 all_reduce_perf: init() bootstraps from MPI.COMM_WORLD; with
    --transport mpi the data goes over MPI too."""
    import importlib.util

    from collectives.mpi import find_mpiexec

    mpiexec = find_mpiexec()
    if mpiexec is None or importlib.util.find_spec("mpi4py") is None:
        pytest.skip("needs mpiexec and mpi4py (pip install mpi4py mpich)")
    env = {k: v for k, v in _env().items() if not k.startswith(("COLLECTIVES_", "RANK", "WORLD_SIZE"))}
    proc = subprocess.run(
        [mpiexec, "-n", "2", sys.executable, "-m", "perf.cli", "all_reduce_perf", "--transport", transport,
         "-b", "8", "-e", "64K", "-f", "64", "-n", "2", "-w", "1", "-c", "1"],
        capture_output=True, text=True, timeout=180, env=env, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"transport {transport}, algorithm auto, 2 ranks (mpiexec)" in proc.stdout
    assert "# Out of bounds values : 0 OK" in proc.stdout


def test_two_levels_against_flat_runs_and_prints_a_row_per_size() -> None:
    """``perf/two_levels_vs_flat.py``: ranks on emulated hosts, both algorithms, checked."""
    done = subprocess.run([sys.executable, str(ROOT / "perf" / "two_levels_vs_flat.py"), "--np", "4", "--sizes", "8,2K",
                           "--iters", "2", "--rounds", "1"], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if re.search(r"\]\s+\d+\s+recursive\s", line)]
    assert len(rows) == 2, done.stdout
    assert "4 ranks as 2 hosts of 2" in done.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "perf" / "two_levels_vs_flat.py"), "--np", "3"], cwd=ROOT,
                         env=_env(), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--np must be a multiple" in bad.stderr


def test_builds_side_by_side_runs_both_checkouts_and_prints_ratios(tmp_path: Path) -> None:
    """``perf/builds_side_by_side.py``: this checkout against a copy of itself, one round."""
    base = tmp_path / "base"
    shutil.copytree(ROOT / "collectives", base / "collectives", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "perf", base / "perf", ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, str(ROOT / "perf" / "builds_side_by_side.py"), "--base", str(base),
                           "--rounds", "1", "--np", "2", "--collectives", "all_reduce_perf", "--sizes", "1K",
                           "--iters", "5"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("all_reduce_perf")]
    assert [(r[2], r[3]) for r in rows] == [("1K", "out_of_place"), ("1K", "in_place")], done.stdout
    assert all(float(r[4]) > 0 and float(r[5]) > 0 and float(r[6]) > 0 for r in rows)


CALL_OVERHEAD_CASES = ["all_reduce 8 B", "all_reduce 8 B out=", "broadcast 8 B", "all_gather 8 B", "all_reduce 64 KiB"]


def _call_overhead_rows(*args: str, columns: int) -> list[list[str]]:
    """``perf/call_overhead.py --np 2 --batches 2 --calls 3 ARGS``: its rows, each the case
    name and ``columns`` numbers, in the order of CALL_OVERHEAD_CASES."""
    done = subprocess.run([sys.executable, str(ROOT / "perf" / "call_overhead.py"), "--np", "2", "--batches", "2",
                           "--calls", "3", *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.rsplit(None, columns) for line in done.stdout.splitlines() if not line.startswith("#")]
    assert [row[0].strip() for row in rows] == CALL_OVERHEAD_CASES, done.stdout
    return rows


def test_call_overhead_prints_a_time_per_case() -> None:
    """``perf/call_overhead.py``: every case timed, in threads as ranks (fast)."""
    assert all(float(us) > 0 for _, us in _call_overhead_rows("--transport", "inproc", columns=1))


@pytest.mark.mpi
def test_call_overhead_beside_mpich() -> None:
    """``--vs mpi``: the same cases through mpi4py under mpiexec, MPICH's time and the ratio."""
    for _, ours, mpich, ratio in _call_overhead_rows("--vs", "mpi", columns=3):
        assert float(ours) > 0 and float(mpich) > 0
        assert abs(float(ratio) - float(mpich) / float(ours)) < 0.01 * float(ratio) + 0.01


def test_after_barrier_prints_each_ranks_start_and_time() -> None:
    """``perf/after_barrier.py``: a row per rank (start after rank 0, µs per call) and the mean."""
    done = subprocess.run([sys.executable, str(ROOT / "perf" / "after_barrier.py"), "--np", "2", "--batches", "3",
                           "--calls", "4", "--late-ms", "1"], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if not line.startswith("#")]
    assert [row[:2] for row in rows] == [["collectives", "0"], ["collectives", "1"], ["collectives", "mean"]]
    assert float(rows[0][2]) == 0.0 and all(float(row[-1]) > 0 for row in rows)
