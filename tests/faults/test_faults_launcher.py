"""Issue 16: the launcher's end and the mistakes users make launching.

* One rank fails and the launcher stops the others: no shared-memory segment outlives the job.
* SIGTERM to ``collectives-run`` ends its ranks within ``--grace``, a frozen (SIGSTOPped)
  rank and one that ignores SIGTERM included (SIGKILL after the grace).
* ``collectives-run`` killed outright (SIGKILL) takes its ranks with it.
* ``collectives-run -n 2 python train.py`` (as mpiexec is typed) runs train.py.
* An incomplete torchrun or collectives-run environment, or a rank out of range, is a
  clear error from ``init()``, never a world of one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import collectives
from collectives import run

pytestmark = pytest.mark.multiprocess

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTIVES_")
           and k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "rank.py"
    path.write_text(textwrap.dedent(body))
    return path


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not: it is dead, waiting for its reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _launch(tmp_path: Path, body: str, *flags: str, n: int = 2) -> tuple[subprocess.Popen[str], list[int]]:
    """Start ``collectives-run -n N FLAGS rank.py``; each rank prints ``pid <pid>`` first.
    Returns the launcher and the ranks' pids, by rank."""
    script = _script(tmp_path, body)
    proc = subprocess.Popen([sys.executable, "-m", "collectives.run", "-n", str(n), *flags, str(script)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path)
    assert proc.stdout is not None
    pids: dict[int, int] = {}
    while len(pids) < n:
        line = proc.stdout.readline()
        assert line, f"the launcher ended early: {proc.communicate()[1][-3000:]}"
        if " pid " in line:
            prefix, _, pid = line.partition(" pid ")
            pids[int(prefix.strip("[] rank"))] = int(pid)
    return proc, [pids[r] for r in range(n)]


def _finish(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_failing_rank_leaves_no_shared_memory_behind(tmp_path):
    """A rank that raises before a collective; the others wait in it (making their shared
    windows) until the launcher stops them: no segment of theirs outlives the job."""
    proc, pids = _launch(tmp_path, """
        import os, time
        import numpy as np
        import collectives
        print("pid", os.getpid(), flush=True)
        comm = collectives.init(transport="shm")
        if comm.rank == 1:
            time.sleep(0.5)
            raise SystemExit("rank 1 fails before its first collective")
        comm.all_reduce(np.ones(10))
    """, "--timeout", "30", n=3)
    _, err = _finish(proc, 60)
    assert proc.returncode == 1, err
    left = [n for n in os.listdir("/dev/shm") if any(f"-{pid}-" in n for pid in pids)]
    assert left == [], left


def test_sigterm_ends_every_rank_within_the_grace_frozen_ones_included(tmp_path):
    grace = 1.0
    proc, pids = _launch(tmp_path, """
        import os, signal, sys, time
        print("pid", os.getpid(), flush=True)
        if os.environ["COLLECTIVES_RANK"] == "1":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL ends this one
        time.sleep(60)
    """, "--grace", str(grace), n=3)
    os.kill(pids[0], signal.SIGSTOP)  # frozen
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _finish(proc, 30)
    took = time.monotonic() - start
    print(f"SIGTERM to the launcher: ranks ended and launcher exited in {took:.2f} s (grace {grace} s)")
    assert not any(_alive(pid) for pid in pids)
    assert took < grace + 5.0
    assert proc.returncode != 0


def test_a_launcher_killed_outright_takes_its_ranks_with_it(tmp_path):
    proc, pids = _launch(tmp_path, """
        import os, time
        print("pid", os.getpid(), flush=True)
        time.sleep(60)
    """)
    start = time.monotonic()
    proc.kill()
    proc.wait()
    deadline = start + 10.0
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.01)
    took = time.monotonic() - start
    print(f"launcher SIGKILLed: its ranks were gone {took:.3f} s later")
    assert not any(_alive(pid) for pid in pids), "orphaned ranks outlived the launcher"


def test_python_typed_before_the_script_runs_the_script(tmp_path, capsys):
    script = _script(tmp_path, """
        import os, sys
        print("rank", os.environ["COLLECTIVES_RANK"], "of", os.environ["COLLECTIVES_WORLD_SIZE"], sys.argv[1:])
    """)
    done = subprocess.run([sys.executable, "-m", "collectives.run", "-n", "2", "python", str(script), "--lr", "1"],
                          capture_output=True, text=True, timeout=60, env=_env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == ["[rank 0] rank 0 of 2 ['--lr', '1']",
                                                "[rank 1] rank 1 of 2 ['--lr', '1']"]
    for args, message in ((["python", str(tmp_path / "nope.py")], "no such script:"),
                          (["python3", "-u"], "was given no script to run")):
        with pytest.raises(SystemExit) as exited:
            run.main(["-n", "2", *args])
        assert exited.value.code == 2 and message in capsys.readouterr().err


MISTAKES = [
    ({"WORLD_SIZE": "4", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}, "RANK is not"),
    ({"RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}, "WORLD_SIZE is not"),
    ({"RANK": "4", "WORLD_SIZE": "4", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"},
     "RANK=4 is out of range for WORLD_SIZE=4"),
    ({"RANK": "-1", "WORLD_SIZE": "4", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}, "out of range"),
    ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE=0 must be at least 1"),
    ({"RANK": "1", "WORLD_SIZE": "2"}, "set MASTER_ADDR and MASTER_PORT"),
    ({"COLLECTIVES_RANK": "1"}, "COLLECTIVES_WORLD_SIZE is not"),
    ({"COLLECTIVES_WORLD_SIZE": "2", "COLLECTIVES_STORE_ADDR": "127.0.0.1:1"}, "COLLECTIVES_RANK is not"),
    ({"COLLECTIVES_RANK": "2", "COLLECTIVES_WORLD_SIZE": "2"}, "COLLECTIVES_RANK=2 is out of range"),
]


@pytest.mark.parametrize(("env", "message"), MISTAKES, ids=[m for _, m in MISTAKES])
def test_launcher_environment_mistakes_are_clear_errors(env, message):
    with pytest.raises(collectives.InvalidArgumentError, match=message):
        collectives.init(env=env, timeout=2)


@pytest.mark.parametrize("env", [{}, {"RANK": "3"}, {"WORLD_SIZE": "1"}, {"MASTER_ADDR": "h", "MASTER_PORT": "1"}],
                         ids=["nothing", "rank-alone", "world-of-one", "master-alone"])
def test_what_is_meant_as_a_world_of_one_still_is(env):
    with collectives.init(env=env) as comm:
        assert comm.size == 1
