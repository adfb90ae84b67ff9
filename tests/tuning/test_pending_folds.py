"""A pending work buffer's first fold of a range reads the input as a third buffer
(``out = x op received``): the model prices those folds at ``copy_beta`` a byte, where the
copy that the pending buffer saved used to be priced. A non-root reduce copies nothing, so a
schedule whose non-roots only send (the 3-rank tree) costs no copy, and one whose non-roots
fold (the 3-rank ring) costs its folds."""

from __future__ import annotations

import dataclasses

import pytest

from collectives.algorithms.schedule import INPUT, PENDING_COPY_BYTES, Recv, Send
from collectives.tuning import tuner
from collectives.tuning.copies import PENDING_LOCAL_COPIES, third_buffer_folds
from collectives.tuning.profile import Profile, TransportCosts

MiB = 1 << 20
SHM = TransportCosts(3e-6, 1e-5, 1e-10, 2e-11, 6e-6, 5e-11)
PLAIN = Profile({"shm": SHM}, "plain", 0.0)
COPYING = Profile({"shm": dataclasses.replace(SHM, copy_beta=2e-10)}, "copying", 0.0)


def test_only_the_first_fold_of_an_unwritten_range_reads_the_input() -> None:
    steps = [
        (Send(1, 0, 4), Recv(1, 0, 4, reduce=True)),  # 4 elements folded from the input
        (Recv(2, 2, 4, reduce=True),),  # 2 of them written already: 2 from the input
        (Recv(1, 8, 4),),  # overwritten: no fold
        (Recv(2, 8, 4, reduce=True), Recv(2, 0, 4, buf=INPUT, reduce=True)),  # written; not the work buffer
    ]
    assert third_buffer_folds(steps, 4) == (4 + 2) * 4


def test_a_non_root_reduce_copies_nothing_from_the_pending_size() -> None:
    assert PENDING_LOCAL_COPIES["reduce"](3) == 0.0


@pytest.mark.parametrize("algorithm, folded", [("tree", 0.0), ("ring", 1.0)])
def test_the_three_rank_reduce_pays_its_non_roots_folds_from_the_input(algorithm: str, folded: float) -> None:
    n = 4 * MiB
    assert n >= PENDING_COPY_BYTES
    assert tuner.pending_folds("reduce", algorithm, n, 3) == folded * n
    more = tuner.predict("reduce", algorithm, n, 3, "shm", 0, COPYING) - tuner.predict("reduce", algorithm, n, 3, "shm", 0, PLAIN)
    assert more == pytest.approx(folded * n * 2e-10, rel=1e-9, abs=1e-12)


def test_below_the_pending_size_the_whole_copy_is_priced_and_no_folds() -> None:
    n = PENDING_COPY_BYTES // 2
    assert tuner.pending_folds("reduce", "ring", n, 3) == 0
    more = tuner.predict("reduce", "tree", n, 3, "shm", 0, COPYING) - tuner.predict("reduce", "tree", n, 3, "shm", 0, PLAIN)
    assert more == pytest.approx(n * 2e-10, rel=1e-9)


def test_a_reduce_scatter_pays_its_block_out_and_its_folds_from_the_input() -> None:
    n = 4 * MiB
    folds = tuner.pending_folds("reduce_scatter", "ring", n, 3)
    assert folds == pytest.approx(2 * n / 3, abs=2 * 4)  # every block but its first (blocks rounded up)
    more = tuner.predict("reduce_scatter", "ring", n, 3, "shm", 0, COPYING) - tuner.predict(
        "reduce_scatter", "ring", n, 3, "shm", 0, PLAIN)
    assert more == pytest.approx((n / 3 + folds) * 2e-10, rel=1e-6)


@pytest.mark.parametrize("nbytes", [8 * MiB, 32 * MiB])
def test_the_built_in_profile_keeps_the_direct_engine_for_the_large_three_rank_reduce(nbytes: int) -> None:
    times = tuner.fastest("reduce", nbytes, 3, "shm", windows=True)
    assert min(times, key=lambda a: times[a]) == "direct"
    assert tuner.choose("reduce", nbytes, 3, "shm", windows=True) == "direct"
