"""Device buffers are taken by every collective, through host memory (``collectives.staging``).

No GPU here: a device tensor is played by a CPU tensor whose ``device`` says ``cuda:0``
(:class:`StandInCuda`), which takes the same code path as a real CUDA tensor (torch's
``copy_`` and ``new_empty`` do the moving). What only a GPU shows (streams, pinned
memory, the driver) is left to ``tests/collectives/test_cuda_staging.py`` (marker ``cuda``).

Each collective must: give the same result as on host arrays, write it into the caller's
device buffers (and allocate outputs on the device), leave inputs it only reads alone, and
write nothing back when the call fails.
"""

from __future__ import annotations

import importlib.util
import logging
import time
import types
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from collectives import CollectiveTimeoutError, InvalidArgumentError, InvalidTypeError, ReduceOp  # noqa: E402
from collectives.staging import CupyDeviceArray  # noqa: E402
from collectives.testing import run_world  # noqa: E402


class StandInCuda(torch.Tensor):
    """A CPU tensor that says it lives on ``cuda:0``."""

    @property
    def device(self) -> Any:  # type: ignore[override]
        return torch.device("cuda", 0)

    @property
    def is_cpu(self) -> bool:  # type: ignore[override]
        return False


def on_device(t: Any) -> Any:
    return torch.Tensor._make_subclass(StandInCuda, t)


def values(rank: int, n: int, dtype: Any = torch.float32) -> Any:
    return (torch.arange(n, dtype=torch.float64) * (rank + 1) + rank).to(dtype)


def _every_collective(comm: Any) -> dict[str, Any]:
    """Each collective on stand-in device tensors; what each left where."""
    r, p = comm.rank, comm.size
    got: dict[str, Any] = {}
    x = on_device(values(r, 6))
    assert comm.all_reduce(x) is x
    got["all_reduce"] = x.tolist()
    x, out = on_device(values(r, 6)), on_device(torch.zeros(6))
    comm.all_reduce(x, op=ReduceOp.MAX, out=out)
    got["all_reduce_out"] = (x.tolist(), out.tolist())
    rs = comm.reduce_scatter(on_device(values(r, 2 * p)))
    got["reduce_scatter"] = (type(rs).__name__, rs.device.type, rs.tolist())
    ag = comm.all_gather(on_device(values(r, 3, torch.int64)))
    got["all_gather"] = (type(ag).__name__, ag.dtype, ag.tolist())
    b = on_device(values(r, 4))
    comm.broadcast(b, root=p - 1)
    got["broadcast"] = b.tolist()
    red = on_device(values(r, 4))
    comm.reduce(red, root=0)
    got["reduce"] = red.tolist()
    g = comm.gather(on_device(values(r, 2)), root=0)
    got["gather"] = None if g is None else (type(g).__name__, g.tolist())
    sc = on_device(torch.zeros(2))
    comm.scatter(on_device(values(r, 2 * p)) if r == 0 else None, sc, root=0)
    got["scatter"] = sc.tolist()
    a2a = comm.all_to_all(on_device(values(r, 2 * p)))
    got["all_to_all"] = (type(a2a).__name__, a2a.tolist())
    if p > 1:
        if r == 0:
            comm.send(on_device(values(7, 3)), 1)
        elif r == 1:
            got["recv"] = comm.recv(on_device(torch.zeros(3)), 0).tolist()
    return got


