"""What the GPU tests share: whether a CUDA device is visible (asked in a child process, so
the test process never initialises CUDA), the skip that says so, and starting a world of
ranks with ``collectives-run`` (a fresh interpreter per rank, all on this host's GPUs)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from collectives.testing.devices import cuda_devices

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent




needs_gpu = pytest.mark.skipif(
    cuda_devices() == 0, reason="no CUDA device is visible (torch.cuda.is_available() is False, or no torch)"
)


def needs(lib: str) -> None:
    """Skip where ``lib`` (cupy, torch) is not installed: the device path needs cupy."""
    if importlib.util.find_spec(lib) is None:
        pytest.skip(f"{lib} is not installed")


def run_ranks(script: str, world_size: int, *args: str, timeout: float = 300,
              env_extra: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Run ``tests/gpu/<script>`` on ``world_size`` ranks; each prints one ``RESULT {json}``
    line, returned in rank order. Fails with the ranks' output where one failed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTIVES_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra or {})
    done = subprocess.run(
        [sys.executable, "-m", "collectives.run", "-n", str(world_size), str(HERE / script), *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-8000:]
    results = [json.loads(line.split("RESULT ", 1)[1]) for line in done.stdout.splitlines() if "RESULT " in line]
    assert len(results) == world_size, done.stdout[-4000:] + done.stderr[-4000:]
    return sorted(results, key=lambda r: r["rank"])
