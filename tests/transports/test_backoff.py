"""The MPI transport's sleep slices (collectives/transports/backoff.py), on a fake clock."""

from __future__ import annotations

import pytest

from collectives.transports import backoff
from collectives.transports.backoff import Backoff


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.naps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(backoff, "time", fake)
    return fake


def test_short_waits_keep_short_slices(clock: FakeTime) -> None:
    naps = Backoff(first=20e-6, short=1e-3, longest=20e-3)
    while clock.now < 100.016:  # the first 16 ms: as the fixed 1 ms cap did
        naps.sleep(1.0)
    assert clock.naps[:4] == pytest.approx([20e-6, 40e-6, 80e-6, 160e-6])
    assert max(clock.naps) <= 1e-3


def test_a_long_wait_wakes_rarely_and_sees_a_message_late_by_a_share_of_it(clock: FakeTime) -> None:
    naps = Backoff(first=20e-6, short=1e-3, longest=20e-3, share=1 / 16)
    while clock.now < 105.0:  # a peer 5 s late
        naps.sleep(1.0)
    assert len(clock.naps) < 400  # a fixed 1 ms slice: 5000 wake-ups
    assert max(clock.naps) == pytest.approx(20e-3)
    waited = 0.0
    for nap in clock.naps:  # each slice is at most 1/16 of the wait before it, or 1 ms
        assert nap <= max(1e-3, waited / 16) * 2 + 1e-12
        waited += nap


def test_reset_and_timeout(clock: FakeTime) -> None:
    naps = Backoff()
    for _ in range(200):
        naps.sleep(1.0)
    naps.reset()
    naps.sleep(1.0)
    assert clock.naps[-1] == pytest.approx(20e-6)
    naps.sleep(5e-6)
    assert clock.naps[-1] == pytest.approx(5e-6)
