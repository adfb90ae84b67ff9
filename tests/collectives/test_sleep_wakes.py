"""The sleep probe (``collectives.sleep_wakes``): a receiver's wake after a long wait it slept through,
against one after a wait it yielded through; what ``collectives-tune`` writes as ``sleep_wake``."""

from __future__ import annotations

import pytest

from collectives import sleep_wakes
from collectives.sleep_wakes import SLEPT_WAIT, Wake
from collectives.transports.progress import YIELD_SECONDS


def test_each_receive_is_paired_with_its_senders_send() -> None:
    """Ranks 0 and 2 send (a send time each), 1 and 3 receive (post, return), in nanoseconds; a fifth rank
    without a peer logs nothing."""
    logs = [[(1_000,), (50_000,)], [(900, 4_000), (49_000, 60_000)], [(2_000,)], [(1_500, 2_500)], []]
    assert sleep_wakes.wakes(logs) == [Wake(3.1, 3.0), Wake(11.0, 10.0), Wake(1.0, 0.5)]


def waits(n: int, waited_us: float, wake_us: float) -> list[Wake]:
    return [Wake(waited_us, wake_us + 0.1 * i) for i in range(n)]


def test_the_fit_is_the_difference_of_the_slept_and_yielded_median_wakes() -> None:
    slept, yielded = SLEPT_WAIT * 1e6 * 1.5, YIELD_SECONDS * 1e6 * 0.6
    between = waits(30, (YIELD_SECONDS + SLEPT_WAIT) / 2 * 1e6, 500.0)  # neither: left out
    fitted = sleep_wakes.fit(waits(21, slept, 50.0) + waits(25, yielded, 5.0) + between)
    assert fitted is not None
    sleep_wake, n_slept, n_yielded = fitted
    assert (n_slept, n_yielded) == (21, 25)
    assert sleep_wake == pytest.approx((51.0 - 6.2) * 1e-6)


def test_too_few_of_either_kind_fit_nothing_and_a_sleep_is_never_cheaper() -> None:
    slept, yielded = SLEPT_WAIT * 1e6 * 2, YIELD_SECONDS * 1e6 / 2
    assert sleep_wakes.fit(waits(19, slept, 50.0) + waits(40, yielded, 5.0)) is None
    assert sleep_wakes.fit(waits(40, slept, 50.0) + waits(19, yielded, 5.0)) is None
    assert sleep_wakes.fit(waits(20, slept, 5.0) + waits(20, yielded, 50.0)) == (0.0, 20, 20)


def test_the_short_delay_is_within_the_yield_window_and_the_long_past_the_slept_wait() -> None:
    short, long = sleep_wakes.DELAYS
    assert short < YIELD_SECONDS / 2 and long > SLEPT_WAIT


@pytest.mark.multiprocess
def test_a_crowded_shm_world_sleeps_through_the_long_waits() -> None:
    """Four ranks on this machine's cores: every receive comes back once per iteration and delay, and the
    long delay's waits outlast it (the receiver cannot return before its sender sends)."""
    measured = sleep_wakes.run(4, "shm", iterations=5)
    assert len(measured) == 2 * 2 * 5  # 2 pairs, 2 delays, 5 iterations
    long_waits = measured[5:10] + measured[15:]  # per pair: the short delay's 5, then the long delay's
    assert all(w.waited_us * 1e-6 >= sleep_wakes.DELAYS[1] * 0.9 for w in long_waits)
    assert all(w.wake_us > 0 for w in measured)
