"""How many CUDA devices a test can use, asked once in a child process (so that the test
process itself never initialises CUDA, which would break forked ranks)."""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys
from pathlib import Path


@functools.cache
def cuda_devices() -> int:
    """CUDA devices torch sees, asked in a child process (0 without torch or a GPU)."""
    if importlib.util.find_spec("torch") is None or not any(Path("/dev").glob("nvidia*")):
        return 0
    probe = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    return int(done.stdout.strip() or 0) if done.returncode == 0 else 0
