"""``comm.split(color, key)``: new communicators of the ranks sharing a color (MPI_Comm_split,
ncclCommSplit), ranked by key, each working on its own while the parent stays usable."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from collectives import InvalidArgumentError
from collectives.testing import run_world


def _split_and_reduce(color_of: Any, key_of: Any = None) -> Any:
    def fn(comm: Any) -> Any:
        r = comm.rank
        sub = comm.split(color_of(r), None if key_of is None else key_of(r))
        if sub is None:
            parent = comm.all_reduce(np.array([1], np.int64))
            return None, int(parent[0])
        with sub:
            x = np.array([r], np.int64)
            sub.all_reduce(x)
            members = sub.all_gather(np.array([r], np.int64))
            answer = (sub.rank, sub.size, int(x[0]), members.tolist())
        parent = comm.all_reduce(np.array([1], np.int64))  # the parent still works, with its own numbers
        return answer, int(parent[0])

    return fn


@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
def test_ranks_of_one_color_form_a_communicator_ranked_by_their_old_rank(world_size: int) -> None:
    results = run_world(_split_and_reduce(lambda r: r % 2), world_size)
    for r, ((sub_rank, sub_size, total, members), parent) in enumerate(results):
        same = [q for q in range(world_size) if q % 2 == r % 2]
        assert (sub_rank, sub_size) == (same.index(r), len(same))
        assert total == sum(same)
        assert members == same
        assert parent == world_size


def test_keys_order_the_new_ranks_and_ties_go_by_old_rank() -> None:
    keys = {0: 5, 1: 1, 2: 5, 3: 0}
    results = run_world(_split_and_reduce(lambda r: 0, keys.get), 4)
    order = [3, 1, 0, 2]  # key 0, key 1, then key 5 twice in rank order
    for r, ((sub_rank, sub_size, _, members), _) in enumerate(results):
        assert sub_rank == order.index(r) and sub_size == 4
        assert members == order


def test_no_color_joins_nothing_and_gets_none() -> None:
    results = run_world(_split_and_reduce(lambda r: None if r == 0 else (-1 if r == 1 else 7)), 4)
    assert results[0] == (None, 4) and results[1] == (None, 4)
    for r in (2, 3):
        assert results[r][0] == (r - 2, 2, 5, [2, 3])


def test_repeated_splits_and_splits_of_splits() -> None:
    def fn(comm: Any) -> Any:
        got = []
        for round_ in range(3):
            halves = comm.split(comm.rank // 2)
            quarter = halves.split(halves.rank)  # each alone
            x = np.array([comm.rank + round_], np.int64)
            halves.all_reduce(x)
            got.append((int(x[0]), quarter.size))
            quarter.close()
            halves.close()
        return got

    results = run_world(fn, 4)
    assert results[0] == results[1] == [(1, 1), (3, 1), (5, 1)]
    assert results[2] == results[3] == [(5, 1), (7, 1), (9, 1)]


@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_split_over_real_processes(transport: str) -> None:
    results = run_world(_split_and_reduce(lambda r: r // 2), 4, transport, timeout=120)
    assert [a for a, _ in results] == [(0, 2, 1, [0, 1]), (1, 2, 1, [0, 1]), (0, 2, 5, [2, 3]), (1, 2, 5, [2, 3])]
    assert all(p == 4 for _, p in results)


@pytest.mark.parametrize(("color", "key", "name"), [(1.5, None, "color"), ("a", None, "color"), (True, None, "color"),
                                                    (0, 2.0, "key")])
def test_bad_colors_and_keys_are_refused_by_name(color: Any, key: Any, name: str) -> None:
    def fn(comm: Any) -> None:
        with pytest.raises(InvalidArgumentError, match=rf"^{name}: expected an int or None"):
            comm.split(color, key)

    run_world(fn, 1)
