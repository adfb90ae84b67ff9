"""``collectives.diagnose``: a rank that timed out waits a grace for its peers to say they are
in the operation, and gives up on the wait early once every peer still silent is a process
of this machine that is stopped or gone (it could never say so), or said it timed out in
another operation (it never will)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from collectives.diagnose import (_elsewhere, _silenced, _timed_out, describe_absent, process_record, publish_process,
                                  reported_absent)
from collectives.errors import CollectiveTimeoutError
from collectives.store import HashStore

LONG_GRACE = 60.0
"""A grace no check here may wait out: returning well before it is the behaviour checked."""


def _record_of(pid: int) -> list[object]:
    """The ``proc/<rank>`` record of process ``pid`` (as publish_process writes it for itself)."""
    store = HashStore()
    publish_process(store, 0)
    machine, _, _ = process_record(store, 0) or [None, None, None]
    with open(f"/proc/{pid}/stat", "rb") as f:
        start = f.read().rsplit(b")", 1)[1].split()[19].decode()
    return [machine, pid, start]


def test_a_stopped_or_gone_process_is_silenced_a_running_one_or_another_machines_is_not():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = _record_of(child.pid)
        assert not _silenced(record)
        child.send_signal(signal.SIGSTOP)
        while not _silenced(record):  # (the stop lands at once; /proc says so soon after)
            time.sleep(0.01)
        assert not _silenced(["another-machine", child.pid, record[2]])
        assert not _silenced(None)  # no record: nothing known
    finally:
        child.kill()
        child.wait()
    assert _silenced(record)  # gone


def test_the_wait_ends_once_every_absent_rank_is_silenced():
    store = HashStore()
    store.set("stuck/all_reduce/7/1", b"1")  # rank 1 is in it; ranks 2 and 3 never will be
    began = time.monotonic()
    absent = reported_absent(store, 0, 4, "all_reduce", 7, LONG_GRACE, silenced=lambda r: r in (2, 3))
    assert absent == [2, 3]
    assert time.monotonic() - began < LONG_GRACE / 2
    assert store.check(["stuck/all_reduce/7/0"])  # this rank said it is in it


def test_a_rank_that_may_still_report_is_waited_for():
    store = HashStore()
    looks: list[int] = []

    def silenced(r: int) -> bool:
        looks.append(r)
        if looks.count(1) == 3:  # the late rank 1 says it is in the operation after a few looks
            store.set("stuck/barrier/2/1", b"1")
        return r == 2

    assert reported_absent(store, 0, 3, "barrier", 2, LONG_GRACE, silenced=silenced) == [2]
    assert reported_absent(HashStore(), 0, 2, "barrier", 2, 0.1) == [1]  # nobody silenced: the whole grace


def test_a_rank_that_timed_out_in_another_operation_is_elsewhere():
    store = HashStore()
    assert not _elsewhere(store, 1, "all_reduce", 7)  # no word: it may still come
    for where, elsewhere in ((["all_reduce", 7], False), (["all_reduce", 6], True), (["all_reduce", 8], True),
                             (["broadcast", 7], True)):
        store.set("where/1", json.dumps(where).encode())
        assert _elsewhere(store, 1, "all_reduce", 7) is elsewhere, where


def test_where_a_rank_timed_out_is_asked_of_the_store_only_until_it_is_known():
    # A wait asks at every poll: one check a poll while rank 1 has said nothing, one get once
    # it has, then nothing more of the store; a description after the wait reuses the answer.
    class Counting(HashStore):
        def __init__(self) -> None:
            super().__init__()
            self.asked: list[str] = []

        def get(self, key: str, timeout: float | None = None) -> bytes:
            self.asked.append(f"get {key}")
            return super().get(key, timeout)

        def check(self, keys: Sequence[str]) -> bool:
            self.asked.extend(f"check {k}" for k in keys)
            return super().check(keys)

    store = Counting()
    known: dict[int, list[object]] = {}
    for _ in range(3):
        assert not _elsewhere(store, 1, "all_reduce", 7, known)
    store.set("where/1", json.dumps(["all_reduce", 6]).encode())
    for _ in range(3):
        assert _elsewhere(store, 1, "all_reduce", 7, known)
    assert describe_absent(store, 1, "all_reduce", 7, 1.0, None, known) == (
        "waiting", "rank 1 is still waiting in all_reduce #6")
    assert store.asked == ["check where/1"] * 4 + ["get where/1"]


def test_the_wait_ends_once_the_absent_ranks_timed_out_elsewhere():
    # Ranks 0 and 2 finished all_reduce #6 and time out in #7; rank 1 still waits in #6 on a
    # frozen rank (over mpi at 4 ranks): rank 0 need not wait out the grace for rank 1's word.
    store = HashStore()
    store.set("stuck/all_reduce/7/2", b"1")
    store.set("where/1", json.dumps(["all_reduce", 6]).encode())
    began = time.monotonic()
    fault = _timed_out(store, 0, 3, CollectiveTimeoutError("all_reduce", 7, [1], 1.0), LONG_GRACE)
    assert time.monotonic() - began < LONG_GRACE / 2
    assert (fault.culprits, fault.op, fault.seq) == ([1], "all_reduce", 7)
    assert "rank 1 is still waiting in all_reduce #6" in fault.text


def test_the_wait_reads_where_a_rank_timed_out_once_it_is_there():
    # Rank 1 timed out in #6 (it said so once, and is silenced by it); rank 2 is late and joins
    # #7 after a few polls: meanwhile rank 1's word is not asked for again at every poll.
    class Counting(HashStore):
        def __init__(self) -> None:
            super().__init__()
            self.reads: list[str] = []
            self.polls = 0  # polls of rank 2 since rank 1's word was first read

        def get(self, key: str, timeout: float | None = None) -> bytes:
            self.reads.append(key)
            return super().get(key, timeout)

        def check(self, keys: Sequence[str]) -> bool:
            if list(keys) == ["stuck/all_reduce/7/2"] and "where/1" in self.reads:
                self.polls += 1
                if self.polls == 4:
                    self.set("stuck/all_reduce/7/2", b"1")
            return super().check(keys)

    store = Counting()
    store.set("where/1", json.dumps(["all_reduce", 6]).encode())
    fault = _timed_out(store, 0, 3, CollectiveTimeoutError("all_reduce", 7, [1, 2], 1.0), LONG_GRACE)
    assert store.polls >= 4  # the wait polled while rank 2 was late
    assert fault.culprits == [1]
    assert store.reads.count("where/1") == 1  # once in the wait; the description reuses it


def test_a_process_record_names_the_machine_as_connect_names_the_host():
    # One reading of hostname and boot id: the record adds the pid namespace; an override of
    # the host identity (COLLECTIVES_HOSTNAME) names the host, not the machine of the record.
    from collectives.config import Config
    from collectives.connect import host_identity

    store = HashStore()
    publish_process(store, 0)
    machine = process_record(store, 0)[0]
    assert isinstance(machine, str) and machine.startswith(host_identity(Config()) + "/")
    assert host_identity(Config(hostname="h1")) == "h1"
