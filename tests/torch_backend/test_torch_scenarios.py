"""Rendezvous through every init method, and failures: timeouts, a lost peer,
monitored_barrier, ranks that disagree on a size. Each scenario starts its own processes,
forked from one that imported torch once for the whole file (tb_launch.Zygote)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tb_launch import Zygote, free_port

pytestmark = pytest.mark.multiprocess


@pytest.fixture(scope="module")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zygote]:
    with Zygote("tb_worker_scenarios", tmp_path_factory.mktemp("scenario-logs")) as z:
        yield z


def run(zygote: Zygote, scenario: str, world: int, tmp_path: Path, init: str = "tcp",
        timeout: float = 60) -> list[dict]:
    if init == "tcp":
        init = f"tcp://127.0.0.1:{free_port()}"
    elif init == "file":
        init = f"file://{tmp_path}/rendezvous"
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    launches = zygote.ranks(world, [scenario, str(tmp_path), init], timeout=timeout, env=env)
    records = []
    for r, launch in enumerate(launches):
        path = tmp_path / f"rank{r}.json"
        assert not launch.timed_out, f"rank {r} hung:\n{launch.output[-3000:]}"
        record = json.loads(path.read_text()) if path.exists() else {}
        assert "crash" not in record, f"rank {r}:\n{record['crash']}"
        records.append(record)
    return records


@pytest.mark.parametrize("init, world", [("tcp", 3), ("file", 2), ("env", 2)])
def test_rendezvous(zygote: Zygote, tmp_path: Path, init: str, world: int) -> None:
    for r, rec in enumerate(run(zygote, "rendezvous", world, tmp_path, init)):
        assert rec["backend"] == "collectives"
        assert rec["all_reduce"] == [world * (world + 1) / 2] * 3, rec
        assert rec["broadcast"] == [0.0, 1.0, 2.0, 3.0]
        assert rec["sub"] == ([2.0, 2.0] if r in (0, world - 1) else [1.0, 1.0])


def _failed(result: dict, *fragments: str) -> None:
    assert not result["ok"], f"expected a failure, got {result}"
    assert result["type"] == "DistBackendError", result
    assert "RuntimeError" in result["mro"]
    for fragment in fragments:
        assert fragment in result["message"], (fragment, result["message"])


def test_timeouts_raise_naming_the_collective_and_rank(zygote: Zygote, tmp_path: Path) -> None:
    rec = run(zygote, "timeouts", 2, tmp_path)[0]
    short = rec["timeout"]  # seconds: the timeouts below
    # dist.barrier(timeout=short) on a group whose default is 60 s
    _failed(rec["barrier"], " Timed out ", "barrier #", "rank(s) 1")
    assert short <= rec["barrier"]["seconds"] < 10
    # a group created with timeout=short
    _failed(rec["all_reduce"], " Timed out ", "all_reduce #1", "rank(s) 1", "global ranks [0, 1]")
    assert short <= rec["all_reduce"]["seconds"] < 10
    _failed(rec["after"], "all_reduce #2", "unusable")
    assert rec["after"]["seconds"] < 1
    _failed(rec["recv"], " Timed out", "recv", "rank 1")
    assert short <= rec["recv"]["seconds"] < 10


def test_lost_peer_fails_fast(zygote: Zygote, tmp_path: Path) -> None:
    rec = run(zygote, "lost_peer", 2, tmp_path)[0]
    _failed(rec["all_reduce"], "all_reduce #2", "rank 1")
    _failed(rec["recv"], "recv", "rank 1")
    assert rec["all_reduce"]["seconds"] < 10 and rec["recv"]["seconds"] < 10
    ddp = rec["ddp_backward"]
    assert not ddp["ok"] and "RuntimeError" in ddp["mro"], ddp
    # DDP's second step broadcasts its rebuilt buckets from rank 0 (forward), then
    # all-reduces gradients (backward): whichever first needs rank 1 names it
    assert ("all_reduce #" in ddp["message"] or "broadcast #" in ddp["message"]) and "rank 1" in ddp["message"], ddp
    assert ddp["seconds"] < 10


def test_monitored_barrier_names_missing_ranks(zygote: Zygote, tmp_path: Path) -> None:
    rec0, rec1, rec2 = run(zygote, "monitored", 3, tmp_path)
    for rec in (rec0, rec1, rec2):
        assert rec["all_arrive"]["ok"], rec["all_arrive"]
        assert "only implemented for GLOO" in rec["torch_refuses"]  # why this function exists
    _failed(rec0["two_missing"], "Rank 2 failed to pass monitoredBarrier in 1500 ms")
    _failed(rec1["two_missing"], "rank(s) 2 did not arrive")
    _failed(rec0["all_missing"], "Ranks 1, 2 failed to pass monitoredBarrier")
    assert 0.5 <= rec0["all_missing"]["seconds"] < 5


def test_size_mismatch_is_an_error_not_garbage(zygote: Zygote, tmp_path: Path) -> None:
    rec0, rec1 = run(zygote, "size_mismatch", 2, tmp_path)
    _failed(rec1["recv"], "20 bytes", "exactly 12")
    assert rec0["after"]["value"] == rec1["after"]["value"] == [2.0, 2.0]  # still usable
