"""Operation cases run on every rank against both the collectives backend and gloo.

Each case is a function ``case(ctx)`` that runs collectives through ``ctx.check(label, fn)``:
``fn(group)`` is called once with the collectives group and once with a gloo group over the
same ranks, on identical inputs, and the results (tensors, lists, objects) must agree.
Where gloo cannot run an operation at all (int16 and the unsigned types above uint8,
PREMUL_SUM, uneven all_gather, ...) ``ref=`` computes the expected value locally from every
rank's inputs, which are functions of the rank. Mismatches are collected, not raised, so a
case always issues the same collectives on every rank (a failure never desynchronises the
ranks); ``tb_worker_ops.py`` runs the cases and ``test_torch_ops.py`` reports them one by one.
"""

from __future__ import annotations

import datetime
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

R = dist.ReduceOp
CASES: dict[str, Callable[[Ctx], None]] = {}


def case(fn: Callable[[Ctx], None]) -> Callable[[Ctx], None]:
    CASES[fn.__name__.removeprefix("case_")] = fn
    return fn


FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
INTS_GLOO = [torch.int8, torch.uint8, torch.int32, torch.int64]
INTS_EXTRA = [torch.int16, torch.uint16, torch.uint32, torch.uint64]  # gloo: "Invalid scalar type"
OPS = {"SUM": R.SUM, "PRODUCT": R.PRODUCT, "MIN": R.MIN, "MAX": R.MAX, "AVG": R.AVG,
       "BAND": R.BAND, "BOR": R.BOR, "BXOR": R.BXOR}


def values(dtype: torch.dtype, shape: tuple[int, ...], rank: int, seed: int = 0) -> torch.Tensor:
    """Small exact integers that differ by rank and position (bool: a mix of both values)."""
    n = 1
    for s in shape:
        n *= s
    base = (torch.arange(n, dtype=torch.int64) * 7 + rank * 3 + seed) % 5
    if dtype == torch.bool:
        return (base % 2 == 0).reshape(shape)
    if dtype in (torch.int8, torch.int16, torch.int32, torch.int64):
        base = base - 1  # negatives too
    else:
        base = base + 1
    if dtype.is_complex:
        return torch.complex(base.double(), (base * 2 - 3).double()).to(dtype).reshape(shape)
    return base.to(dtype).reshape(shape)


def _flatten(x: Any) -> list[Any]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (list, tuple)):
        return [y for item in x for y in _flatten(item)]
    return [x]


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        flat = x.detach().reshape(-1)[:8].tolist()
        return f"{x.dtype}{tuple(x.shape)} {flat}{'...' if x.numel() > 8 else ''}"
    return repr(x)[:200]


def reduce_ref(tensors: list[torch.Tensor], op: str, world: int) -> torch.Tensor:
    """What an all-reduce of ``tensors`` (one per rank) gives, computed locally in the dtype."""
    acc = tensors[0].clone()
    dtype = acc.dtype
    for t in tensors[1:]:
        if dtype == torch.bool:
            acc = {"SUM": acc | t, "PRODUCT": acc & t, "MIN": acc & t, "MAX": acc | t, "BAND": acc & t,
                   "BOR": acc | t, "BXOR": acc ^ t}[op]
            continue
        if dtype in (torch.uint16, torch.uint32, torch.uint64):
            a, b = acc.to(torch.int64), t.to(torch.int64)  # exact for these small values
        else:
            a, b = acc, t
        r = {"SUM": lambda: a + b, "AVG": lambda: a + b, "PRODUCT": lambda: a * b,
             "MIN": lambda: torch.minimum(a, b), "MAX": lambda: torch.maximum(a, b),
             "BAND": lambda: a & b, "BOR": lambda: a | b, "BXOR": lambda: a ^ b}[op]()
        acc = r.to(dtype)
    if op == "AVG":
        acc = (acc / world).to(dtype)
    return acc


class Ctx:
    def __init__(self, ours: Any, gloo: Any, rank: int, size: int) -> None:
        self.ours = ours
        self.gloo = gloo
        self.rank = rank
        self.size = size
        self.problems: list[str] = []
        self.checks = 0

    def expect_error(self, label: str, fn: Callable[[Any], Any], pattern: str = "") -> None:
        """``fn(ours)`` must raise a RuntimeError (whose message contains ``pattern``).

        Not compared with gloo: gloo reports some refusals from its worker thread, at a
        later operation, which would poison the cases that follow."""
        self.checks += 1
        try:
            fn(self.ours)
        except RuntimeError as exc:
            if pattern not in str(exc):
                self.problems.append(f"{label}: raised {exc!r}, expected a message containing {pattern!r}")
            return
        except Exception as exc:  # noqa: BLE001
            self.problems.append(f"{label}: raised {type(exc).__name__}: {exc}, not a RuntimeError")
            return
        self.problems.append(f"{label}: did not raise")

    def check(self, label: str, fn: Callable[[Any], Any], *, ref: Callable[[], Any] | None = None,
              tol: float = 0.0) -> None:
        """Compare ``fn(ours)`` with ``fn(gloo)`` (or with ``ref()``). Both refusing agrees."""
        self.checks += 1
        got_error = want_error = None
        got = want = None
        try:
            got = fn(self.ours)
        except Exception as exc:  # noqa: BLE001
            got_error = exc
        if ref is not None:
            want = ref()
        else:
            try:
                want = fn(self.gloo)
            except Exception as exc:  # noqa: BLE001
                want_error = exc
        if got_error is not None or want_error is not None:
            if got_error is None:
                self.problems.append(f"{label}: gloo raised {want_error!r} but collectives did not")
            elif want_error is None:
                tb = "".join(traceback.format_exception(got_error))[-1500:]
                self.problems.append(f"{label}: collectives raised {got_error!r}, gloo did not\n{tb}")
            elif not isinstance(got_error, RuntimeError):
                self.problems.append(f"{label}: both refuse, but collectives raised {type(got_error).__name__}, "
                                     "not a RuntimeError")
            return
        a, b = _flatten(got), _flatten(want)
        if len(a) != len(b):
            self.problems.append(f"{label}: {len(a)} results vs {len(b)}")
            return
        for i, (x, y) in enumerate(zip(a, b)):
            if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
                if x.dtype != y.dtype or x.shape != y.shape:
                    self.problems.append(f"{label}[{i}]: {_describe(x)} vs {_describe(y)}")
                    continue
                if tol and (x.is_floating_point() or x.is_complex()):
                    ok = torch.allclose(x.to(torch.complex128 if x.is_complex() else torch.float64),
                                        y.to(torch.complex128 if y.is_complex() else torch.float64),
                                        rtol=tol, atol=tol)
                else:
                    ok = torch.equal(x, y) or (x.is_floating_point() and torch.equal(x.isnan(), y.isnan())
                                                and torch.equal(x.nan_to_num(), y.nan_to_num()))
                if not ok:
                    self.problems.append(f"{label}[{i}]: got {_describe(x)}, expected {_describe(y)}")
            elif x != y:
                self.problems.append(f"{label}[{i}]: got {_describe(x)}, expected {_describe(y)}")


