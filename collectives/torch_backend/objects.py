"""Object collectives on groups of this backend decode with the safe codec, never pickle.

torch's ``all_gather_object``, ``broadcast_object_list``, ``gather_object``,
``scatter_object_list``, ``send_object_list`` and ``recv_object_list`` turn objects into
byte tensors with ``distributed_c10d._object_to_tensor`` (pickle) and back with
``_tensor_to_object`` (unpickle, before anything is checked: any peer could run code
here). Both receive the group, and torch looks them up by name at each call, so
:func:`install` wraps them: for a group whose backend is ``collectives`` they use
:mod:`collectives.object_codec` (or pickle where ``COLLECTIVES_OBJECT_CODEC=pickle``);
for every other group (gloo, nccl, ...) they call torch's own functions unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.distributed_c10d as c10d

from .. import object_codec
from ..config import Config
from .errors import BACKEND_NAME


def ours(group: Any) -> bool:
    """Whether ``group`` (None: the default group) runs on this backend."""
    try:
        backend = dist.get_backend(group)
    except (RuntimeError, ValueError):  # not initialised, or not a member
        return False
    return BACKEND_NAME in str(backend).replace(",", ":").split(":")


def codec() -> str:
    """``"safe"`` or ``"pickle"``, from COLLECTIVES_OBJECT_CODEC (read at each call)."""
    return Config.from_env().object_codec


def _wrap_encoder(original: Callable[..., Any]) -> Callable[..., Any]:
    def _object_to_tensor(obj: Any, device: Any, group: Any) -> Any:
        if not ours(group) or codec() == "pickle":
            return original(obj, device, group)
        data = object_codec.encode(obj)
        # a storage of its own: torch resizes it to the largest rank's size (gather_object)
        byte_tensor = torch.frombuffer(bytearray(data), dtype=torch.uint8).clone().to(device)
        return byte_tensor, torch.tensor([len(data)], dtype=torch.long).to(device)

    _object_to_tensor.collectives_original = original  # type: ignore[attr-defined]
    return _object_to_tensor


def _wrap_decoder(original: Callable[..., Any]) -> Callable[..., Any]:
    def _tensor_to_object(tensor: Any, tensor_size: Any, group: Any) -> Any:
        if not ours(group):
            return original(tensor, tensor_size, group)
        data = tensor.cpu().numpy().tobytes()[: int(tensor_size)]
        if codec() == "pickle" and not data.startswith(object_codec.MAGIC):
            return original(tensor, tensor_size, group)
        return object_codec.decode(data)

    _tensor_to_object.collectives_original = original  # type: ignore[attr-defined]
    return _tensor_to_object


def install() -> None:
    """Wrap torch's object encoders for this backend's groups (idempotent)."""
    if not hasattr(c10d._object_to_tensor, "collectives_original"):
        c10d._object_to_tensor = _wrap_encoder(c10d._object_to_tensor)
    if not hasattr(c10d._tensor_to_object, "collectives_original"):
        c10d._tensor_to_object = _wrap_decoder(c10d._tensor_to_object)
