"""The ``collectives`` backend for ``torch.distributed``.

    import collectives.torch_backend          # registers the backend
    dist.init_process_group("collectives")    # under torchrun, or with init_method / store

Importing this package registers the backend with ``torch.distributed.Backend`` (it starts
no thread and opens no socket: processes may fork after importing it). torch then creates
a :class:`CollectivesProcessGroup` for the default group and for every ``new_group``,
handing it the group's store, through which its ranks connect (shared memory on one host,
TCP between hosts). See docs/torch.md.
"""

from __future__ import annotations

import torch.distributed as dist

from .errors import InvalidOperation
from .monitored import monitored_barrier
from .objects import install as _install_object_codec
from .process_group import BACKEND_NAME, CollectivesProcessGroup, create_process_group
from .work import CollectivesWork

__all__ = [
    "BACKEND_NAME",
    "CollectivesProcessGroup",
    "CollectivesWork",
    "InvalidOperation",
    "monitored_barrier",
    "register",
]


def register() -> None:
    """Register the backend with torch (done on import; calling it again is harmless).

    Devices: CPU, and CUDA tensors staged through host memory (copied to the host when the
    operation is issued and back when it has run) until a CUDA transport exists.

    Object collectives (``all_gather_object``, ...) on this backend's groups then use the
    safe codec of :mod:`collectives.object_codec`, not pickle (``COLLECTIVES_OBJECT_CODEC``;
    see :mod:`.objects`); other backends' groups keep torch's pickle.
    """
    dist.Backend.register_backend(BACKEND_NAME, create_process_group, extended_api=False, devices=["cpu", "cuda"])
    _install_object_codec()


register()
