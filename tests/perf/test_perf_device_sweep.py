"""perf/device_sweep.py, the sweep of the GPU check, on the host device with tiny sizes (so
the module the device run calls cannot rot), and its verdict on the targets of issue 20."""

from __future__ import annotations

import json

import pytest

from perf import device_sweep


@pytest.mark.multiprocess
def test_the_sweep_runs_on_the_host_device_and_writes_its_json(tmp_path, capsys):
    code = device_sweep.main(["--backend", "host", "--procs", "2", "--min-bytes", "64K", "--max-bytes", "64K",
                              "--staged-bytes", "64K", "--copy-bytes", "256K", "--iters", "2", "--warmup", "1",
                              "--timeout", "120", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    saved = json.loads((tmp_path / "device_sweep.json").read_text())
    kinds = {(r["kind"], r.get("path"), r.get("collective")) for r in saved["records"]}
    assert kinds == {("copy", None, None), ("coll", "cuda_ipc", "all_reduce"), ("coll", "cuda_ipc", "all_gather"),
                     ("coll", "cuda_ipc", "reduce_scatter"), ("coll", "staged", "all_reduce")}
    assert all(r["wrong"] == 0 for r in saved["records"] if r["kind"] == "coll")
    assert printed.splitlines()[-1] == saved["summary"]
    assert saved["summary"].startswith("device_sweep: ") and "x the staged path at 64 KiB" in saved["summary"]


def _record(path: str, size: int, busbw: float, procs: int = 2) -> dict:
    return {"kind": "coll", "path": path, "procs": procs, "collective": "all_reduce", "bytes": size, "busbw": busbw,
            "wrong": 0}


def test_the_verdict_weighs_the_weakest_large_size_against_both_targets():
    copy = {"kind": "copy", "bytes": 1 << 30, "bytes_per_s": 2000e9}
    records = [copy, _record("cuda_ipc", 64 << 20, 500e9), _record("cuda_ipc", 256 << 20, 900e9),
               _record("cuda_ipc", 1 << 30, 700e9), _record("staged", 64 << 20, 10e9)]
    summary = device_sweep.summarize(records, 64 << 20)
    assert "700.0 GB/s = 35% of D2D copy 2000.0 GB/s (target 40%: FAIL)" in summary
    assert "50x the staged path at 64 MiB (10.00 GB/s; target 20x: PASS)" in summary
    records[3] = _record("cuda_ipc", 1 << 30, 850e9)
    assert "(target 40%: PASS)" in device_sweep.summarize(records, 64 << 20)
    failed = device_sweep.summarize(records, 64 << 20, ["the 4-process device world ran past 70 s"])
    assert failed.endswith("0 wrong elements; the 4-process device world ran past 70 s")


def test_sizes_double_and_bad_sizes_are_refused():
    assert device_sweep.sizes(1 << 20, 1 << 22) == [1 << 20, 2 << 20, 4 << 20]
    with pytest.raises(SystemExit):
        device_sweep.main(["--min-bytes", "lots"])
