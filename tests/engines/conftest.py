"""Fixtures of the engine tests: ``patient_offers``, by which the express lane's offers to swap by
halves wait long enough for a peer on a slowed machine."""

from __future__ import annotations

import pytest

from collectives.engines import express

PATIENT_OFFER_SECONDS = 20e-3
"""How long an offer to swap by halves (or to push) waits for the peer in the tests that count the
calls so taken. The lane's own wait (``YIELD_SECONDS``, 200 µs, plus a nanosecond for every two bytes)
assumes the peer is scheduled within it; a machine slowed by work outside the test does not keep
that (CI saw every call of a test go the engine's way, every byte right). Those tests are about what
a bound swap moves and when it binds, not about how soon a peer comes, so they give it five
scheduler ticks."""


@pytest.fixture
def patient_offers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offers of the lanes made in this test wait ``PATIENT_OFFER_SECONDS`` (read where each forked
    rank makes its lane, as ``HALF_BYTES`` is)."""
    monkeypatch.setattr(express, "YIELD_SECONDS", PATIENT_OFFER_SECONDS)
