"""The torch backend inside this process: registration, a one-rank group, Work and futures,
operator translation, staging. Fast; one other process (a fresh import of the backend)."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import textwrap
import threading

import pytest
import torch
import torch.distributed as dist

import collectives.torch_backend as tb
from collectives.ops import ReduceOp
from collectives.torch_backend.tensors import StandIn, raw, resolve_op
from tb_launch import REPO, _env

R = dist.ReduceOp


_FRESH = textwrap.dedent("""
    import json, threading, traceback

    def imports():
        import torch.distributed as dist
        n = threading.active_count()
        import collectives.torch_backend
        assert 'collectives' in dist.Backend.backend_list
        assert dist.Backend('collectives') == 'collectives'
        assert dist.Backend.backend_capability['collectives'] == ['cpu', 'cuda']
        assert dist.Backend.default_device_backend_map['cpu'] == 'gloo'
        assert threading.active_count() == n, threading.enumerate()
        return 'ok'

    def group_of_one():
        import torch, torch.distributed as dist
        dist.init_process_group('collectives', store=dist.HashStore(), rank=0, world_size=1)
        x = torch.ones(3); dist.all_reduce(x); objs = [None]; dist.all_gather_object(objs, {'a': 1})
        dist.barrier(); assert dist.get_backend() == 'collectives'
        dist.destroy_process_group()
        return [x.tolist(), objs]

    for part in (imports, group_of_one):  # in this order: the import is checked in a fresh process
        try:
            print(json.dumps({part.__name__: part()}))
        except Exception:
            print(json.dumps({part.__name__: 'raised: ' + traceback.format_exc()}))
""")


@pytest.fixture(scope="module")
def fresh() -> dict:
    """What ``_FRESH``'s parts returned in a new process (one start of torch for both tests)."""
    out = subprocess.run([sys.executable, "-c", _FRESH], env=_env(), cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return {k: v for line in out.stdout.splitlines() for k, v in json.loads(line).items()}


def test_import_registers_and_starts_nothing(fresh) -> None:
    assert fresh["imports"] == "ok"


@pytest.fixture
def pg():
    group = tb.CollectivesProcessGroup(dist.HashStore(), 0, 1, datetime.timedelta(seconds=30))
    yield group
    group.shutdown()


def opts(cls, **fields):
    o = cls()
    for k, v in fields.items():
        setattr(o, k, v)
    return o


def test_one_rank_group_runs_every_method(pg) -> None:
    t = torch.arange(4.0)
    work = pg.allreduce([t], opts(dist.AllreduceOptions, reduceOp=R.AVG))
    assert isinstance(work, dist.Work) and work.wait() and work.is_completed() and work.is_success()
    assert work.get_future().value()[0] is t
    assert torch.equal(t, torch.arange(4.0))
    out = torch.empty(4)
    pg.all_gather_single(out, torch.ones(4)).wait()
    assert torch.equal(out, torch.ones(4))
    rs = torch.empty(2, dtype=torch.int64)
    pg.reduce_scatter_single(rs, torch.tensor([3, 4]), opts(dist.ReduceScatterOptions, reduceOp=R.MAX)).wait()
    assert rs.tolist() == [3, 4]
    got = torch.empty(3)
    recv = pg.recv([got], 0, 5)
    pg.send([torch.tensor([1.0, 2.0, 3.0])], 0, 5).wait()
    recv.wait()
    assert got.tolist() == [1.0, 2.0, 3.0] and recv._source_rank() == 0
    any_src = pg.recv_anysource([got], 6)
    pg.send([torch.tensor([7.0, 8.0, 9.0])], 0, 6)
    any_src.wait()
    assert got.tolist() == [7.0, 8.0, 9.0] and any_src._source_rank() == 0
    pg.barrier().wait()
    outs = [torch.empty(2)]
    pg.alltoall(outs, [torch.tensor([5.0, 6.0])]).wait()
    assert outs[0].tolist() == [5.0, 6.0]
    assert pg.getBackendName() == "collectives" and pg.name() == "collectives"


def test_wrong_arguments_raise_at_the_call(pg) -> None:
    with pytest.raises(tb.InvalidOperation, match="non-integral") as info:
        pg.allreduce([torch.ones(2)], opts(dist.AllreduceOptions, reduceOp=R.BAND))
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, ValueError)
    with pytest.raises(tb.InvalidOperation, match="world size"):
        pg.all_gather_single(torch.empty(3), torch.empty(2))
    with pytest.raises(tb.InvalidOperation, match="split"):
        pg.all_to_all_single(torch.empty(4), torch.empty(4), [3], [4])
    with pytest.raises(tb.InvalidOperation, match="root"):
        pg.broadcast([torch.ones(1)], opts(dist.BroadcastOptions, rootRank=3))


