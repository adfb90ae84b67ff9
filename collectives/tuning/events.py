"""Replay the schedules of every rank on a modelled machine, in simulated time.

The schedules are the ones the executor runs (``algorithms/``); here no byte moves: each
message is its size, priced by the machine (``machine.Machine``: links with their own α and β,
shared by the messages that cross them). Event-driven: a heap of ranks ready to issue their
next step, in time order, so links are reserved in the order messages are sent. A step's
sends are issued together; the step ends when its receives have arrived and been copied
out (and folded, for reducing receives). A receiver that waits copies the bytes out as they
arrive, so a one-way transfer costs the larger of the two halves, not their sum; a rank that
was busy sending copies out after (an exchange costs both halves). Where the network copies
messages whole (``Network.whole_messages``: shared memory, whose channel publishes a piece
once it is all written), a waiting receiver copies out after the whole message is in, both
halves in turn, except in a call whose messages flow one way: in a loop of such calls the
sender writes the next call's message while the receiver copies out this one's, which the
overlapped halves stand for in a replay of a few calls. Where the network folds in place
(``Network.folds_in_place``: shared memory, whose reducing receives of 64 KiB or more fold straight
from the channel's ring where ``algorithms.arrival`` says so), such a receive costs its receiver
one pass over the bytes, the larger of its copy and its fold, not the copy out and then the fold:
the fold reads the ring as the copy would (measured at 2 ranks, docs/simulation.md, *The sixty-eighth
round*), in a call whose messages come back round and in a one-way call alike, where that pass
overlaps the sender's next write as the copy did (the 2-rank reduce's root measured folding from the
ring in a copy's time; the later choice runs' one-way ring reduces cost what their reduce-scatters
do, *The sixty-eighth round*, the lead's question). Messages between two
ranks match in order, as on a real channel; a schedule that would deadlock raises
``ScheduleError``. A step that exchanges with one peer whose message is already in when the
step is issued (``in_hand``: a peer that ran ahead, as the 3-rank recursive schedule's lone
rank does while the folded pair meets) is no longer two ends busy at once: its rank sends as
a one-way step sends and takes the message in hand (``Network.message``'s ``one_way``,
``step_extra``'s ``in_hand``), where the machine says so (``Network.takes_in_hand``). In a
call whose messages flow one way (``flows_one_way``: a broadcast's or a reduce's tree or
chain), a rank that resumes after a wait is told how many ranks of its cores
the replay then holds blocked for a message not yet sent, itself counted (``Network.step_extra``'s
``waiting``), since in a loop of such calls the ranks upstream run ahead instead of waiting
beside it.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Protocol

from ..algorithms.arrival import arrivals
from ..algorithms.schedule import Recv, Send, Step
from ..algorithms.simulate import ScheduleError

NONE: set[int] = set()
"""No receive of a step folds on arrival (where the replay does not price those apart)."""


class Network(Protocol):
    """What the replay asks of a machine (``machine.Machine`` is the one implementation)."""

    def message(self, src: int, dst: int, nbytes: int, ready: float,
                one_way: bool = False) -> tuple[float, float, float]:
        """Send ``nbytes`` from ``src`` at ``ready``: (when the sender is free again, when the
        message has arrived, how long the receiver then spends copying it out); ``one_way``: the
        sender's step receives nothing, or only a message already in (``in_hand``), so it goes
        on once the message is handed over."""
        ...

    def reduce_cost(self, rank: int, nbytes: int) -> float:
        """Seconds ``rank`` spends folding ``nbytes`` into its buffer."""
        ...

    @property
    def whole_messages(self) -> bool:
        """Whether a receiver copies a message out only once all of it is in."""
        ...

    @property
    def folds_in_place(self) -> bool:
        """Whether a reducing receive that folds as it arrives (``algorithms.arrival``) folds from
        where the channel holds the bytes, without copying them out first."""
        ...

    @property
    def oversubscribed(self) -> bool:
        """Whether ranks queue for cores (``acquire``/``release``) rather than each having one."""
        ...

    def acquire(self, rank: int, t: float) -> float:
        """When ``rank``, ready to work at ``t``, gets a core."""
        ...

    def release(self, rank: int, t: float) -> None:
        """``rank`` gives its core back at ``t``."""
        ...

    def queues_with(self, a: int, b: int) -> bool:
        """Whether rank ``a``, resuming, would queue behind rank ``b`` were ``b`` runnable."""
        ...

    @property
    def counts_waiting(self) -> bool:
        """Whether ``step_extra``'s ``waiting`` is counted in every call, not only in those whose
        messages flow one way (read once the replay has begun)."""
        ...

    def takes_in_hand(self, rank: int, peer: int) -> bool:
        """Whether a step of ``rank`` exchanging with ``peer`` alone, whose message is already in,
        is priced as a one-way send and a receive (``in_hand``), not as an exchange."""
        ...

    def begin(self, one_way: bool, largest: int = 0) -> None:
        """Told before the first step whether the replayed calls' messages flow one way, and the
        most bytes one rank sends one peer in a call (``largest``)."""
        ...

    def step_extra(self, rank: int, sends: list[int], recvs: list[int], waited: bool,
                   waiting: int = 0, in_hand: bool = False, wait: float = 0.0, again: bool = False) -> float:
        """Seconds beyond the messages that finishing the step costs ``rank``; ``waiting``: in a
        call whose messages flow one way (or in every call, ``counts_waiting``), the ranks (itself
        among them) then waiting beside it (``queues_with``; 0: not counted); ``in_hand``: the step
        exchanged with one peer whose message was in before the step was issued (``takes_in_hand``);
        ``wait``: seconds from the step's sends until its last message was sent (0: it waited for none): how
        long the rank waited with nothing coming in, the bytes of a large message, once sent, flowing to a
        rank that is awake copying them out; ``again``: the rank already resumed after a wait earlier in the
        same call."""
        ...


def flows_one_way(steps: Sequence[Sequence[Step]]) -> bool:
    """Whether every message of a call flows one way: its sends, as a graph from sender to
    receiver, have no cycle (a broadcast's, a reduce's, a gather's or a scatter's tree or
    chain), so no rank ever waits for a message from a rank it sent to, directly or not (a
    ring's, an exchange's or a tree all-reduce's messages come back round)."""
    succ: dict[int, set[int]] = {}
    for r, rank_steps in enumerate(steps):
        for step in rank_steps:
            for o in step:
                if isinstance(o, Send) and o.peer != r:
                    succ.setdefault(r, set()).add(o.peer)
    indegree = {r: 0 for r in range(len(steps))}
    for peers in succ.values():
        for q in peers:
            indegree[q] = indegree.get(q, 0) + 1
    free = [r for r, n in indegree.items() if n == 0]
    seen = 0
    while free:  # Kahn's sort: every rank comes free only if nothing loops back to it
        r = free.pop()
        seen += 1
        for q in succ.get(r, ()):
            indegree[q] -= 1
            if indegree[q] == 0:
                free.append(q)
    return seen == len(indegree)


def in_hand(step: Step, rank: int, t: float, inbox: dict[tuple[int, int], deque[tuple[float, float, float]]],
            network: Network) -> bool:
    """Whether ``step`` of ``rank``, issued at ``t``, exchanges with one peer (sends to it and
    receives from it, no one else) whose messages for it are all in by then (``inbox``: per
    (sender, receiver), the (arrival, copy, sent) of each message not yet taken, in order), where
    ``network`` prices such a step apart (``takes_in_hand``)."""
    peer = step[0].peer if step else -1
    wanted, sends = 0, False
    for o in step:  # one pass, no allocation: this runs for every step the replay issues
        if o.peer != peer:
            return False
        if isinstance(o, Recv):
            wanted += 1
        else:
            sends = True
    if not sends or not wanted:
        return False
    queue = inbox.get((peer, rank))
    if queue is None or len(queue) < wanted or any(queue[i][0] > t for i in range(wanted)):
        return False
    return network.takes_in_hand(rank, peer)


def replay(schedules: Sequence[Iterator[Step]], network: Network, itemsize: int = 4) -> list[float]:
    """Run every rank's schedule on ``network``; the time (s) each rank finishes, from 0.

    Where ranks queue for cores (``network.oversubscribed``), a rank's work is done in two
    events per step, each holding a core: issuing the sends when it is ready, and copying out
    (and folding) its receives once they have arrived; events run in time order, so the cores
    go to ranks first come first served."""
    return replay_calls([schedules], network, itemsize)[-1]


def largest_to_a_peer(steps: Sequence[Sequence[Step]], itemsize: int) -> int:
    """The most bytes one rank sends one peer over a call (``steps``: a schedule per rank)."""
    largest = 0
    for schedule in steps:
        to: dict[int, int] = {}
        for step in schedule:
            for o in step:
                if isinstance(o, Send):
                    to[o.peer] = to.get(o.peer, 0) + o.count * itemsize
        largest = max(largest, *to.values(), 0)
    return largest


def replay_calls(calls: Sequence[Sequence[Iterator[Step]]], network: Network, itemsize: int = 4) -> list[list[float]]:
    """Run calls back to back, each rank starting its next call's schedule once it has done
    the last step of the one before (as a loop of calls does): per call, the time (s) each
    rank finishes it, from 0. A rank that is done early (a broadcast's root) starts the next
    call while the others still finish this one."""
    size = len(calls[0])
    first_call = [list(s) for s in calls[0]]  # read once, to see whether its messages flow one way
    flowing = flows_one_way(first_call)
    network.begin(flowing, largest_to_a_peer(first_call, itemsize))
    in_turn = network.whole_messages and not flowing  # a waiting receiver copies after the whole message
    counted = flowing or network.counts_waiting  # whether a resuming rank is told the ranks blocked beside it
    folding = network.folds_in_place  # reducing receives that fold on arrival read the ring itself, one way or not
    calls = [[iter(s) for s in first_call], *calls[1:]]
    marked = [[arrivals(s, itemsize) if folding else ((step, NONE) for step in s) for s in c] for c in calls]
    arriving: dict[int, set[int]] = {}  # rank -> the positions in its step in progress that fold on arrival
    schedules: list[Iterator[tuple[Step, set[int]]]] = [iter(()) for _ in range(size)]
    position = [-1] * size
    finished = [[0.0] * size for _ in marked]
    pooled = network.oversubscribed
    inbox: dict[tuple[int, int], deque[tuple[float, float, float]]] = {}  # (arrival, copy, sent) per message
    blocked: dict[int, tuple[float, Step]] = {}  # rank -> (time its sends were done, step)
    wanted: dict[int, set[int]] = {}  # rank -> peers it still waits on
    # (time, rank, seconds of receive work to do then, or -1 to start the next step)
    ready: list[tuple[float, int, float]] = [(0.0, r, -1.0) for r in range(size)]
    heapq.heapify(ready)

    handed: set[int] = set()  # ranks whose step in progress took its peer's message in hand (in_hand)
    resumed: set[int] = set()  # ranks that resumed after a wait earlier in the call they are in

    def try_finish(r: int, t: float, step: Step) -> bool:
        needed: dict[int, int] = {}
        sends: list[int] = []
        for o in step:
            if isinstance(o, Recv):
                needed[o.peer] = needed.get(o.peer, 0) + 1
            else:
                sends.append(o.peer)
        short = {p for p, n in needed.items() if len(inbox.get((p, r), ())) < n}
        if short:
            blocked[r] = (t, step)
            wanted[r] = short
            return False
        work = 0.0
        waited = False
        issued = last = sent = t
        on_arrival = arriving.get(r, ())
        for i, o in enumerate(step):
            if isinstance(o, Recv):
                arrival, copy, began = inbox[(o.peer, r)].popleft()
                waited = waited or arrival > t
                if arrival > last:
                    last, sent = arrival, began
                fold = network.reduce_cost(r, o.count * itemsize) if o.reduce else 0.0
                if i in on_arrival:  # one pass over the ring's bytes, the fold's or the copy's time, the dearer
                    copy, fold = max(copy, fold), 0.0
                # a waiting receiver copies out as the bytes come, or after all of them (in_turn)
                t = (max(t, arrival) + copy if in_turn else max(t + copy, arrival)) + fold
                work += copy + fold
        # in a call that flows one way (or in every call, counted), the ranks blocked beside it as it
        # resumes (itself too)
        waiting = 1 + sum(1 for q in blocked if network.queues_with(r, q)) if counted and waited else 0
        # idle: from its sends until its last message was sent (its bytes then flowing in, the rank awake)
        extra = (network.step_extra(r, sends, list(needed), waited, waiting, r in handed, sent - issued,
                                    r in resumed) if needed else 0.0)
        if waited:
            resumed.add(r)
        t += extra
        if pooled and needed:  # the receive work, at its time, on a core
            heapq.heappush(ready, (t - work - extra, r, work + extra))
        else:
            heapq.heappush(ready, (t, r, -1.0))
        return True

    while ready:
        t, r, work = heapq.heappop(ready)
        if work >= 0:  # receive work (pooled only): on a core, then the next step
            start = network.acquire(r, t)
            network.release(r, start + work)
            heapq.heappush(ready, (start + work, r, -1.0))
            continue
        pair = next(schedules[r], None)
        while pair is None and position[r] + 1 < len(marked):
            if position[r] >= 0:
                finished[position[r]][r] = t
            position[r] += 1
            resumed.discard(r)
            schedules[r] = marked[position[r]][r]
            pair = next(schedules[r], None)
        if pair is None:
            finished[position[r]][r] = t
            continue
        step, arriving[r] = pair
        woken = []
        if pooled and any(isinstance(o, Send) for o in step):
            t = network.acquire(r, t)
            held = True
        else:
            held = False
        taken = in_hand(step, r, t, inbox, network)
        if taken:
            handed.add(r)
        else:
            handed.discard(r)
        one_way = taken or not any(isinstance(o, Recv) for o in step)
        for o in step:
            if isinstance(o, Send):
                if o.peer == r or not 0 <= o.peer < size:
                    raise ScheduleError(f"rank {r} sends to invalid peer {o.peer}")
                began = t
                t, arrival, copy = network.message(r, o.peer, o.count * itemsize, t, one_way)
                inbox.setdefault((r, o.peer), deque()).append((arrival, copy, began))
                if o.peer in blocked and r in wanted.get(o.peer, ()):
                    woken.append(o.peer)
        if held:
            network.release(r, t)
        try_finish(r, t, step)
        for peer in woken:
            if peer in blocked:
                at, pending = blocked.pop(peer)
                wanted.pop(peer, None)
                try_finish(peer, at, pending)
    if blocked:
        raise ScheduleError(f"deadlock: ranks {sorted(blocked)} wait for messages that never come")
    leftovers = {k: len(q) for k, q in inbox.items() if q}
    if leftovers:
        raise ScheduleError(f"messages sent but never received: {leftovers}")
    return finished
