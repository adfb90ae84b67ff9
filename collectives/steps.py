"""The pipelining step of a scheduled call: the bytes each message of its schedule carries.

One rule, asked by the plans (which build the schedules that run) and by the tuner (which
prices them), so that the cost model prices the steps that run. NCCL tunes its step per
protocol; here it is per transport, collective, size and world size: 1 MiB, except where a
transport names a larger step for large all-reduces (``LARGER_STEPS``, at 2 ranks). COLLECTIVES_CHUNK_BYTES, where
set, replaces the rule for every call of that communicator (``PlanContext.step_bytes``); the
tuner keeps pricing the rule's steps.

This module sits below the transports, the plans and the tuner, and imports none of them.
"""

from __future__ import annotations

STEP_BYTES = 1 << 20
"""The step of every call the larger steps do not cover (``Transport.chunk_bytes``): large
enough to amortise per-message costs, small enough to overlap and stay cached; measured best
or equal over shm and loopback TCP (512 KiB to 16 MiB tried, 2 ranks, 16 and 64 MiB all-reduce)."""

TCP_LARGE_FROM_BYTES = 32 << 20
"""From this size a 2-rank all-reduce over TCP steps in ``TCP_LARGE_STEP_BYTES``: half the steps
of the 1 MiB one, each of which ends in a wait for the peer's segment (docs/performance.md,
twenty-eighth round; below it the 1 MiB step stays, as a5e00e5 and the twenty-second round chose:
from 16 MiB it measured no better in the twenty-ninth)."""

TCP_LARGE_STEP_BYTES = 2 << 20

LARGER_STEPS: dict[str, tuple[int, int]] = {"tcp": (TCP_LARGE_FROM_BYTES, TCP_LARGE_STEP_BYTES)}
"""transport -> (from, step): an all-reduce of at least ``from`` bytes over it steps in ``step``
(in a world of at most LARGER_STEP_RANKS ranks)."""

LARGER_STEP_RANKS = 2
"""The larger steps were measured at 2 ranks only; at 3 ranks the cost model, pricing them, moves
the 32 MiB tcp all-reduce to a ring measured slower than its 1 MiB-step pick
(docs/performance.md, twenty-ninth round), so larger worlds keep the usual step."""

TCP_SOCKET_BUFFER_BYTES = 4 << 20
"""The send and receive buffers tcp asks of the kernel for each socket (``transports.tcp``'s
``SOCKET_BUFFER_BYTES``): a sender hands up to this much to one peer and goes on; beyond it, it
waits in its send path for the receiver. Here, with the steps, so the tuner prices what the
transport runs (``tuning.machine.lockstep_bytes``)."""

STEPPED = ("all_reduce",)
"""The collectives whose step may grow with the call (the others keep ``STEP_BYTES``)."""


def step_bytes(transport: str, collective: str, nbytes: int, ranks: int) -> int:
    """The step of a ``collective`` of ``nbytes`` over ``transport`` (its name; a profile's
    between-hosts entry, ``tcp_hosts``, steps as its transport does) among ``ranks`` ranks."""
    larger = LARGER_STEPS.get(transport.removesuffix("_hosts"))
    if larger is not None and collective in STEPPED and nbytes >= larger[0] and ranks <= LARGER_STEP_RANKS:
        return larger[1]
    return STEP_BYTES
