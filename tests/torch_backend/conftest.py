"""``launched``: one torchrun launch per world size runs both the ops cases and the training
scenarios (tb_worker_both.py), shared by test_torch_ops.py and test_torch_training.py. The
launches of every world size the session's tests ask for start together at the first request:
a launch spends much of its time with a core idle (torchrun's agent importing torch alone,
the rendezvous, the ranks' barriers), which the other one fills."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tb_launch import torchrun

Outcomes = tuple[list[dict], str]  # per rank, what it wrote; the launch's output tail if it failed


def _requested_worlds(session: pytest.Session) -> set[int]:
    """The world sizes that the collected tests using ``launched`` are parametrized with."""
    worlds = set()
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if "launched" in getattr(item, "fixturenames", ()) and callspec is not None and "world" in callspec.params:
            worlds.add(int(callspec.params["world"]))
    return worlds


@pytest.fixture(scope="session")
def launched(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[int, str], Outcomes]]:
    """``launched(world, part)``: the outcomes of ``part`` ("ops" or "train") at ``world`` ranks
    (a launch still running when the session ends, after a ``-x`` stop, is waited for)."""
    runs: dict[int, dict[str, Outcomes]] = {}
    threads: dict[int, threading.Thread] = {}

    def launch(world: int, out: Path) -> None:
        result = torchrun("tb_worker_both.py", world, [str(out)], timeout=300)
        tail = result.output[-4000:] if result.returncode else ""
        runs[world] = {name: (result.results(out / name, world), tail) for name in ("ops", "train")}

    def start(world: int) -> None:
        out = tmp_path_factory.mktemp(f"torch{world}")
        (out / "ops").mkdir()
        (out / "train").mkdir()
        threads[world] = threading.Thread(target=launch, args=(world, out), name=f"torchrun-{world}", daemon=True)
        threads[world].start()

    def get(world: int, part: str) -> Outcomes:
        if not threads:
            for w in sorted(_requested_worlds(request.session) | {world}):
                start(w)
        elif world not in threads:
            start(world)
        threads[world].join()
        if world not in runs:  # the launch itself raised: no outcomes at all
            return [{} for _ in range(world)], "the launch raised before it finished (see the captured log)"
        return runs[world][part]

    yield get
    for thread in threads.values():
        thread.join()
