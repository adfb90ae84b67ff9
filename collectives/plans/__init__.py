"""A call compiles to a plan: the plans, their cache, and the choice between them.

Every collective call is: normalise the buffers once (``Communicator``), find the plan for
its signature (collective, dtype, count, op, root, requested algorithm) in the cache or
build it (``planner``), then run it, inline or on the worker. A plan is a callable
``plan(x, out, call)`` over flat numpy arrays; each kind of plan is its own module:

- ``scheduled``: a schedule (``collectives.algorithms``) on the executor;
- ``windowed``: the shared-window engine (small-message windows, the direct two-shot
  scheme, single-copy reads of peers' memory);
- ``two_level``: within each host, then across hosts, through two communicators.

What plans need (executor, shared windows, the levels' connector) is built by
``collectives.connect`` and handed in as a ``PlanContext``; no plan calls back into the
communicator.
"""

from .base import Plan, PlanCache, nothing
from .context import PlanContext
from .planner import Planner

__all__ = ["Plan", "PlanCache", "PlanContext", "Planner", "nothing"]
