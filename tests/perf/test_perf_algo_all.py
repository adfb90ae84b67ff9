"""``--algo all``: every algorithm beside the automatic choice, and the acceptance rule."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from perf.algo_all import within

ROOT = Path(__file__).resolve().parents[2]


def test_the_acceptance_rule() -> None:
    assert within(1.09e-3, 1e-3, 1 << 20)
    assert not within(1.11e-3, 1e-3, 1 << 20)
    assert within(14e-6, 10e-6, 1024)  # 4 µs above the best, below 64 KiB
    assert not within(16e-6, 10e-6, 1024)
    assert not within(100e-6, 10e-6, 64 << 10)


@pytest.mark.multiprocess
def test_algo_all_measures_each_algorithm_and_names_the_pick(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    done = subprocess.run([sys.executable, "-m", "perf", "all_reduce_perf", "--np", "2", "--transport", "tcp",
                           "-b", "8", "-e", "1K", "-f", "128", "-n", "1", "--algo", "all", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())
    assert [r["size"] for r in rows] == [8, 1024]
    for row in rows:
        assert set(row["times_us"]) == {"ring", "tree", "recursive", "auto"}
        assert row["picks"] in ("ring", "tree", "recursive")
    assert "picks" in done.stdout and "within 10 %" in done.stdout
