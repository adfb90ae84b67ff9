"""Ray, imported when first used: ``import collectives.ray`` must not import it."""

from __future__ import annotations

from types import ModuleType

from ..errors import UnsupportedError


def ray_module() -> ModuleType:
    """The ``ray`` module, or an error that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise UnsupportedError(f"collectives.ray needs Ray: pip install 'collectives[ray]' ({exc})") from None
    return ray
