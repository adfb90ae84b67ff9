"""The data-movement collectives of the process group: the all-gather family, gather,
scatter, all-to-all and broadcast. They move raw bytes, so every torch dtype works."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..communicator import Communicator
from .arguments import _C10D, root_blocks, single_pair, as_bytes, consecutive, copy_bytes_into, one, same_dtype, tensor_list
from .errors import InvalidOperation
from .tensors import StandIn, check_tensor, raw
from .work import CollectivesWork


class DataMovement:
    """all_gather, gather, scatter, all_to_all and broadcast for :class:`CollectivesProcessGroup`."""

    comm: Communicator
    _rank: int
    _size: int
    _launch: Callable[..., CollectivesWork]
    _check_root: Callable[[Any, str], int]
    _check_count: Callable[[Sequence[torch.Tensor], str], None]

    # -- gather family ------------------------------------------------------------------------------

    def _gather_target(self, outputs: Sequence[torch.Tensor], nbytes: int) -> tuple[torch.Tensor, bool]:
        """Where a rank-ordered gather of ``nbytes`` per rank lands: straight in the outputs
        when they lie back to back, else a scratch buffer (second value: copy out needed)."""
        flat = consecutive(outputs)
        if flat is not None and flat.numel() == nbytes * self._size:
            return flat, False
        return torch.empty(nbytes * self._size, dtype=torch.uint8), True

    def allgather(self, outputs: Any, inputs: Any, opts: Any = None) -> CollectivesWork:
        opts = opts if opts is not None else _C10D.AllgatherOptions()
        tensor = one(inputs, "allgather: inputs")
        if not isinstance(outputs, (list, tuple)) or len(outputs) != 1:
            raise InvalidOperation("allgather: outputs must be a list holding one list of tensors")
        outs = tensor_list(outputs[0], "allgather: outputs[0]")
        self._check_count(outs, "allgather: outputs[0]")
        same_dtype(outs, tensor.dtype, "allgather: outputs[0]")
        sizes = [o.numel() * o.element_size() for o in outs]
        mine = tensor.numel() * tensor.element_size()
        if sizes[self._rank] != mine:
            raise InvalidOperation(
                f"allgather: this rank's output slot holds {outs[self._rank].numel()} elements but the input "
                f"holds {tensor.numel()}"
            )
        width = max(sizes)
        stage = StandIn(tensor, load=True)
        if width == min(sizes):
            target, copy_out = self._gather_target(outs, width)
        else:
            target, copy_out = torch.empty(width * self._size, dtype=torch.uint8), True

        def body(seq: int, timeout: float) -> None:
            source = as_bytes(stage.tensor)
            if mine != width:
                padded = torch.zeros(width, dtype=torch.uint8)
                padded[:mine].copy_(source)
                source = padded
            if width:
                self.comm.all_gather(raw(source), raw(target))
            if copy_out:
                for j, o in enumerate(outs):
                    copy_bytes_into(o, target[j * width : j * width + sizes[j]])

        return self._launch("all_gather", body, outs, opts)

    def all_gather_single(self, output: Any, input: Any, opts: Any = None) -> CollectivesWork:  # noqa: A002
        opts = opts if opts is not None else _C10D.AllgatherOptions()
        output, input = single_pair("all_gather_single", output, input, self._size, gathers=True)  # noqa: A001
        in_stage = StandIn(input, load=True)
        out_stage = StandIn(output, load=False, store=True)

        def body(seq: int, timeout: float) -> None:
            if input.numel():
                self.comm.all_gather(raw(in_stage.tensor), raw(out_stage.tensor))
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
            packed[offset : offset + n].copy_(raw(StandIn(t).tensor))
            offset += n

        def body(seq: int, timeout: float) -> None:
            gathered = torch.empty(total * self._size, dtype=torch.uint8)
            if total:
                self.comm.all_gather(raw(packed), raw(gathered))
            for r in range(self._size):
                offset = r * total
                for i, n in enumerate(sizes):
                    copy_bytes_into(out_of(r, i), gathered[offset : offset + n])
                    offset += n
            if finish is not None:
                finish()

        return self._launch(name, body, outputs, opts)

    def allgather_coalesced(self, output_lists: Any, inputs: Any, opts: Any = None) -> CollectivesWork:
        opts = opts if opts is not None else _C10D.AllgatherOptions()
        inputs = tensor_list(inputs, "allgather_coalesced: inputs")
        if not isinstance(output_lists, (list, tuple)) or len(output_lists) != self._size:
            raise InvalidOperation(f"allgather_coalesced: outputs must hold one list per rank ({self._size})")
        lists = [tensor_list(lst, f"allgather_coalesced: outputs[{r}]") for r, lst in enumerate(output_lists)]
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
        outputs = tensor_list(outputs, "all_gather_single_coalesced: outputs")
        inputs = tensor_list(inputs, "all_gather_single_coalesced: inputs")
        if len(outputs) != len(inputs) or not outputs:
            raise InvalidOperation("all_gather_single_coalesced: needs as many outputs as inputs (at least one)")
        if len(outputs) == 1:
            return self.all_gather_single(outputs[0], inputs[0], opts)
        for i, (o, x) in enumerate(zip(outputs, inputs)):
            if o.dtype != x.dtype or o.numel() != self._size * x.numel():
                raise InvalidOperation(
                    f"all_gather_single_coalesced: pair {i}: output must hold world size {self._size} × input"
                )
        stages = [StandIn(o, load=False, store=True) for o in outputs]
        counts = [x.numel() for x in inputs]

        def out_of(r: int, i: int) -> torch.Tensor:
            return stages[i].tensor.view(-1)[r * counts[i] : (r + 1) * counts[i]]

        def finish() -> None:
            for s in stages:
                s.finish()

        return self._all_gather_packed(inputs, out_of, "all_gather_single_coalesced", opts, outputs, finish)

    allgather_into_tensor_coalesced = all_gather_single_coalesced

    def gather(self, outputs: Any, inputs: Any, opts: Any = None) -> CollectivesWork:
        opts = opts if opts is not None else _C10D.GatherOptions()
        tensor = one(inputs, "gather: inputs")
        root = self._check_root(opts.rootRank, "gather")
        is_root = self._rank == root
        outs: list[torch.Tensor] = []
        if is_root:
            outs = root_blocks(outputs, "gather", "outputs", self._size, tensor, "input")
        elif outputs not in (None, []) and any(len(x) for x in outputs):
            raise InvalidOperation("gather: only the root passes output tensors")
        nbytes = tensor.numel() * tensor.element_size()
        stage = StandIn(tensor, load=True)
        target, copy_out = self._gather_target(outs, nbytes) if is_root else (None, False)

        def body(seq: int, timeout: float) -> None:
            if nbytes:
                self.comm.gather(raw(stage.tensor), None if target is None else raw(target), root)
            if copy_out:
                assert target is not None  # copy_out only on the root, which has one
                for j, o in enumerate(outs):
                    copy_bytes_into(o, target[j * nbytes : (j + 1) * nbytes])

        return self._launch("gather", body, outs, opts)

    def scatter(self, outputs: Any, inputs: Any, opts: Any = None) -> CollectivesWork:
        opts = opts if opts is not None else _C10D.ScatterOptions()
        output = one(outputs, "scatter: outputs")
        root = self._check_root(opts.rootRank, "scatter")
        is_root = self._rank == root
        packed: torch.Tensor | None = None
        nbytes = output.numel() * output.element_size()
        if is_root:
            blocks = root_blocks(inputs, "scatter", "inputs", self._size, output, "output")
            packed = consecutive([b.detach() for b in blocks])
            if packed is None or packed.numel() != nbytes * self._size:
                packed = torch.empty(nbytes * self._size, dtype=torch.uint8)
                for j, b in enumerate(blocks):
                    packed[j * nbytes : (j + 1) * nbytes].copy_(raw(StandIn(b).tensor))
        elif inputs not in (None, []) and any(len(x) for x in inputs):
            raise InvalidOperation("scatter: only the root passes input tensors")
        stage = StandIn(output, load=False, store=True)

        def body(seq: int, timeout: float) -> None:
            if nbytes:
                self.comm.scatter(None if packed is None else raw(packed), raw(stage.tensor), root)
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
        in_stage = StandIn(input, load=True)
        out_stage = StandIn(output, load=False, store=True)

        def body(seq: int, timeout: float) -> None:
            self.comm.all_to_all_v(raw(in_stage.tensor), in_bytes, out_bytes, raw(out_stage.tensor))
            out_stage.finish()

        return self._launch("all_to_all_single", body, [output], opts)

    alltoall_base = all_to_all_single

    def alltoall(self, outputs: Any, inputs: Any, opts: Any = None) -> CollectivesWork:
        opts = opts if opts is not None else _C10D.AllToAllOptions()
        outs = tensor_list(outputs, "alltoall: outputs")
        ins = tensor_list(inputs, "alltoall: inputs")
        self._check_count(outs, "alltoall: outputs")
        self._check_count(ins, "alltoall: inputs")
        dtype = ins[0].dtype
        same_dtype(ins, dtype, "alltoall: inputs")
        same_dtype(outs, dtype, "alltoall: outputs")
        if ins[self._rank].numel() != outs[self._rank].numel():
            raise InvalidOperation("alltoall: the block this rank sends itself differs in size from the one it expects")
        in_bytes = [t.numel() * t.element_size() for t in ins]
        out_bytes = [t.numel() * t.element_size() for t in outs]
        packed = consecutive([t.detach() for t in ins])
        if packed is None or packed.numel() != sum(in_bytes):
            packed = torch.cat([raw(StandIn(t).tensor).cpu() for t in ins])
        target = consecutive(outs)  # the outputs back to back: received in place
        copy_out = target is None or target.numel() != sum(out_bytes)
        if target is None or copy_out:
            target = torch.empty(sum(out_bytes), dtype=torch.uint8)

        def body(seq: int, timeout: float) -> None:
            self.comm.all_to_all_v(raw(packed), in_bytes, out_bytes, raw(target))
            if copy_out:
                offset = 0
                for o, n in zip(outs, out_bytes):
                    copy_bytes_into(o, target[offset : offset + n])
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

    # -- broadcast ------------------------------------------------------------------------

    def broadcast(self, tensors: Any, opts: Any = None) -> CollectivesWork:
        if opts is None or not hasattr(opts, "rootRank"):
            root_arg = opts
            opts = _C10D.BroadcastOptions()
            if root_arg is not None:
                opts.rootRank = int(root_arg)
        tensor = one(tensors, "broadcast: tensors")
        if getattr(opts, "rootTensor", 0) != 0:
            raise InvalidOperation("broadcast: rootTensor must be 0 (one tensor per rank)")
        root = self._check_root(opts.rootRank, "broadcast")
        is_root = self._rank == root
        stage = StandIn(tensor, load=is_root, store=not is_root)

        def body(seq: int, timeout: float) -> None:
            if tensor.numel():
                self.comm.broadcast(raw(stage.tensor), root)
            stage.finish()

        return self._launch("broadcast", body, [tensor], opts)
