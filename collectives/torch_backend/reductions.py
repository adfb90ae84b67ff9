"""The reductions of the process group: all_reduce (dense and sparse, coalesced), reduce,
and the reduce-scatter family, each one call of the group's collective communicator."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..communicator import Communicator
from ..ops import ReduceOp
from .arguments import _C10D, single_pair, one, same_dtype, tensor_list
from .errors import InvalidOperation
from .tensors import RedOpType, StandIn, numeric, raw, red_op_type, resolve_op, scale_
from .work import CollectivesWork


class Reductions:
    """all_reduce, reduce and reduce_scatter for :class:`CollectivesProcessGroup`."""

    comm: Communicator
    _rank: int
    _size: int
    _launch: Callable[..., CollectivesWork]
    _check_root: Callable[[Any, str], int]
    _check_count: Callable[[Sequence[torch.Tensor], str], None]

    # -- all-reduce family ----------------------------------------------------------------------

    def allreduce(self, tensors: Any, opts: Any = None) -> CollectivesWork:
        if opts is None or not hasattr(opts, "reduceOp"):
            op = opts
            opts = _C10D.AllreduceOptions()
            if op is not None:
                opts.reduceOp = op
        if isinstance(tensors, (list, tuple)) and len(tensors) == 1 and getattr(tensors[0], "is_sparse", False):
            return self._sparse_allreduce(tensors[0], opts)
        tensor = one(tensors, "allreduce: tensors")
        op, factor = resolve_op(opts.reduceOp, tensor.dtype, "allreduce")
        stage = StandIn(tensor, load=True, store=True)

        def body(seq: int, timeout: float) -> None:
            host = stage.tensor
            if factor is not None:
                scale_(host, factor)
            if host.numel():
                self.comm.all_reduce(numeric(host), op)
            stage.finish()

        return self._launch("all_reduce", body, [tensor], opts)

    def _sparse_allreduce(self, tensor: torch.Tensor, opts: Any) -> CollectivesWork:
        """A sparse COO all_reduce (SUM, as gloo offers): all-gather every rank's indices and
        values, then sum duplicates in rank order (the same bits on every rank)."""
        if red_op_type(opts.reduceOp) != RedOpType.SUM:
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
                self.comm.all_gather(raw(padded), raw(gathered))
            return torch.cat([gathered[r].narrow(axis, 0, counts[r]) for r in range(self._size)], dim=axis)

        def body(seq: int, timeout: float) -> None:
            indices, values = source._indices().contiguous(), source._values().contiguous()
            mine = torch.tensor([indices.shape[1]], dtype=torch.int64)
            counts = torch.empty(self._size, dtype=torch.int64)
            self.comm.all_gather(raw(mine), raw(counts))
            n = counts.tolist()
            all_indices = gather_padded(indices, n, 1) if sparse_dim else indices
            all_values = gather_padded(values, n, 0)
            total = torch.sparse_coo_tensor(all_indices, all_values, source.shape).coalesce()
            with torch.no_grad():
                tensor.copy_(total.to(tensor.device))

        return self._launch("all_reduce", body, [tensor], opts)

    def allreduce_coalesced(self, tensors: Any, opts: Any = None) -> CollectivesWork:
        opts = opts if opts is not None else _C10D.AllreduceCoalescedOptions()
        tensors = tensor_list(tensors, "allreduce_coalesced: tensors")
        if not tensors:
            raise InvalidOperation("allreduce_coalesced: tensors is empty")
        resolved = [resolve_op(opts.reduceOp, t.dtype, "allreduce_coalesced") for t in tensors]
        stages = [StandIn(t, load=True, store=True) for t in tensors]
        groups: dict[torch.dtype, list[int]] = {}
        for i, t in enumerate(tensors):
            groups.setdefault(t.dtype, []).append(i)

        def body(seq: int, timeout: float) -> None:
            for dtype, members in groups.items():
                op, factor = resolved[members[0]]
                hosts = [stages[i].tensor for i in members]
                flat = hosts[0].reshape(-1) if len(hosts) == 1 else torch.cat([h.reshape(-1) for h in hosts])
                if factor is not None:
                    scale_(flat, factor)
                if flat.numel():
                    self.comm.all_reduce(numeric(flat), op)
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
        tensor = one(tensors, "reduce: tensors")
        root = self._check_root(opts.rootRank, "reduce")
        op, factor = resolve_op(opts.reduceOp, tensor.dtype, "reduce")
        is_root = self._rank == root
        stage = StandIn(tensor, load=True, store=is_root)

        def body(seq: int, timeout: float) -> None:
            host = stage.tensor
            if factor is not None:
                if not is_root and not stage.copied:
                    host = host.clone()  # leave a non-root's tensor as it was
                scale_(host, factor)
            if host.numel():
                self.comm.reduce(numeric(host), root, op)
            stage.finish()

        return self._launch("reduce", body, [tensor], opts)

    # -- reduce-scatter family --------------------------------------------------------------------

    def _reduce_scatter_flat(self, packed: torch.Tensor, out: torch.Tensor, op: ReduceOp, factor: Any) -> None:
        """Reduce-scatter a contiguous ``packed`` (W·k elements, may be scaled in place) into
        the contiguous host tensor ``out`` (k elements)."""
        if factor is not None:
            scale_(packed, factor)
        if out.numel():
            self.comm.reduce_scatter(numeric(packed), numeric(out), op)

    def reduce_scatter(self, outputs: Any, inputs: Any, opts: Any = None) -> CollectivesWork:
        opts = opts if opts is not None else _C10D.ReduceScatterOptions()
        output = one(outputs, "reduce_scatter: outputs")
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 1:
            raise InvalidOperation("reduce_scatter: inputs must be a list holding one list of tensors")
        blocks = tensor_list(inputs[0], "reduce_scatter: inputs[0]")
        self._check_count(blocks, "reduce_scatter: inputs[0]")
        same_dtype(blocks, output.dtype, "reduce_scatter: inputs[0]")
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
        stage = StandIn(output, load=False, store=True)

        def body(seq: int, timeout: float) -> None:
            if even:
                self._reduce_scatter_flat(packed, stage.tensor, op, factor)
            else:
                block = torch.empty(width, dtype=output.dtype)
                self._reduce_scatter_flat(packed, block, op, factor)
                stage.tensor.view(-1).copy_(block[: counts[self._rank]])
            stage.finish()

        return self._launch("reduce_scatter", body, [output], opts)

    def reduce_scatter_single(self, output: Any, input: Any, opts: Any = None) -> CollectivesWork:  # noqa: A002
        opts = opts if opts is not None else _C10D.ReduceScatterOptions()
        output, input = single_pair("reduce_scatter_single", output, input, self._size, gathers=False)  # noqa: A001
        op, factor = resolve_op(opts.reduceOp, output.dtype, "reduce_scatter_single")
        in_stage = StandIn(input, load=True)
        out_stage = StandIn(output, load=False, store=True)

        def body(seq: int, timeout: float) -> None:
            packed = in_stage.tensor
            if factor is not None and not in_stage.copied:
                packed = packed.clone()  # the caller's input stays as it was
            self._reduce_scatter_flat(packed, out_stage.tensor, op, factor)
            out_stage.finish()

        return self._launch("reduce_scatter_single", body, [output], opts)

    _reduce_scatter_base = reduce_scatter_single

    def reduce_scatter_single_coalesced(self, outputs: Any, inputs: Any, opts: Any = None) -> CollectivesWork:
        opts = opts if opts is not None else _C10D.ReduceScatterOptions()
        outputs = tensor_list(outputs, "reduce_scatter_single_coalesced: outputs")
        inputs = tensor_list(inputs, "reduce_scatter_single_coalesced: inputs")
        if len(outputs) != len(inputs) or not outputs:
            raise InvalidOperation("reduce_scatter_single_coalesced: needs as many outputs as inputs (at least one)")
        for i, (o, x) in enumerate(zip(outputs, inputs)):
            if x.dtype != o.dtype or x.numel() != self._size * o.numel():
                raise InvalidOperation(
                    f"reduce_scatter_single_coalesced: pair {i}: input ({x.numel()} × {x.dtype}) must hold world "
                    f"size {self._size} × output ({o.numel()} × {o.dtype})"
                )
        dtype = outputs[0].dtype
        same_dtype(outputs, dtype, "reduce_scatter_single_coalesced: outputs")
        op, factor = resolve_op(opts.reduceOp, dtype, "reduce_scatter_single_coalesced")
        # rank r's block of the packed input is the concatenation of every input's block r
        packed = torch.cat([x.detach().cpu().reshape(self._size, -1) for x in inputs], dim=1).reshape(-1)
        stages = [StandIn(o, load=False, store=True) for o in outputs]
        counts = [o.numel() for o in outputs]

        def body(seq: int, timeout: float) -> None:
            out = torch.empty(sum(counts), dtype=dtype)
            self._reduce_scatter_flat(packed, out, op, factor)
            offset = 0
            for s, n in zip(stages, counts):
                s.tensor.view(-1).copy_(out[offset : offset + n])
                offset += n
                s.finish()

        return self._launch("reduce_scatter_single_coalesced", body, outputs, opts)

    reduce_scatter_tensor_coalesced = reduce_scatter_single_coalesced