def _host_reference(comm: Any) -> dict[str, Any]:
    """The same calls on numpy arrays."""
    r, p = comm.rank, comm.size
    ref: dict[str, Any] = {}
    x = values(r, 6).numpy()
    ref["all_reduce"] = comm.all_reduce(x).tolist()
    x, out = values(r, 6).numpy(), np.zeros(6, np.float32)
    comm.all_reduce(x, op=ReduceOp.MAX, out=out)
    ref["all_reduce_out"] = (x.tolist(), out.tolist())
    ref["reduce_scatter"] = ("StandInCuda", "cuda", comm.reduce_scatter(values(r, 2 * p).numpy()).tolist())
    ref["all_gather"] = ("StandInCuda", torch.int64, comm.all_gather(values(r, 3, torch.int64).numpy()).tolist())
    ref["broadcast"] = comm.broadcast(values(r, 4).numpy(), root=p - 1).tolist()
    ref["reduce"] = comm.reduce(values(r, 4).numpy(), root=0).tolist()
    g = comm.gather(values(r, 2).numpy(), root=0)
    ref["gather"] = None if g is None else ("StandInCuda", g.tolist())
    sc = np.zeros(2, np.float32)
    comm.scatter(values(r, 2 * p).numpy() if r == 0 else None, sc, root=0)
    ref["scatter"] = sc.tolist()
    ref["all_to_all"] = ("StandInCuda", comm.all_to_all(values(r, 2 * p).numpy()).tolist())
    if p > 1:
        if r == 0:
            comm.send(values(7, 3).numpy(), 1)
        elif r == 1:
            ref["recv"] = comm.recv(np.zeros(3, np.float32), 0).tolist()
    return ref


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_every_collective_takes_device_tensors_and_gives_the_host_result(world_size: int) -> None:
    got = run_world(_every_collective, world_size)
    expected = run_world(_host_reference, world_size)
    assert got == expected


def test_device_tensors_over_shared_memory_processes() -> None:
    def fn(comm: Any) -> tuple[list[float], list[float]]:
        x = on_device(values(comm.rank, 1000))
        comm.all_reduce(x)
        y = values(comm.rank, 1000).numpy()
        comm.all_reduce(y)
        return x.tolist(), y.tolist()

    for got, expected in run_world(fn, 2, "shm"):
        assert got == expected


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64, torch.int8, torch.complex64])
def test_half_precision_and_other_dtypes_reduce_to_the_host_bits(dtype: Any) -> None:
    def fn(comm: Any) -> tuple[bytes, bytes]:
        base = (torch.arange(37, dtype=torch.float64) / 3 - 5) * (comm.rank + 1)
        host = base.to(dtype).clone()
        device = on_device(base.to(dtype).clone())
        comm.all_reduce(host)
        comm.all_reduce(device)
        as_bytes = lambda t: t.contiguous().view(torch.uint8).numpy().tobytes()  # noqa: E731
        return as_bytes(host), as_bytes(torch.Tensor(device))

    for host, device in run_world(fn, 3):
        assert device == host


def test_async_operations_write_back_when_they_complete() -> None:
    def fn(comm: Any) -> tuple[list[float], list[float]]:
        x = on_device(values(comm.rank, 4))
        work = comm.all_reduce(x, async_op=True)
        out = on_device(torch.zeros(4 * comm.size))
        work2 = comm.all_gather(on_device(values(comm.rank, 4)), out, async_op=True)
        work.wait()
        work2.wait()
        return x.tolist(), out.tolist()

    for x, gathered in run_world(fn, 2):
        assert x == [1.0, 4.0, 7.0, 10.0]
        assert gathered == [0.0, 1.0, 2.0, 3.0, 1.0, 3.0, 5.0, 7.0]


def test_a_failed_call_writes_nothing_back() -> None:
    """Rank 1 never joins: rank 0's all_reduce times out, and its device tensor (and
    output) keep what they held, although the host copies were partly worked on."""

    def fn(comm: Any) -> Any:
        if comm.rank == 1:
            time.sleep(2.0)  # past rank 0's timeout, then closes
            return None
        comm.timeout = 0.5
        x = on_device(torch.full((8,), 5.0))
        out = on_device(torch.full((8,), -1.0))
        with pytest.raises(CollectiveTimeoutError):
            comm.all_reduce(x, out=out)
        return x.tolist(), out.tolist()

    x, out = run_world(fn, 2, timeout=20)[0]
    assert x == [5.0] * 8
    assert out == [-1.0] * 8


def test_staging_is_said_once_per_communicator(caplog: pytest.LogCaptureFixture) -> None:
    def fn(comm: Any) -> None:
        comm.all_reduce(on_device(torch.ones(2)))
        comm.broadcast(on_device(torch.ones(2)))
        comm.all_reduce(np.ones(2))

    with caplog.at_level(logging.WARNING, logger="collectives"):
        run_world(fn, 3)
    said = sorted(r.getMessage() for r in caplog.records if "through host memory" in r.getMessage())
    assert [m.split(":")[0] for m in said] == ["rank 0", "rank 1", "rank 2"]
    assert all("x is a torch cuda:0 tensor" in m for m in said)
    assert "(inproc_staged to ranks [1, 2])" in said[0]  # the host transport carries the copies