def _half_tol(dtype: torch.dtype) -> float:
    return 2e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-6


# -- all_reduce ---------------------------------------------------------------------------------------


def _all_reduce(dtype: torch.dtype, op: Any, shape: tuple[int, ...], rank: int, seed: int = 0,
                async_op: bool = False) -> Callable[[Any], Any]:
    def fn(group: Any) -> Any:
        t = values(dtype, shape, rank, seed)
        work = dist.all_reduce(t, op=op, group=group, async_op=async_op)
        if async_op:
            work.wait()
        return t
    return fn


@case
def case_all_reduce_float_ops(ctx: Ctx) -> None:
    for dtype in FLOATS:
        for name in ("SUM", "PRODUCT", "MIN", "MAX", "AVG"):
            ctx.check(f"{dtype}/{name}", _all_reduce(dtype, OPS[name], (5, 3), ctx.rank), tol=_half_tol(dtype))


@case
def case_all_reduce_int_ops(ctx: Ctx) -> None:
    for dtype in INTS_GLOO + [torch.bool]:
        for name in OPS:
            ctx.check(f"{dtype}/{name}", _all_reduce(dtype, OPS[name], (17,), ctx.rank))


@case
def case_all_reduce_int_wraparound(ctx: Ctx) -> None:
    def fn(group: Any) -> Any:
        t = torch.full((4,), 200, dtype=torch.uint8)
        dist.all_reduce(t, group=group)
        u = torch.full((4,), 100, dtype=torch.int8)
        dist.all_reduce(u, op=R.PRODUCT, group=group)
        return [t, u]
    ctx.check("uint8/int8 wrap", fn)


@case
def case_all_reduce_extra_int_dtypes(ctx: Ctx) -> None:
    """int16 and uint16/32/64: gloo refuses them; the local reference decides."""
    for dtype in INTS_EXTRA:
        for name in OPS:
            if name == "AVG":
                continue
            ref = lambda d=dtype, n=name: reduce_ref([values(d, (9,), r) for r in range(ctx.size)], n, ctx.size)
            ctx.check(f"{dtype}/{name}", _all_reduce(dtype, OPS[name], (9,), ctx.rank), ref=ref)


@case
def case_all_reduce_complex(ctx: Ctx) -> None:
    for dtype in (torch.complex64, torch.complex128):
        for name in ("SUM", "AVG"):
            ctx.check(f"{dtype}/{name}", _all_reduce(dtype, OPS[name], (6,), ctx.rank), tol=1e-6)


@case
def case_all_reduce_premul_sum(ctx: Ctx) -> None:
    """PREMUL_SUM (gloo lacks it): the sum of factor · input; float factor and tensor factor."""
    for dtype in FLOATS:
        for factor in (0.5, torch.tensor(0.25, dtype=torch.float64)):
            op = dist._make_nccl_premul_sum(factor)
            f = float(factor)
            ref = lambda d=dtype, f=f: reduce_ref([(values(d, (7,), r).double() * f).to(d) for r in range(ctx.size)],
                                                  "SUM", ctx.size)
            ctx.check(f"{dtype}/premul {f}", _all_reduce(dtype, op, (7,), ctx.rank), ref=ref, tol=_half_tol(dtype))


@case
def case_all_reduce_random_float32(ctx: Ctx) -> None:
    def fn(group: Any) -> Any:
        g = torch.Generator().manual_seed(1234 + ctx.rank)
        t = torch.randn(1000, generator=g)
        dist.all_reduce(t, group=group)
        return t
    ctx.check("randn sum", fn, tol=1e-5)


@case
def case_all_reduce_large(ctx: Ctx) -> None:
    """Several MiB: the bandwidth algorithms (ring) rather than the latency ones."""
    def fn(group: Any) -> Any:
        t = values(torch.float32, (1 << 20,), ctx.rank)
        dist.all_reduce(t, group=group)
        u = values(torch.int64, (300_001,), ctx.rank)
        dist.all_reduce(u, op=R.MAX, group=group)
        return [t, u]
    ctx.check("4 MiB float32 + odd-sized int64", fn)


