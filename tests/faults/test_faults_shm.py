"""Issue 16, acceptance cases 10 and 11: shared memory after crashes, and a /dev/shm too small.

* Every rank SIGKILLed (during setup, and mid-traffic): the next job's shm transport sweeps
  the segments their owners left, and works; names carry the owner and never collide.
* A /dev/shm of 16 MB (a private mount namespace with a small tmpfs, as a container's
  default gives): a clear "need X MB in /dev/shm, have Y MB" error on every rank, never
  SIGBUS. Skips with the reason where unshare/mount is not permitted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import collectives
from collectives.spawn import Job
from collectives.store import HashStore
from collectives.transports import shm_names

pytestmark = pytest.mark.multiprocess

REPO = Path(__file__).resolve().parents[2]

RANK = """
import os, sys, time
import numpy as np
import collectives
print(os.getpid(), flush=True)
rank, size = int(os.environ["COLLECTIVES_RANK"]), int(os.environ["COLLECTIVES_WORLD_SIZE"])
if sys.argv[1] == "setup":  # the last rank never comes: the others wait in shm setup, segments made
    if rank == size - 1:
        time.sleep(60)
    from collectives.config import Config
    from collectives.store.tcp_store import TCPStore
    from collectives.transports.shm import ShmTransport
    host, port = os.environ["COLLECTIVES_STORE_ADDR"].rsplit(":", 1)
    store = TCPStore(host, int(port), secret=os.environ["COLLECTIVES_SECRET"], timeout=30)
    ShmTransport(rank, size, [p for p in range(size) if p != rank], store, Config(), 30)
    raise SystemExit("the late rank came after all")
comm = collectives.init(transport="shm")
print("traffic", flush=True)
n = 1 << 10
while True:  # ever larger all-reduces: new scratch windows are made while we are killed
    x = np.ones(n)
    comm.all_reduce(x)
    n = n * 2 if n < (1 << 20) else 1 << 10
"""


def _segments_of(pids: list[int]) -> list[str]:
    return [n for n in os.listdir("/dev/shm") if any(f"-{pid}-" in n for pid in pids)]


def _kill_job(tmp_path: Path, size: int, mode: str) -> list[int]:
    """Start ``size`` ranks of RANK in ``mode`` ("setup" or "traffic"), wait until they
    are there, SIGKILL all; their pids."""
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    job = Job()
    try:
        env_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        late = size - 1 if mode == "setup" else -1
        children = [job.popen([sys.executable, str(script), mode],
                              job.rank_env(r, size, {"PYTHONPATH": env_path, "COLLECTIVES_TIMEOUT": "30"}),
                              stdout=subprocess.PIPE) for r in range(size)]
        pids = []
        for child in children:
            out = child.process.stdout
            assert out is not None
            pids.append(int(out.readline()))
            if mode == "traffic":
                assert out.readline().strip() == b"traffic"
        if mode == "setup":  # until every rank but the late one made its inbox
            deadline = time.monotonic() + 20
            while len(_segments_of([p for r, p in enumerate(pids) if r != late])) < size - 1:
                assert time.monotonic() < deadline, "the ranks did not reach shm setup"
                time.sleep(0.02)
        time.sleep(0.2)
        for child in children:
            child.signal(signal.SIGKILL)
        for child in children:
            child.wait(10)
            assert child.process.stdout is not None
            child.process.stdout.close()
        return pids
    finally:
        job.store.close()  # not job.close(): its sweep is the launcher's, tested elsewhere


def _sweeping_world(size: int) -> list[str]:
    """Connect ``size`` shm ranks (threads of this process), which sweeps at start; run
    one all-reduce; the segments of dead owners seen just after setup."""
    store = HashStore(timeout=30)
    seen: list[str] = []
    errors: list[BaseException] = []

    def rank(r: int) -> None:
        try:
            comm = collectives.init(r, size, store, transport="shm", timeout=30)
            if r == 0:
                seen.extend(n for n in os.listdir("/dev/shm") if shm_names.owner_gone(n))
            x = np.ones(1 << 16)
            comm.all_reduce(x)
            assert x[0] == size
            comm.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return seen


@pytest.mark.parametrize("size", [2, 4])
def test_segments_of_ranks_killed_during_setup_are_swept_by_the_next_job(tmp_path, size):
    pids = _kill_job(tmp_path, size, "setup")
    left = _segments_of(pids)
    print(f"n={size}: SIGKILL in setup left {len(left)} segment(s); the next job swept them")
    assert left, "the ranks waiting in setup should have left their inboxes (nothing to sweep: test broken)"
    assert all(shm_names.owner_gone(name) for name in left)
    assert _sweeping_world(size) == []
    assert _segments_of(pids) == []


def test_segments_of_ranks_killed_mid_traffic_are_swept_by_the_next_job(tmp_path):
    pids = _kill_job(tmp_path, 4, "traffic")
    print(f"SIGKILL mid-traffic left {len(_segments_of(pids))} segment(s)")
    assert _sweeping_world(2) == []
    assert _segments_of(pids) == []


def test_names_carry_the_owner_and_never_collide():
    names = {shm_names.segment_name() for _ in range(10000)}
    assert len(names) == 10000
    assert all(f"-{os.getpid()}-" in n and not shm_names.owner_gone(n) for n in names)
    child = subprocess.Popen(["true"])
    child.wait()
    dead = shm_names.segment_name().replace(f"-{os.getpid()}-", f"-{child.pid}-")
    assert shm_names.owner_gone(dead)  # its process exited
    assert not shm_names.owner_gone(dead.replace("collectives-", "collectives-1", 1))  # another pid namespace
    assert not shm_names.owner_gone("collectives-12345-0123456789abcdef")  # the old form: unknown owner


SMALL_SHM_JOB = """
import sys
import numpy as np
from collectives.testing import RankError, run_world

def fn(comm):
    x = np.ones(1 << 20)
    comm.all_reduce(x)
    return float(x[0])

try:
    run_world(fn, int(sys.argv[1]), "shm", timeout=30)
except RankError as exc:
    print("ERROR", exc)
else:
    print("NO ERROR")
"""


def _small_shm_missing() -> str | None:
    if os.geteuid() != 0:
        return "mounting a small tmpfs on /dev/shm needs root"
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "unshare or mount (util-linux) is not installed"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs -o size=1M tmpfs /dev/shm"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"a private mount namespace is not permitted here: {probe.stderr.strip()}"
    return None


@pytest.mark.parametrize("size", [2, 4])
def test_a_small_dev_shm_gives_a_clear_error_never_sigbus(tmp_path, size):
    reason = _small_shm_missing()
    if reason:
        pytest.skip(reason)
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(SMALL_SHM_JOB))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"mount -t tmpfs -o size=16M tmpfs /dev/shm && exec {sys.executable} {script} {size}"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"n={size}, 16 MB /dev/shm: {done.stdout.strip()[:160]}")
    assert done.stdout.startswith("ERROR"), done.stdout + done.stderr[-3000:]
    assert "MB in /dev/shm, have" in done.stdout and "--shm-size" in done.stdout, done.stdout
    assert "signal" not in done.stdout and "SIGBUS" not in done.stdout, done.stdout
