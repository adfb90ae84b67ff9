"""Wrong calls are refused locally, before anything is sent; what users may pass works.

Each bad call runs on rank 0 of a 2-rank world while rank 1 does nothing: the call must
raise at once (a call that sent something or waited on its peer would hang until the
timeout), name the offending argument, and leave the communicator usable with its
sequence numbers untouched — both ranks then run an all_reduce together, which would
mismatch (and time out) had the refused call consumed a number or sent a message.
"""

from __future__ import annotations

import array
import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import collectives
from collectives import InvalidArgumentError, InvalidTypeError, ReduceOp, Work
from collectives.testing import RankError, run_world

COMM_TIMEOUT = 10.0  # a call that wrongly waits on the idle peer fails within this
IMMEDIATE = 2.0  # seconds a refused call may take


def _ro(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _strided(n: int, dtype: Any = np.float32) -> np.ndarray:
    return np.zeros(2 * n, dtype=dtype)[::2]


def f32(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float32)


class _CudaArray:
    """What a cupy or numba device array shows: __cuda_array_interface__, no host buffer."""

    __cuda_array_interface__ = {"shape": (4,), "typestr": "<f4", "data": (1 << 40, False), "version": 3}


class _DlpackOn:
    """A DLPack producer on the given device type (2: CUDA, 10: ROCm)."""

    def __init__(self, device_type: int) -> None:
        self.device_type = device_type

    def __dlpack_device__(self) -> tuple[int, int]:
        return (self.device_type, 0)

    def __dlpack__(self, **kwargs: Any) -> Any:
        raise BufferError("device memory")


# (id, call made by rank 0 of a 2-rank world, error type, argument the message names)
BAD_CALLS: list[tuple[str, Callable[[Any], Any], type[Exception], str]] = [
    # all_reduce
    ("all_reduce-x-noncontiguous", lambda c: c.all_reduce(_strided(4)), InvalidArgumentError, "x"),
    ("all_reduce-x-fortran-2d", lambda c: c.all_reduce(np.asfortranarray(np.zeros((3, 2), np.float32))),
     InvalidArgumentError, "x"),
    ("all_reduce-x-readonly", lambda c: c.all_reduce(_ro(f32(4))), InvalidArgumentError, "x"),
    ("all_reduce-x-bytes-readonly", lambda c: c.all_reduce(b"abcd"), InvalidArgumentError, "x"),
    ("all_reduce-x-bool", lambda c: c.all_reduce(np.zeros(4, np.bool_)), InvalidTypeError, "x"),
    ("all_reduce-x-object", lambda c: c.all_reduce(np.empty(4, object)), InvalidTypeError, "x"),
    ("all_reduce-x-str", lambda c: c.all_reduce(np.array(["ab", "cd"])), InvalidTypeError, "x"),
    ("all_reduce-x-longdouble", lambda c: c.all_reduce(np.zeros(4, np.longdouble)), InvalidTypeError, "x"),
    ("all_reduce-x-datetime", lambda c: c.all_reduce(np.zeros(4, "datetime64[s]")), InvalidTypeError, "x"),
    ("all_reduce-x-list", lambda c: c.all_reduce([1.0, 2.0]), InvalidTypeError, "x"),
    ("all_reduce-x-none", lambda c: c.all_reduce(None), InvalidTypeError, "x"),
    ("all_reduce-x-cuda-array-interface", lambda c: c.all_reduce(_CudaArray()), InvalidArgumentError, "x"),
    ("all_reduce-x-dlpack-cuda", lambda c: c.all_reduce(_DlpackOn(2)), InvalidArgumentError, "x"),
    ("all_gather-out-dlpack-rocm", lambda c: c.all_gather(f32(2), _DlpackOn(10)), InvalidArgumentError, "out"),
    ("all_reduce-out-dtype", lambda c: c.all_reduce(f32(4), out=np.zeros(4, np.float64)), InvalidTypeError, "out"),
    ("all_reduce-out-count", lambda c: c.all_reduce(f32(4), out=f32(5)), InvalidArgumentError, "out"),
    ("all_reduce-out-readonly", lambda c: c.all_reduce(f32(4), out=_ro(f32(4))), InvalidArgumentError, "out"),
    ("all_reduce-out-overlaps-x", lambda c: (lambda b: c.all_reduce(b[:4], out=b[2:6]))(f32(8)),
     InvalidArgumentError, "out"),
    ("all_reduce-band-float", lambda c: c.all_reduce(f32(4), op=ReduceOp.BAND), InvalidTypeError, "op"),
    ("all_reduce-bor-float16", lambda c: c.all_reduce(np.zeros(4, np.float16), op="bor"), InvalidTypeError, "op"),
    ("all_reduce-bxor-complex", lambda c: c.all_reduce(np.zeros(4, np.complex64), op=ReduceOp.BXOR),
     InvalidTypeError, "op"),
    ("all_reduce-min-complex", lambda c: c.all_reduce(np.zeros(4, np.complex128), op=ReduceOp.MIN),
     InvalidTypeError, "op"),
    ("all_reduce-max-complex", lambda c: c.all_reduce(np.zeros(4, np.complex64), op="max"), InvalidTypeError, "op"),
    ("all_reduce-op-unknown", lambda c: c.all_reduce(f32(4), op="median"), InvalidArgumentError, "op"),
    ("all_reduce-op-int", lambda c: c.all_reduce(f32(4), op=3), InvalidArgumentError, "op"),
    ("all_reduce-algorithm-unknown", lambda c: c.all_reduce(f32(4), algorithm="butterfly"),
     InvalidArgumentError, "algorithm"),
    # reduce_scatter
    ("reduce_scatter-x-not-multiple", lambda c: c.reduce_scatter(f32(5)), InvalidArgumentError, "x"),
    ("reduce_scatter-out-length", lambda c: c.reduce_scatter(f32(6), np.zeros(2, np.float32)),
     InvalidArgumentError, "out"),
    ("reduce_scatter-out-readonly", lambda c: c.reduce_scatter(f32(6), _ro(np.zeros(3, np.float32))),
     InvalidArgumentError, "out"),
    ("reduce_scatter-out-noncontiguous", lambda c: c.reduce_scatter(f32(6), _strided(3)), InvalidArgumentError, "out"),
    ("reduce_scatter-out-dtype", lambda c: c.reduce_scatter(f32(6), np.zeros(3, np.float64)), InvalidTypeError, "out"),
    ("reduce_scatter-x-noncontiguous", lambda c: c.reduce_scatter(_strided(6)), InvalidArgumentError, "x"),
    ("reduce_scatter-band-float", lambda c: c.reduce_scatter(f32(6), op="band"), InvalidTypeError, "op"),
    # all_gather
    ("all_gather-out-length", lambda c: c.all_gather(f32(3), np.zeros(5, np.float32)), InvalidArgumentError, "out"),
    ("all_gather-out-readonly", lambda c: c.all_gather(f32(3), _ro(np.zeros(6, np.float32))),
     InvalidArgumentError, "out"),
    ("all_gather-out-noncontiguous", lambda c: c.all_gather(f32(3), _strided(6)), InvalidArgumentError, "out"),
    ("all_gather-out-dtype", lambda c: c.all_gather(f32(3), np.zeros(6, np.int32)), InvalidTypeError, "out"),
    ("all_gather-out-unsupported", lambda c: c.all_gather(f32(3), np.zeros(6, np.bool_)), InvalidTypeError, "out"),
    ("all_gather-x-noncontiguous", lambda c: c.all_gather(_strided(3)), InvalidArgumentError, "x"),
    # broadcast
    ("broadcast-root-too-big", lambda c: c.broadcast(f32(4), root=2), InvalidArgumentError, "root"),
    ("broadcast-root-negative", lambda c: c.broadcast(f32(4), root=-1), InvalidArgumentError, "root"),
    ("broadcast-root-float", lambda c: c.broadcast(f32(4), root=1.0), InvalidArgumentError, "root"),
    ("broadcast-root-bool", lambda c: c.broadcast(f32(4), root=True), InvalidArgumentError, "root"),
    ("broadcast-x-readonly-nonroot", lambda c: c.broadcast(_ro(f32(4)), root=1), InvalidArgumentError, "x"),
    ("broadcast-x-noncontiguous", lambda c: c.broadcast(_strided(4), root=0), InvalidArgumentError, "x"),
    ("broadcast-out-dtype", lambda c: c.broadcast(f32(4), out=np.zeros(4, np.float64)), InvalidTypeError, "out"),
    ("broadcast-out-count", lambda c: c.broadcast(f32(4), root=1, out=f32(5)), InvalidArgumentError, "out"),
    ("broadcast-out-readonly", lambda c: c.broadcast(f32(4), out=_ro(f32(4))), InvalidArgumentError, "out"),
    ("broadcast-out-overlaps-x", lambda c: (lambda b: c.broadcast(b[:4], out=b[2:6]))(f32(8)),
     InvalidArgumentError, "out"),
    # reduce
    ("reduce-root-too-big", lambda c: c.reduce(f32(4), root=5), InvalidArgumentError, "root"),
    ("reduce-root-negative", lambda c: c.reduce(f32(4), root=-2), InvalidArgumentError, "root"),
    ("reduce-x-readonly-root", lambda c: c.reduce(_ro(f32(4)), root=0), InvalidArgumentError, "x"),
    ("reduce-min-complex", lambda c: c.reduce(np.zeros(4, np.complex64), root=1, op="min"), InvalidTypeError, "op"),
    ("reduce-out-dtype-root", lambda c: c.reduce(f32(4), root=0, out=np.zeros(4, np.float64)), InvalidTypeError, "out"),
    ("reduce-out-count-root", lambda c: c.reduce(f32(4), root=0, out=f32(3)), InvalidArgumentError, "out"),
    ("reduce-out-overlaps-x", lambda c: (lambda b: c.reduce(b[:4], root=0, out=b[1:5]))(f32(8)),
     InvalidArgumentError, "out"),
    # gather
    ("gather-root-too-big", lambda c: c.gather(f32(3), root=2), InvalidArgumentError, "root"),
    ("gather-out-length-root", lambda c: c.gather(f32(3), np.zeros(3, np.float32), root=0),
     InvalidArgumentError, "out"),
    ("gather-out-readonly-root", lambda c: c.gather(f32(3), _ro(np.zeros(6, np.float32)), root=0),
     InvalidArgumentError, "out"),
    ("gather-out-noncontiguous-root", lambda c: c.gather(f32(3), _strided(6), root=0), InvalidArgumentError, "out"),
    ("gather-out-dtype-root", lambda c: c.gather(f32(3), np.zeros(6, np.float16), root=0), InvalidTypeError, "out"),
    # scatter
    ("scatter-root-too-big", lambda c: c.scatter(f32(6), np.zeros(3, np.float32), root=2),
     InvalidArgumentError, "root"),
    ("scatter-x-length-root", lambda c: c.scatter(f32(5), np.zeros(3, np.float32), root=0), InvalidArgumentError, "x"),
    ("scatter-out-readonly", lambda c: c.scatter(f32(6), _ro(np.zeros(3, np.float32)), root=0),
     InvalidArgumentError, "out"),
    ("scatter-out-readonly-nonroot", lambda c: c.scatter(None, _ro(np.zeros(3, np.float32)), root=1),
     InvalidArgumentError, "out"),
    ("scatter-out-noncontiguous", lambda c: c.scatter(f32(6), _strided(3), root=0), InvalidArgumentError, "out"),
    ("scatter-x-dtype-root", lambda c: c.scatter(np.zeros(6, np.int64), np.zeros(3, np.float32), root=0),
     InvalidTypeError, "x"),
    # all_to_all
    ("all_to_all-x-not-multiple", lambda c: c.all_to_all(f32(5)), InvalidArgumentError, "x"),
    ("all_to_all-out-length", lambda c: c.all_to_all(f32(6), np.zeros(4, np.float32)), InvalidArgumentError, "out"),
    ("all_to_all-out-readonly", lambda c: c.all_to_all(f32(6), _ro(np.zeros(6, np.float32))),
     InvalidArgumentError, "out"),
    ("all_to_all-out-noncontiguous", lambda c: c.all_to_all(f32(6), _strided(6)), InvalidArgumentError, "out"),
    ("all_to_all-out-dtype", lambda c: c.all_to_all(f32(6), np.zeros(6, np.complex64)), InvalidTypeError, "out"),
    # all_to_all_v (rank 0 of 2 ranks)
    ("all_to_all_v-in_splits-length", lambda c: c.all_to_all_v(f32(3), [1, 1, 1], [1, 2]), InvalidArgumentError,
     "in_splits"),
    ("all_to_all_v-out_splits-length", lambda c: c.all_to_all_v(f32(3), [1, 2], [1]), InvalidArgumentError,
     "out_splits"),
    ("all_to_all_v-in_splits-negative", lambda c: c.all_to_all_v(f32(3), [4, -1], [4, 0]), InvalidArgumentError,
     "in_splits[1]"),
    ("all_to_all_v-out_splits-float", lambda c: c.all_to_all_v(f32(3), [1, 2], [1, 2.0]), InvalidArgumentError,
     "out_splits[1]"),
    ("all_to_all_v-in_splits-bool", lambda c: c.all_to_all_v(f32(3), [True, 2], [1, 2]), InvalidArgumentError,
     "in_splits[0]"),
    ("all_to_all_v-in_splits-none", lambda c: c.all_to_all_v(f32(3), None, [1, 2]), InvalidArgumentError,
     "in_splits"),
    ("all_to_all_v-x-sum", lambda c: c.all_to_all_v(f32(4), [1, 2], [1, 2]), InvalidArgumentError, "x"),
    ("all_to_all_v-self-mismatch", lambda c: c.all_to_all_v(f32(3), [1, 2], [2, 2]), InvalidArgumentError,
     "out_splits[0]"),
    ("all_to_all_v-out-length", lambda c: c.all_to_all_v(f32(3), [1, 2], [1, 2], np.zeros(4, np.float32)),
     InvalidArgumentError, "out"),
    ("all_to_all_v-out-dtype", lambda c: c.all_to_all_v(f32(3), [1, 2], [1, 2], np.zeros(3, np.int32)),
     InvalidTypeError, "out"),
    ("all_to_all_v-out-readonly", lambda c: c.all_to_all_v(f32(3), [1, 2], [1, 2], _ro(np.zeros(3, np.float32))),
     InvalidArgumentError, "out"),
    ("all_to_all_v-out-overlaps-x", lambda c: (lambda b: c.all_to_all_v(b[:3], [1, 2], [1, 2], b[1:4]))(f32(6)),
     InvalidArgumentError, "out"),
    ("all_to_all_v-algorithm-unknown", lambda c: c.all_to_all_v(f32(3), [1, 2], [1, 2], algorithm="spiral"),
     InvalidArgumentError, "algorithm"),
    ("async-all_to_all_v-x-sum", lambda c: c.all_to_all_v(f32(2), [1, 2], [1, 2], async_op=True),
     InvalidArgumentError, "x"),
    # point to point
    ("send-to-self", lambda c: c.send(f32(2), 0), InvalidArgumentError, "dst"),
    ("recv-from-self", lambda c: c.recv(f32(2), 0), InvalidArgumentError, "src"),
    ("send-dst-too-big", lambda c: c.send(f32(2), 2), InvalidArgumentError, "dst"),
    ("send-dst-negative", lambda c: c.send(f32(2), -1), InvalidArgumentError, "dst"),
    ("recv-src-too-big", lambda c: c.recv(f32(2), 7), InvalidArgumentError, "src"),
    ("send-tag-negative", lambda c: c.send(f32(2), 1, tag=-1), InvalidArgumentError, "tag"),
    ("send-tag-too-big", lambda c: c.send(f32(2), 1, tag=1 << 40), InvalidArgumentError, "tag"),
    ("recv-tag-str", lambda c: c.recv(f32(2), 1, tag="a"), InvalidArgumentError, "tag"),
    ("recv-x-readonly", lambda c: c.recv(_ro(f32(2)), 1), InvalidArgumentError, "x"),
    ("send-x-unsupported", lambda c: c.send(np.zeros(2, np.bool_), 1), InvalidTypeError, "x"),
    # async: refused at the call, not later through the Work
    ("async-all_reduce-x-readonly", lambda c: c.all_reduce(_ro(f32(4)), async_op=True), InvalidArgumentError, "x"),
    ("async-all_gather-out-length", lambda c: c.all_gather(f32(3), np.zeros(2, np.float32), async_op=True),
     InvalidArgumentError, "out"),
    ("async-broadcast-root", lambda c: c.broadcast(f32(3), root=9, async_op=True), InvalidArgumentError, "root"),
]


def _collective(case: str) -> str:
    """The collective a BAD_CALLS id names."""
    return case.removeprefix("async-").split("-")[0]


def _names_argument(message: str, name: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", message) is not None


def _good_all_reduces(comm: Any) -> None:
    for op in (ReduceOp.SUM, "sum", "band"):
        for dtype in (np.float32, np.float16, np.int32, np.int64):
            if op != "band" or np.dtype(dtype).kind == "i":
                comm.all_reduce(np.zeros(4, dtype), op=op)
    comm.all_reduce(f32(4), out=f32(4))


def _good_all_gathers(comm: Any) -> None:
    for k in (2, 3):
        comm.all_gather(f32(k), np.zeros(k * comm.size, np.float32))


def _good_reduce_scatters(comm: Any) -> None:
    for op in (ReduceOp.SUM, "sum"):
        comm.reduce_scatter(f32(6), np.zeros(3, np.float32), op=op)
        comm.reduce_scatter(f32(6), op=op)


def _good_broadcasts(comm: Any) -> None:
    for root in range(comm.size):
        for k in (3, 4):
            comm.broadcast(f32(k), root=root)


def _good_reduces(comm: Any) -> None:
    for root in range(comm.size):
        for op in (ReduceOp.SUM, "sum"):
            comm.reduce(f32(4), root=root, op=op)
        comm.reduce(np.zeros(4, np.complex64), root=root)


def _good_all_to_alls(comm: Any) -> None:
    comm.all_to_all(f32(6), np.zeros(6, np.float32))
    comm.all_to_all(f32(6))


# Valid calls of the shapes, dtypes and ops the bad calls use, per collective with a fast
# path: they leave the plans that later calls of those shapes take.
GOOD_CALLS = {"all_reduce": _good_all_reduces, "all_gather": _good_all_gathers,
              "reduce_scatter": _good_reduce_scatters, "broadcast": _good_broadcasts, "reduce": _good_reduces,
              "all_to_all": _good_all_to_alls}
FAST_PATH_CALLS = [c for c in BAD_CALLS if _collective(c[0]) in GOOD_CALLS]


Refusal = tuple[str, float, list[list[int]]]
"""What went wrong with one bad call on rank 0 ("" if it was refused as it must be), the seconds
it took, and each rank's follow-up all_reduce."""


def _refusal(comm: Any, bad_call: Callable[[Any], Any], error: type[Exception], name: str) -> str:
    """What is wrong with how ``bad_call`` went ("" if it raised ``error`` naming ``name``)."""
    try:
        bad_call(comm)
    except error as exc:
        return "" if _names_argument(str(exc), name) else f"message does not name {name!r}: {exc}"
    except Exception as exc:  # noqa: BLE001 - reported to the test as it is
        return f"raised {type(exc).__name__}, not {error.__name__}: {exc}"
    return "returned"


def refused_in_turn(cases: list[tuple[str, Callable[[Any], Any], type[Exception], str, Callable[[Any], Any]]],
                    transport: str) -> dict[str, Refusal]:
    """Many bad calls in turn in one 2-rank world (a world started per call was most of these
    tests' time): for each ``(id, bad_call, error, name, warm_up)``, both ranks run ``warm_up``,
    rank 0 makes ``bad_call``, which must raise ``error`` naming ``name`` at once, and rank 1
    makes none; then both all_reduce together, which mismatches or times out, here and in
    every later case, had the refused call consumed a sequence number or sent a message."""

    def fn(comm: Any) -> dict[str, tuple[str, float, list[int]]]:
        comm.timeout = COMM_TIMEOUT
        seen = {}
        for case, bad_call, error, name, warm_up in cases:
            warm_up(comm)
            what, elapsed = "", 0.0
            if comm.rank == 0:
                start = time.monotonic()
                what = _refusal(comm, bad_call, error, name)
                elapsed = time.monotonic() - start
            x = np.array([comm.rank + 1, 10 * (comm.rank + 1)], dtype=np.int64)
            comm.all_reduce(x)
            seen[case] = (what, elapsed, x.tolist())
        return seen

    ranks = run_world(fn, 2, transport, timeout=COMM_TIMEOUT + 5 * len(cases))
    return {case: (what, elapsed, [rank[case][2] for rank in ranks]) for case, (what, elapsed, _) in ranks[0].items()}


ALL_REDUCE_CALLS = [c for c in FAST_PATH_CALLS if _collective(c[0]) == "all_reduce"]


@pytest.fixture(scope="module")
def refusals() -> Callable[[str, str], dict[str, Refusal]]:
    """``refused_in_turn`` of BAD_CALLS in threads ("inproc", "": no calls before), of
    FAST_PATH_CALLS over shared memory with the fast path in C or in Python ("shm", "c" or
    "python"), and of ALL_REDUCE_CALLS over TCP ("tcp", ""): each world run once for the
    module, each case then asserted by its own test."""
    done: dict[tuple[str, str], dict[str, Refusal]] = {}

    def get(transport: str, fast_path: str) -> dict[str, Refusal]:
        if (transport, fast_path) not in done:
            if transport == "inproc":
                cases = [(*c, _no_calls) for c in BAD_CALLS]
            else:
                calls = FAST_PATH_CALLS if transport == "shm" else ALL_REDUCE_CALLS
                cases = [(*c, GOOD_CALLS[_collective(c[0])]) for c in calls]
            with pytest.MonkeyPatch.context() as env:
                if fast_path == "python":
                    env.setenv("COLLECTIVES_PURE_PYTHON", "1")
                elif fast_path == "c":
                    env.delenv("COLLECTIVES_PURE_PYTHON", raising=False)
                done[transport, fast_path] = refused_in_turn(cases, transport)
        return done[transport, fast_path]

    return get


def _no_calls(comm: Any) -> None:
    pass


def _assert_refused(refusal: Refusal) -> None:
    what, elapsed, follow_ups = refusal
    assert what == "", what
    assert elapsed < IMMEDIATE, f"the refused call took {elapsed:.2f} s"
    assert follow_ups == [[3, 30]] * 2, "the follow-up all_reduce saw traffic from the refused call"


def refused_on_one_rank(bad_call: Callable[[Any], Any], error: type[Exception], name: str) -> None:
    """``bad_call`` refused on rank 0 of a world of threads of its own (``refused_in_turn``)."""
    _assert_refused(refused_in_turn([("call", bad_call, error, name, _no_calls)], "inproc")["call"])


@pytest.mark.parametrize("case", [c[0] for c in BAD_CALLS])
def test_bad_input_is_refused_before_anything_is_sent(
    case: str, refusals: Callable[[str, str], dict[str, Refusal]],
) -> None:
    _assert_refused(refusals("inproc", "")[case])


@pytest.mark.parametrize("case", [c[0] for c in FAST_PATH_CALLS])
@pytest.mark.parametrize("fast_path", ["c", "python"])
def test_bad_call_is_refused_after_good_calls_of_its_shape(
    case: str, fast_path: str, refusals: Callable[[str, str], dict[str, Refusal]],
) -> None:
    """Repeated small all_reduces, all_gathers, reduce_scatters, broadcasts, reduces and
    all_to_alls skip the general dispatch (shared memory); they must skip none of its
    checks, in C (collectives/_fast_c.c) or in Python (COLLECTIVES_PURE_PYTHON=1)."""
    _assert_refused(refusals("shm", fast_path)[case])


@pytest.mark.parametrize("case", [c[0] for c in ALL_REDUCE_CALLS])
def test_bad_all_reduce_is_refused_after_good_calls_over_tcp(
    case: str, refusals: Callable[[str, str], dict[str, Refusal]],
) -> None:
    """Off shared memory, repeated short all_reduces run kept schedules: same checks."""
    _assert_refused(refusals("tcp", "")[case])


def test_error_types_are_value_and_type_errors() -> None:
    assert issubclass(InvalidArgumentError, ValueError)
    assert issubclass(InvalidTypeError, TypeError)

    def fn(comm: Any) -> None:
        with pytest.raises(ValueError):
            comm.all_reduce(_ro(f32(2)))
        with pytest.raises(TypeError):
            comm.all_reduce(f32(2), op="band")

    run_world(fn, 1)


# -- what users may pass ----------------------------------------------------------------------


def test_buffer_protocol_objects_work_as_inputs_and_outputs() -> None:
    def fn(comm: Any) -> dict[str, Any]:
        r = comm.rank
        got: dict[str, Any] = {}
        ba = bytearray([200, 1 + r, 7])  # uint8: 200 + 200 wraps to 144
        assert comm.all_reduce(ba) is ba
        got["bytearray"] = bytes(ba)
        arr_d = array.array("d", [0.5 + r, -1.0, 2.0 * r])
        comm.all_reduce(arr_d, op=ReduceOp.MAX)
        got["array_d"] = arr_d.tolist()
        arr_i = array.array("i", [r, -r])
        out = comm.all_gather(arr_i)  # a new output for a buffer-protocol input
        got["gather_i"] = np.asarray(out).tolist()
        dst = array.array("i", [0] * 4)
        assert comm.all_gather(arr_i, dst) is dst
        got["gather_into_array"] = dst.tolist()
        got["gather_bytes"] = np.asarray(comm.all_gather(b"ab" if r == 0 else b"cd")).tobytes()  # read-only input
        mv = memoryview(np.array([1.5, 2.5 * r], dtype=np.float64))
        comm.all_reduce(mv)
        got["memoryview"] = list(mv)
        two_d = np.arange(6, dtype=np.int16).reshape(2, 3) + r
        assert comm.all_reduce(two_d) is two_d
        got["2d"] = two_d.tolist()
        return got

    a, b = run_world(fn, 2)
    assert a == b
    assert a["bytearray"] == bytes([144, 3, 14])
    assert a["array_d"] == [1.5, -1.0, 2.0]
    assert a["gather_i"] == [0, 0, 1, -1]
    assert a["gather_into_array"] == [0, 0, 1, -1]
    assert a["gather_bytes"] == b"abcd"
    assert a["memoryview"] == [3.0, 2.5]
    assert a["2d"] == [[1, 3, 5], [7, 9, 11]]


def test_read_only_inputs_where_nothing_is_written() -> None:
    """A non-root's x in reduce, the root's x in broadcast and x of an all_reduce into
    ``out`` are only read."""

    def fn(comm: Any) -> tuple[Any, Any, Any]:
        r = comm.rank
        x = np.array([1.0, 2.0], np.float32) * (r + 1)
        if r != 0:
            x = _ro(x)
        comm.reduce(x, root=0)
        y = _ro(np.array([5, 6], np.int32)) if r == 1 else np.zeros(2, np.int32)
        comm.broadcast(y, root=1)
        z = _ro(np.array([r, 10 * r], np.int64))
        out = np.full(2, -1, np.int64)
        assert comm.all_reduce(z, out=out) is out
        return x.tolist(), y.tolist(), (z.tolist(), out.tolist())

    results = run_world(fn, 3)
    assert results[0] == ([6.0, 12.0], [5, 6], ([0, 0], [3, 30]))
    assert results[1] == ([2.0, 4.0], [5, 6], ([1, 10], [3, 30]))
    assert results[2] == ([3.0, 6.0], [5, 6], ([2, 20], [3, 30]))


def test_broadcast_into_out_fills_every_ranks_out_and_reads_x_on_the_root_only() -> None:
    """ncclBroadcast's sendbuff and recvbuff: ``out`` gets the root's ``x`` on every rank, x is
    left as it was (read-only x on the other ranks too), and repeated calls (the fast path)
    do the same, in place where ``out`` is ``x``."""

    def fn(comm: Any) -> list[Any]:
        r, got = comm.rank, []
        for i in range(3):
            x = _ro(np.arange(5, dtype=np.float64) + 10 * r + i)
            out = np.full((5,), -1.0)
            assert comm.broadcast(x, root=1, out=out) is out
            y = np.full((2, 3), float(r + i), np.float32)
            assert comm.broadcast(y, root=0, out=y) is y
            got.append((out.tolist(), x.tolist(), y.tolist()))
        return got

    for r, rounds in enumerate(run_world(fn, 3)):
        for i, (out, x, y) in enumerate(rounds):
            assert out == [10.0 + i + k for k in range(5)]
            assert x == [10.0 * r + i + k for k in range(5)]
            assert y == [[float(i)] * 3] * 2


def test_reduce_into_out_leaves_x_and_uses_out_on_the_root_only() -> None:
    """MPI_Reduce's recvbuf: the root's ``out`` gets the reduction, every ``x`` (read-only
    ones too) is left as it was, and ``out`` is not touched elsewhere."""

    def fn(comm: Any) -> list[Any]:
        x = _ro(np.arange(4, dtype=np.int64) * (comm.rank + 1))
        out = np.full(4, -1, np.int64)
        got = comm.reduce(x, root=1, op="sum", out=out)
        return [got is out, out.tolist(), x.tolist()]

    results = run_world(fn, 3)
    assert results[1] == [True, [0, 6, 12, 18], [0, 2, 4, 6]]
    for r in (0, 2):
        assert results[r] == [False, [-1] * 4, [k * (r + 1) for k in range(4)]]


def test_torch_tensors_when_torch_is_installed() -> None:
    torch = pytest.importorskip("torch")

    def fn(comm: Any) -> list[Any]:
        r = comm.rank
        t = torch.tensor([1, 2, 3], dtype=torch.int32) * (r + 1)
        assert comm.all_reduce(t) is t
        b = torch.tensor([0.5, 1.5], dtype=torch.bfloat16) * (r + 1)
        comm.all_reduce(b)
        g = comm.all_gather(torch.tensor([r], dtype=torch.float64))
        assert isinstance(g, torch.Tensor), "an output allocated for a tensor input is a tensor"
        o = torch.zeros(3, dtype=torch.int32)
        assert comm.all_reduce(t, out=o, async_op=True).wait() is o  # out= takes tensors too
        assert torch.equal(o, t * comm.size)
        with pytest.raises(InvalidArgumentError, match="x"):
            comm.all_reduce(torch.zeros(4, 4)[:, 0])
        return [t.tolist(), b.float().tolist(), g.tolist()]

    a, b = run_world(fn, 2)
    assert a == b == [[3, 6, 9], [1.5, 4.5], [0.0, 1.0]]


def test_repeated_calls_with_torch_tensors_match_arrays_and_return_the_tensors() -> None:
    """Repeated small calls with CPU tensors take the arrays' fast paths (views of the
    tensors): the results land in the tensors, and match what arrays get."""
    torch = pytest.importorskip("torch")

    def fn(comm: Any) -> list[Any]:
        r, p = comm.rank, comm.size
        got = []
        for i in range(4):  # the first call of each shape checks in full, then the kept plans
            x = torch.arange(6, dtype=torch.float32) * (r + 1) + i
            out = torch.zeros(6)
            assert comm.all_reduce(x, out=out) is out and comm.all_reduce(x, op="max") is x
            rs = torch.zeros(6 // p)
            assert comm.reduce_scatter(torch.arange(6, dtype=torch.float32) + r + i, rs) is rs
            ag = torch.zeros(2 * p, dtype=torch.int64)
            assert comm.all_gather(torch.tensor([r, i]), ag) is ag
            b = torch.full((3,), float(r + i))
            assert comm.broadcast(b, root=p - 1) is b
            bo = torch.zeros(3)
            assert comm.broadcast(torch.full((3,), float(r + 1 + i)), root=0, out=bo) is bo
            assert bo.tolist() == [1.0 + i] * 3
            arrays = [np.arange(6, dtype=np.float32) * (r + 1) + i, np.zeros(6, np.float32)]
            comm.all_reduce(arrays[0], out=arrays[1])
            got.append((out.tolist() == arrays[1].tolist(), x.tolist(), rs.tolist(), ag.tolist(), b.tolist()))
        return got

    for rank, got in enumerate(run_world(fn, 3, "shm")):
        for i, (same, x, rs, ag, b) in enumerate(got):
            assert same
            assert x == [3 * k + i for k in range(6)]
            assert rs == [3 * (2 * rank + k) + 3 + 3 * i for k in range(2)]
            assert ag == [0, i, 1, i, 2, i]
            assert b == [float(2 + i)] * 3


def test_lazily_conjugated_tensors_are_refused() -> None:
    """``t.conj()`` of a complex tensor is a view whose memory holds the unconjugated
    values: reading its bytes would send the wrong numbers."""
    torch = pytest.importorskip("torch")
    refused_on_one_rank(lambda c: c.all_reduce(torch.ones(2, dtype=torch.complex64).conj()), InvalidArgumentError, "x")
    refused_on_one_rank(lambda c: c.all_gather(torch.ones(2, dtype=torch.complex64),
                                               torch.zeros(4, dtype=torch.complex64).conj()), InvalidArgumentError, "out")


# -- async ------------------------------------------------------------------------------------


def test_async_op_returns_work_whose_wait_returns_the_result() -> None:
    def fn(comm: Any) -> list[Any]:
        r = comm.rank
        x = np.array([r + 1, 2 * (r + 1)], dtype=np.int32)
        w1 = comm.all_reduce(x, async_op=True)
        assert isinstance(w1, Work)
        out = np.zeros(4, np.float64)
        w2 = comm.all_gather(np.array([r, r + 0.5]), out, async_op=True)
        y = np.array([r * 10], np.int64)
        w3 = comm.broadcast(y, root=1, async_op=True)
        z = np.array([3 - r], np.int8)
        comm.all_reduce(z, op="max")  # a synchronous call queues behind the async ones
        got1 = w1.wait(timeout=COMM_TIMEOUT)
        assert got1 is x
        assert w2.wait() is out
        assert w3.wait() is y
        for w in (w1, w2, w3):
            assert w.is_completed()
        return [x.tolist(), out.tolist(), y.tolist(), z.tolist()]

    results = run_world(fn, 2)
    assert results[0] == results[1] == [[3, 6], [0.0, 0.5, 1.0, 1.5], [10], [3]]


def test_async_gather_returns_none_off_root() -> None:
    def fn(comm: Any) -> Any:
        work = comm.gather(np.array([comm.rank], np.int16), root=1, async_op=True)
        return work.wait()

    results = run_world(fn, 3)
    assert results[0] is None and results[2] is None
    assert results[1].tolist() == [0, 1, 2]


# -- point to point ---------------------------------------------------------------------------


def test_send_recv_tags_match_in_order() -> None:
    def fn(comm: Any) -> list[list[int]]:
        if comm.rank == 0:
            comm.send(np.array([1, 1], np.int32), 1, tag=1)  # A
            comm.send(np.array([2, 2], np.int32), 1, tag=2)  # B
            comm.send(np.array([3, 3], np.int32), 1, tag=1)  # C
            comm.send(np.array([4, 4], np.int32), 1)  # D, default tag 0
            return []
        got = []
        for tag in (2, 0, 1, 1):
            x = np.zeros(2, np.int32)
            assert comm.recv(x, 0, tag=tag) is x
            got.append(x.tolist())
        return got

    _, received = run_world(fn, 2)
    # tag 2 first although sent second; the two tag-1 messages in the order they were sent
    assert received == [[2, 2], [4, 4], [1, 1], [3, 3]]


def test_send_recv_interleave_with_collectives() -> None:
    def fn(comm: Any) -> list[Any]:
        r = comm.rank
        x = np.full(3, r + 1, np.float64)
        if r == 0:
            comm.send(np.array([7.0, 8.0, 9.0]), 1, tag=5)
        comm.all_reduce(x)
        if r == 1:
            y = np.zeros(3)
            comm.recv(y, 0, tag=5)
            return [x.tolist(), y.tolist()]
        return [x.tolist()]

    a, b = run_world(fn, 2)
    assert a == [[3.0, 3.0, 3.0]]
    assert b == [[3.0, 3.0, 3.0], [7.0, 8.0, 9.0]]


def test_run_world_reports_the_failing_rank() -> None:
    """The harness used above re-raises a rank's error naming it (so the tests above fail
    when a rank's assertion fails)."""

    def fn(comm: Any) -> None:
        if comm.rank == 1:
            raise AssertionError("boom")

    with pytest.raises(RankError, match="rank 1") as info:
        run_world(fn, 2)
    assert info.value.rank == 1


def test_single_rank_world_refuses_too() -> None:
    comm = collectives.init(0, 1, collectives.store.HashStore(), transport="inproc", timeout=COMM_TIMEOUT)
    try:
        with pytest.raises(InvalidArgumentError, match="root"):
            comm.broadcast(f32(2), root=1)
        with pytest.raises(InvalidArgumentError, match="dst"):
            comm.send(f32(2), 0)
        x = f32(3)
        assert comm.all_reduce(x, op="avg") is x and x.tolist() == [0.0, 1.0, 2.0]
    finally:
        comm.close()