@case
def case_all_reduce_noncontiguous(ctx: Ctx) -> None:
    def fn(group: Any) -> Any:
        base = values(torch.float32, (6, 4), ctx.rank)
        col = base[:, 1]  # a strided view: the result must land in base
        dist.all_reduce(col, group=group)
        t = values(torch.int64, (4, 6), ctx.rank).t()  # transposed
        dist.all_reduce(t, op=R.MAX, group=group)
        return [base, t]

    def ref() -> Any:
        # gloo writes strided views wrongly (it fills the view's first elements in memory
        # order), so the local reference decides
        base = values(torch.float32, (6, 4), ctx.rank)
        base[:, 1] = reduce_ref([values(torch.float32, (6, 4), r)[:, 1] for r in range(ctx.size)], "SUM", ctx.size)
        t = reduce_ref([values(torch.int64, (4, 6), r).t() for r in range(ctx.size)], "MAX", ctx.size)
        return [base, t]
    ctx.check("column view / transposed", fn, ref=ref)


@case
def case_all_reduce_shapes(ctx: Ctx) -> None:
    def fn(group: Any) -> Any:
        scalar = torch.tensor(float(ctx.rank + 1))
        dist.all_reduce(scalar, group=group)
        empty = torch.empty(0, 3)
        dist.all_reduce(empty, group=group)
        one = torch.tensor([ctx.rank], dtype=torch.int64)
        dist.all_reduce(one, op=R.MAX, group=group)
        return [scalar, empty, one]
    ctx.check("0-d, empty, 1 element", fn)


@case
def case_all_reduce_async_future(ctx: Ctx) -> None:
    def fn(group: Any) -> Any:
        ts = [values(torch.float32, (33,), ctx.rank, seed=i) for i in range(4)]
        works = [dist.all_reduce(t, group=group, async_op=True) for t in ts]
        chained = works[1].get_future().then(lambda f: f.value()[0] * 2)
        works[0].wait()
        futs = [w.get_future() for w in works[2:]]
        torch.futures.wait_all(futs)
        for w in works:
            w.wait()
        return [ts, chained.wait(), [f.value()[0] for f in futs], all(w.is_completed() for w in works)]
    ctx.check("async wait/get_future/then", fn)


@case
def case_all_reduce_requires_grad(ctx: Ctx) -> None:
    def fn(group: Any) -> Any:
        p = torch.nn.Parameter(values(torch.float32, (5,), ctx.rank))
        dist.broadcast(p, src=0, group=group)
        q = torch.nn.Parameter(values(torch.float32, (5,), ctx.rank))
        dist.all_reduce(q, group=group)
        return [p.detach(), q.detach()]
    ctx.check("parameters", fn)


@case
def case_all_reduce_sparse(ctx: Ctx) -> None:
    """Sparse COO SUM (gloo supports it): ranks hold different numbers of entries, with overlaps."""
    def fn(group: Any) -> Any:
        n = ctx.rank + 2
        idx = torch.tensor([[(ctx.rank + 2 * i) % 6 for i in range(n)], [i % 3 for i in range(n)]])
        t = torch.sparse_coo_tensor(idx, torch.arange(n, dtype=torch.float32) + ctx.rank, (6, 3))
        dist.all_reduce(t, group=group)
        empty = torch.sparse_coo_tensor(torch.zeros(1, 0, dtype=torch.int64), torch.zeros(0, 2), (4, 2))
        dist.all_reduce(empty, group=group)
        return [t.to_dense(), empty.to_dense()]
    ctx.check("different nnz per rank; all empty", fn)


@case
def case_all_reduce_coalesced(ctx: Ctx) -> None:
    def fn(group: Any) -> Any:
        ts = [values(torch.float32, s, ctx.rank, seed=i) for i, s in enumerate([(3,), (2, 5), (), (0,), (7, 1)])]
        dist.all_reduce_coalesced(ts, op=R.MAX, group=group)
        us = [values(torch.int64, (4,), ctx.rank), values(torch.int64, (2, 2), ctx.rank, 1)]
        dist.all_reduce_coalesced(us, group=group)
        return ts + us
    ctx.check("mixed shapes", fn)

    def cm(group: Any) -> Any:
        ts = [values(torch.float32, (4 + i,), ctx.rank, seed=i) for i in range(3)]
        with dist._coalescing_manager(group=group, async_ops=True) as manager:
            for t in ts:
                dist.all_reduce(t, group=group)
        manager.wait()
        return ts
    ctx.check("coalescing manager", cm)


@case
def case_all_reduce_errors(ctx: Ctx) -> None:
    """Refused like gloo refuses (bitwise on floats, AVG on integers), at the call; the
    group stays usable."""
    for dtype, op, pattern in ((torch.float32, R.BXOR, "non-integral"), (torch.bfloat16, R.BAND, "non-integral"),
                               (torch.int32, R.AVG, "floating point"), (torch.bool, R.AVG, "floating point")):
        def fn(group: Any, dtype: torch.dtype = dtype, op: Any = op) -> Any:
            t = values(dtype, (3,), ctx.rank)
            dist.all_reduce(t, op=op, group=group)
            return t
        ctx.expect_error(f"{dtype}/{op}", fn, pattern)

    def mismatch(group: Any) -> Any:
        dist.all_gather_into_tensor(torch.empty(ctx.size * 3 + 1), torch.empty(3), group=group)
    ctx.expect_error("all_gather_into_tensor size", mismatch, "world size")
    ctx.check("still usable", _all_reduce(torch.float32, R.SUM, (3,), ctx.rank))


