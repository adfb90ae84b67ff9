"""Start ranks for the torch backend tests: under torchrun, or as plain processes.

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


def ranks(script: str, world: int, args: list[str], timeout: float = 60, env: dict[str, str] | None = None) -> list[Launch]:
    """Start ``world`` plain processes ``python script RANK WORLD args`` at once; wait for all."""
    procs = []
    for r in range(world):
        cmd = [sys.executable, str(HERE / script), str(r), str(world), *args]
        procs.append(subprocess.Popen(cmd, env=_env(env), cwd=REPO, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, start_new_session=True))
    launches = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
            launches.append(Launch(p.returncode, out, False))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, _ = p.communicate()
            launches.append(Launch(-9, out, True))
    return launches
