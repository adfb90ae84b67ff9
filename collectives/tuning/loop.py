"""A loop of short one-way calls priced as the cores' work, not as a replay of two calls.

The harness times a batch of back-to-back calls (``timing.calls_for``: 50 below 1 MiB). In a
call whose messages flow one way (a broadcast's, reduce's, gather's or scatter's tree or chain,
``events.flows_one_way``), the ranks upstream do not wait for those downstream: a root hands
its message to the channel and starts the next call, so every receiver finds its messages
already queued and no rank waits or sleeps (measured: docs/simulation.md, *The twenty-ninth
round*: CPU time equal to wall time, no yields). The batch then costs what the ranks' work
costs the cores: per call, the busiest rank's work where each rank has a core, else the work
of all of them over the cores, whichever is more. A rank's work is a per-step cost
(``loop_step``: the executor's step), a per-message cost on each side (``loop_send``,
``loop_recv``: the transport's send and receive paths), each side's half of the bytes at β
and the folds at γ. The replay of two calls (``events.replay_calls``) prices instead the
latency of a call that waits (α per hop, the wakes behind the ranks of a core), which a
loop whose root runs ahead never pays.

The root runs ahead only as far as its channel takes its messages: where a batch's messages
outgrow the shared-memory ring (``RING_BYTES``), the root waits for room and the replay's
price stands (``runs_ahead``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..algorithms.schedule import Send, Step
from .machine import LinkClass, Machine

BATCH_CALLS = 50
"""Calls in a timed batch of short calls (``timing.calls_for`` below 1 MiB): the run-ahead a
loop needs for its root to never wait on the ring."""

RING_BYTES = 4 << 20
"""A shared-memory channel's ring (``Config.shm_ring_bytes``' default): the bytes a root may
have queued to one receiver before it waits for room."""


def priced(link: LinkClass) -> bool:
    """Whether ``link`` prices loops of one-way calls (its profile has the loop's costs)."""
    return bool(link.loop_send or link.loop_recv or link.loop_step)


def runs_ahead(nbytes: int) -> bool:
    """Whether a root's messages of a batch of calls of ``nbytes`` fit one ring, so that it
    runs the batch ahead of its receivers without waiting for room."""
    return BATCH_CALLS * nbytes <= RING_BYTES


def rank_work(steps: Iterable[Step], link: LinkClass, gamma: float, itemsize: int) -> float:
    """Seconds of one call's work for the rank whose schedule is ``steps``: ``loop_step`` per
    step, ``loop_send`` or ``loop_recv`` per message and its side of the bytes (``send_share``
    of β for a sender, the rest for a receiver), γ per byte folded."""
    work = 0.0
    for step in steps:
        work += link.loop_step
        for o in step:
            nbytes = o.count * itemsize
            if isinstance(o, Send):
                work += link.loop_send + nbytes * link.beta * link.send_share
            else:
                work += link.loop_recv + nbytes * link.beta * (1.0 - link.send_share)
                work += nbytes * gamma if o.reduce else 0.0
    return work


def loop_time(steps: Sequence[Sequence[Step]], machine: Machine, itemsize: int) -> float:
    """Seconds per call of a loop of one-way calls whose ranks' schedules are ``steps`` on one
    host of ``machine``: the busiest rank's work, or, where ranks outnumber cores, all ranks'
    work over the cores if that is more."""
    work = [rank_work(rank_steps, machine.intra, machine.gamma, itemsize) for rank_steps in steps]
    price = max(work, default=0.0)
    if machine.oversubscribed:
        price = max(price, sum(work) / machine.cores)
    return price
