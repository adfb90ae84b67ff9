"""tuning/tuner.py prices the steps that run: the schedules it replays step as ``steps.step_bytes``
says for the call's transport and size (the rule the planner builds them with), and a call priced
on the line beyond LINEAR_BYTES keeps its own step at the line's two ends."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from collectives.algorithms.schedule import Recv, Send, Step
from collectives.config import Config
from collectives.ops import ReduceOp
from collectives.plans.context import PlanContext
from collectives.plans.planner import Planner
from collectives.steps import STEP_BYTES, TCP_LARGE_FROM_BYTES, TCP_LARGE_STEP_BYTES, step_bytes
from collectives.transports.base import Transport
from collectives.transports.shm import ShmTransport
from collectives.transports.tcp import TcpTransport
from collectives.tuning import tuner
from collectives.tuning.machine import LinkClass, Machine
from collectives.tuning.profile import BETWEEN_HOSTS

F32 = np.dtype(np.float32)


def _largest(steps: Any) -> int:
    return max(o.count for step in steps for o in step if isinstance(o, (Send, Recv))) * 4


class _Idle(Transport):
    """A transport with no peers, standing for one of ``kind``."""

    def __init__(self, kind: type[Transport]) -> None:  # noqa: D107 - nothing to connect
        self.channels: dict[int, Any] = {}
        self.name = kind.name

    def wait_for_activity(self, timeout: float, token: int | None = None) -> None:
        return None

    def close(self) -> None:
        return None


@pytest.mark.parametrize("kind", [TcpTransport, ShmTransport])
@pytest.mark.parametrize("nbytes", [TCP_LARGE_FROM_BYTES - (1 << 20), TCP_LARGE_FROM_BYTES])
@pytest.mark.parametrize("algorithm", ["ring", "tree", "recursive"])
def test_the_tuner_replays_the_steps_the_planner_builds(kind: type[Transport], nbytes: int, algorithm: str) -> None:
    planner = Planner(PlanContext.build(0, 2, [_Idle(kind)], Config()))
    plan: Any = planner.all_reduce(algorithm, F32, nbytes // 4, ReduceOp.SUM)
    step = step_bytes(kind.name, "all_reduce", nbytes, 2)
    priced: list[Step] = list(tuner.schedules("all_reduce", algorithm, nbytes, 2, step, only=0)[0])
    assert _largest(plan.steps()) == _largest(priced) == step


def _machine() -> Machine:
    return Machine(2, 2, LinkClass("tcp", 20e-6, 0.4e-9), gamma=0.05e-9, overhead=10e-6)


def test_a_large_tcp_all_reduce_is_priced_in_its_larger_step() -> None:
    n = 2 * TCP_LARGE_FROM_BYTES  # beyond LINEAR_BYTES: priced on the line
    assert n > tuner.LINEAR_BYTES
    ruled = tuner.replay_time("all_reduce", "tree", n, _machine, transport="tcp")
    larger = tuner.replay_time("all_reduce", "tree", n, _machine, step=TCP_LARGE_STEP_BYTES)
    usual = tuner.replay_time("all_reduce", "tree", n, _machine, step=STEP_BYTES)
    assert ruled == pytest.approx(larger)
    assert ruled != pytest.approx(usual)  # half the steps: fewer per-step costs, a longer pipeline fill
    assert tuner.replay_time("all_reduce", "tree", n, _machine) == pytest.approx(usual)  # shm: the usual step


def test_predict_prices_the_rules_step_for_the_calls_size() -> None:
    n = 2 * TCP_LARGE_FROM_BYTES
    assert tuner.predict("all_reduce", "ring", n, 2, "tcp") == pytest.approx(
        tuner.predict("all_reduce", "ring", n, 2, "tcp", 0, None, TCP_LARGE_STEP_BYTES))
    assert tuner.predict("all_reduce", "ring", n, 2, "tcp") != pytest.approx(
        tuner.predict("all_reduce", "ring", n, 2, "tcp", 0, None, STEP_BYTES))


def test_the_between_hosts_entry_of_a_profile_steps_as_its_transport() -> None:
    assert step_bytes("tcp" + BETWEEN_HOSTS, "all_reduce", TCP_LARGE_FROM_BYTES, 2) == TCP_LARGE_STEP_BYTES


def test_choose_prices_the_calls_own_step_not_the_priced_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call just below the larger step's threshold is priced at the next power of two, which
    may reach it; it still runs, and is priced, in the usual step."""
    seen: list[int] = []
    real = tuner.predict

    def spy(*args: Any) -> float:
        seen.append(args[7])
        return real(*args)

    below = TCP_LARGE_FROM_BYTES - (1 << 20)
    assert tuner.priced_at(below) >= TCP_LARGE_FROM_BYTES  # the priced size reaches the threshold
    monkeypatch.setattr(tuner, "predict", spy)
    tuner._override.cache_clear()
    try:
        tuner.choose("all_reduce", below, 2, "tcp")
        assert seen and set(seen) == {STEP_BYTES}
        seen.clear()
        tuner.choose("all_reduce", TCP_LARGE_FROM_BYTES, 2, "tcp")
        assert seen and set(seen) == {TCP_LARGE_STEP_BYTES}
    finally:
        tuner._override.cache_clear()


def test_a_larger_world_is_priced_in_the_usual_step() -> None:
    n = 2 * TCP_LARGE_FROM_BYTES
    assert tuner.predict("all_reduce", "ring", n, 3, "tcp") == pytest.approx(
        tuner.predict("all_reduce", "ring", n, 3, "tcp", 0, None, STEP_BYTES))
