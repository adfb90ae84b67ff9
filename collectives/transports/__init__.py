"""Transports: how bytes move between two ranks (see base.py for the interface)."""

from __future__ import annotations

import importlib

from ..errors import UnsupportedError
from ..names import TRANSPORTS
from .base import Channel, Request, Transport

_MODULES = {name: (name, f"{name.capitalize()}Transport") for name in TRANSPORTS}
"""Each transport's module and class (``transports/shm.py``: ``ShmTransport``)."""


def transport_class(name: str) -> type[Transport]:
    """The Transport class called ``name``, imported on first use."""
    try:
        module_name, class_name = _MODULES[name]
    except KeyError:
        raise UnsupportedError(f"transport {name!r} is not one of {', '.join(_MODULES)}") from None
    module = importlib.import_module(f"{__name__}.{module_name}")
    cls: type[Transport] = getattr(module, class_name)
    return cls


__all__ = ["Channel", "Request", "Transport", "transport_class"]