def test_failures_reach_wait_and_the_future(pg) -> None:
    pg.comm.abort()  # every later collective fails
    work = pg.allreduce([torch.ones(3)])
    future = work.get_future()
    with pytest.raises(dist.DistBackendError, match=r"all_reduce #1 failed") as info:
        work.wait()
    assert "[collectives] group" in str(info.value)
    assert not work.is_success() and work.exception() is info.value
    # the future carries a real error: value(), wait() and chained callbacks raise
    with pytest.raises(RuntimeError, match="all_reduce #1 failed"):
        future.wait()
    chained = future.then(lambda f: f.value())
    with pytest.raises(RuntimeError, match="all_reduce #1 failed"):
        chained.wait()


def test_futures_complete_without_wait_and_callbacks_may_wait(pg) -> None:
    """DDP only chains on the future; a then() callback may run a blocking collective."""
    done = threading.Event()
    seen = []

    def callback(fut):
        t = torch.ones(2)
        pg.allreduce([t], opts(dist.AllreduceOptions, asyncOp=False)).wait()  # must not deadlock
        seen.append(fut.value()[0].tolist())
        done.set()
        return fut.value()

    works = [pg.allreduce([torch.full((2,), float(i))]) for i in range(20)]
    works[5].get_future().then(callback)
    assert done.wait(10), "the future never completed, or the callback deadlocked"
    assert seen == [[5.0, 5.0]]
    order = []
    futures = [w.get_future() for w in works]
    for i, f in enumerate(futures):
        f.add_done_callback(lambda _, i=i: order.append(i))
    torch.futures.wait_all(futures)
    assert sorted(order) == list(range(20))


def test_wait_timeout_and_coalescing(pg) -> None:
    work = pg.barrier()
    assert work.wait(datetime.timedelta(seconds=5))
    assert work.wait(datetime.timedelta(0))  # kNoTimeout: not "expire at once"
    pg._start_coalescing(torch.device("cpu"))
    a, b = torch.ones(2), torch.ones(3)
    pg.allreduce([a])
    pg.broadcast([b], opts(dist.BroadcastOptions, rootRank=0))
    agg = pg._end_coalescing(torch.device("cpu"))
    assert agg.wait() and agg.get_future().wait() == [a, b]


@pytest.mark.parametrize(
    "dtype, op, ours",
    [
        (torch.bool, R.SUM, ReduceOp.BOR),
        (torch.bool, R.PRODUCT, ReduceOp.BAND),
        (torch.bool, R.MIN, ReduceOp.BAND),
        (torch.bool, R.MAX, ReduceOp.BOR),
        (torch.float32, R.AVG, ReduceOp.AVG),
        (torch.bfloat16, R.PRODUCT, ReduceOp.PROD),
        (torch.int64, R.BXOR, ReduceOp.BXOR),
    ],
)
def test_operator_translation(dtype, op, ours) -> None:
    assert resolve_op(op, dtype, "t") == (ours, None)


