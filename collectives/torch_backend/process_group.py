"""``CollectivesProcessGroup``: a ``torch.distributed.ProcessGroup`` over our Communicator.

torch creates one per group (the default group, every ``new_group`` and DeviceMesh
dimension) on the member ranks, handing it a store already prefixed for that group. The
group connects two communicators through that store: one runs the collectives, in the
order they are issued, and one carries point-to-point traffic and all-to-all exchanges
(see :mod:`.p2p`), so that ``irecv`` never blocks the collectives nor they it.

Every method receives torch's arguments (lists of tensors and an options object), checks
them on the caller's thread (a wrong call raises at once and sends nothing), stages what
is not a contiguous host tensor (:mod:`.tensors`), and returns a :class:`CollectivesWork`.
A synchronous call (``opts.asyncOp`` false) with nothing queued runs on the caller's
thread; the rest run on the group's worker thread, in order.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .._init import connect
from ..config import Config
from ..ops import ReduceOp
from ..store import PrefixStore
from ..store.torch_store import TorchStore
from .errors import InvalidOperation, to_torch_error
from .p2p import P2PEngine
from .tensors import (
    Staged,
    bytes_view,
    check_tensor,
    is_plain,
    numeric_view,
    red_op_type,
    resolve_op,
    scale_,
)
from .work import AggregateWork, Completer, CollectivesWork, OrderedRunner

logger = logging.getLogger("collectives")

BACKEND_NAME = "collectives"
SHUTDOWN_GRACE = 60.0  # seconds shutdown() lets queued operations finish before aborting
_C10D = torch._C._distributed_c10d


def _seconds(timeout: Any, default: float) -> float:
    """An options object's timeout in seconds, or ``default`` when unset (negative)."""
    if timeout is None:
        return default
    if isinstance(timeout, datetime.timedelta):
        seconds = timeout.total_seconds()
    else:
        seconds = float(timeout)
    return seconds if seconds > 0 else default


def _tensor_list(value: Any, name: str) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if not isinstance(value, (list, tuple)):
        raise InvalidOperation(f"{name}: expected a list of tensors, got {type(value).__name__}")
    return [check_tensor(t, f"{name}[{i}]") for i, t in enumerate(value)]


def _one(value: Any, name: str) -> torch.Tensor:
    tensors = _tensor_list(value, name)
    if len(tensors) != 1:
        raise InvalidOperation(f"{name}: expected exactly one tensor, got {len(tensors)}")
    return tensors[0]


def _same_dtype(tensors: Sequence[torch.Tensor], dtype: torch.dtype, name: str) -> None:
    for i, t in enumerate(tensors):
        if t.dtype != dtype:
            raise InvalidOperation(f"{name}[{i}]: dtype {t.dtype} differs from {dtype}")


def _copy_out(dst: torch.Tensor, src_bytes: torch.Tensor) -> None:
    """Write the bytes ``src_bytes`` (a flat uint8 host tensor) into ``dst`` (any layout, device)."""
    with torch.no_grad():
        dst.detach().copy_(src_bytes.view(dst.dtype).view(dst.shape))


def _as_bytes(t: torch.Tensor) -> torch.Tensor:
    """A flat uint8 view of a contiguous host tensor."""
    return t.detach().reshape(-1).view(torch.uint8)


