"""``python -m collectives.sim``: the table, the JSON rows, the tuner's pick, and 4096 ranks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from collectives.sim.__main__ import main
from collectives.tuning import tuner


def test_every_algorithm_is_priced_and_the_pick_is_marked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rows.json"
    assert main(["all_reduce", "--ranks", "4", "--transport", "tcp", "--algo", "all", "--sizes", "8,1M",
                 "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert {r["algorithm"] for r in rows} == {"ring", "tree", "recursive"}
    assert all(set(r) == {"collective", "ranks", "size", "algorithm", "time_us"} for r in rows)
    assert all(r["collective"] == "all_reduce" and r["ranks"] == 4 and r["time_us"] > 0 for r in rows)
    assert sorted({r["size"] for r in rows}) == [8, 1 << 20]
    text = capsys.readouterr().out
    picked = [line.split()[3] for line in text.splitlines() if line.endswith("<- picks")]
    assert picked == [tuner.choose("all_reduce", 8, 4, "tcp"), tuner.choose("all_reduce", 1 << 20, 4, "tcp")]
    assert "algbw(GB/s)" in text and "busbw(GB/s)" in text


def test_auto_prints_one_row_per_size_and_direct_on_one_shm_host(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    assert main(["all_gather", "--ranks", "3", "--transport", "shm", "--sizes", "8,64K", "--json", str(out)]) == 0
    assert [r["algorithm"] for r in json.loads(out.read_text())] == ["direct", "direct"]


def test_4096_ranks_of_a_gpu_cluster_in_seconds(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    start = time.perf_counter()
    assert main(["all_reduce", "--ranks", "4096", "--transport", "nvlink", "--algo", "all", "--sizes", "8,1M",
                 "--json", str(out)]) == 0
    took = time.perf_counter() - start
    rows = json.loads(out.read_text())
    by = {(r["algorithm"], r["size"]): r["time_us"] for r in rows}
    assert by[("recursive", 8)] < by[("tree", 8)] < by[("ring", 8)]  # latency: lg p steps against 2(p-1)
    assert by[("ring", 1 << 20)] > by[("recursive", 1 << 20)]  # a single ring of 8190 steps pays its α
    assert took < 60, took


def test_an_algorithm_that_cannot_run_here_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["all_reduce", "--ranks", "4", "--transport", "tcp", "--algo", "direct", "--sizes", "8"]) == 2
    assert "does not run all_reduce" in capsys.readouterr().err
    assert main(["all_reduce", "--ranks", "4", "--algo", "fastest", "--sizes", "8"]) == 2
