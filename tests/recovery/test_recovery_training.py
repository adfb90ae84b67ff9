"""The worked example of docs/fault-tolerance.md, over shared memory and over TCP: four
ranks train, rank 0 is killed mid-epoch, three finish the epoch, a replacement joins by
grow, and the weights equal the same training in one process (the script asserts it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.multiprocess
REPO = Path(__file__).resolve().parents[2]


def the_example() -> str:
    text = (REPO / "docs" / "fault-tolerance.md").read_text()
    section = text.split("## A worked example", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "docs/fault-tolerance.md lost its worked example"
    return match.group(1)


@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_training_loses_rank_0_shrinks_grows_and_ends_right(transport: str, tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(the_example())
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTIVES_")}
    env.update(COLLECTIVES_TRANSPORT=transport, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "a replacement joined" in done.stdout