def _consecutive(tensors: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """If ``tensors`` are plain host tensors lying back to back in one storage (torch.chunk
    of a flat buffer, FSDP1), one flat uint8 tensor over all of them; else None."""
    if not tensors or not all(is_plain(t) for t in tensors):
        return None
    first = tensors[0]
    storage = first.untyped_storage()
    start = first.data_ptr()
    position = start
    for t in tensors:
        if t.untyped_storage().data_ptr() != storage.data_ptr() or t.data_ptr() != position:
            return None
        position += t.numel() * t.element_size()
    total = position - start
    flat = torch.empty(0, dtype=torch.uint8)
    flat.set_(storage, first.storage_offset() * first.element_size(), (total,))
    return flat


class CollectivesProcessGroup(dist.ProcessGroup):
    """A torch process group whose collectives run on :class:`collectives.Communicator`."""

    def __init__(
        self,
        store: Any,
        rank: int,
        size: int,
        timeout: datetime.timedelta | float = datetime.timedelta(minutes=30),
        *,
        config: Config | None = None,
    ) -> None:
        super().__init__(rank, size)
        self._rank = rank
        self._size = size
        self._timeout = _seconds(timeout, 1800.0)
        self._config = dataclasses.replace(config or Config.from_env(), timeout=self._timeout)
        self._group_name = ""
        self._group_desc = ""
        self._store = TorchStore(store, self._timeout)
        self._issue_lock = threading.Lock()
        self._seq = 0
        self._p2p_seq = 0
        self._monitored_seq = 0
        self._coalescing: list[CollectivesWork] | None = None
        self._completer: Completer | None = None
        self._closed = False
        self.comm = connect(rank, size, PrefixStore("coll", self._store), self._config)
        try:
            p2p_comm = connect(rank, size, PrefixStore("p2p", self._store), self._config)
        except BaseException:
            self.comm.close()
            raise
        self._p2p = P2PEngine(p2p_comm, f"collectives-pg-r{rank}")
        self._runner = OrderedRunner(f"collectives-pg-r{rank}")

    # -- identity -------------------------------------------------------------------------

    def getBackendName(self) -> str:  # noqa: N802 - torch's name
        return BACKEND_NAME

    def _set_group_name(self, name: str) -> None:
        self._group_name = name

    @property
    def group_name(self) -> str:
        return self._group_name

    def _set_group_desc(self, desc: str) -> None:
        self._group_desc = desc

    @property
    def group_desc(self) -> str:
        return self._group_desc

    def __repr__(self) -> str:
        return f"<CollectivesProcessGroup {self._group_name or '?'} rank {self._rank}/{self._size}>"

    def _where(self) -> str:
        try:
            ranks = dist.get_process_group_ranks(self)
        except Exception:  # noqa: BLE001 - not registered (yet)
            ranks = None
        members = f" (global ranks {ranks})" if ranks is not None else ""
        return f"[collectives] group '{self._group_name or '?'}'{members} rank {self._rank}/{self._size}"

    # -- lifecycle --------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Finish queued work, then close both communicators (``destroy_process_group``)."""
        if self._closed:
            return
        self._closed = True
        self._runner.stop(timeout=min(self._timeout, SHUTDOWN_GRACE))
        if not self._runner.drain(timeout=0):
            self.comm.abort()  # an operation still hangs: fail it instead of waiting longer
        self._p2p.close()
        self.comm.close()
        if self._completer is not None:
            self._completer.stop()

    def abort(self) -> None:
        """Tear down at once: blocked and later operations fail."""
        if self._closed:
            return
        self._closed = True
        self.comm.abort()
        self._p2p.abort()
        self._runner.stop(timeout=0)
        if self._completer is not None:
            self._completer.stop()

    def _start_coalescing(self, device: Any = None) -> None:
        if self._coalescing is not None:
            raise InvalidOperation("coalescing already started on this group")
        self._coalescing = []

    def _end_coalescing(self, device: Any = None) -> CollectivesWork:
        works, self._coalescing = self._coalescing or [], None
        return AggregateWork(works, self._where)

    # -- issuing ------------------------------------------------------------------------------

    def _completer_for(self) -> Completer:
        if self._completer is None:
            with self._issue_lock:
                if self._completer is None:
                    self._completer = Completer(f"collectives-pg-r{self._rank}-futures")
        return self._completer

    def _launch(
        self,
        name: str,
        body: Callable[[int, float], None],
        outputs: list[torch.Tensor],
        opts: Any,
    ) -> CollectivesWork:
        """Number the collective and run ``body(seq, timeout_seconds)`` in issue order."""
        if self._closed:
            raise dist.DistBackendError(f"{self._where()}: {name}: the process group was shut down")
        async_op = bool(getattr(opts, "asyncOp", True))
        seconds = _seconds(getattr(opts, "timeout", None), self._timeout)
        completer = self._completer_for()
        with self._issue_lock:
            self._seq += 1
            seq = self._seq
            work = CollectivesWork(name, seq, outputs, self._where)
            work._completer = completer

            def run() -> None:
                on_worker = threading.get_ident() == self._runner.worker_ident
                error: BaseException | None = None
                self.comm.timeout = seconds
                try:
                    body(seq, seconds)
                except BaseException as exc:  # noqa: BLE001 - handed to the waiter
                    error = to_torch_error(exc, f"{self._where()}: {name} #{seq}")
                finally:
                    self.comm.timeout = self._timeout
                work._finish(error, on_worker=on_worker)

            inline = self._runner.claim_or_queue(run, inline=not async_op)
            if self._coalescing is not None:
                self._coalescing.append(work)
        if inline:
            try:
                run()
            finally:
                self._runner.release()
        return work

    # -- all-reduce family ----------------------------------------------------------------------

    def allreduce(self, tensors: Any, opts: Any = None) -> CollectivesWork:
        if opts is None or not hasattr(opts, "reduceOp"):
            op = opts
            opts = _C10D.AllreduceOptions()
            if op is not None:
                opts.reduceOp = op
        if isinstance(tensors, (list, tuple)) and len(tensors) == 1 and getattr(tensors[0], "is_sparse", False):
            return self._sparse_allreduce(tensors[0], opts)
        tensor = _one(tensors, "allreduce: tensors")
        op, factor = resolve_op(opts.reduceOp, tensor.dtype, "allreduce")
        stage = Staged(tensor, load=True, store=True)

        def body(seq: int, timeout: float) -> None:
            host = stage.host
            if factor is not None:
                scale_(host, factor)
            if host.numel():
                self.comm.all_reduce(numeric_view(host), op)
            stage.finish()

        return self._launch("all_reduce", body, [tensor], opts)

    def _sparse_allreduce(self, tensor: torch.Tensor, opts: Any) -> CollectivesWork:
        """A sparse COO all_reduce (SUM, as gloo offers): all-gather every rank's indices and
        values, then sum duplicates in rank order (the same bits on every rank)."""
        if red_op_type(opts.reduceOp) != dist.ReduceOp.RedOpType.SUM:
            raise InvalidOperation("allreduce: sparse tensors support ReduceOp.SUM only")
        source = tensor.detach().to("cpu").coalesce()
        sparse_dim = source.sparse_dim()

        def gather_padded(part: torch.Tensor, counts: list[int], axis: int) -> torch.Tensor:
            """All-gather ``part`` (``counts[r]`` entries along ``axis`` on rank r) and
            concatenate the ranks' entries in rank order."""
            width = max(counts)
            shape = list(part.shape)
            shape[axis] = width
            padded = torch.zeros(shape, dtype=part.dtype)
            padded.narrow(axis, 0, part.shape[axis]).copy_(part)
            gathered = torch.empty([self._size, *shape], dtype=part.dtype)
            if padded.numel():
                self.comm.all_gather(bytes_view(padded), bytes_view(gathered))
            return torch.cat([gathered[r].narrow(axis, 0, counts[r]) for r in range(self._size)], dim=axis)

        def body(seq: int, timeout: float) -> None:
            indices, values = source._indices().contiguous(), source._values().contiguous()
            mine = torch.tensor([indices.shape[1]], dtype=torch.int64)
            counts = torch.empty(self._size, dtype=torch.int64)
            self.comm.all_gather(bytes_view(mine), bytes_view(counts))
            n = counts.tolist()
            all_indices = gather_padded(indices, n, 1) if sparse_dim else indices
            all_values = gather_padded(values, n, 0)
            total = torch.sparse_coo_tensor(all_indices, all_values, source.shape).coalesce()
            with torch.no_grad():
                tensor.copy_(total.to(tensor.device))

        return self._launch("all_reduce", body, [tensor], opts)

    def allreduce_coalesced(self, tensors: Any, opts: Any = None) -> CollectivesWork:
        opts = opts if opts is not None else _C10D.AllreduceCoalescedOptions()
        tensors = _tensor_list(tensors, "allreduce_coalesced: tensors")
        if not tensors:
            raise InvalidOperation("allreduce_coalesced: tensors is empty")
        resolved = [resolve_op(opts.reduceOp, t.dtype, "allreduce_coalesced") for t in tensors]
        stages = [Staged(t, load=True, store=True) for t in tensors]
        groups: dict[torch.dtype, list[int]] = {}
        for i, t in enumerate(tensors):
            groups.setdefault(t.dtype, []).append(i)

        def body(seq: int, timeout: float) -> None:
            for dtype, members in groups.items():
                op, factor = resolved[members[0]]
                hosts = [stages[i].host for i in members]
                flat = hosts[0].reshape(-1) if len(hosts) == 1 else torch.cat([h.reshape(-1) for h in hosts])
                if factor is not None:
                    scale_(flat, factor)
                if flat.numel():
                    self.comm.all_reduce(numeric_view(flat), op)
                if len(hosts) > 1:
                    offset = 0
                    for h in hosts:
                        h.view(-1).copy_(flat[offset : offset + h.numel()])
                        offset += h.numel()
            for s in stages:
                s.finish()

        return self._launch("all_reduce_coalesced", body, tensors, opts)

    def reduce(self, tensors: Any, opts: Any = None) -> CollectivesWork:
        opts = opts if opts is not None else _C10D.ReduceOptions()
        tensor = _one(tensors, "reduce: tensors")
        root = self._check_root(opts.rootRank, "reduce")
        op, factor = resolve_op(opts.reduceOp, tensor.dtype, "reduce")
        is_root = self._rank == root
        stage = Staged(tensor, load=True, store=is_root)

        def body(seq: int, timeout: float) -> None:
            host = stage.host
            if factor is not None:
                if not is_root and not stage.copied:
                    host = host.clone()  # leave a non-root's tensor as it was
                scale_(host, factor)
            if host.numel():
                self.comm.reduce(numeric_view(host), root, op)
            stage.finish()

        return self._launch("reduce", body, [tensor], opts)

    # -- reduce-scatter family --------------------------------------------------------------------

    def _reduce_scatter_flat(self, packed: torch.Tensor, out: torch.Tensor, op: ReduceOp, factor: Any) -> None:
        """Reduce-scatter a contiguous ``packed`` (W·k elements, may be scaled in place) into
        the contiguous host tensor ``out`` (k elements)."""
        if factor is not None:
            scale_(packed, factor)
        if out.numel():
            self.comm.reduce_scatter(numeric_view(packed), numeric_view(out), op)

    def reduce_scatter(self, outputs: Any, inputs: Any, opts: Any = None) -> CollectivesWork:
        opts = opts if opts is not None else _C10D.ReduceScatterOptions()
        output = _one(outputs, "reduce_scatter: outputs")
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 1:
            raise InvalidOperation("reduce_scatter: inputs must be a list holding one list of tensors")
        blocks = _tensor_list(inputs[0], "reduce_scatter: inputs[0]")
        self._check_count(blocks, "reduce_scatter: inputs[0]")
        _same_dtype(blocks, output.dtype, "reduce_scatter: inputs[0]")
        if blocks[self._rank].numel() != output.numel():
            raise InvalidOperation(
                f"reduce_scatter: output holds {output.numel()} elements but this rank's input block "
                f"holds {blocks[self._rank].numel()}"
            )
        op, factor = resolve_op(opts.reduceOp, output.dtype, "reduce_scatter")
        counts = [b.numel() for b in blocks]
        width = max(counts)
        even = all(c == width for c in counts)
        if even:
            packed = torch.cat([b.detach().reshape(-1).cpu() for b in blocks])
        else:  # pad every block to the largest; the padding is reduced and dropped
            packed = torch.zeros(self._size * width, dtype=output.dtype)
            for j, b in enumerate(blocks):
                packed[j * width : j * width + counts[j]].copy_(b.detach().reshape(-1))
        stage = Staged(output, load=False, store=True)

        def body(seq: int, timeout: float) -> None:
            if even:
                self._reduce_scatter_flat(packed, stage.host, op, factor)
            else:
                block = torch.empty(width, dtype=output.dtype)
                self._reduce_scatter_flat(packed, block, op, factor)
                stage.host.view(-1).copy_(block[: counts[self._rank]])
            stage.finish()

        return self._launch("reduce_scatter", body, [output], opts)

    def reduce_scatter_single(self, output: Any, input: Any, opts: Any = None) -> CollectivesWork:  # noqa: A002
        opts = opts if opts is not None else _C10D.ReduceScatterOptions()
        output = check_tensor(output, "reduce_scatter_single: output")
        input = check_tensor(input, "reduce_scatter_single: input")  # noqa: A001
        if input.dtype != output.dtype:
            raise InvalidOperation(f"reduce_scatter_single: input dtype {input.dtype} differs from output's {output.dtype}")
        if input.numel() != self._size * output.numel():
            raise InvalidOperation(
                f"reduce_scatter_single: input holds {input.numel()} elements, not world size "
                f"{self._size} × output's {output.numel()}"
            )
        op, factor = resolve_op(opts.reduceOp, output.dtype, "reduce_scatter_single")
        in_stage = Staged(input, load=True)
        out_stage = Staged(output, load=False, store=True)

        def body(seq: int, timeout: float) -> None:
            packed = in_stage.host
            if factor is not None and not in_stage.copied:
                packed = packed.clone()  # the caller's input stays as it was
            self._reduce_scatter_flat(packed, out_stage.host, op, factor)
            out_stage.finish()

        return self._launch("reduce_scatter_single", body, [output], opts)

    _reduce_scatter_base = reduce_scatter_single

    def reduce_scatter_single_coalesced(self, outputs: Any, inputs: Any, opts: Any = None) -> CollectivesWork:
        opts = opts if opts is not None else _C10D.ReduceScatterOptions()
        outputs = _tensor_list(outputs, "reduce_scatter_single_coalesced: outputs")
        inputs = _tensor_list(inputs, "reduce_scatter_single_coalesced: inputs")
        if len(outputs) != len(inputs) or not outputs:
            raise InvalidOperation("reduce_scatter_single_coalesced: needs as many outputs as inputs (at least one)")
        for i, (o, x) in enumerate(zip(outputs, inputs)):
            if x.dtype != o.dtype or x.numel() != self._size * o.numel():
                raise InvalidOperation(
                    f"reduce_scatter_single_coalesced: pair {i}: input ({x.numel()} × {x.dtype}) must hold world "
                    f"size {self._size} × output ({o.numel()} × {o.dtype})"
                )
        dtype = outputs[0].dtype
        _same_dtype(outputs, dtype, "reduce_scatter_single_coalesced: outputs")
        op, factor = resolve_op(opts.reduceOp, dtype, "reduce_scatter_single_coalesced")
        # rank r's block of the packed input is the concatenation of every input's block r
        packed = torch.cat([x.detach().cpu().reshape(self._size, -1) for x in inputs], dim=1).reshape(-1)
        stages = [Staged(o, load=False, store=True) for o in outputs]
        counts = [o.numel() for o in outputs]

        def body(seq: int, timeout: float) -> None:
            out = torch.empty(sum(counts), dtype=dtype)
            self._reduce_scatter_flat(packed, out, op, factor)
            offset = 0
            for s, n in zip(stages, counts):
                s.host.view(-1).copy_(out[offset : offset + n])
                offset += n
                s.finish()

        return self._launch("reduce_scatter_single_coalesced", body, outputs, opts)

    reduce_scatter_tensor_coalesced = reduce_scatter_single_coalesced

    # -- gather family ------------------------------------------------------------------------------

    def _gather_target(self, outputs: Sequence[torch.Tensor], nbytes: int) -> tuple[torch.Tensor, bool]:
        """Where a rank-ordered gather of ``nbytes`` per rank lands: straight in the outputs
        when they lie back to back, else a scratch buffer (second value: copy out needed)."""
        flat = _consecutive(outputs)
        if flat is not None and flat.numel() == nbytes * self._size:
            return flat, False
        return torch.empty(nbytes * self._size, dtype=torch.uint8), True

    def allgather(self, outputs: Any, inputs: Any, opts: Any = None) -> CollectivesWork:
        opts = opts if opts is not None else _C10D.AllgatherOptions()
        tensor = _one(inputs, "allgather: inputs")
        if not isinstance(outputs, (list, tuple)) or len(outputs) != 1:
            raise InvalidOperation("allgather: outputs must be a list holding one list of tensors")
        outs = _tensor_list(outputs[0], "allgather: outputs[0]")
        self._check_count(outs, "allgather: outputs[0]")
        _same_dtype(outs, tensor.dtype, "allgather: outputs[0]")
        sizes = [o.numel() * o.element_size() for o in outs]
        mine = tensor.numel() * tensor.element_size()
        if sizes[self._rank] != mine:
            raise InvalidOperation(
                f"allgather: this rank's output slot holds {outs[self._rank].numel()} elements but the input "
                f"holds {tensor.numel()}"
            )
        width = max(sizes)
        stage = Staged(tensor, load=True)
        if width == min(sizes):
            target, copy_out = self._gather_target(outs, width)
        else:
            target, copy_out = torch.empty(width * self._size, dtype=torch.uint8), True

        def body(seq: int, timeout: float) -> None:
            source = _as_bytes(stage.host)
            if mine != width:
                padded = torch.zeros(width, dtype=torch.uint8)
                padded[:mine].copy_(source)
                source = padded
            if width:
                self.comm.all_gather(bytes_view(source), bytes_view(target))
            if copy_out:
                for j, o in enumerate(outs):
                    _copy_out(o, target[j * width : j * width + sizes[j]])

        return self._launch("all_gather", body, outs, opts)

    def all_gather_single(self, output: Any, input: Any, opts: Any = None) -> CollectivesWork:  # noqa: A002
        opts = opts if opts is not None else _C10D.AllgatherOptions()
        output = check_tensor(output, "all_gather_single: output")
        input = check_tensor(input, "all_gather_single: input")  # noqa: A001
        if input.dtype != output.dtype:
            raise InvalidOperation(f"all_gather_single: input dtype {input.dtype} differs from output's {output.dtype}")
        if output.numel() != self._size * input.numel():
            raise InvalidOperation(
                f"all_gather_single: output holds {output.numel()} elements, not world size {self._size} × "
                f"input's {input.numel()}"
            )
        in_stage = Staged(input, load=True)
        out_stage = Staged(output, load=False, store=True)

        def body(seq: int, timeout: float) -> None:
            if input.numel():
                self.comm.all_gather(bytes_view(in_stage.host), bytes_view(out_stage.host))
            out_stage.finish()

        return self._launch("all_gather_single", body, [output], opts)

    _allgather_base = all_gather_single

    def _all_gather_packed(
        self,
        inputs: Sequence[torch.Tensor],
        out_of: Callable[[int, int], torch.Tensor],
        name: str,
        opts: Any,
        outputs: list[torch.Tensor],
        finish: Callable[[], None] | None = None,
    ) -> CollectivesWork:
        """All-gather several inputs as one message: rank r's inputs[i] lands in ``out_of(r, i)``."""
        sizes = [t.numel() * t.element_size() for t in inputs]
        total = sum(sizes)
        packed = torch.empty(total, dtype=torch.uint8)
        offset = 0
        for t, n in zip(inputs, sizes):
            host = t.detach().cpu().contiguous() if not is_plain(t.detach()) else t.detach()
            packed[offset : offset + n].copy_(_as_bytes(host))
            offset += n

        def body(seq: int, timeout: float) -> None:
            gathered = torch.empty(total * self._size, dtype=torch.uint8)
            if total:
                self.comm.all_gather(bytes_view(packed), bytes_view(gathered))
            for r in range(self._size):
                offset = r * total
                for i, n in enumerate(sizes):
                    _copy_out(out_of(r, i), gathered[offset : offset + n])
                    offset += n
            if finish is not None:
                finish()

        return self._launch(name, body, outputs, opts)

    def allgather_coalesced(self, output_lists: Any, inputs: Any, opts: Any = None) -> CollectivesWork:
        opts = opts if opts is not None else _C10D.AllgatherOptions()
        inputs = _tensor_list(inputs, "allgather_coalesced: inputs")
        if not isinstance(output_lists, (list, tuple)) or len(output_lists) != self._size:
            raise InvalidOperation(f"allgather_coalesced: outputs must hold one list per rank ({self._size})")
        lists = [_tensor_list(lst, f"allgather_coalesced: outputs[{r}]") for r, lst in enumerate(output_lists)]
        for r, lst in enumerate(lists):
            if len(lst) != len(inputs):
                raise InvalidOperation(f"allgather_coalesced: outputs[{r}] holds {len(lst)} tensors, inputs {len(inputs)}")
            for i, (o, x) in enumerate(zip(lst, inputs)):
                if o.numel() != x.numel() or o.dtype != x.dtype:
                    raise InvalidOperation(f"allgather_coalesced: outputs[{r}][{i}] does not match inputs[{i}]")
        return self._all_gather_packed(
            inputs, lambda r, i: lists[r][i], "all_gather_coalesced", opts, [t for lst in lists for t in lst]
        )

    def all_gather_single_coalesced(self, outputs: Any, inputs: Any, opts: Any = None) -> CollectivesWork:
        opts = opts if opts is not None else _C10D.AllgatherOptions()
        outputs = _tensor_list(outputs, "all_gather_single_coalesced: outputs")
        inputs = _tensor_list(inputs, "all_gather_single_coalesced: inputs")
        if len(outputs) != len(inputs) or not outputs:
            raise InvalidOperation("all_gather_single_coalesced: needs as many outputs as inputs (at least one)")
        if len(outputs) == 1:
            return self.all_gather_single(outputs[0], inputs[0], opts)
        for i, (o, x) in enumerate(zip(outputs, inputs)):
            if o.dtype != x.dtype or o.numel() != self._size * x.numel():
                raise InvalidOperation(
                    f"all_gather_single_coalesced: pair {i}: output must hold world size {self._size} × input"
                )
        stages = [Staged(o, load=False, store=True) for o in outputs]
        counts = [x.numel() for x in inputs]

        def out_of(r: int, i: int) -> torch.Tensor:
            return stages[i].host.view(-1)[r * counts[i] : (r + 1) * counts[i]]

        def finish() -> None:
            for s in stages:
                s.finish()

        return self._all_gather_packed(inputs, out_of, "all_gather_single_coalesced", opts, outputs, finish)

    allgather_into_tensor_coalesced = all_gather_single_coalesced

    def gather(self, outputs: Any, inputs: Any, opts: Any = None) -> CollectivesWork:
        opts = opts if opts is not None else _C10D.GatherOptions()
        tensor = _one(inputs, "gather: inputs")
        root = self._check_root(opts.rootRank, "gather")
        is_root = self._rank == root
        outs: list[torch.Tensor] = []
        if is_root:
            if not isinstance(outputs, (list, tuple)) or len(outputs) != 1:
                raise InvalidOperation("gather: on the root, outputs must be a list holding one list of tensors")
            outs = _tensor_list(outputs[0], "gather: outputs[0]")
            self._check_count(outs, "gather: outputs[0]")
            _same_dtype(outs, tensor.dtype, "gather: outputs[0]")
            for j, o in enumerate(outs):
                if o.numel() != tensor.numel():
                    raise InvalidOperation(f"gather: outputs[0][{j}] holds {o.numel()} elements, input {tensor.numel()}")
        elif outputs not in (None, []) and any(len(x) for x in outputs):
            raise InvalidOperation("gather: only the root passes output tensors")
        nbytes = tensor.numel() * tensor.element_size()
        stage = Staged(tensor, load=True)
        target, copy_out = self._gather_target(outs, nbytes) if is_root else (None, False)

        def body(seq: int, timeout: float) -> None:
            if nbytes:
                self.comm.gather(bytes_view(stage.host), None if target is None else bytes_view(target), root)
            if copy_out:
                for j, o in enumerate(outs):
                    _copy_out(o, target[j * nbytes : (j + 1) * nbytes])

        return self._launch("gather", body, outs, opts)

    def scatter(self, outputs: Any, inputs: Any, opts: Any = None) -> CollectivesWork:
        opts = opts if opts is not None else _C10D.ScatterOptions()
        output = _one(outputs, "scatter: outputs")
        root = self._check_root(opts.rootRank, "scatter")
        is_root = self._rank == root
        packed: torch.Tensor | None = None
        nbytes = output.numel() * output.element_size()
        if is_root:
            if not isinstance(inputs, (list, tuple)) or len(inputs) != 1:
                raise InvalidOperation("scatter: on the root, inputs must be a list holding one list of tensors")
            blocks = _tensor_list(inputs[0], "scatter: inputs[0]")
            self._check_count(blocks, "scatter: inputs[0]")
            _same_dtype(blocks, output.dtype, "scatter: inputs[0]")
            for j, b in enumerate(blocks):
                if b.numel() != output.numel():
                    raise InvalidOperation(f"scatter: inputs[0][{j}] holds {b.numel()} elements, output {output.numel()}")
            packed = _consecutive([b.detach() for b in blocks])
            if packed is None or packed.numel() != nbytes * self._size:
                packed = torch.empty(nbytes * self._size, dtype=torch.uint8)
                for j, b in enumerate(blocks):
                    host = b.detach().cpu().contiguous()
                    packed[j * nbytes : (j + 1) * nbytes].copy_(_as_bytes(host))
        elif inputs not in (None, []) and any(len(x) for x in inputs):
            raise InvalidOperation("scatter: only the root passes input tensors")
        stage = Staged(output, load=False, store=True)

        def body(seq: int, timeout: float) -> None:
            if nbytes:
                self.comm.scatter(None if packed is None else bytes_view(packed), bytes_view(stage.host), root)
            stage.finish()

        return self._launch("scatter", body, [output], opts)

    # -- all-to-all ---------------------------------------------------------------------------------

    def all_to_all_single(
        self,
        output: Any,
        input: Any,  # noqa: A002
        output_split_sizes: Sequence[int] | None = None,
        input_split_sizes: Sequence[int] | None = None,
        opts: Any = None,
    ) -> CollectivesWork:
        opts = opts if opts is not None else _C10D.AllToAllOptions()
        output = check_tensor(output, "all_to_all_single: output")
        input = check_tensor(input, "all_to_all_single: input")  # noqa: A001
        if input.dtype != output.dtype:
            raise InvalidOperation(f"all_to_all_single: input dtype {input.dtype} differs from output's {output.dtype}")
        in_bytes = self._split_bytes(input, input_split_sizes, "input")
        out_bytes = self._split_bytes(output, output_split_sizes, "output")
        if in_bytes[self._rank] != out_bytes[self._rank]:
            raise InvalidOperation(
                f"all_to_all_single: this rank sends itself {in_bytes[self._rank]} bytes but expects "
                f"{out_bytes[self._rank]}"
            )
        in_stage = Staged(input, load=True)
        out_stage = Staged(output, load=False, store=True)

        def body(seq: int, timeout: float) -> None:
            self.comm.all_to_all_v(bytes_view(in_stage.host), in_bytes, out_bytes, bytes_view(out_stage.host))
            out_stage.finish()

        return self._launch("all_to_all_single", body, [output], opts)

    alltoall_base = all_to_all_single

    def alltoall(self, outputs: Any, inputs: Any, opts: Any = None) -> CollectivesWork:
        opts = opts if opts is not None else _C10D.AllToAllOptions()
        outs = _tensor_list(outputs, "alltoall: outputs")
        ins = _tensor_list(inputs, "alltoall: inputs")
        self._check_count(outs, "alltoall: outputs")
        self._check_count(ins, "alltoall: inputs")
        dtype = ins[0].dtype
        _same_dtype(ins, dtype, "alltoall: inputs")
        _same_dtype(outs, dtype, "alltoall: outputs")
        if ins[self._rank].numel() != outs[self._rank].numel():
            raise InvalidOperation("alltoall: the block this rank sends itself differs in size from the one it expects")
        in_bytes = [t.numel() * t.element_size() for t in ins]
        out_bytes = [t.numel() * t.element_size() for t in outs]
        packed = _consecutive([t.detach() for t in ins])
        if packed is None or packed.numel() != sum(in_bytes):
            packed = torch.cat([_as_bytes(t.detach().cpu().resolve_conj().resolve_neg().contiguous()) for t in ins])
        target = _consecutive(outs)  # the outputs back to back: received in place
        copy_out = target is None or target.numel() != sum(out_bytes)
        if copy_out:
            target = torch.empty(sum(out_bytes), dtype=torch.uint8)

        def body(seq: int, timeout: float) -> None:
            self.comm.all_to_all_v(bytes_view(packed), in_bytes, out_bytes, bytes_view(target))
            if copy_out:
                offset = 0
                for o, n in zip(outs, out_bytes):
                    _copy_out(o, target[offset : offset + n])
                    offset += n

        return self._launch("alltoall", body, outs, opts)

    def _split_bytes(self, t: torch.Tensor, splits: Sequence[int] | None, name: str) -> list[int]:
        """Bytes per rank of a dim-0 split of ``t`` (no splits: an equal split)."""
        rows = t.shape[0] if t.dim() else 1
        row_bytes = (t.numel() // rows) * t.element_size() if rows else 0
        splits = list(splits or [])
        if not splits:
            if rows % self._size:
                raise InvalidOperation(
                    f"all_to_all_single: {name} dim 0 ({rows}) does not split evenly over {self._size} ranks"
                )
            splits = [rows // self._size] * self._size
        if len(splits) != self._size or any(s < 0 for s in splits) or sum(splits) != rows:
            raise InvalidOperation(
                f"all_to_all_single: {name} split sizes {splits} must be {self._size} non-negative numbers "
                f"adding up to dim 0 ({rows})"
            )
        return [s * row_bytes for s in splits]

    # -- broadcast and barrier ------------------------------------------------------------------------

    def broadcast(self, tensors: Any, opts: Any = None) -> CollectivesWork:
        if opts is None or not hasattr(opts, "rootRank"):
            root_arg = opts
            opts = _C10D.BroadcastOptions()
            if root_arg is not None:
                opts.rootRank = int(root_arg)
        tensor = _one(tensors, "broadcast: tensors")
        if getattr(opts, "rootTensor", 0) != 0:
            raise InvalidOperation("broadcast: rootTensor must be 0 (one tensor per rank)")
        root = self._check_root(opts.rootRank, "broadcast")
        is_root = self._rank == root
        stage = Staged(tensor, load=is_root, store=not is_root)

        def body(seq: int, timeout: float) -> None:
            if tensor.numel():
                self.comm.broadcast(bytes_view(stage.host), root)
            stage.finish()

        return self._launch("broadcast", body, [tensor], opts)

    def barrier(self, opts: Any = None) -> CollectivesWork:
        opts = opts if opts is not None else _C10D.BarrierOptions()

        def body(seq: int, timeout: float) -> None:
            self.comm.barrier()

        return self._launch("barrier", body, [], opts)

    def monitored_barrier(self, timeout: Any = None, wait_all_ranks: bool = False) -> None:
        from .monitored import monitored_barrier_on

        monitored_barrier_on(self, timeout, wait_all_ranks)

    # -- point to point ---------------------------------------------------------------------------------

    def _p2p_work(self, name: str, outputs: list[torch.Tensor]) -> CollectivesWork:
        if self._closed:
            raise dist.DistBackendError(f"{self._where()}: {name}: the process group was shut down")
        with self._issue_lock:
            self._p2p_seq += 1
            seq = self._p2p_seq
        work = CollectivesWork(name, seq, outputs, self._where)
        work._completer = self._completer_for()
        if self._coalescing is not None:
            self._coalescing.append(work)
        return work

    def _p2p_finisher(self, work: CollectivesWork, what: str, stage: Staged | None = None) -> Callable:
        def finish(error: BaseException | None, source: int | None) -> None:
            if error is None and stage is not None:
                try:
                    stage.finish()
                except BaseException as exc:  # noqa: BLE001
                    error = exc
            if error is not None:
                error = to_torch_error(error, f"{self._where()}: {what}")
                if not isinstance(error, dist.DistError):
                    wrapped = dist.DistBackendError(f"{self._where()}: {what} failed: {error}")
                    wrapped.__cause__ = error
                    error = wrapped
            work._finish(error, source=source, on_worker=True)

        return finish

    def _p2p_peer(self, peer: Any, name: str) -> int:
        if isinstance(peer, bool) or not isinstance(peer, int) or not 0 <= peer < self._size:
            raise InvalidOperation(f"{name}: rank {peer!r} is not a rank of this group (size {self._size})")
        return peer

    def send(self, tensors: Any, dst: int, tag: int = 0) -> CollectivesWork:
        tensor = _one(tensors, "send: tensors")
        dst = self._p2p_peer(dst, "send: dst")
        stage = Staged(tensor, load=True)
        work = self._p2p_work("send", [tensor])
        deadline = time.monotonic() + self._timeout
        what = f"send #{work.seq} to rank {dst} (tag {tag})"
        self._p2p.send(bytes_view(stage.host), dst, int(tag), deadline, self._p2p_finisher(work, what))
        return work

    def recv(self, tensors: Any, src: int, tag: int = 0) -> CollectivesWork:
        tensor = _one(tensors, "recv: tensors")
        src = self._p2p_peer(src, "recv: src")
        return self._recv(tensor, src, tag)

    def recv_anysource(self, tensors: Any, tag: int = 0) -> CollectivesWork:
        return self._recv(_one(tensors, "recv_anysource: tensors"), None, tag)

    recvAnysource = recv_anysource  # noqa: N815 - the C++ spelling

    def _recv(self, tensor: torch.Tensor, src: int | None, tag: int) -> CollectivesWork:
        stage = Staged(tensor, load=False, store=True)
        work = self._p2p_work("recv", [tensor])
        deadline = time.monotonic() + self._timeout
        who = f"rank {src}" if src is not None else "any rank"
        what = f"recv #{work.seq} from {who} (tag {tag})"
        self._p2p.recv(bytes_view(stage.host), src, int(tag), deadline, self._p2p_finisher(work, what, stage))
        return work

    # -- checks -------------------------------------------------------------------------------------

    def _check_root(self, root: Any, what: str) -> int:
        if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < self._size:
            raise InvalidOperation(f"{what}: root rank {root!r} is not a rank of this group (size {self._size})")
        return root

    def _check_count(self, tensors: Sequence[torch.Tensor], name: str) -> None:
        if len(tensors) != self._size:
            raise InvalidOperation(f"{name}: expected one tensor per rank ({self._size}), got {len(tensors)}")


def create_process_group(store: Any, rank: int, size: int, timeout: datetime.timedelta) -> CollectivesProcessGroup:
    """The creator torch calls (``Backend.register_backend``) for every group of this backend."""
    return CollectivesProcessGroup(store, rank, size, timeout)
