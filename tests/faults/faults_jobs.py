"""Start, watch and end the jobs of tests/faults/faults_rank.py for the security tests:
under collectives-run or a torchrun-style environment, with the socket table and the
resident memory of their processes read from /proc."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from lifecycle_resources import socket_inodes

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SCRIPT = HERE / "faults_rank.py"


def base_env(**extra: str) -> dict[str, str]:
    """This environment without any launcher's or library's variables, plus ``extra``."""
    drop = ("COLLECTIVES_", "MASTER_", "TORCHELASTIC_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop) and k not in ("RANK", "WORLD_SIZE")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", COLLECTIVES_TIMEOUT="60")
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Job:
    """The processes of one job; ``pids()`` are every rank's (and the launcher's)."""

    def __init__(self, out: Path, size: int, launcher: str, env: dict[str, str]) -> None:
        self.out, self.size, self.launcher = out, size, launcher
        self.procs: list[subprocess.Popen[bytes]] = []
        self.master_port: int | None = None
        if launcher == "collectives-run":
            self._start([sys.executable, "-m", "collectives.run", "-n", str(size), str(SCRIPT), str(out)], env)
        else:  # torchrun-style: the variables torchrun sets, rank 0 hosts torch's TCPStore
            self.master_port = free_port()
            for rank in range(size):
                self._start([sys.executable, str(SCRIPT), str(out)],
                            dict(env, RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank),
                                 LOCAL_WORLD_SIZE=str(size), MASTER_ADDR="127.0.0.1",
                                 MASTER_PORT=str(self.master_port)))

    def _start(self, cmd: list[str], env: dict[str, str]) -> None:
        i = len(self.procs)
        with open(self.out / f"stdout-{i}", "wb") as out, open(self.out / f"stderr-{i}", "wb") as err:
            self.procs.append(subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=err))

    def wait_file(self, name: str, timeout: float = 60.0) -> Path:
        path = self.out / name
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in self.procs):
                self.kill()
                raise AssertionError(f"{name} never appeared; output:\n{self.output()}")
            time.sleep(0.02)
        return path

    def rank_info(self, rank: int) -> dict:
        path = self.wait_file(f"pid-{rank}")
        for _ in range(100):
            text = path.read_text()
            if text:
                return json.loads(text)
            time.sleep(0.02)
        raise AssertionError(f"pid-{rank} stayed empty")

    def pids(self) -> list[int]:
        ranks = [self.rank_info(r)["pid"] for r in range(self.size)]
        return ([self.procs[0].pid] if self.launcher == "collectives-run" else []) + ranks

    def finish(self, timeout: float = 90.0) -> list[dict]:
        """Let the ranks stop; return their reports (asserting a clean exit)."""
        (self.out / "stop").touch()
        for p in self.procs:
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"the job did not finish; output:\n{self.output()}") from None
        assert all(p.returncode == 0 for p in self.procs), self.output()
        return [json.loads((self.out / f"rank{r}.json").read_text()) for r in range(self.size)]

    def output(self) -> str:
        return "\n---\n".join((self.out / f"stdout-{i}").read_text()[-2000:] + self.stderr()[i][-4000:]
                               for i in range(len(self.procs)))

    def stderr(self) -> list[str]:
        """What each process wrote to stderr so far (the launcher's, or each rank's)."""
        return [(self.out / f"stderr-{i}").read_text(errors="replace") for i in range(len(self.procs))]

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _address(hex_addr: str) -> str:
    ip, port = hex_addr.split(":")
    raw = bytes.fromhex(ip)
    if len(raw) == 4:
        return f"{socket.inet_ntop(socket.AF_INET, raw[::-1])}:{int(port, 16)}"
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))  # host-order 32-bit words
    return f"[{socket.inet_ntop(socket.AF_INET6, words)}]:{int(port, 16)}"


def listeners(pids: list[int]) -> dict[int, list[str]]:
    """The TCP sockets in LISTEN state that each of ``pids`` holds, as ``addr:port``
    (read from /proc/net/tcp and tcp6, the table ``ss -ltn`` prints)."""
    table: dict[str, str] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    table[fields[9]] = _address(fields[1])
    return {pid: sorted(table[i] for i in socket_inodes(pid) if i in table) for pid in pids}


def is_loopback_listener(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]")
    return host.startswith("127.") or host in ("::1", "::ffff:127.0.0.1") or host.startswith("::ffff:127.")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")
