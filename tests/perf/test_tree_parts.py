"""perf/tree_parts.py: the 4-rank tcp all-reduce, the tree's phases and the recursive schedule's, priced."""

from __future__ import annotations

from collectives.algorithms import recursive, tree
from collectives.tuning.profile import current
from perf import ring_parts, tree_parts


def test_the_tree_all_reduce_is_its_reduce_then_its_broadcast() -> None:
    """The phases timed alone are the whole call's steps, in order (the script's premise)."""
    for rank in range(4):
        whole = list(tree.all_reduce(rank, 4, 1 << 10, 256))
        parts = [*tree.reduce(rank, 4, 0, 1 << 10, 256), *tree.broadcast(rank, 4, 0, 1 << 10, 256)]
        assert whole == parts


def test_the_recursive_all_reduce_at_four_is_halving_then_doubling() -> None:
    blocks = [(i * 256, 256) for i in range(4)]
    for rank in range(4):
        whole = list(recursive.all_reduce(rank, 4, 1 << 10, 256))
        parts = [*recursive.reduce_scatter(rank, 4, blocks, 256), *recursive.all_gather(rank, 4, blocks, 256)]
        assert whole == parts


def test_each_phase_prices_below_its_whole() -> None:
    def row(collective: str, algorithm: str) -> dict[str, object]:
        return {"collective": collective, "algorithm": algorithm, "size": 8 << 20, "ranks": 4}

    for whole, phases in ((("all_reduce", "tree"), (("reduce", "tree"), ("broadcast", "tree"))),
                          (("all_reduce", "recursive"), (("reduce_scatter", "recursive"), ("all_gather", "recursive")))):
        total = ring_parts.price(row(*whole), current(), 2)
        for phase in phases:
            assert 0 < ring_parts.price(row(*phase), current(), 2) < total


def test_the_cases_are_both_schedules_and_their_phases() -> None:
    assert {a for _, a in tree_parts.CASES} == {"tree", "recursive"}
    assert len(tree_parts.CASES) == 6 and tree_parts.RANKS == (4,)
