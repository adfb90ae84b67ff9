"""perf/tcp_pair_loop.py: the compiled loop's all-reduce is exact on both ranks, and it reports its costs."""

from __future__ import annotations

import ctypes
import shutil
import sys

import pytest

from perf.tcp_pair_loop import build, measure_loop

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_RCVLOWAT semantics and fork: Linux only"),
    pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler"),
]


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    return build(str(tmp_path_factory.mktemp("loop")))


@pytest.mark.parametrize(("read", "spin_us"), [(1 << 20, 0), (4096, 100)])
def test_the_loop_sums_both_ranks_exactly(loop: ctypes.CDLL, read: int, spin_us: int) -> None:
    # 2.5 MiB + 12 bytes: an odd number of floats (unequal halves), not a
    # multiple of the 2 MiB piece nor of the read.
    result = measure_loop(loop, (5 << 19) + 12, 2, read, spin_us)
    assert result.ok is True
    assert result.wall_ms > 0
    assert len(result.cpu) == 2
    assert result.calls is not None
    for counts in result.calls:
        sends, recvs, polls = map(int, counts.split("/"))
        assert sends >= 2 and recvs >= 2 and polls >= 1
