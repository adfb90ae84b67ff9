"""Shared-memory segments are created mode 0600 under unguessable names, and a process
of another user cannot open them (issue 16, security; acceptance case 28). Checked on the
files in /dev/shm while a real job sets up (a slow rank keeps them there)."""

from __future__ import annotations

import errno
import os
import re
import time
from pathlib import Path

import pytest

from collectives.transports.shm import SHM_DIR, create_segment_file, unlink_segment_file
from faults_jobs import Job, base_env

pytestmark = pytest.mark.multiprocess

# collectives-<pid namespace>-<pid>-<start time>-<64 random bits> (transports/shm_names.py):
# group 1 the owner's pid, group 2 the random part.
NAME = re.compile(r"collectives-[0-9a-f]+-(\d+)-[0-9a-f]+-([0-9a-f]{16})")


def _other_user_error(path: str) -> int:
    """The errno a forked child that dropped to uid ``nobody`` gets opening ``path``
    (0 if it could open it)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            for flags in (os.O_RDONLY, os.O_RDWR):
                os.close(os.open(path, flags))
            os._exit(0)
        except OSError as exc:
            os._exit(exc.errno if 0 < exc.errno < 256 else 255)
        except BaseException:
            os._exit(255)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_segments_of_a_running_job_are_private_and_unguessable(tmp_path: Path) -> None:
    job = Job(tmp_path, 2, "collectives-run", base_env(COLLECTIVES_TRANSPORT="shm", FAULTS_HOLD_RANK="0"))
    try:
        ranks = job.pids()[1:]
        job.wait_file("holding-0")  # rank 0 has made its inbox and waits before mapping rank 1's
        deadline = time.monotonic() + 30
        while True:  # rank 1 makes its inbox in its own time
            names = [n for n in os.listdir(SHM_DIR) if (m := NAME.fullmatch(n)) and int(m.group(1)) in ranks]
            if len(names) >= len(ranks) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        found = {}
        for name in names:
            path = os.path.join(SHM_DIR, name)
            st = os.stat(path)
            found[name] = (st.st_mode & 0o777, st.st_uid,
                           _other_user_error(path) if os.geteuid() == 0 else None)
        (tmp_path / "hold-0").touch()
        results = job.finish()
    finally:
        job.kill()
    assert {int(NAME.fullmatch(n).group(1)) for n in found} == set(ranks), found  # each rank's inbox
    for name, (mode, uid, error) in found.items():
        assert mode == 0o600 and uid == os.geteuid(), (name, oct(mode), uid)
        if error is not None:
            assert error == errno.EACCES, (name, error)
    assert len({NAME.fullmatch(n).group(2) for n in found}) == len(found)  # 64 random bits each
    assert all(r["ok"] for r in results), results
    assert not set(found) & set(os.listdir(SHM_DIR)), "segments outlived the job"


def test_a_segment_is_0600_whatever_the_umask() -> None:
    old = os.umask(0)
    try:
        name, mm = create_segment_file(4096, "a test segment")
    finally:
        os.umask(old)
    try:
        assert os.stat(os.path.join(SHM_DIR, name)).st_mode & 0o777 == 0o600
        assert NAME.fullmatch(name)
    finally:
        mm.close()
        unlink_segment_file(name)
