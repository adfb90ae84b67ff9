"""All-reduce in two levels for ranks on several hosts: within each host, then across.

Hosts are host identities (``run_world(hosts=...)``, ``COLLECTIVES_HOSTNAME``): threads of this
process for the many layouts, processes over shared memory and TCP for the real thing
(and ``tests/topology/test_netns_hosts.py`` for network namespaces as hosts).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import collectives
from collectives import CollectiveTimeoutError, ReduceOp, UnsupportedError, diagnose
from collectives.testing import run_world
from collectives.topology.hosts import HostLayout, two_level_layout

LAYOUTS = {
    "2x2": ["a", "a", "b", "b"],
    "2x2-interleaved": ["a", "b", "a", "b"],
    "3x2": ["a", "b", "c", "c", "b", "a"],
    "2x3": ["a", "a", "a", "b", "b", "b"],
}


def test_layouts_with_two_levels() -> None:
    layout = two_level_layout(["x", "y", "x", "y"])
    assert layout == HostLayout(host_of=(0, 1, 0, 1), per_host=2)
    assert layout.hosts == 2
    assert layout.on_host(1) == [1, 3]
    assert [layout.local_rank(r) for r in range(4)] == [0, 0, 1, 1]
    assert layout.across(2) == [2, 3]
    assert layout.across(1) == [0, 1]
    assert two_level_layout(["a", "a"]) is None  # one host
    assert two_level_layout(["a", "b", "c"]) is None  # one rank per host
    assert two_level_layout(["a", "a", "a", "b"]) is None  # uneven hosts
    assert two_level_layout(["a", "a", "b", "b", "c"]) is None


def _reduce_everything(comm: Any) -> list[Any]:
    """All-reduces of awkward sizes, ops and dtypes; what each left, as bytes."""
    got = []
    for n in (1, 2, 5, 64, 1001):
        for dtype, ops in ((np.float64, ("sum", "avg", "max", "min", "prod")), (np.int32, ("sum", "band", "bxor"))):
            for op in ops:
                x = ((np.arange(n) % 7) + comm.rank + 1).astype(dtype)
                out = np.empty_like(x)
                comm.all_reduce(x, op=op, out=out)
                comm.all_reduce(x, op=op)  # in place
                got.append((n, np.dtype(dtype).name, op, out.tobytes(), x.tobytes()))
    return got


def _expected(n: int, dtype: str, op: str, size: int) -> np.ndarray:
    parts = [((np.arange(n) % 7) + r + 1).astype(dtype) for r in range(size)]
    if op == "avg":
        return np.sum(parts, axis=0, dtype=np.float64) / size
    fold = {"sum": np.add, "max": np.maximum, "min": np.minimum, "prod": np.multiply,
            "band": np.bitwise_and, "bxor": np.bitwise_xor}[op]
    return fold.reduce(np.array(parts), axis=0).astype(dtype)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_two_levels_give_every_rank_the_same_right_bits(layout: str) -> None:
    hosts = LAYOUTS[layout]
    results = run_world(_reduce_everything, len(hosts), hosts=hosts)
    assert all(r == results[0] for r in results), "ranks disagree"
    for n, dtype, op, out, in_place in results[0]:
        want = _expected(n, dtype, op, len(hosts))
        got = np.frombuffer(out, dtype=dtype)
        assert np.array_equal(np.frombuffer(in_place, dtype=dtype), got), (n, dtype, op)
        assert np.allclose(got, want, rtol=1e-12) if dtype == "float64" else np.array_equal(got, want), (n, dtype, op)


def test_the_levels_are_said_at_debug_info(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="collectives"):
        run_world(lambda comm: comm.all_reduce(np.ones(2)), 4, hosts=LAYOUTS["2x2-interleaved"])
    said = sorted(r.getMessage() for r in caplog.records if "two levels" in r.getMessage())
    assert said[0] == "rank 0: all_reduce in two levels, 2 hosts of 2 ranks: within ranks [0, 2], across ranks [0, 1]"
    assert len(said) == 4


def test_the_automatic_choice_and_what_it_needs() -> None:
    def fn(comm: Any) -> Any:
        comm.all_reduce(np.ones(4))
        with pytest.raises(UnsupportedError, match="'hierarchical' exists for all_reduce"):
            comm.broadcast(np.ones(4), algorithm="hierarchical")
        flat = np.ones(4)
        comm.all_reduce(flat, algorithm="ring")
        return comm._context.levels.pair is not None, flat.tolist()

    assert run_world(fn, 4, hosts=LAYOUTS["2x2"]) == [(True, [4.0] * 4)] * 4

    def one_host(comm: Any) -> None:
        with pytest.raises(UnsupportedError, match="needs ranks on several hosts"):
            comm.all_reduce(np.ones(4), algorithm="hierarchical")
        comm.all_reduce(np.ones(4))
        assert comm._context.levels is None

    run_world(one_host, 2)
    run_world(one_host, 3, hosts=["a", "a", "b"])  # uneven: flat


def test_collectives_algo_names_it() -> None:
    config = collectives.config.Config.from_env({"COLLECTIVES_ALGO": "hierarchical"})
    assert config.algorithm == "hierarchical"

    def fn(comm: Any) -> Any:
        x = np.arange(3.0)
        comm.all_reduce(x)
        comm.broadcast(x)  # the default applies where it exists, the automatic choice elsewhere
        return comm._context.levels.pair is not None, x.tolist()

    assert run_world(fn, 4, hosts=LAYOUTS["2x2"], algorithm="hierarchical") == [(True, [0.0, 4.0, 8.0])] * 4


@pytest.mark.parametrize("earlier_calls", [0, 2], ids=["while-connecting-the-levels", "levels-connected"])
def test_a_rank_missing_on_one_host_is_named_in_the_all_reduce_it_missed(
        earlier_calls: int, arrivals: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    graces: list[tuple[str, int, int]] = []  # (operation, number, communicator size) of each wait for the others' word
    waited_for = diagnose.reported_absent

    def counted(store: Any, rank: int, size: int, op: str, seq: int, *args: Any, **kwargs: Any) -> list[int]:
        graces.append((op, seq, size))
        return waited_for(store, rank, size, op, seq, *args, **kwargs)

    monkeypatch.setattr(diagnose, "reported_absent", counted)  # (ranks are threads of this process here)

    def fn(comm: Any) -> Any:
        for _ in range(earlier_calls):
            comm.all_reduce(np.ones(1000))
        if comm.rank == 3:
            arrivals.wait(3)  # alive, not joining, until the three others timed out
            return None
        comm.timeout = 0.5  # waited out once, then one grace for the others' word (the whole call's, not a level's)
        try:
            comm.all_reduce(np.ones(1000))
        except CollectiveTimeoutError as exc:
            return exc.collective, exc.seq, exc.absent
        finally:
            arrivals.arrive()
        return "completed"

    results = run_world(fn, 4, hosts=LAYOUTS["2x2"], timeout=30)
    assert results[:3] == [("all_reduce", earlier_calls + 1, [3])] * 3
    # One grace per rank that timed out, in the whole communicator's diagnosis: the levels'
    # communicators (2 ranks each) leave theirs to it, so the error comes a timeout + one grace in.
    assert graces == [("all_reduce", earlier_calls + 1, 4)] * 3


def test_over_shared_memory_within_and_tcp_across() -> None:
    def fn(comm: Any) -> Any:
        x = np.arange(1 << 18, dtype=np.float32) * (comm.rank + 1)
        comm.all_reduce(x)
        local, across = comm._context.levels.pair
        kinds = (sorted(set(local.transport_names.values())), sorted(set(across.transport_names.values())))
        return bool(np.array_equal(x, np.arange(1 << 18, dtype=np.float32) * 10)), kinds

    results = run_world(fn, 4, "auto", hosts=LAYOUTS["2x2-interleaved"], timeout=120)
    assert results == [(True, (["shm"], ["tcp"]))] * 4


def test_closing_closes_both_levels() -> None:
    def fn(comm: Any) -> Any:
        comm.all_reduce(np.ones(8))
        levels = comm._context.levels.pair
        comm.close()
        return [level._closed for level in levels]

    assert run_world(fn, 4, hosts=LAYOUTS["2x2"]) == [[True, True]] * 4


def test_hosts_must_name_every_rank() -> None:
    with pytest.raises(collectives.InvalidArgumentError, match="hosts: expected 2 non-empty host names"):
        run_world(lambda comm: None, 2, hosts=["a"])


def test_reduce_op_objects_pass_through_the_levels() -> None:
    def fn(comm: Any) -> Any:
        x = np.array([comm.rank, -comm.rank], dtype=np.int64)
        comm.all_reduce(x, op=ReduceOp.MAX)
        return x.tolist()

    assert run_world(fn, 4, hosts=LAYOUTS["2x2"]) == [[3, 0]] * 4


def test_async_all_reduces_in_two_levels() -> None:
    """Async calls run on the communicator's worker thread, which connects the levels."""

    def fn(comm: Any) -> Any:
        works = [comm.all_reduce(np.full(100, comm.rank + i, np.float64), async_op=True) for i in range(3)]
        return [w.wait().tolist()[0] for w in works], comm._context.levels.pair is not None

    assert run_world(fn, 4, hosts=LAYOUTS["2x2-interleaved"]) == [([6.0, 10.0, 14.0], True)] * 4


