"""Version or setting skew between ranks fails init on every rank with a per-rank diff
(issue 16, case 17). Per transport (shm, tcp) at 2 and 4 ranks; over MPI in
test_faults_mpi_checks.py."""

from __future__ import annotations

import time
from typing import Any

import pytest

import collectives
from checks_helpers import fresh
from collectives import _handshake, skew
from collectives.testing import run_world

pytestmark = pytest.mark.multiprocess


def _skew_job(transport: str) -> Any:
    other = "tcp" if transport == "shm" else "shm"
    cases: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
        # setting: (everyone's init settings, the last rank's, what the diff must say of the last rank)
        "version": ({}, {}, "'0.0.1-old'"),
        "protocol": ({}, {}, "0"),
        "timeout": ({"timeout": 5.0}, {"timeout": 30.0}, "30.0"),
        "algorithm": ({}, {"algorithm": "ring"}, "'ring'"),
        "transport": ({}, {"transport": other}, repr(other)),
        "check": ({}, {"check": True}, "True"),
        "chunk_bytes": ({}, {"chunk_bytes": 4096}, "4096"),
    }

    def fn(comm: Any) -> dict[str, tuple[str, float]]:
        last = comm.rank == comm.size - 1
        seen = {}
        for name, (everyone, odd, _) in cases.items():
            settings = {"transport": transport, **everyone, **(odd if last else {})}
            kind = settings.pop("transport")
            saved = (skew.__version__, _handshake.VERSION)
            if last and name == "version":
                skew.__version__ = "0.0.1-old"
            if last and name == "protocol":
                _handshake.VERSION = 0
            start = time.monotonic()
            try:
                fresh(comm, f"skew/{name}", kind, **settings).close()
                seen[name] = ("initialised", 0.0)
            except collectives.SettingsMismatchError as exc:
                seen[name] = (str(exc), time.monotonic() - start)
            finally:
                skew.__version__, _handshake.VERSION = saved
        return seen

    return fn, cases


@pytest.mark.parametrize("transport", ["shm", "tcp"])
@pytest.mark.parametrize("size", [2, 4])
def test_skew_fails_init_on_every_rank_with_a_per_rank_diff(transport: str, size: int) -> None:
    fn, cases = _skew_job(transport)
    per_rank = run_world(fn, size, transport, timeout=120)
    slowest = 0.0
    for rank, seen in enumerate(per_rank):
        for name, (_, _, odd_value) in cases.items():
            message, seconds = seen[name]
            slowest = max(slowest, seconds)
            assert message.startswith("init: the ranks' versions or settings differ"), (rank, name, message)
            assert f"{name}: rank 0: " in message and f"rank {size - 1}: {odd_value}" in message, (rank, message)
            assert message.count(": rank 0: ") == 1, message  # one setting differs, one line for it
    assert slowest < 5.0


def test_the_settings_record_holds_no_secret() -> None:
    record = skew.settings_record(collectives.Config(secret="hunter2", timeout=7.0))
    assert "hunter2" not in repr(record) and record["timeout"] == 7.0
    assert record["version"] == collectives.__version__ and record["protocol"] == _handshake.VERSION
    assert skew.differences([record, dict(record)]) == []
