"""``collectives.spawn.Job``: the store and secret of a job, its children's environment,
watching them, and stopping them (the parts collectives-run, run_world and the perf
coordinator share)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from collectives.errors import CollectivesError
from collectives.spawn import Job, exit_status
from collectives.store.tcp_store import TCPStore

pytestmark = pytest.mark.multiprocess


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_the_store_admits_the_job_secret_and_nothing_else() -> None:
    with Job() as job:
        assert len(job.secret) == 64 and int(job.secret, 16) >= 0
        host, port = job.store_addr.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) == job.store.port
        store = TCPStore(host, int(port), secret=job.secret, timeout=5)
        store.set("k", b"v")
        assert store.get("k", 5) == b"v"
        store.close()
        with pytest.raises(CollectivesError):
            TCPStore(host, int(port), secret="0" * 64, timeout=2).get("k", 2)
    assert Job().secret != job.secret  # fresh for every job


def test_a_job_without_a_store_has_no_address() -> None:
    job = Job(store=False)
    assert job.store is None and len(job.secret) == 64
    with pytest.raises(RuntimeError, match="no store"):
        job.store_addr  # noqa: B018
    job.close()


def test_rank_env_is_what_collectives_run_sets_and_drops_outer_launchers() -> None:
    outer = {"PATH": "/bin", "RANK": "3", "WORLD_SIZE": "8", "MASTER_ADDR": "x", "PMI_RANK": "3", "PMI_FD": "9",
             "COLLECTIVES_RANK": "7", "COLLECTIVES_TIMEOUT": "9"}
    with Job() as job:
        env = job.rank_env(1, 4, {"COLLECTIVES_TRANSPORT": "tcp"}, base=outer)
        assert env == {"PATH": "/bin", "COLLECTIVES_TIMEOUT": "9", "COLLECTIVES_RANK": "1",
                       "COLLECTIVES_WORLD_SIZE": "4", "COLLECTIVES_LOCAL_RANK": "1",
                       "COLLECTIVES_LOCAL_WORLD_SIZE": "4", "COLLECTIVES_STORE_ADDR": job.store_addr,
                       "COLLECTIVES_SECRET": job.secret, "COLLECTIVES_TRANSPORT": "tcp"}
        assert job.child_env({"A": "1"}, base=outer) == {"PATH": "/bin", "COLLECTIVES_TIMEOUT": "9", "A": "1"}


def test_watch_returns_zero_when_every_child_succeeds() -> None:
    with Job(store=False) as job:
        for _ in range(3):
            job.popen(_python("pass"), os.environ)
        assert job.watch() == 0
        assert [c.rank for c in job.children] == [0, 1, 2]
        assert all(c.poll() == 0 for c in job.children)


def test_the_first_failure_stops_the_others_and_is_the_status() -> None:
    said = []
    with Job(store=False) as job:
        sleepers = [job.popen(_python("import time; time.sleep(60)"), os.environ) for _ in range(2)]
        job.popen(_python("import sys; sys.exit(5)"), os.environ)
        start = time.monotonic()
        status = job.watch(lambda failed, running: said.append((failed.rank, [c.rank for c in running])))
        assert status == 5
        assert time.monotonic() - start < 15
        assert said == [(2, [0, 1])]
        assert all(c.poll() == -signal.SIGTERM for c in sleepers)


def test_a_child_killed_by_a_signal_gives_128_plus_the_signal() -> None:
    with Job(store=False) as job:
        job.popen(_python("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"), os.environ)
        assert job.watch() == 128 + signal.SIGKILL
    assert exit_status(-15) == 143 and exit_status(3) == 3


def test_stop_sends_sigkill_to_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    code = (f"import signal, time, pathlib; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            f"pathlib.Path({str(ready)!r}).touch(); time.sleep(60)")
    job = Job(store=False)
    child = job.popen(_python(code), os.environ)
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    start = time.monotonic()
    job.stop(grace=0.5)
    assert child.poll() == -signal.SIGKILL
    assert time.monotonic() - start < 10
    job.close()


def test_a_command_child_is_stopped_with_what_it_started(tmp_path: Path) -> None:
    """Each command runs in its own session; signals reach its whole process group."""
    pid_file = tmp_path / "grandchild"
    code = ("import subprocess, sys, time, pathlib; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"pathlib.Path({str(pid_file)!r}).write_text(str(p.pid)); time.sleep(60)")
    with Job(store=False) as job:
        child = job.popen(_python(code), os.environ)
        assert os.getsid(child.pid) == child.pid
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        grandchild = int(pid_file.read_text())
        job.stop(grace=5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # reaped by init once its parent is gone
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the grandchild survived its parent's stop")


def _exit_with(code: int) -> None:
    sys.exit(code)


def test_forked_children_run_a_function_and_are_watched_and_stopped() -> None:
    with Job(store=False) as job:
        job.fork(_exit_with, (0,), name="ok")
        job.fork(lambda: time.sleep(60), (), name="sleeper")  # closures work: a fork
        job.fork(_exit_with, (4,), name="fails")
        assert job.watch(grace=2) == 4
        assert job.children[1].poll() == -signal.SIGTERM
        assert job.wait_all(0)


def test_wait_all_says_whether_everyone_exited() -> None:
    with Job(store=False) as job:
        job.popen(_python("import time; time.sleep(60)"), os.environ)
        assert job.wait_all(0.2) is False
        job.stop(grace=2)
        assert job.wait_all(0) is True


def test_close_stops_the_children_and_the_store() -> None:
    job = Job()
    child = job.popen(_python("import time; time.sleep(60)"), os.environ)
    host, port = job.store_addr.rsplit(":", 1)
    job.close(grace=2)
    assert child.poll() is not None
    with pytest.raises(CollectivesError):
        TCPStore(host, int(port), secret=job.secret, timeout=1).get("k", 1)


def test_forward_signals_passes_sigterm_to_the_children(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    code = ("import signal, sys, time, pathlib; "
            "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7)); "
            f"pathlib.Path({str(ready)!r}).touch(); time.sleep(60)")
    before = signal.getsignal(signal.SIGTERM)
    with Job(store=False) as job:
        with job.forward_signals() as received:
            assert signal.getsignal(signal.SIGTERM) is not before
            job.popen(_python(code), os.environ)
            deadline = time.monotonic() + 30
            while not ready.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            os.kill(os.getpid(), signal.SIGTERM)  # handled: forwarded, not fatal to us
            assert job.watch() == 7
        assert received == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is before  # our own handler is back