def test_debug_info_says_each_algorithm_once_with_why(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    def fn(comm: Any) -> None:
        for _ in range(2):
            comm.all_reduce(np.ones(4))
            comm.all_reduce(np.ones(4), algorithm="ring")
            comm.broadcast(np.ones(4))

    with caplog.at_level(logging.INFO, logger="collectives"):
        run_world(fn, 4, hosts=LAYOUTS["2x2"])
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rank 0: ") and " takes " in r.getMessage()]
    assert said == ["rank 0: all_reduce takes hierarchical (automatic, first at 32 bytes)",
                    "rank 0: all_reduce takes ring (asked, first at 32 bytes)",
                    "rank 0: broadcast takes tree (automatic, first at 32 bytes)"]
    levels = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rank 0 (")]
    assert "rank 0 (within its host): reduce_scatter takes recursive (automatic, first at 32 bytes)" in levels
    assert "rank 0 (across hosts): all_reduce takes recursive (automatic, first at 16 bytes)" in levels


@pytest.mark.parametrize(("layout", "leaving", "reporter", "level"), [
    ("2x2", (2, 3), 0, "across hosts (ranks 0, 2)"),  # the level ranks are 0 and 1: rank 1 is global 2
    ("2x2-interleaved", (2,), 0, "within hosts (ranks 0, 2)"),
])
def test_a_failure_in_either_level_names_global_ranks(layout: str, leaving: tuple[int, ...], reporter: int,
                                                      level: str) -> None:
    def fn(comm: Any) -> Any:
        comm.all_reduce(np.ones(1000))  # the levels are connected
        if comm.rank in leaving:
            comm.close()
            return None
        comm.timeout = 5.0
        try:
            comm.all_reduce(np.ones(1000))
        except collectives.PeerLostError as exc:
            return exc.peer, str(exc)
        except collectives.CollectivesError as exc:
            return None, str(exc)
        return "completed"

    peer, message = run_world(fn, 4, hosts=LAYOUTS[layout], timeout=30)[reporter]
    assert peer == 2 and level in message, message
    assert "rank 2 closed" in message and "rank 1" not in message, message
