"""Fixtures shared by test packages: network namespaces as two hosts (``netns_hosts``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from collectives.testing.netns import Host, NamespaceError, two_hosts


@pytest.fixture
def netns_hosts() -> Iterator[list[Host]]:
    """Two network namespaces joined by a veth pair (:func:`collectives.testing.netns.two_hosts`),
    deleted after the test; skipped with the reason where they cannot be made (root, iproute2)."""
    try:
        with two_hosts() as hosts:
            yield hosts
    except NamespaceError as exc:
        pytest.skip(f"cannot create network namespaces here: {exc}")
