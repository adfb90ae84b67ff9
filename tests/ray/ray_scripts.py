"""Ray scripts of the tests that start a cluster of their own (several nodes, Ray Train), run
in a fresh process each."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = str(Path(__file__).resolve().parents[2])
HERE = str(Path(__file__).resolve().parent)


def run_ray_script(name: str, *, timeout: float, prefix: str = "cr-") -> Any:
    """Run ``tests/ray/<name>`` (which starts a Ray cluster of its own) in a fresh process and
    return the JSON it prints, failing with its stderr when it exits non-zero. Ray's files go
    to a short folder of their own: its socket paths must fit AF_UNIX's 107 bytes."""
    tmp = tempfile.mkdtemp(prefix=prefix)
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_TMPDIR=tmp,
               PYTHONPATH=os.pathsep.join(p for p in (ROOT, HERE, os.environ.get("PYTHONPATH")) if p))
    try:
        done = subprocess.run([sys.executable, os.path.join(HERE, name)], env=env, capture_output=True, text=True,
                              timeout=timeout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)
