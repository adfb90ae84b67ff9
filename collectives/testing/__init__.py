"""Tools for testing code that uses collectives, and transports themselves (public, like
``trio.testing``): :func:`run_world` runs a function on every rank of a small world,
:func:`check_transport` is the conformance suite every transport must pass."""

from .conformance import CONFORMANCE_CHECKS, build_world, check_transport, make_inproc_world
from .harness import RankError, run_world

__all__ = ["CONFORMANCE_CHECKS", "RankError", "build_world", "check_transport", "make_inproc_world", "run_world"]
