"""engines/fold_sink.py: a reducing receive folded piece by piece as its bytes come gives the bits
the fold of the whole message would, however the message is cut (inside an element too), in
either operand order, and from a pending input."""

from __future__ import annotations

import numpy as np
import pytest

from collectives.engines.fold_sink import FoldSink
from collectives.ops import ReduceOp, fold_received, reduce_pair

DTYPES = [np.int8, np.int32, np.float32, np.float64, np.complex128]


def _operands(dtype: type, n: int = 1001) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    a = (rng.standard_normal(n) * 50).astype(dtype)
    b = (rng.standard_normal(n) * 50).astype(dtype)
    if np.dtype(dtype).kind == "f":
        a[:4], b[:4] = [-0.0, 0.0, np.nan, 1.0], [0.0, -0.0, 1.0, np.nan]  # where operand order shows
    return a, b


def _cuts(nbytes: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    cuts = sorted(set(rng.integers(0, nbytes, 25).tolist()) | {0, nbytes, 1, 2, 3})
    return [c for c in cuts if c <= nbytes]


@pytest.mark.parametrize("first", [False, True])
@pytest.mark.parametrize("op", [ReduceOp.SUM, ReduceOp.MAX, ReduceOp.PROD])
@pytest.mark.parametrize("dtype", DTYPES)
def test_folding_as_the_pieces_come_gives_the_whole_folds_bits(dtype: type, op: ReduceOp, first: bool) -> None:
    if op is ReduceOp.MAX and np.dtype(dtype).kind == "c":
        pytest.skip("max is undefined for complex")
    dst, received = _operands(dtype)
    want = dst.copy()
    fold_received(op, want, received, first)
    raw = memoryview(received.tobytes())
    sink = FoldSink(op, dst, first)
    cuts = _cuts(len(raw), seed=dst.itemsize)
    for a, b in zip(cuts, cuts[1:]):
        sink.feed(raw[a:b])
    assert sink.at == dst.size and not sink.carried
    assert dst.tobytes() == want.tobytes()


@pytest.mark.parametrize("first", [False, True])
def test_a_pending_destination_is_folded_from_its_source(first: bool) -> None:
    source, received = _operands(np.float32)
    dst = np.full_like(source, 7.0)  # what the work buffer held: not read
    want = np.empty_like(source)
    reduce_pair(ReduceOp.SUM, received if first else source, source if first else received, want)
    sink = FoldSink(ReduceOp.SUM, dst, first, source)
    raw = memoryview(received.tobytes())
    for a in range(0, len(raw), 999):  # pieces that cut elements
        sink.feed(raw[a : a + 999])
    assert dst.tobytes() == want.tobytes()
