"""How our errors reach torch users.

torch code expects a backend's communication failures as ``torch.distributed.DistBackendError``
(a RuntimeError), and a timeout's message to contain `` Timed out `` (torch's own tests match
``" (Timed out|closed|timeout) "``). Wrong arguments raise :class:`InvalidOperation`, which is
both a ValueError and a RuntimeError, so code written against gloo (RuntimeError) and code
written against our API (ValueError) both catch it.
"""

from __future__ import annotations

import torch.distributed as dist

from ..errors import (
    CollectiveTimeoutError,
    CollectivesError,
    InvalidArgumentError,
    InvalidTypeError,
    RendezvousTimeoutError,
)


BACKEND_NAME = "collectives"
"""The name the backend is registered under (``init_process_group("collectives")``)."""


class InvalidOperation(RuntimeError, ValueError):
    """A collective was called with arguments it cannot run with (raised before anything is sent)."""


def to_torch_error(exc: BaseException, where: str) -> BaseException:
    """The exception to raise to a torch user for ``exc``; ``where`` names the group, rank and
    operation (``"[collectives] group 'default' rank 0/2: all_reduce #3"``)."""
    if isinstance(exc, (dist.DistError, InvalidOperation)):
        return exc
    if isinstance(exc, (InvalidArgumentError, InvalidTypeError)):
        error: BaseException = InvalidOperation(f"{where}: {exc}")
    elif isinstance(exc, CollectiveTimeoutError):
        error = dist.DistBackendError(f"{where} Timed out after {exc.timeout:g} s: {exc}")
    elif isinstance(exc, RendezvousTimeoutError):
        error = dist.DistBackendError(f"{where} Timed out: {exc}")
    elif isinstance(exc, CollectivesError):
        error = dist.DistBackendError(f"{where} failed: {exc}")
    else:
        return exc
    error.__cause__ = exc
    return error
