"""perf/tcp_send_paths.py: every send path delivers the payload intact and reports both sides' CPU."""

from __future__ import annotations

import sys

import pytest

from perf.tcp_send_paths import measure

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="vmsplice and fork: Linux only")


@pytest.mark.parametrize("path", ["send", "vmsplice"])
def test_a_path_delivers_the_last_payload_intact(path: str) -> None:
    # 3 MiB + 5 bytes: not a multiple of the 2 MiB send piece nor of the 1 MiB pipe.
    result = measure(path, (3 << 20) + 5, 2)
    assert result["ok"] == 1
    for key in ("wall_ms", "send_user", "send_sys", "recv_user", "recv_sys"):
        assert result[key] >= 0  # type: ignore[operator]
    assert result["copied"] is None  # only the zerocopy path reports completions