# -- broadcast / reduce -------------------------------------------------------------------------------


@case
def case_broadcast(ctx: Ctx) -> None:
    for dtype in FLOATS + INTS_GLOO + [torch.bool, torch.complex64]:
        for root in sorted({0, ctx.size - 1}):
            def fn(group: Any, dtype: torch.dtype = dtype, root: int = root) -> Any:
                t = values(dtype, (3, 4), ctx.rank)
                dist.broadcast(t, src=root, group=group)
                return t
            ctx.check(f"{dtype}/root {root}", fn)

    def views(group: Any) -> Any:
        base = values(torch.float64, (5, 3), ctx.rank)
        dist.broadcast(base[:, 2], src=ctx.size - 1, group=group)
        scalar = torch.tensor(ctx.rank * 1.5)
        dist.broadcast(scalar, src=1, group=group)
        return [base, scalar]

    def views_ref() -> Any:
        base = values(torch.float64, (5, 3), ctx.rank)
        base[:, 2] = values(torch.float64, (5, 3), ctx.size - 1)[:, 2]
        return [base, torch.tensor(1.5)]
    ctx.check("views and 0-d", views, ref=views_ref)


@case
def case_broadcast_any_dtype(ctx: Ctx) -> None:
    """Types gloo cannot move: compare with the root's tensor."""
    for dtype in (torch.int16, torch.uint16, torch.uint32, torch.uint64, torch.float8_e4m3fn, torch.float8_e5m2):
        def fn(group: Any, dtype: torch.dtype = dtype) -> Any:
            t = values(torch.float32, (6,), ctx.rank).to(dtype)
            dist.broadcast(t, src=0, group=group)
            return t.view(torch.uint8)
        ctx.check(f"{dtype}", fn, ref=lambda dtype=dtype: values(torch.float32, (6,), 0).to(dtype).view(torch.uint8))


@case
def case_reduce(ctx: Ctx) -> None:
    for dtype in (torch.float32, torch.bfloat16, torch.int64, torch.complex64):
        names = ("SUM", "MAX", "PRODUCT") if not dtype.is_complex else ("SUM",)
        for name in names:
            for root in sorted({0, 1, ctx.size - 1}):
                def fn(group: Any, dtype: torch.dtype = dtype, name: str = name, root: int = root) -> Any:
                    t = values(dtype, (8,), ctx.rank)
                    dist.reduce(t, dst=root, op=OPS[name], group=group)
                    return t if ctx.rank == root else None  # non-roots: unspecified
                ctx.check(f"{dtype}/{name}/root {root}", fn, tol=_half_tol(dtype))

    def premul(group: Any) -> Any:
        t = values(torch.float32, (4,), ctx.rank)
        keep = t.clone()
        dist.reduce(t, dst=0, op=dist._make_nccl_premul_sum(2.0), group=group)
        return t if ctx.rank == 0 else torch.equal(t, keep)
    ctx.check("premul", premul, ref=lambda: reduce_ref([values(torch.float32, (4,), r) * 2 for r in range(ctx.size)],
                                                        "SUM", ctx.size) if ctx.rank == 0 else True)


# -- all_gather family --------------------------------------------------------------------------------


@case
def case_all_gather(ctx: Ctx) -> None:
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.uint8, torch.bool,
                  torch.complex128):
        def fn(group: Any, dtype: torch.dtype = dtype) -> Any:
            outs = [torch.empty(2, 3, dtype=dtype) for _ in range(ctx.size)]
            dist.all_gather(outs, values(dtype, (2, 3), ctx.rank), group=group)
            return outs
        ctx.check(f"{dtype}", fn)

    def views(group: Any) -> Any:
        flat = torch.zeros(ctx.size * 4)
        outs = list(torch.chunk(flat, ctx.size))  # back to back in one buffer (FSDP1)
        dist.all_gather(outs, values(torch.float32, (4,), ctx.rank), group=group)
        grid = torch.zeros(3, ctx.size)
        cols = [grid[:, j] for j in range(ctx.size)]  # strided outputs
        dist.all_gather(cols, values(torch.float32, (3,), ctx.rank, 1)[::1], group=group)
        src = values(torch.float32, (3, 2), ctx.rank).t()  # non-contiguous input
        outs2 = [torch.empty(2, 3) for _ in range(ctx.size)]
        dist.all_gather(outs2, src, group=group)
        return [flat, grid, outs2]
    ctx.check("chunk views, strided outputs and input", views)


@case
def case_all_gather_uneven(ctx: Ctx) -> None:
    """Outputs of different sizes per rank (gloo refuses; MPI allows): the local reference."""
    def fn(group: Any) -> Any:
        outs = [torch.empty(r + 1, dtype=torch.int64) for r in range(ctx.size)]
        dist.all_gather(outs, values(torch.int64, (ctx.rank + 1,), ctx.rank), group=group)
        return outs
    ctx.check("sizes 1..W", fn, ref=lambda: [values(torch.int64, (r + 1,), r) for r in range(ctx.size)])


