"""Start ranks for the torch backend tests: under torchrun, or forked from a process that
imported torch once (``Zygote``).

Every rank's stdout and stderr are kept; a launch that runs past its timeout is killed
(process group and all) and reported, never left hanging.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("COLLECTIVES_TIMEOUT", None)
    env.update(extra or {})
    return env


@dataclass
class Launch:
    returncode: int
    output: str
    timed_out: bool

    def results(self, out_dir: Path, world: int) -> list[dict]:
        found = []
        for r in range(world):
            path = out_dir / f"rank{r}.json"
            found.append(json.loads(path.read_text()) if path.exists() else {})
        return found


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> Launch:
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return Launch(proc.returncode, out, False)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return Launch(-9, out, True)


def torchrun(script: str, nproc: int, args: list[str], timeout: float = 120, env: dict[str, str] | None = None) -> Launch:
    """``python -m torch.distributed.run --standalone --nproc-per-node N script args``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           str(HERE / script), *args]
    return _run(cmd, _env(env), timeout)


class Zygote:
    """Ranks forked from one process that imported ``module`` (tb_zygote.py): a scenario's
    ranks start in milliseconds instead of importing torch each. Use as a context manager;
    one scenario at a time."""

    def __init__(self, module: str, logs: Path) -> None:
        self.logs = logs
        self.proc = subprocess.Popen([sys.executable, str(HERE / "tb_zygote.py"), module], env=_env(), cwd=REPO,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()
        if ready.strip() != "ready":
            self.close()
            raise RuntimeError(f"tb_zygote.py {module} did not start (exit {self.proc.returncode}): {ready!r}")

    def ranks(self, world: int, args: list[str], timeout: float = 60, env: dict[str, str] | None = None) -> list[Launch]:
        """``module.main([rank, world, *args])`` in ``world`` forked ranks at once; wait for all."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        logs = self.logs / f"launch{len(list(self.logs.iterdir()))}"
        logs.mkdir()
        request = {"world": world, "args": args, "env": env or {}, "timeout": timeout, "logs": str(logs)}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"tb_zygote.py exited (status {self.proc.wait()}) while running {args}")
        return [Launch(o["returncode"], (logs / f"rank{r}.log").read_text(errors="replace"), o["timed_out"])
                for r, o in enumerate(json.loads(answer))]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> Zygote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
