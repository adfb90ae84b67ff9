"""perf/saved_rows.py: measure and keep, or reread and measure nothing, with the rows' cores."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from perf import saved_rows


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    saved_rows.add_arguments(parser, repeats=3, rounds=5)
    return parser.parse_args(argv)


def test_measured_rows_are_kept_with_the_cores_and_reread_without_measuring(tmp_path: Path) -> None:
    path = str(tmp_path / "run.json")
    rows, cores = saved_rows.rows_and_cores(_args(["--json", path]), "perf/x.py", lambda: [{"measured_us": 1.5}])
    kept = json.loads(Path(path).read_text())
    assert rows == kept["rows"] == [{"measured_us": 1.5}]
    assert kept["script"] == "perf/x.py" and kept["cores"] == cores >= 1

    def measure() -> list[dict[str, float]]:
        raise AssertionError("--from measures nothing")

    kept["cores"] = 7
    Path(path).write_text(json.dumps(kept))
    assert saved_rows.rows_and_cores(_args(["--from", path]), "perf/x.py", measure) == (rows, 7)
    assert saved_rows.rows_and_cores(_args(["--from", path, "--cores", "3"]), "perf/x.py", measure) == (rows, 3)


def test_the_defaults_are_each_scripts_own() -> None:
    args = _args([])
    assert (args.repeats, args.rounds, args.cores, args.source, args.json) == (3, 5, 0, None, None)