@case
def case_all_gather_into_tensor(ctx: Ctx) -> None:
    for dtype in (torch.float32, torch.bfloat16, torch.int32, torch.bool):
        def fn(group: Any, dtype: torch.dtype = dtype) -> Any:
            inp = values(dtype, (3, 2), ctx.rank)
            cat = torch.empty(ctx.size * 3, 2, dtype=dtype)
            dist.all_gather_into_tensor(cat, inp, group=group)
            return cat
        ctx.check(f"{dtype} concatenated", fn)

        def stack(group: Any, dtype: torch.dtype = dtype) -> Any:
            stacked = torch.empty(ctx.size, 3, 2, dtype=dtype)
            dist.all_gather_into_tensor(stacked, values(dtype, (3, 2), ctx.rank), group=group)
            return stacked
        # torch documents the stacked (W, ...) output shape; gloo 2.13 refuses it
        ctx.check(f"{dtype} stacked", stack,
                  ref=lambda dtype=dtype: torch.stack([values(dtype, (3, 2), r) for r in range(ctx.size)]))

    def inplace(group: Any) -> Any:
        out = torch.zeros(ctx.size * 5)
        mine = out[ctx.rank * 5 : (ctx.rank + 1) * 5]  # FSDP2: the input is a view into the output
        mine.copy_(values(torch.float32, (5,), ctx.rank))
        dist.all_gather_into_tensor(out, mine, group=group)
        return out
    ctx.check("in place", inplace)

    def async_(group: Any) -> Any:
        out = torch.empty(ctx.size * 4)
        work = dist.all_gather_into_tensor(out, values(torch.float32, (4,), ctx.rank), group=group, async_op=True)
        work.wait()
        return out
    ctx.check("async", async_)

    def nc(group: Any) -> Any:
        out = torch.zeros(4, ctx.size * 2)
        dist.all_gather_into_tensor(out.t(), values(torch.float32, (2, 4), ctx.rank), group=group)
        return out
    ctx.check("non-contiguous output", nc,
              ref=lambda: torch.cat([values(torch.float32, (2, 4), r) for r in range(ctx.size)]).t())


@case
def case_all_gather_into_tensor_coalesced(ctx: Ctx) -> None:
    def fn(group: Any) -> Any:
        ins = [values(torch.float32, (n,), ctx.rank, seed=n) for n in (3, 1, 4)]
        outs = [torch.empty(ctx.size * x.numel()) for x in ins]
        with dist._coalescing_manager(group=group, async_ops=True) as cm:
            for o, x in zip(outs, ins):
                dist.all_gather_into_tensor(o, x, group=group)
        cm.wait()
        return outs
    ctx.check("coalescing manager", fn)


@case
def case_all_gather_coalesced(ctx: Ctx) -> None:
    def fn(group: Any) -> Any:
        ins = [values(torch.float32, (2, 2), ctx.rank), values(torch.float32, (1,), ctx.rank, 1),
               values(torch.float32, (0,), ctx.rank), values(torch.float32, (3,), ctx.rank, 2)]
        outs = [[torch.empty_like(x) for x in ins] for _ in range(ctx.size)]
        dist.all_gather_coalesced(outs, ins, group=group)
        return outs
    ctx.check("mixed shapes with an empty one", fn)


@case
def case_gather(ctx: Ctx) -> None:
    for dtype in (torch.float32, torch.int64, torch.bool, torch.bfloat16):
        for root in sorted({0, ctx.size - 1}):
            def fn(group: Any, dtype: torch.dtype = dtype, root: int = root) -> Any:
                outs = [torch.empty(4, dtype=dtype) for _ in range(ctx.size)] if ctx.rank == root else None
                dist.gather(values(dtype, (4,), ctx.rank), outs, dst=root, group=group)
                return outs
            ctx.check(f"{dtype}/root {root}", fn)

    def complex_(group: Any) -> Any:
        outs = [torch.empty(3, dtype=torch.complex64) for _ in range(ctx.size)] if ctx.rank == 0 else None
        dist.gather(values(torch.complex64, (3,), ctx.rank), outs, dst=0, group=group)
        return outs
    # gloo refuses complex gather ("Invalid scalar type"); we gather the bytes
    ctx.check("complex64", complex_, ref=lambda: [values(torch.complex64, (3,), r) for r in range(ctx.size)]
              if ctx.rank == 0 else None)


@case
def case_scatter(ctx: Ctx) -> None:
    for dtype in (torch.float32, torch.int64, torch.bool, torch.float16):
        for root in sorted({0, ctx.size - 1}):
            def fn(group: Any, dtype: torch.dtype = dtype, root: int = root) -> Any:
                out = torch.empty(2, 2, dtype=dtype)
                ins = [values(dtype, (2, 2), r, seed=10) for r in range(ctx.size)] if ctx.rank == root else None
                dist.scatter(out, ins, src=root, group=group)
                return out
            ctx.check(f"{dtype}/root {root}", fn)

    def nc(group: Any) -> Any:
        grid = torch.zeros(3, 4)
        ins = [values(torch.float32, (3,), r) for r in range(ctx.size)] if ctx.rank == 0 else None
        dist.scatter(grid[:, 1], ins, src=0, group=group)
        return grid

    def nc_ref() -> Any:
        grid = torch.zeros(3, 4)
        grid[:, 1] = values(torch.float32, (3,), ctx.rank)
        return grid
    ctx.check("strided output", nc, ref=nc_ref)


# -- reduce_scatter family ----------------------------------------------------------------------------


@case
def case_reduce_scatter(ctx: Ctx) -> None:
    for dtype in (torch.float32, torch.bfloat16, torch.int64):
        for name in ("SUM", "MAX", "AVG") if dtype.is_floating_point else ("SUM", "MIN"):
            def fn(group: Any, dtype: torch.dtype = dtype, name: str = name) -> Any:
                out = torch.empty(3, dtype=dtype)
                ins = [values(dtype, (3,), ctx.rank, seed=j) for j in range(ctx.size)]
                dist.reduce_scatter(out, ins, op=OPS[name], group=group)
                return out
            ctx.check(f"{dtype}/{name}", fn, tol=_half_tol(dtype))