@pytest.mark.parametrize(
    "dtype, op, message",
    [
        (torch.int32, R.AVG, "floating point"),
        (torch.bool, R.AVG, "floating point"),
        (torch.float16, R.BOR, "non-integral"),
        (torch.complex64, R.MAX, "complex"),
        (torch.float8_e4m3fn, R.SUM, "cannot reduce"),
        (torch.int64, dist._make_nccl_premul_sum(2.0), "floating point"),
    ],
)
def test_operator_refusals(dtype, op, message) -> None:
    with pytest.raises(tb.InvalidOperation, match=message):
        resolve_op(op, dtype, "t")


def test_premul_factor() -> None:
    assert resolve_op(dist._make_nccl_premul_sum(0.5), torch.float32, "t") == (ReduceOp.SUM, 0.5)
    op, factor = resolve_op(dist._make_nccl_premul_sum(torch.tensor(0.25)), torch.bfloat16, "t")
    assert op is ReduceOp.SUM and float(factor) == 0.25


def test_operator_verdicts_are_kept_but_factors_and_refusals_are_not() -> None:
    """Verdicts are kept per (operator, dtype): a repeated PREMUL_SUM still takes each call's
    factor, and a refused pair is refused every time."""
    for factor in (0.5, 2.0, 0.5):
        assert resolve_op(dist._make_nccl_premul_sum(factor), torch.float32, "t") == (ReduceOp.SUM, factor)
    for _ in range(2):
        assert resolve_op(R.SUM, torch.float32, "t") == (ReduceOp.SUM, None)
        assert resolve_op(R.SUM, torch.bool, "t") == (ReduceOp.BOR, None)
        with pytest.raises(tb.InvalidOperation, match="non-integral"):
            resolve_op(R.BAND, torch.float32, "t")


def test_a_wait_before_the_finish_blocks_until_it_or_its_timeout() -> None:
    from collectives.torch_backend.work import CollectivesWork

    work = CollectivesWork("all_reduce", 7, [], lambda: "rank 0")
    with pytest.raises(dist.DistBackendError, match=r"wait\(\) Timed out after 0.05 s; all_reduce #7"):
        work.wait(datetime.timedelta(seconds=0.05))
    assert not work.is_completed()
    released = []
    waiter = threading.Thread(target=lambda: released.append(work.wait()))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and not released  # blocked: not finished yet
    work._finish()
    waiter.join(5)
    assert released == [True] and work.is_completed() and work.is_success()
    failed = CollectivesWork("broadcast", 8, [], lambda: "rank 0")
    failed._finish(RuntimeError("peer lost"))
    with pytest.raises(RuntimeError, match="peer lost"):
        failed.wait()
    assert failed.is_completed() and not failed.is_success()


def test_stand_ins_keep_views_and_storage_resizable() -> None:
    base = torch.zeros(4, 3)
    stand_in = StandIn(base[:, 1], load=True, store=True)
    assert stand_in.copied and stand_in.tensor.is_contiguous()
    stand_in.tensor.fill_(5)
    stand_in.finish()
    assert base[:, 1].tolist() == [5.0] * 4 and base[:, 0].tolist() == [0.0] * 4
    plain = torch.zeros(8)
    assert not StandIn(plain).copied and StandIn(plain).tensor.data_ptr() == plain.data_ptr()
    view = raw(plain)
    view[:4] = 255
    assert plain[0].item() != 0
    plain.untyped_storage().resize_(0)  # FSDP frees storages this way; Tensor.numpy() would forbid it
    conj = torch.tensor([1 + 2j]).conj()
    assert StandIn(conj).tensor.tolist() == [1 - 2j] and not StandIn(conj).tensor.is_conj()
    neg = torch.tensor([1 + 2j]).conj().imag  # a lazily negated view
    assert neg.is_neg() and StandIn(neg).tensor.tolist() == [-2.0] and not StandIn(neg).tensor.is_neg()
    assert raw(StandIn(torch.tensor([True, False])).tensor).tolist() == [1, 0]