def test_host_only_calls_say_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="collectives"):
        run_world(lambda comm: comm.all_reduce(torch.ones(2)), 2)
    assert not [r for r in caplog.records if "through host memory" in r.getMessage()]


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda: on_device(torch.zeros(4, 2)).t(), InvalidArgumentError, "not contiguous"),
        (lambda: on_device(torch.zeros(4, dtype=torch.bool)), InvalidTypeError, "torch.bool"),
        (lambda: torch.zeros(4, device="meta"), InvalidArgumentError, "meta tensor holds no data"),
    ],
    ids=["noncontiguous", "bool", "meta"],
)
def test_bad_device_tensors_are_refused_by_name(make: Any, error: type[Exception], words: str) -> None:
    def fn(comm: Any) -> None:
        with pytest.raises(error, match=words) as info:
            comm.all_reduce(make())
        assert str(info.value).startswith("x:")

    run_world(fn, 1)


class _NumbaLikeArray:
    """A device array of a library collectives cannot copy through (no cupy here)."""

    __cuda_array_interface__ = {"shape": (4,), "typestr": "<f4", "data": (1 << 40, False), "version": 3}


def test_device_objects_no_library_can_copy_are_refused_with_the_fix() -> None:
    if importlib.util.find_spec("cupy") is not None or torch.cuda.is_available():  # pragma: no cover
        pytest.skip("cupy or CUDA torch is here: it would take the object")

    def fn(comm: Any) -> None:
        with pytest.raises(InvalidArgumentError, match="install cupy") as info:
            comm.all_reduce(_NumbaLikeArray())
        assert str(info.value).startswith("x: a cuda device buffer (_NumbaLikeArray)")

    run_world(fn, 1)


# -- the cupy adapter, against a host stand-in for the cupy calls it makes ------------------


class _Device:
    id = 0
    entered = 0

    def __enter__(self) -> None:
        _Device.entered += 1

    def __exit__(self, *exc: object) -> None:
        pass


class _CupyLike:
    """The part of ``cupy.ndarray`` the adapter uses, over a numpy array."""

    __module__ = "cupy"

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.dtype, self.size, self.flags, self.device = data.dtype, data.size, data.flags, _Device()

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": self.data.shape, "typestr": self.data.dtype.str, "data": (1 << 40, False), "version": 3}

    def reshape(self, *shape: int) -> _CupyLike:
        return _CupyLike(self.data.reshape(*shape))

    def get(self, out: np.ndarray) -> np.ndarray:
        out[...] = self.data
        return out

    def set(self, host: np.ndarray) -> None:
        self.data[...] = host


def _cupy_stand_in() -> Any:
    synchronized = []
    stream = types.SimpleNamespace(synchronize=lambda: synchronized.append(True))
    cupy = types.SimpleNamespace(
        empty=lambda count, dtype: _CupyLike(np.empty(count, dtype)),
        cuda=types.SimpleNamespace(get_current_stream=lambda: stream),
        synchronized=synchronized,
    )
    return cupy


def test_cupy_arrays_are_copied_through_their_own_calls_on_their_device() -> None:
    cupy = _cupy_stand_in()
    array = _CupyLike(np.arange(6, dtype=np.float32).reshape(2, 3))
    staged = CupyDeviceArray(array, "x", cupy)
    host = staged.to_host()
    assert host.tolist() == [0, 1, 2, 3, 4, 5]
    assert not np.shares_memory(host, array.data)
    host *= 10
    staged.from_host(host)
    assert array.data.ravel().tolist() == [0, 10, 20, 30, 40, 50]
    assert cupy.synchronized == [True]
    assert _Device.entered >= 2
    assert staged.new_like(5).data.shape == (5,)
    assert staged.description == "cupy array on cuda:0"


def test_cupy_arrays_with_bad_layouts_or_dtypes_are_refused() -> None:
    cupy = _cupy_stand_in()
    with pytest.raises(InvalidArgumentError, match="x: the array is not C-contiguous"):
        CupyDeviceArray(_CupyLike(np.zeros((3, 2), np.float32).T), "x", cupy)
    with pytest.raises(InvalidTypeError, match="out: dtype bool"):
        CupyDeviceArray(_CupyLike(np.zeros(3, np.bool_)), "out", cupy)