@case
def case_reduce_scatter_uneven(ctx: Ctx) -> None:
    def fn(group: Any) -> Any:
        out = torch.empty(ctx.rank + 1)
        ins = [values(torch.float32, (j + 1,), ctx.rank, seed=j) for j in range(ctx.size)]
        dist.reduce_scatter(out, ins, group=group)
        return out
    ref = lambda: reduce_ref([values(torch.float32, (ctx.rank + 1,), r, seed=ctx.rank) for r in range(ctx.size)],
                             "SUM", ctx.size)
    ctx.check("block sizes 1..W", fn, ref=ref)


@case
def case_reduce_scatter_tensor(ctx: Ctx) -> None:
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.int32):
        for name in ("SUM", "AVG", "MIN") if dtype.is_floating_point else ("SUM", "BXOR"):
            def fn(group: Any, dtype: torch.dtype = dtype, name: str = name) -> Any:
                inp = values(dtype, (ctx.size * 4, 2), ctx.rank)
                keep = inp.clone()
                out = torch.empty(4, 2, dtype=dtype)
                dist.reduce_scatter_tensor(out, inp, op=OPS[name], group=group)
                return [out, torch.equal(inp, keep)]
            ctx.check(f"{dtype}/{name}", fn, tol=_half_tol(dtype))

        def stacked(group: Any, dtype: torch.dtype = dtype) -> Any:
            out = torch.empty(3, dtype=dtype)
            dist.reduce_scatter_tensor(out, values(dtype, (ctx.size, 3), ctx.rank), group=group)
            return out
        # a (W, k) input for a (k,) output: torch allows it, gloo 2.13 refuses
        ctx.check(f"{dtype} stacked input", stacked, tol=_half_tol(dtype),
                  ref=lambda dtype=dtype: reduce_ref([values(dtype, (ctx.size, 3), r) for r in range(ctx.size)],
                                                     "SUM", ctx.size)[ctx.rank])

    def premul(group: Any) -> Any:
        inp = values(torch.float32, (ctx.size * 2,), ctx.rank)
        keep = inp.clone()
        out = torch.empty(2)
        dist.reduce_scatter_tensor(out, inp, op=dist._make_nccl_premul_sum(0.5), group=group)
        return [out, torch.equal(inp, keep)]
    ref = lambda: [reduce_ref([values(torch.float32, (ctx.size * 2,), r) * 0.5 for r in range(ctx.size)], "SUM",
                              ctx.size)[ctx.rank * 2 : ctx.rank * 2 + 2], True]
    ctx.check("premul (FSDP2 gradient divide factor)", premul, ref=ref)

    def nc(group: Any) -> Any:
        inp = values(torch.float32, (2, ctx.size * 3), ctx.rank).t()  # non-contiguous input
        out = torch.zeros(3, 4)[:, 1:3]  # non-contiguous output
        dist.reduce_scatter_tensor(out, inp, group=group)
        return out

    def nc_ref() -> Any:
        full = reduce_ref([values(torch.float32, (2, ctx.size * 3), r).t().contiguous() for r in range(ctx.size)],
                          "SUM", ctx.size)
        return full[ctx.rank * 3 : ctx.rank * 3 + 3]
    ctx.check("non-contiguous in and out", nc, ref=nc_ref)