class FakeCuda(torch.Tensor):
    """A CPU tensor that says it lives on ``cuda:0``: the core stages it as it would a real
    one (see tests/collectives/test_device_buffers.py)."""

    @property
    def device(self):  # type: ignore[override]
        return torch.device("cuda", 0)

    @property
    def is_cpu(self) -> bool:  # type: ignore[override]
        return False


def on_device(t: torch.Tensor) -> torch.Tensor:
    return torch.Tensor._make_subclass(FakeCuda, t)


def test_what_torch_takes_and_the_core_refuses_goes_through_stand_ins(pg) -> None:
    """Non-contiguous, conjugated, negated, bool and device tensors, as inputs and outputs."""
    grid = torch.zeros(3, 4)
    pg.allreduce([grid[:, 1]], opts(dist.AllreduceOptions, reduceOp=R.SUM)).wait()
    src = torch.arange(12.0).reshape(3, 4)
    pg.broadcast([src.t()[1]], opts(dist.BroadcastOptions, rootRank=0)).wait()
    assert src.t()[1].tolist() == [1.0, 5.0, 9.0]
    got = torch.zeros(3, 4)
    recv = pg.recv([got[:, 2]], 0, 1)
    pg.send([src.t()[1]], 0, 1).wait()
    recv.wait()
    assert got[:, 2].tolist() == [1.0, 5.0, 9.0] and got[:, 1].tolist() == [0.0] * 3
    z = torch.tensor([1 + 2j, 3 - 1j])
    out = torch.zeros(2, dtype=torch.complex64)
    recv = pg.recv([out], 0, 2)
    pg.send([z.conj()], 0, 2).wait()
    recv.wait()
    assert out.tolist() == [1 - 2j, 3 + 1j]
    neg = z.conj().imag
    total = torch.zeros(2)
    recv = pg.recv([total], 0, 3)
    pg.send([neg], 0, 3).wait()
    recv.wait()
    assert total.tolist() == [-2.0, 1.0]
    flags = torch.tensor([True, False, True])
    pg.allreduce([flags], opts(dist.AllreduceOptions, reduceOp=R.SUM)).wait()
    assert flags.tolist() == [True, False, True]
    bools = torch.zeros(3, dtype=torch.bool)
    recv = pg.recv([bools], 0, 4)
    pg.send([flags], 0, 4).wait()
    recv.wait()
    assert bools.tolist() == [True, False, True]
    # device tensors go to the core as they are: it stages them (the same path as real CUDA)
    device = on_device(torch.arange(4.0))
    pg.allreduce([device], opts(dist.AllreduceOptions, reduceOp=R.MAX)).wait()
    assert type(device) is FakeCuda and device.tolist() == [0.0, 1.0, 2.0, 3.0]
    landing = on_device(torch.zeros(4))
    recv = pg.recv([landing], 0, 5)
    pg.send([on_device(torch.arange(4.0) * 2)], 0, 5).wait()
    recv.wait()
    assert landing.tolist() == [0.0, 2.0, 4.0, 6.0]
    gathered = on_device(torch.zeros(4))
    pg.all_gather_single(gathered, on_device(torch.arange(4.0) + 1)).wait()
    assert gathered.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_default_group_of_one(fresh) -> None:
    """init_process_group("collectives") with an explicit store, then object collectives."""
    assert fresh["group_of_one"] == [[1.0, 1.0, 1.0], [{"a": 1}]]


def test_backend_modules_import_each_other_without_a_cycle() -> None:
    """Within the backend, imports (lazy ones included) form no cycle: process_group uses
    monitored, never the other way round."""
    import ast

    package = REPO / "collectives" / "torch_backend"
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    names.add(node.module.split(".")[0])
                else:
                    names.update(a.name for a in node.names)
        graph[path.stem] = {n for n in names if (package / f"{n}.py").exists()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ()))

    cycles = [m for m in graph if reaches(m, m, {m})]
    assert not cycles, f"modules on an import cycle: {sorted(cycles)}"
