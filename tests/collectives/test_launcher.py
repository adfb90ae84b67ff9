"""The ``collectives-run`` launcher: environment, output prefixes, exit codes, stopping ranks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.multiprocess


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTIVES_")}
    for name in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), extra.pop("PYTHONPATH", "")]))
    env.update(extra)
    return env


def _script(tmp_path: Path, body: str, name: str = "script.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def _launch(args: list[str], timeout: float = 30.0, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collectives.run", *args],
        capture_output=True, text=True, timeout=timeout, env=_env(**env), cwd=REPO,
    )


ENV_SCRIPT = """
    import os, sys
    e = os.environ
    names = ["COLLECTIVES_RANK", "COLLECTIVES_WORLD_SIZE", "COLLECTIVES_LOCAL_RANK",
             "COLLECTIVES_LOCAL_WORLD_SIZE", "COLLECTIVES_STORE_ADDR", "COLLECTIVES_SECRET"]
    print("hello", *[e.get(n) for n in names], *sys.argv[1:])
    print("torch vars:", [n for n in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE") if n in e])
    print("err", e["COLLECTIVES_RANK"], file=sys.stderr)
"""


def test_each_rank_gets_its_environment_and_prefixed_output(tmp_path: Path) -> None:
    script = _script(tmp_path, ENV_SCRIPT)
    done = _launch(["-n", "3", str(script), "a", "--flag"])
    assert done.returncode == 0, done.stderr
    hello = sorted(line for line in done.stdout.splitlines() if " hello " in line)
    assert len(hello) == 3, done.stdout
    secrets, addrs = set(), set()
    for rank, line in enumerate(hello):
        assert line.startswith(f"[rank {rank}] hello ")
        rank_text, size, local_rank, local_size, addr, secret, *args = line.split()[3:]
        assert (rank_text, size, local_rank, local_size) == (str(rank), "3", str(rank), "3")
        assert args == ["a", "--flag"]
        secrets.add(secret)
        addrs.add(addr)
    (secret,) = secrets  # one job secret, shared by every rank
    assert len(secret) == 64 and int(secret, 16) >= 0
    (addr,) = addrs
    host, port = addr.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    assert done.stdout.count("[rank 0] torch vars: []") == 1, done.stdout  # torchrun's are not set
    assert sorted(done.stderr.splitlines()) == ["[rank 0] err 0", "[rank 1] err 1", "[rank 2] err 2"]


def test_no_prefix_passes_output_through(tmp_path: Path) -> None:
    # one write per rank (print writes its pieces separately when unbuffered, and two
    # ranks sharing the pipe could interleave them: "plainplain  10")
    script = _script(tmp_path, 'import os, sys; sys.stdout.write("plain " + os.environ["COLLECTIVES_RANK"] + "\\n")')
    done = _launch(["-n", "2", "--no-prefix", str(script)])
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == ["plain 0", "plain 1"]


def test_module_mode_and_options_reach_the_ranks(tmp_path: Path) -> None:
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    _script(pkg, """
        import os, sys
        print(__name__, os.environ["COLLECTIVES_TRANSPORT"], os.environ["COLLECTIVES_TIMEOUT"], sys.argv[1:])
    """, name="job.py")
    done = _launch(["-n", "2", "--transport", "tcp", "--timeout", "7.5", "-m", "mypkg.job", "x"],
                   PYTHONPATH=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == [
        "[rank 0] __main__ tcp 7.5 ['x']",
        "[rank 1] __main__ tcp 7.5 ['x']",
    ]


def test_exit_code_of_a_failing_rank_is_returned(tmp_path: Path) -> None:
    script = _script(tmp_path, """
        import os, sys
        sys.exit(3 if os.environ["COLLECTIVES_RANK"] == "1" else 0)
    """)
    done = _launch(["-n", "3", str(script)])
    assert done.returncode == 3, done.stderr


def test_a_failure_stops_the_other_ranks(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    script = _script(tmp_path, f"""
        import os, sys, time
        rank = os.environ["COLLECTIVES_RANK"]
        if rank == "1":
            while len(os.listdir({str(pids)!r})) < 2:  # the sleepers are up
                time.sleep(0.01)
            sys.exit(3)
        open(os.path.join({str(pids)!r}, str(os.getpid())), "w").close()
        time.sleep(60)
        print("sleeper survived")
    """)
    start = time.monotonic()
    done = _launch(["-n", "3", str(script)], timeout=40.0)
    elapsed = time.monotonic() - start
    assert done.returncode == 3, done.stderr
    assert elapsed < 20, f"the sleeping ranks were not stopped ({elapsed:.1f} s)"
    assert "rank 1 exited with code 3; stopping rank(s) 0, 2" in done.stderr
    assert "survived" not in done.stdout
    for name in os.listdir(pids):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # reaped by init once the launcher is gone
            try:
                os.kill(int(name), 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"rank process {name} is still alive")


def test_a_rank_killed_by_a_signal_gives_128_plus_signal(tmp_path: Path) -> None:
    script = _script(tmp_path, """
        import os, signal
        if os.environ["COLLECTIVES_RANK"] == "0":
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = _launch(["-n", "2", str(script)])
    assert done.returncode == 128 + signal.SIGKILL, done.stderr


def test_sigterm_is_forwarded_to_every_rank(tmp_path: Path) -> None:
    script = _script(tmp_path, """
        import os, signal, sys, time
        def handler(signum, frame):
            print("got", signal.Signals(signum).name, flush=True)
            sys.exit(7)
        signal.signal(signal.SIGTERM, handler)
        print("ready", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen(
        [sys.executable, "-m", "collectives.run", "-n", "2", str(script)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        ready = [proc.stdout.readline() for _ in range(2)]
        assert sorted(ready) == ["[rank 0] ready\n", "[rank 1] ready\n"]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 7, err
    assert sorted(out.splitlines()) == ["[rank 0] got SIGTERM", "[rank 1] got SIGTERM"]


@pytest.mark.parametrize(
    ("args", "message"),
    [(["-n", "0", "x.py"], "must be at least 1"), (["-n", "2", "/no/such/script.py"], "no such script"),
     (["-n", "2", "--transport", "inproc", "x.py"], "inproc")],
    ids=["zero-ranks", "missing-script", "inproc-across-processes"],
)
def test_bad_arguments_are_refused(args: list[str], message: str) -> None:
    done = _launch(args)
    assert done.returncode == 2
    assert message in done.stderr


def test_init_reads_rank_and_size_from_the_launcher(tmp_path: Path) -> None:
    script = _script(tmp_path, """
        import collectives
        with collectives.init() as comm:
            comm.barrier()
            print("comm", comm.rank, comm.size)
    """)
    done = _launch(["-n", "3", "--timeout", "20", str(script)], timeout=60.0)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == [f"[rank {r}] comm {r} 3" for r in range(3)]