@case
def case_reduce_scatter_tensor_coalesced(ctx: Ctx) -> None:
    def fn(group: Any) -> Any:
        ins = [values(torch.float32, (ctx.size * n,), ctx.rank, seed=n) for n in (2, 1, 3)]
        outs = [torch.empty(x.numel() // ctx.size) for x in ins]
        with dist._coalescing_manager(group=group, async_ops=True) as cm:
            for o, x in zip(outs, ins):
                dist.reduce_scatter_tensor(o, x, op=R.SUM, group=group)
        cm.wait()
        return outs
    ctx.check("coalescing manager", fn)


# -- all_to_all ------------------------------------------------------------------------------------------


@case
def case_all_to_all_single(ctx: Ctx) -> None:
    for dtype in (torch.float32, torch.int64, torch.bool, torch.bfloat16):
        def fn(group: Any, dtype: torch.dtype = dtype) -> Any:
            inp = values(dtype, (ctx.size * 2, 3), ctx.rank)
            out = torch.empty_like(inp)
            dist.all_to_all_single(out, inp, group=group)
            return out
        ctx.check(f"{dtype} even", fn)

    def uneven(group: Any) -> Any:
        # rank i sends (i + j) % 3 + 0..: rows to rank j; a zero-row split included
        send = [(ctx.rank + j) % 3 for j in range(ctx.size)]
        recv = [(j + ctx.rank) % 3 for j in range(ctx.size)]
        inp = values(torch.float32, (sum(send), 2), ctx.rank)
        out = torch.full((sum(recv), 2), -1.0)
        dist.all_to_all_single(out, inp, output_split_sizes=recv, input_split_sizes=send, group=group)
        return out
    ctx.check("uneven splits", uneven)

    def nc(group: Any) -> Any:
        inp = values(torch.int64, (3, ctx.size * 2), ctx.rank).t()
        out = torch.zeros(3, ctx.size * 2, dtype=torch.int64).t()
        dist.all_to_all_single(out, inp, group=group)
        return out

    def nc_ref() -> Any:
        ins = [values(torch.int64, (3, ctx.size * 2), r).t() for r in range(ctx.size)]
        return torch.cat([x[ctx.rank * 2 : ctx.rank * 2 + 2] for x in ins])
    ctx.check("non-contiguous (gloo refuses)", nc, ref=nc_ref)

    def empty(group: Any) -> Any:
        out = torch.empty(0)
        w = dist.all_to_all_single(out, torch.empty(0), group=group, async_op=True)
        w.wait()
        return out
    ctx.check("empty", empty)


@case
def case_all_to_all(ctx: Ctx) -> None:
    def fn(group: Any) -> Any:
        ins = [values(torch.float32, (2, 2), ctx.rank, seed=j) for j in range(ctx.size)]
        outs = [torch.empty(2, 2) for _ in range(ctx.size)]
        dist.all_to_all(outs, ins, group=group)
        return outs
    ctx.check("equal", fn)

    def uneven(group: Any) -> Any:
        ins = [values(torch.int64, (ctx.rank + j + 1,), ctx.rank, seed=j) for j in range(ctx.size)]
        outs = [torch.empty(j + ctx.rank + 1, dtype=torch.int64) for j in range(ctx.size)]
        dist.all_to_all(outs, ins, group=group)
        return outs
    # gloo requires equal sizes; MPI semantics give outs[j] = rank j's ins[me]
    ctx.check("uneven", uneven, ref=lambda: [values(torch.int64, (j + ctx.rank + 1,), j, seed=ctx.rank)
                                             for j in range(ctx.size)])


# -- barrier, point to point -----------------------------------------------------------------------------


@case
def case_barrier(ctx: Ctx) -> None:
    def fn(group: Any) -> Any:
        dist.barrier(group=group)
        w = dist.barrier(group=group, async_op=True)
        w.wait()
        return w.is_completed()
    ctx.check("sync and async", fn)


@case
def case_send_recv(ctx: Ctx) -> None:
    right, left = (ctx.rank + 1) % ctx.size, (ctx.rank - 1) % ctx.size

    def ring(group: Any) -> Any:
        got = torch.empty(5)
        # irecv before isend on every rank must not deadlock
        r = dist.irecv(got, src=left, group=group)
        s = dist.isend(values(torch.float32, (5,), ctx.rank), dst=right, group=group)
        s.wait()
        r.wait()
        return got
    ctx.check("ring isend/irecv", ring)

    def blocking(group: Any) -> Any:
        big = torch.empty(1 << 20)  # 4 MiB: larger than the transport's buffers
        if ctx.rank == 0:
            dist.send(values(torch.float32, (1 << 20,), 0), dst=ctx.size - 1, group=group)
            dist.recv(big, src=ctx.size - 1, group=group)
        elif ctx.rank == ctx.size - 1:
            dist.recv(big, src=0, group=group)
            dist.send(big * 2, dst=0, group=group)
        return big if ctx.rank in (0, ctx.size - 1) else None
    ctx.check("send/recv 4 MiB", blocking)

    def tags(group: Any) -> Any:
        # messages with different tags match by tag, not by order of arrival
        if ctx.rank == 0:
            a, b = torch.empty(2), torch.empty(3)
            rb = dist.irecv(b, src=1, tag=7, group=group)
            ra = dist.irecv(a, src=1, tag=3, group=group)
            ra.wait()
            rb.wait()
            return [a, b]
        if ctx.rank == 1:
            dist.send(torch.full((2,), 3.0), dst=0, tag=3, group=group)
            dist.send(torch.full((3,), 7.0), dst=0, tag=7, group=group)
        return None
    ctx.check("tags", tags)

    def fifo(group: Any) -> Any:
        if ctx.rank == 1:
            for i in range(5):
                dist.isend(torch.full((3,), float(i)), dst=0, group=group).wait()
        if ctx.rank == 0:
            outs = [torch.empty(3) for _ in range(5)]
            works = [dist.irecv(o, src=1, group=group) for o in outs]
            for w in works:
                w.wait()
            return outs
        return None
    ctx.check("fifo per tag", fifo)

    def strided(group: Any) -> Any:
        grid = torch.zeros(3, 4)
        if ctx.rank == 0:
            dist.send(values(torch.float32, (3, 4), 0).t()[1], dst=1, group=group)
        elif ctx.rank == 1:
            dist.recv(grid[:, 2], src=0, group=group)
        return grid

    def strided_ref() -> Any:
        grid = torch.zeros(3, 4)
        if ctx.rank == 1:
            grid[:, 2] = values(torch.float32, (3, 4), 0).t()[1]
        return grid
    ctx.check("non-contiguous (gloo refuses)", strided, ref=strided_ref)

    def batch(group: Any) -> Any:
        got = torch.empty(3, dtype=torch.int64)
        ops = [dist.P2POp(dist.irecv, got, left, group), dist.P2POp(dist.isend, values(torch.int64, (3,), ctx.rank),
                                                                   right, group)]
        for w in dist.batch_isend_irecv(ops):
            w.wait()
        return got
    ctx.check("batch_isend_irecv", batch)


@case
def case_recv_any_source(ctx: Ctx) -> None:
    def fn(group: Any) -> Any:
        if ctx.rank == 0:
            seen = {}
            for _ in range(ctx.size - 1):
                t = torch.empty(2)
                src = dist.recv(t, group=group)
                seen[src] = t
            return [seen[s] for s in sorted(seen)] + [sorted(seen)]
        dist.send(values(torch.float32, (2,), ctx.rank), dst=0, group=group)
        return None
    ctx.check("recv(src=None)", fn)


@case
def case_send_to_self(ctx: Ctx) -> None:
    def fn(group: Any) -> Any:
        got = torch.empty(3)
        src = values(torch.float32, (3,), ctx.rank)
        s = dist.isend(src, dst=ctx.rank, group=group)
        r = dist.irecv(got, src=ctx.rank, group=group)
        s.wait()
        r.wait()
        return got
    ctx.check("isend/irecv to self", fn, ref=lambda: values(torch.float32, (3,), ctx.rank))


# -- objects, groups, work ---------------------------------------------------------------------------------


@case
def case_object_collectives(ctx: Ctx) -> None:
    def fn(group: Any) -> Any:
        mine = {"rank": ctx.rank, "data": list(range(ctx.rank * 3)), "s": "x" * (ctx.rank * 100)}
        gathered: list[Any] = [None] * ctx.size
        dist.all_gather_object(gathered, mine, group=group)
        objs = [{"from": "root"}, 7] if ctx.rank == 0 else [None, None]
        dist.broadcast_object_list(objs, src=0, group=group)
        at_root: list[Any] | None = [None] * ctx.size if ctx.rank == 0 else None
        dist.gather_object(mine, at_root, dst=0, group=group)
        out: list[Any] = [None]
        dist.scatter_object_list(out, [f"for {r}" for r in range(ctx.size)] if ctx.rank == 0 else None, src=0,
                                 group=group)
        return [gathered, objs, at_root, out]
    ctx.check("all_gather/broadcast/gather/scatter objects", fn)


@case
def case_subgroups(ctx: Ctx) -> None:
    """new_group over [0, W-1] and new_subgroups; non-members return at once (gloo alike)."""
    members = sorted({0, ctx.size - 1})
    ours_sub = dist.new_group(members, backend="collectives")
    gloo_sub = dist.new_group(members, backend="gloo")
    subs = {id(ctx.ours): ours_sub, id(ctx.gloo): gloo_sub}

    def fn(group: Any) -> Any:
        sub = subs[id(group)]
        t = values(torch.float32, (4,), ctx.rank)
        dist.all_reduce(t, group=sub)
        outs = [torch.empty(2) for _ in members] if ctx.rank in members else None
        if ctx.rank in members:
            dist.all_gather(outs, values(torch.float32, (2,), ctx.rank), group=sub)
            b = values(torch.int64, (3,), ctx.rank)
            dist.broadcast(b, src=members[-1], group=sub)  # a global rank
            return [t, outs, b, dist.get_rank(sub), dist.get_world_size(sub)]
        return [t, dist.get_rank(sub)]
    ctx.check("new_group([0, W-1])", fn)
    if ctx.rank in members and dist.get_backend(ours_sub) != "collectives":
        ctx.problems.append(f"get_backend(sub) = {dist.get_backend(ours_sub)}")
    dist.destroy_process_group(ours_sub)
    dist.destroy_process_group(gloo_sub)


@case
def case_functional_collectives(ctx: Ctx) -> None:
    """torch.distributed._functional_collectives (DTensor's path): they reach the group from
    C++ through the trampolined methods (allreduce, all_gather_single_coalesced, ...)."""
    import torch.distributed._functional_collectives as funcol

    def fn(group: Any) -> Any:
        x = values(torch.float32, (ctx.size * 2, 3), ctx.rank)
        a = funcol.wait_tensor(funcol.all_reduce(x, "sum", group))
        g = funcol.wait_tensor(funcol.all_gather_tensor(x, 0, group))
        rs = funcol.wait_tensor(funcol.reduce_scatter_tensor(x, "sum", 0, group))
        b = funcol.wait_tensor(funcol.broadcast(x, 0, group))
        a2a = funcol.wait_tensor(funcol.all_to_all_single(x, None, None, group))
        return [a, g, rs, b, a2a]
    ctx.check("all_reduce/all_gather/reduce_scatter/broadcast/all_to_all", fn)

    def dtensor(group: Any) -> Any:
        from torch.distributed.device_mesh import DeviceMesh
        from torch.distributed.tensor import Shard, distribute_tensor

        mesh = DeviceMesh.from_group(group, "cpu")
        full = values(torch.float32, (ctx.size * 2, 4), 0)
        d = distribute_tensor(full, mesh, [Shard(0)])
        return [(d * 2).full_tensor(), d.redistribute(mesh, [Shard(1)]).full_tensor()]
    ctx.check("DTensor shard / full_tensor / redistribute", dtensor)


@case
def case_identity(ctx: Ctx) -> None:
    pg = ctx.ours
    if dist.get_backend(pg) != "collectives":
        ctx.problems.append(f"get_backend: {dist.get_backend(pg)}")
    if pg.name() != "collectives" or pg.getBackendName() != "collectives":
        ctx.problems.append(f"name(): {pg.name()}")
    if pg.rank() != ctx.rank or pg.size() != ctx.size:
        ctx.problems.append(f"rank/size: {pg.rank()}/{pg.size()}")
    if not pg.group_name:
        ctx.problems.append("group_name is empty")
    if dist.get_process_group_ranks(pg) != list(range(ctx.size)):
        ctx.problems.append(f"ranks: {dist.get_process_group_ranks(pg)}")
    work = dist.all_reduce(torch.ones(1), group=pg, async_op=True)
    if not isinstance(work, dist.Work):
        ctx.problems.append(f"async all_reduce returned {type(work)}, not a dist.Work")
    work.wait(timeout=datetime.timedelta(seconds=30))


@case
def case_monitored_barrier_ok(ctx: Ctx) -> None:
    from collectives.torch_backend import monitored_barrier

    monitored_barrier(ctx.ours, timeout=datetime.timedelta(seconds=30))
    monitored_barrier(ctx.ours, timeout=30, wait_all_ranks=True)
    monitored_barrier(ctx.gloo, timeout=datetime.timedelta(seconds=30))  # passed on to gloo's
