"""plans/planner.py: the pipelining step of a scheduled all-reduce, the one rule the tuner prices
(``steps.step_bytes``, for the context's transport and size). TCP steps in 2 MiB from 32 MiB at 2 ranks
(``Transport.large_chunk`` describes it); below that size, for the other collectives, and where
COLLECTIVES_CHUNK_BYTES is set, the step is the usual one."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from collectives.algorithms.schedule import Recv
from collectives.config import Config
from collectives.ops import ReduceOp
from collectives.plans.context import PlanContext
from collectives.plans.planner import Planner
from collectives.steps import step_bytes
from collectives.transports.base import Transport
from collectives.transports.shm import ShmTransport
from collectives.transports.tcp import LARGE_CHUNK_BYTES, LARGE_FROM_BYTES, TcpTransport

F32 = np.dtype(np.float32)
MIB = 1 << 20


class _Idle(Transport):
    """A transport with no peers, standing for one of ``kind`` (its class attributes only)."""

    def __init__(self, kind: type[Transport]) -> None:  # noqa: D107 - nothing to connect
        self.channels: dict[int, Any] = {}
        self.name = kind.name
        self.chunk_bytes = kind.chunk_bytes
        self.large_chunk = kind.large_chunk

    def progress(self) -> bool:
        return False

    def wait_for_activity(self, timeout: float, token: int | None = None) -> None:
        return None

    def close(self) -> None:
        return None


def _context(kind: type[Transport], config: Config | None = None) -> PlanContext:
    return PlanContext.build(0, 2, [_Idle(kind)], config or Config())


def _largest_message(planner: Planner, nbytes: int) -> int:
    """The largest message, in bytes, of the 2-rank ring all-reduce of ``nbytes`` float32 values."""
    plan: Any = planner.all_reduce("ring", F32, nbytes // 4, ReduceOp.SUM)
    return max(o.count for step in plan.steps() for o in step if isinstance(o, Recv)) * 4


def test_tcp_pipelines_large_all_reduces_in_its_larger_chunk() -> None:
    planner = Planner(_context(TcpTransport))
    assert planner.context.large_chunk == (LARGE_FROM_BYTES, LARGE_CHUNK_BYTES)
    assert _largest_message(planner, LARGE_FROM_BYTES) == LARGE_CHUNK_BYTES
    assert _largest_message(planner, 2 * LARGE_FROM_BYTES) == LARGE_CHUNK_BYTES


def test_below_the_threshold_tcp_keeps_its_usual_chunk() -> None:
    planner = Planner(_context(TcpTransport))
    assert _largest_message(planner, LARGE_FROM_BYTES - MIB) == TcpTransport.chunk_bytes


@pytest.mark.parametrize("kind", [ShmTransport])
def test_a_transport_without_a_larger_chunk_keeps_one_chunk_at_every_size(kind: type[Transport]) -> None:
    planner = Planner(_context(kind))
    assert planner.context.large_chunk is None
    assert _largest_message(planner, 2 * LARGE_FROM_BYTES) == kind.chunk_bytes


def test_an_explicit_chunk_wins_over_the_transports_larger_one() -> None:
    planner = Planner(_context(TcpTransport, Config(chunk_bytes=MIB // 2)))
    assert planner.context.large_chunk is None
    assert _largest_message(planner, 2 * LARGE_FROM_BYTES) == MIB // 2


def test_a_world_of_shm_and_tcp_peers_steps_as_the_tuner_prices_it() -> None:
    """The tuner prices such a world by its transport between hosts (``PlanContext.transport``)
    and its size; the schedules step as it prices them (3 ranks: the usual step)."""
    context = PlanContext.build(0, 3, [_Idle(ShmTransport), _Idle(TcpTransport)], Config())
    assert context.transport == "tcp"
    assert context.large_chunk is None
    assert context.step_bytes("all_reduce", 2 * LARGE_FROM_BYTES) == step_bytes("tcp", "all_reduce",
                                                                                 2 * LARGE_FROM_BYTES, 3)
    assert _largest_message(Planner(context), 2 * LARGE_FROM_BYTES) == TcpTransport.chunk_bytes
