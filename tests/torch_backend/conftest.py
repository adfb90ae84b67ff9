"""``launched``: one torchrun launch per world size runs both the ops cases and the training
scenarios (tb_worker_both.py), shared by test_torch_ops.py and test_torch_training.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tb_launch import torchrun

Outcomes = tuple[list[dict], str]  # per rank, what it wrote; the launch's output tail if it failed


@pytest.fixture(scope="session")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int, str], Outcomes]:
    """``launched(world, part)``: the outcomes of ``part`` ("ops" or "train") at ``world`` ranks."""
    runs: dict[int, dict[str, Outcomes]] = {}

    def get(world: int, part: str) -> Outcomes:
        if world not in runs:
            out = tmp_path_factory.mktemp(f"torch{world}")
            (out / "ops").mkdir()
            (out / "train").mkdir()
            launch = torchrun("tb_worker_both.py", world, [str(out)], timeout=300)
            tail = launch.output[-4000:] if launch.returncode else ""
            runs[world] = {name: (launch.results(out / name, world), tail) for name in ("ops", "train")}
        return runs[world][part]

    return get
