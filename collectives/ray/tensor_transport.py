"""``"COLLECTIVES"``: a Ray Direct Transport tensor transport over our groups.

With it, ``@ray.method(tensor_transport="COLLECTIVES")`` keeps the tensors an actor method
returns in that actor, and Ray moves them to the actor task that takes the reference as a
point-to-point send and receive on the communicator of the group both actors are in (shared
memory on one host, TCP across), instead of through the object store. The group is one made
by ``collectives.ray.create_group`` or by Ray's
``ray.experimental.collective.create_collective_group(actors, backend="collectives")``.

Register it in the driver before a class names it and before its actors are created
(``register_tensor_transport()``; Ray then registers it in each actor it makes). Ray's RDT is alpha (Ray 2.49+; tested on
2.60): this module imports ``ray.experimental.rdt`` and torch, the main path does not.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from ray.experimental.rdt.tensor_transport_manager import (
    CommunicatorMetadata,
    TensorTransportManager,
    TensorTransportMetadata,
)

from ..communicator import Communicator
from ..errors import InvalidArgumentError, UnsupportedError
from ..tags import MAX_USER_TAG
from . import group, member

NAME = "COLLECTIVES"
TAG = MAX_USER_TAG
"""The point-to-point tag transfers use on a group's communicator (reserved: a user's own
sends on the group should use other tags)."""


@dataclasses.dataclass
class GroupPair(CommunicatorMetadata):
    """Which group carries a transfer, and the ranks of its two ends in it."""

    group: str = ""
    made_by_ray: bool = False  # by ray.experimental.collective (else collectives.ray.create_group)
    src_rank: int = -1
    dst_rank: int = -1


def _actor_id(actor: Any) -> Any:
    return actor._actor_id  # noqa: SLF001 - Ray's handle has no public id accessor


def _members(made_by_ray: bool) -> list[tuple[str, list[Any]]]:
    """(name, actors by rank) of this driver's groups, ours or Ray's of backend "collectives"."""
    if not made_by_ray:
        return [(name, group.group_actors(name)) for name in group.group_names()]
    experimental = sys.modules.get("ray.experimental.collective")  # only if the driver made such groups
    if experimental is None:
        return []
    return [(handle.name, list(handle.actors)) for handle in experimental.get_collective_groups([])
            if str(handle.backend).upper() == NAME]


def groups_with(*actors: Any) -> list[tuple[str, bool, list[int]]]:
    """This driver's groups holding every one of ``actors``: name, whether Ray made it, and
    the actors' ranks in it."""
    found = []
    for made_by_ray in (False, True):
        for name, members in _members(made_by_ray):
            ids = [_actor_id(a) for a in members]
            if all(_actor_id(a) in ids for a in actors):
                found.append((name, made_by_ray, [ids.index(_actor_id(a)) for a in actors]))
    return found


def _communicator(pair: GroupPair) -> Communicator:
    """This actor's communicator of the transfer's group."""
    if not pair.made_by_ray:
        return member.get_communicator(pair.group)
    from .backend import communicator_of

    return communicator_of(pair.group)


def _torch_dtype(dtype: Any) -> Any:
    import torch

    if not isinstance(dtype, torch.dtype):
        raise UnsupportedError(f"the COLLECTIVES tensor transport moves torch tensors; got a {dtype!r} array")
    return dtype


class CollectivesTensorTransport(TensorTransportManager):
    """Two-sided transfers of CPU tensors over a group's communicator. Counts what it moved
    (``sent_bytes``, ``received_bytes``; Ray keeps one instance per process)."""

    def __init__(self) -> None:
        self.sent_bytes = 0
        self.received_bytes = 0

    def tensor_transport_backend(self) -> str:
        return NAME

    @staticmethod
    def is_one_sided() -> bool:
        return False

    @staticmethod
    def can_abort_transport() -> bool:
        # A send or receive cannot be taken back alone (only the whole communicator can be
        # aborted), so Ray ends both actors of a failed transfer, as for its GLOO and NCCL.
        return False

    def actor_has_tensor_transport(self, actor: Any) -> bool:
        return bool(groups_with(actor))

    def extract_tensor_transport_metadata(self, obj_id: str, rdt_object: list[Any]) -> TensorTransportMetadata:
        devices = {t.device.type for t in rdt_object}
        if devices - {"cpu"}:
            raise UnsupportedError(f"the COLLECTIVES tensor transport moves CPU tensors; got tensors on {sorted(devices)}")
        return TensorTransportMetadata(tensor_meta=[(t.shape, t.dtype) for t in rdt_object],
                                       tensor_device="cpu" if rdt_object else None)

    def get_communicator_metadata(self, src_actor: Any, dst_actor: Any, backend: str | None = None) -> GroupPair:
        if src_actor is None or dst_actor is None:
            raise UnsupportedError("the COLLECTIVES tensor transport is two-sided: pass the reference to an actor "
                                   "task, or ray.get(ref, _use_object_store=True)")
        found = groups_with(src_actor, dst_actor)
        if len(found) != 1:
            if not found:
                raise InvalidArgumentError(
                    "no group holds both actors of the transfer: create one with collectives.ray.create_group "
                    "(or ray.experimental.collective.create_collective_group(..., backend='collectives'))")
            raise InvalidArgumentError(f"{len(found)} groups hold both actors of the transfer "
                                       f"({', '.join(repr(n) for n, _, _ in found)}); RDT needs exactly one")
        name, made_by_ray, (src, dst) = found[0]
        return GroupPair(group=name, made_by_ray=made_by_ray, src_rank=src, dst_rank=dst)

    def send_multiple_tensors(self, tensors: list[Any], tensor_transport_metadata: TensorTransportMetadata,
                              communicator_metadata: CommunicatorMetadata) -> None:
        assert isinstance(communicator_metadata, GroupPair)
        comm = _communicator(communicator_metadata)
        for tensor in tensors:
            comm.send(tensor.contiguous(), communicator_metadata.dst_rank, tag=TAG)
            self.sent_bytes += tensor.numel() * tensor.element_size()

    def recv_multiple_tensors(self, obj_id: str, tensor_transport_metadata: TensorTransportMetadata,
                              communicator_metadata: CommunicatorMetadata,
                              target_buffers: list[Any] | None = None) -> list[Any]:
        import torch

        assert isinstance(communicator_metadata, GroupPair)
        comm = _communicator(communicator_metadata)
        tensors = target_buffers or [torch.empty(shape, dtype=_torch_dtype(dtype))
                                     for shape, dtype in tensor_transport_metadata.tensor_meta]
        for tensor in tensors:
            comm.recv(tensor, communicator_metadata.src_rank, tag=TAG)
            self.received_bytes += tensor.numel() * tensor.element_size()
        return tensors

    def garbage_collect(self, obj_id: str, tensor_transport_meta: TensorTransportMetadata, tensors: list[Any]) -> None:
        """Nothing to release: the tensors are the actor's own, kept by Ray until freed."""

    def abort_transport(self, obj_id: str, communicator_metadata: CommunicatorMetadata) -> None:
        raise UnsupportedError("the COLLECTIVES tensor transport cannot abort one transfer (can_abort_transport is False)")


def register_tensor_transport() -> None:
    """Register ``"COLLECTIVES"`` with Ray in this process: the driver, before an actor class
    names it in ``@ray.method(tensor_transport=...)`` (which checks the name) and before it
    creates the actors (Ray registers it in each). Idempotent."""
    from ray.experimental.rdt import util

    if NAME not in util.transport_manager_info:
        import torch

        util.register_tensor_transport(NAME, ["cpu"], CollectivesTensorTransport, torch.Tensor)
