"""A modelled machine: hosts of k ranks, links with their own α and β, a two-level fat tree.

Every rank has a port into its host's fabric (shared memory or NVLink), every host one or
more NICs, hosts hang off leaf switches in groups, and leaves meet at a spine through
uplinks (a two-level fat tree, oversubscribed or not). A message takes a path of links:
within a host, the sender's port and the receiver's; between hosts, the NICs at both ends
and, between leaves, the two leaves' uplinks. Each link passes the bytes it is given at its
own rate, first come first served, so messages that share a link share its bandwidth
(contention): two messages through one NIC take twice as long as one. A link class carries ``send_share``: the part of the transfer its sender's core
does (0.5 where ranks copy through shared memory or sockets, the receiver copying out the
other half; 1 where a DMA engine or NIC moves the bytes and the receiver only waits).

Cores: where a host has more ranks than ``cores``, the ranks share that host's cores (or,
with ``shared_cores``, hosts that are parts of one machine share all of its cores), first
come first served: a rank issues a step's sends and folds its receives only once it holds a
core, and pays its link class's ``wake`` to resume after waiting for a message (with a
core each, where cores are counted, ``wake`` alone: it still switches back in after its wait,
nobody queued ahead), and ``crowd_wake`` more per rank sharing its core (it resumes behind
them in the core's run queue; where all of them share one core, ``wake`` + ``crowd_wake`` once at every step it
receives in, waited or not, whatever their number: measured so, the ranks taking turns on the
core; a rank with peers on other hosts pays the dearer of its message's link and the link
between hosts, whose channels its wait polls on every pass whatever it waits for), and every
byte it copies costs ``crowd_beta`` more per rank per core (their copies share the caches and
the memory bus). Where every rank of a host has a core (``cores`` counted, no more ranks than
they), a message costs its link class's ``core_alpha`` in place of α where the class has one
(``with_a_core``): no rank queues for the cores its send and receive run on, and a waiting rank
spins for it, while α is fitted to worlds whose ranks share the cores. Where every core of one
host is shared (at least twice as many ranks as cores) and the link class has an ``ahead_wake``,
a resuming rank pays that per rank ahead of it in the run queue of the busiest of its cores, itself
not counted (``ahead``: 1 at 4 ranks on 2 cores, 3 at 8), in place of ``crowd_wake`` per rank per
core (2 and 4): its core-mates stay runnable, and it waits behind them alone (docs/simulation.md,
*The sixtieth round*); with some ranks on cores of their own (3 on 2) the kernel can move ranks to
the idle core and the crowd stays as before. Where every core of one host holds exactly two ranks (4 on 2) and
the transport's ranks take turns (``pairs_take_turns``: tcp), a rank pays its crowd only at the first step of a
call in which it resumes after a wait (``step_extra``'s ``again``), its later resumes in that call ``wake``
alone, in calls whose messages come back round and whose ranks take whichever core frees (not ``sticky``): a
tcp rank's wait yields at once where ranks share cores, so once a call's steps have begun the two ranks of a
core hand it to each other at every yield, and a step that crosses cores finds its receiver's core-mate
waiting, not working (measured step by step: docs/simulation.md, *The sixty-seventh round*). Calls that flow
one way count their crowd by the ranks waiting (``crowd_of_waiters``) and keep it at every step.
Two opt-in terms (0 in the built-in profile) price a crowded
sticky host's waits as it runs them (docs/simulation.md, *The sixty-third* and *sixty-sixth rounds*): with
``rota_wake``, where every core is shared (``rota``), a resuming rank pays that per rank of its own core then
blocked in the replay (``queues_with``), itself counted, in every call, in place of ``crowd_wake`` per rank
whose home is its core (a core runs its ranks in a rota, each until it blocks); with ``sleep_wake`` a rank
whose idle wait (from its sends until its last message was sent) outlasted the progress engine's spin and
yield windows (``SPIN_WINDOW``, ``YIELD_WINDOW``) pays that more: it slept on its transport, and a sleeping
rank wakes later than a yielding one. With ``sticky`` (one
host over shared memory or tcp) a rank keeps to its core, as the
kernel's scheduler keeps it: a rank that wakes takes a core that is idle then, else queues on
the core it last ran on, and moves to another core that frees sooner only where it last ran
``MIGRATION_COST`` before (a task that ran more recently is cache-hot and stays); its
``crowd_wake`` counts the ranks whose home is its own core (3 ranks on 2 cores: 2 on one, 1 on
the other), not the ranks per core on average. Over tcp (``keeps_cores_flowing`` false) ranks
keep to their cores only in calls whose messages come back round (rings, exchanges: every rank
waits briefly at every step, yielding and runnable, so the kernel moves no queued rank onto its
core), and only where a rank sends one peer more in the call than tcp's socket buffers hold
(``lockstep_bytes``: the sender then waits on its receiver's pace, runnable, rather than running
ahead and sleeping); in calls that flow one way they take whichever core frees first, as the
ranks ahead of the flow finish and sleep (``begin``). So steps in which every rank works at once (a ring's
exchanges) queue for the cores, while a chain, with one rank busy at a time, hardly notices
them. Beyond the wire: a step that both sends and receives costs its link class's
``exchange`` more, and one that sends over one kind of link and receives over another
(shared memory and a NIC) pays ``mixed_wait``: its wait cannot sleep on both. Over tcp, an
exchange with one peer whose message is already in when the step is issued costs the rank a
one-way send and that message's receive, without ``exchange`` (``takes_in_hand``,
``events.in_hand``): the peer ran ahead and waits, the two ends are not busy at once; not
where every rank takes turns on one core, where the rest of α is no one else's. On hosts of
several ranks with more than one host, a rank has peers over both kinds of link, and a step
in which it waited for a message costs ``split_wait`` more: its wait sleeps in slices on
each kind in turn. A link class may split a one-way message's α (``send_overhead``,
``recv_overhead``): a sender whose step receives nothing (a tree's root) goes on once the
send path is done, so its second message leaves after one overhead and not after a whole α,
while a chain still waits α at every hop; the receiver of a message already there pays its
receive overhead. With ``whole_messages`` (one host over shared memory) the receiver of a
message copies it out only once the sender has written all of it: a channel publishes a piece
of up to a quarter ring at once (a schedule's segments fit in one), so the two halves of a
message that a rank waits for run one after the other, not overlapped (``events.replay``); with
``folds_in_place`` (the same) a reducing receive that folds as it arrives reads the channel's ring
itself, so its copy out and its fold are one pass (``events.replay_calls``). A
machine built with ``crowd_of_waiters`` (tcp) counts the crowd of a wake in a call whose
messages flow one way (``events.flows_one_way``) by the ranks then waiting on its
cores rather than by all of them: in a loop of such calls the ranks upstream run ahead into
later calls, working (the core queue prices that) or done, not waiting in the run queue ahead
of it; where messages come back round (rings, exchanges) every rank waits in every phase and
the crowd stays the host's ranks per core.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TypedDict

from ..steps import TCP_SOCKET_BUFFER_BYTES
from .profile import TransportCosts


SPIN_WINDOW = 20e-6
"""Seconds a waiting rank with a core of its own spins before it yields: ``transports.progress``'s
``SPIN_SECONDS`` (the tuner may not import transports; tests/tuning holds the two equal)."""
YIELD_WINDOW = 200e-6
"""Seconds a waiting rank then yields before it sleeps on its transport (a futex, a selector):
``transports.progress``'s ``YIELD_SECONDS``; a rank whose wait outlasts it pays ``sleep_wake``."""

MIGRATION_COST = 500e-6
"""Seconds within which a rank that ran is cache-hot and stays queued on its core rather than
moving to another that frees sooner: the kernel's ``sched_migration_cost`` default (0.5 ms)."""


@dataclasses.dataclass(frozen=True)
class LinkClass:
    """One kind of link: seconds per message, seconds per byte, and the sender's share of the transfer."""

    name: str
    alpha: float
    beta: float
    send_share: float = 0.5
    exchange: float = 0.0
    wake: float = 0.0
    crowd_wake: float = 0.0
    crowd_beta: float = 0.0
    cache_beta: float = 0.0
    copy_beta: float = 0.0
    send_overhead: float = 0.0
    recv_overhead: float = 0.0
    core_alpha: float = 0.0
    ahead_wake: float = 0.0
    rota_wake: float = 0.0
    sleep_wake: float = 0.0


@dataclasses.dataclass
class Link:
    """One link of a machine, with the time it is next free."""

    cls: LinkClass
    free_at: float = 0.0


class Machine:
    """``ranks`` ranks on hosts of ``ranks_per_host`` (rank r on host r // k), priced per message.

    Args:
        intra: the link class within a host (each rank its own port).
        inter: the link class between hosts (the NICs), or None for one host.
        gamma: seconds per reduced byte; overhead: seconds per call (added once by callers).
        nics_per_host: NICs on each host; rank r uses NIC ``r % k % nics_per_host``.
        hosts_per_leaf: hosts under one leaf switch (0: one switch, no spine).
        uplink_ratio: leaf uplink bandwidth over the bandwidth of the NICs below it
            (1: a full fat tree; 0.5: 2:1 oversubscribed).
        cpu_factor: every cost times this (ranks sharing a core evenly: ranks per core).
        cores: cores per host (0: as many as ranks); ranks beyond them queue for the cores.
        mixed_wait: seconds more a step costs whose messages go both within the host and
            between hosts, sending and receiving.
        split_wait: seconds more a step costs in which a rank waited for a message, where
            hosts have several ranks and there is more than one host (its peers are over two
            kinds of link).
        shared_cores: the hosts are on one machine (host identities or network namespaces
            of it, as the validation runs' two-host layouts are): every rank queues for all
            of their cores together (``cores`` times the hosts), so the ranks of one host use
            the cores another host's ranks leave while they wait.
        crowd_of_waiters: in calls whose messages flow one way, ``crowd_wake`` counts the
            ranks waiting on a rank's cores when it resumes, not all of them (``step_extra``).
        sticky: on one host, ranks keep to their cores (``acquire``) instead of taking
            whichever frees first, and ``crowd_wake`` counts the ranks of their own core.
        sticky_flowing: with ``sticky``, whether ranks keep to their cores in calls whose
            messages flow one way too (else only in the others: ``begin``).
        lockstep_bytes: where ``sticky_flowing`` is false, ranks keep to their cores only in
            calls in which a rank sends one peer more than this (``begin``; 0: any call).
        whole_messages: on one host, a receiver copies a message out only once all of it
            has been written (``copies_whole``).
        crowd_per_call: on one host whose every core holds two ranks, a rank pays its crowd
            only at its first resume after a wait in a call (``takes_turns``, ``step_extra``), in
            calls whose messages come back round and whose ranks are not ``sticky``.
        folds_in_place: on one host, a reducing receive that folds as it arrives folds from
            the channel's ring, without a copy out first (``folds_from_ring``).
    """

    def __init__(self, ranks: int, ranks_per_host: int, intra: LinkClass, inter: LinkClass | None = None, *,
                 gamma: float = 0.0, overhead: float = 0.0, nics_per_host: int = 1, hosts_per_leaf: int = 0,
                 uplink_ratio: float = 1.0, cpu_factor: float = 1.0, cores: int = 0,
                 mixed_wait: float = 0.0, split_wait: float = 0.0, shared_cores: bool = False,
                 crowd_of_waiters: bool = False, sticky: bool = False, whole_messages: bool = False,
                 sticky_flowing: bool = True, lockstep_bytes: int = 0, crowd_per_call: bool = False,
                 folds_in_place: bool = False) -> None:
        self.ranks = ranks
        self.k = max(1, min(ranks_per_host, ranks))
        self.intra = intra
        self.inter = inter or intra
        self.gamma = gamma * cpu_factor
        self.overhead = overhead * cpu_factor
        self.cpu_factor = cpu_factor
        self.nics = max(1, min(nics_per_host, self.k))
        self.hosts_per_leaf = hosts_per_leaf
        self.uplink_ratio = uplink_ratio
        self.cores = cores
        self.mixed_wait = mixed_wait
        self.split_wait = split_wait if 1 < self.k < ranks else 0.0
        self.shared_cores = shared_cores
        self.crowd_of_waiters = crowd_of_waiters
        self._pool: dict[int, list[float]] = {}  # host (0 for all, shared) -> when each of its cores is next free
        self._held: dict[int, int] = {}  # rank -> the core it holds
        self.sticky = self._keeps = sticky and self.k >= ranks
        self.sticky_flowing = sticky_flowing
        self.lockstep_bytes = lockstep_bytes
        self.whole_messages = whole_messages and self.k >= ranks
        self.folds_in_place = folds_in_place and self.k >= ranks
        self.every_core_shared = self.k >= ranks and 0 < 2 * cores <= self.k
        self.takes_turns = crowd_per_call and self.k >= ranks and cores >= 2 and self.k == 2 * cores
        self.flowing = False  # whether the replayed calls' messages flow one way (``begin``)
        self._last: dict[int, int] = {}  # rank -> the core it last ran on (sticky)
        self._ran: dict[int, float] = {}  # rank -> when it last left a core (sticky)
        if cores >= self.k:  # a core each: a message's α is the one of ranks that queue behind no one
            intra = self.intra = with_a_core(intra)
            self.inter = with_a_core(self.inter)
        if 0 < cores < self.k:  # ranks beyond the cores: each byte costs more (caches and memory shared)
            intra = self.intra = crowded(intra, self.k / cores)
            self.inter = crowded(self.inter, self.k / cores) if inter is not None else intra
        self.ports_out = [Link(intra) for _ in range(ranks)]
        self.ports_in = [Link(intra) for _ in range(ranks)]
        self._nic_out: dict[int, Link] = {}
        self._nic_in: dict[int, Link] = {}
        self._up: dict[int, Link] = {}
        self._down: dict[int, Link] = {}
        per_leaf_nics = max(1, hosts_per_leaf) * self.nics
        beta = self.inter.beta / (per_leaf_nics * max(uplink_ratio, 1e-9))
        self._uplink_cls = LinkClass("uplink", 0.0, beta, 1.0)

    @property
    def hosts(self) -> int:
        return -(-self.ranks // self.k)

    def _get(self, table: dict[int, Link], key: int, cls: LinkClass) -> Link:
        link = table.get(key)
        if link is None:
            link = table[key] = Link(cls)
        return link

    def path(self, src: int, dst: int) -> tuple[LinkClass, list[Link]]:
        """The link class that prices a message from ``src`` to ``dst`` and the links it occupies."""
        hs, hd = src // self.k, dst // self.k
        if hs == hd:
            return self.intra, [self.ports_out[src], self.ports_in[dst]]
        ns = hs * self.nics + src % self.k % self.nics
        nd = hd * self.nics + dst % self.k % self.nics
        links = [self._get(self._nic_out, ns, self.inter), self._get(self._nic_in, nd, self.inter)]
        if self.hosts_per_leaf and hs // self.hosts_per_leaf != hd // self.hosts_per_leaf:
            links.append(self._get(self._up, hs // self.hosts_per_leaf, self._uplink_cls))
            links.append(self._get(self._down, hd // self.hosts_per_leaf, self._uplink_cls))
        return self.inter, links

    def message(self, src: int, dst: int, nbytes: int, ready: float,
                one_way: bool = False) -> tuple[float, float, float]:
        """Each link serves the bytes it is given first come first served at its own rate; a
        message is through when every link on its path has passed it, and never sooner than
        its own α plus its bytes at the path's slowest rate."""
        cls, links = self.path(src, dst)
        f = self.cpu_factor
        alpha = cls.alpha * f
        slowest = max(link.cls.beta for link in links) * f
        done = ready + alpha + nbytes * slowest * cls.send_share
        for link in links:
            link.free_at = max(link.free_at, ready) + nbytes * link.cls.beta * f * cls.send_share
            if link.free_at + alpha > done:
                done = link.free_at + alpha
        copy = nbytes * slowest * (1.0 - cls.send_share)
        if not (cls.send_overhead and one_way):
            return done, done, copy
        handed = min(cls.send_overhead * f, alpha)  # the sender goes on once its send path is done
        return done - (alpha - handed), done, copy + min(cls.recv_overhead * f, alpha - handed)

    def begin(self, one_way: bool, largest: int = 0) -> None:
        """Told before a replay's first step whether its calls' messages flow one way and the most
        bytes one rank sends one peer in a call (``largest``): ranks keep to their cores
        (``sticky``) in one-way calls only where ``sticky_flowing`` says so, and in the others
        only where ``largest`` is beyond ``lockstep_bytes``."""
        self.sticky = self._keeps and (self.sticky_flowing or (not one_way and largest > self.lockstep_bytes))
        self.flowing = one_way

    def reduce_cost(self, rank: int, nbytes: int) -> float:
        return nbytes * self.gamma

    @property
    def oversubscribed(self) -> bool:
        """Whether a host has more ranks than cores (then ranks queue for them)."""
        return 0 < self.cores < self.k

    def acquire(self, rank: int, t: float) -> float:
        """When ``rank``, ready at ``t``, gets a core of its host (``t`` where cores are not short)."""
        if not self.oversubscribed:
            return t
        key = self._pool_of(rank)
        pool = self._pool.get(key)
        if pool is None:
            pool = self._pool[key] = [0.0] * self.cores * (self.hosts if self.shared_cores else 1)
        core = self._sticky_core(rank, t, pool) if self.sticky else min(range(len(pool)), key=pool.__getitem__)
        self._held[rank] = core
        return max(t, pool[core])

    def _sticky_core(self, rank: int, t: float, pool: list[float]) -> int:
        """The core a rank ready at ``t`` runs on where ranks keep to their cores: its last one if
        free, else one idle at ``t``, else its last one's queue, unless another core frees sooner
        and the rank last ran ``MIGRATION_COST`` or more before then (no longer cache-hot)."""
        last = self._last.get(rank, rank % len(pool))
        if pool[last] > t:
            idle = [c for c in range(len(pool)) if pool[c] <= t]
            soonest = min(range(len(pool)), key=pool.__getitem__)
            if idle:
                last = idle[0]
            elif pool[soonest] < pool[last] and pool[soonest] - self._ran.get(rank, 0.0) >= MIGRATION_COST:
                last = soonest
        self._last[rank] = last
        return last

    def release(self, rank: int, t: float) -> None:
        """``rank`` leaves the core ``acquire`` gave it at ``t``."""
        if self.oversubscribed:
            self._pool[self._pool_of(rank)][self._held.pop(rank)] = t
            self._ran[rank] = t

    def _pool_of(self, rank: int) -> int:
        """The key of the cores ``rank`` queues for: its host's, or the one machine's (``shared_cores``)."""
        return 0 if self.shared_cores else rank // self.k

    def same_cores(self, a: int, b: int) -> bool:
        """Whether ranks ``a`` and ``b`` queue for the same cores."""
        return self._pool_of(a) == self._pool_of(b)

    def queues_with(self, a: int, b: int) -> bool:
        """Whether rank ``a``, resuming, would queue behind rank ``b`` were ``b`` runnable: where
        ranks keep to their cores (``sticky``) and queue for them, ``b`` last ran on ``a``'s core; else they queue
        for the same cores."""
        if self.sticky and self.oversubscribed:
            cores = self.cores * (self.hosts if self.shared_cores else 1)
            return self._last.get(a, a % cores) == self._last.get(b, b % cores)
        return self.same_cores(a, b)

    @property
    def rota(self) -> bool:
        """Whether a resuming rank's crowd is its core's ranks then blocked (``rota_wake``): where ranks
        keep to their cores and every core is shared (``every_core_shared``; not one core alone, ``one_core``).
        With some ranks on cores of their own (3 on 2) it stays ``crowd_wake`` per rank whose home is its core:
        there a one-way call's ranks upstream run ahead into the next call, runnable, not blocked, and a count of
        the blocked ones left the 3-rank reduce tree's root alone on its core (docs/simulation.md, *The
        sixty-sixth round*)."""
        return self.sticky and self.every_core_shared and not self.one_core

    @property
    def counts_waiting(self) -> bool:
        """Whether the replay counts, in every call and not only in those that flow one way, the
        ranks then blocked beside a rank that resumes (``step_extra``'s ``waiting``): where the rota
        applies (``rota``) and a link class prices it (``rota_wake``)."""
        return self.rota and any(c.rota_wake for c in (self.intra, self.inter))

    def step_extra(self, rank: int, sends: list[int], recvs: list[int], waited: bool,
                   waiting: int = 0, in_hand: bool = False, wait: float = 0.0, again: bool = False) -> float:
        """Seconds beyond its messages that ``rank`` spends finishing a step that sent to
        ``sends`` and received from ``recvs`` (``waited``: a message came after the rank was ready;
        ``waiting``: in a call that flows one way, or in every call where ``counts_waiting``, the
        ranks then waiting beside it (``queues_with``), itself among them, or 0; ``in_hand``: it
        exchanged with one peer whose message was in before the step was issued, where
        ``takes_in_hand``: no ``exchange``, its two ends not busy at once; ``wait``: the seconds
        from the step's sends to its last message's arrival, a ``sleep_wake`` more where they pass
        the progress engine's spin and yield windows; ``again``: it already resumed after a wait
        earlier in this call, where ``takes_turns`` it pays ``wake`` without the crowd in a call that
        comes back round and does not keep its ranks to their cores)."""
        if not recvs:
            return 0.0
        classes = [self.path(rank, peer)[0] for peer in recvs]
        extra = max(c.exchange for c in classes) if sends and not in_hand else 0.0
        one_core = self.one_core
        if (waited or one_core) and self.oversubscribed:
            # a rank with peers on other hosts polls their link on every pass of its wait
            # (transports/progress.py), whichever message it waits for: it resumes at that link's cost
            waits = classes + [self.inter] if self.k < self.ranks else classes
            crowd = 1 if one_core else self.home_ranks(rank) if self.sticky else self.crowd(waiting)
            ahead = self.ahead(rank, waiting) if self.every_core_shared else -1
            rota = max(1, waiting) if self.rota else 0  # its core's ranks then blocked
            # the core's two ranks already take turns in this call (one whose messages come back round, its ranks
            # taking whichever core frees: not sticky)
            turn = again and self.takes_turns and not self.sticky and not self.flowing
            extra += max(c.wake + (0.0 if turn else crowd_cost(c, ahead, rota, crowd)) for c in waits)
            if wait > YIELD_WINDOW:  # ranks outnumber cores: no spin, it yields, then sleeps
                extra += max(c.sleep_wake for c in waits)
        elif waited and self.cores:
            # a core each: the rank still resumes after its wait (a context switch), nobody queued ahead
            extra += max(c.wake + (c.sleep_wake if wait > SPIN_WINDOW + YIELD_WINDOW else 0.0) for c in classes)
        if sends and self.mixed_wait and len({p // self.k == rank // self.k for p in (*sends, *recvs)}) > 1:
            extra += self.mixed_wait
        if waited:
            extra += self.split_wait
        return extra * self.cpu_factor

    def takes_in_hand(self, rank: int, peer: int) -> bool:
        """Whether a step of ``rank`` that exchanges with ``peer`` only, whose message is in before
        the step is issued, costs it a one-way send and the receive of that message, without
        ``exchange`` (its two ends are not busy at once): where the link splits α
        (``send_overhead``: tcp), so that the sender goes on while the rest of α is spent elsewhere,
        and the ranks do not all take turns on one core (``one_core``), where nothing is spent
        elsewhere (docs/simulation.md, *The fifty-third round*)."""
        return self.path(rank, peer)[0].send_overhead > 0 and not self.one_core

    @property
    def one_core(self) -> bool:
        """Whether the ranks a rank queues with take turns on one core: then every step it
        receives in resumes it from that core's run queue once (``wake`` + ``crowd_wake``), however
        many ranks share the core (docs/simulation.md, *The thirty-eighth round*)."""
        return self.oversubscribed and self.cores * (self.hosts if self.shared_cores else 1) == 1

    def crowd(self, waiting: int = 0) -> float:
        """Ranks per core that a resuming rank queues behind: the host's ranks per core (its
        run queue), or with ``crowd_of_waiters`` and a count of ``waiting`` ranks, those per core
        of the cores they queue for."""
        if waiting and self.crowd_of_waiters:
            return waiting / (self.cores * (self.hosts if self.shared_cores else 1))
        return self.k / self.cores

    def ahead(self, rank: int, waiting: int = 0) -> int:
        """Ranks ahead of a resuming ``rank`` in its core's run queue, itself not counted: the
        others of its own core where ranks keep to their cores (``sticky``), else those of the
        busiest of the cores (the host's ranks, or with ``crowd_of_waiters`` and a count of
        ``waiting`` ranks, those), as ``crowd`` counts them less the rank itself."""
        if self.sticky:
            return self.home_ranks(rank) - 1
        return max(0, math.ceil(self.crowd(waiting)) - 1)

    def home_ranks(self, rank: int) -> int:
        """How many ranks of a sticky host start on ``rank``'s core (rank r on core r mod cores)."""
        return len(range(rank % self.k % self.cores, self.k, self.cores))

    def evenly_shared(self) -> Machine:
        """This machine (idle) with its cores shared evenly instead of queued for: every cost
        times ranks per core (what pricing one rank's steps for all of them can model)."""
        factor = self.k / self.cores if self.oversubscribed else 1.0
        return Machine(self.ranks, self.k, self.intra, self.inter, gamma=self.gamma / self.cpu_factor,
                       overhead=self.overhead / self.cpu_factor, nics_per_host=self.nics,
                       hosts_per_leaf=self.hosts_per_leaf, uplink_ratio=self.uplink_ratio,
                       cpu_factor=self.cpu_factor * factor, mixed_wait=self.mixed_wait,
                       split_wait=self.split_wait, crowd_of_waiters=self.crowd_of_waiters)


def crowded(cls: LinkClass, ranks_per_core: float) -> LinkClass:
    """``cls`` on a host with ``ranks_per_core`` ranks per core: β plus ``crowd_beta`` per rank per core."""
    return dataclasses.replace(cls, beta=cls.beta + cls.crowd_beta * ranks_per_core) if cls.crowd_beta else cls


def with_a_core(cls: LinkClass) -> LinkClass:
    """``cls`` on a host whose ranks each have a core: α is its ``core_alpha`` where it has one
    (docs/simulation.md, *The fifty-seventh round*)."""
    return dataclasses.replace(cls, alpha=cls.core_alpha) if cls.core_alpha else cls


def crowd_of_waiters(transport: str) -> bool:
    """Whether ``transport``'s waits count the crowd of a one-way call by the ranks waiting
    (``Machine``'s ``crowd_of_waiters``): tcp's (within hosts and between them); shared memory's
    not (docs/simulation.md, *The twenty-second round: tcp*)."""
    return transport.split("_")[0] == "tcp"


def keeps_cores(transport: str) -> bool:
    """Whether ``transport``'s ranks keep to their cores in the model (``Machine``'s ``sticky``):
    shared memory's (docs/simulation.md, *The twenty-second round: shared memory*) and tcp's, whose
    ranks wait by the same progress engine (*The thirty-ninth round*); others take whichever
    core frees first."""
    return transport in ("shm", "tcp")


def keeps_cores_flowing(transport: str) -> bool:
    """Whether ``transport``'s ranks keep to their cores also in calls whose messages flow one
    way (``Machine``'s ``sticky_flowing``): shared memory's; tcp's take whichever core frees
    first there, as their one-way calls were priced (``crowd_of_waiters``; docs/simulation.md,
    *The thirty-ninth round*)."""
    return transport == "shm"


def pairs_take_turns(transport: str) -> bool:
    """Whether ``transport``'s ranks, two to a core, take turns within a call (``Machine``'s
    ``crowd_per_call``): tcp's, whose waits yield at once where ranks share cores, so that a rank
    queues behind its core-mate once a call, when the call's steps begin, and not at every step
    (docs/simulation.md, *The sixty-seventh round*); shared memory's keep the crowd at every step."""
    return transport == "tcp"


def copies_whole(transport: str) -> bool:
    """Whether ``transport``'s receivers copy a message out only once all of it is in
    (``Machine``'s ``whole_messages``): shared memory's, whose channels publish a piece of up to
    a quarter ring at once (docs/simulation.md, *The twenty-sixth round: shared memory*); a
    socket's receiver reads the bytes as they come."""
    return transport == "shm"


def folds_from_ring(transport: str) -> bool:
    """Whether ``transport``'s reducing receives that fold as they arrive fold from the channel's
    own memory (``Machine``'s ``folds_in_place``): shared memory's, whose ring the fold reads in
    place (``engines/fold_sink.py``); a socket's bytes are copied out of the kernel either way."""
    return transport == "shm"


class TransportTraits(TypedDict):
    """How ``Machine`` runs a transport's ranks: its keyword flags, one function each above."""

    crowd_of_waiters: bool
    sticky: bool
    whole_messages: bool
    sticky_flowing: bool
    lockstep_bytes: int
    crowd_per_call: bool
    folds_in_place: bool


def traits_of(transport: str) -> TransportTraits:
    """``transport``'s keyword flags for ``Machine`` (and ``sim.cluster.Cluster``, which passes them on), so
    that the tuner and the simulator build the same machine."""
    return TransportTraits(crowd_of_waiters=crowd_of_waiters(transport), sticky=keeps_cores(transport),
                           whole_messages=copies_whole(transport), sticky_flowing=keeps_cores_flowing(transport),
                           lockstep_bytes=lockstep_bytes(transport), crowd_per_call=pairs_take_turns(transport),
                           folds_in_place=folds_from_ring(transport))


def crowd_cost(link: LinkClass, ahead: int, rota: int, crowd: float) -> float:
    """What a rank resuming on a crowded host pays on ``link`` for the ranks beside it: ``ahead_wake``
    per rank ahead of it in its core's run queue where the class prices that and the count applies
    (``ahead`` >= 0), else ``rota_wake`` per rank of its core then blocked (``rota`` > 0), else
    ``crowd_wake`` per rank of ``crowd`` (``Machine.step_extra``)."""
    if ahead >= 0 and link.ahead_wake:
        return link.ahead_wake * ahead
    if rota and link.rota_wake:
        return link.rota_wake * rota
    return link.crowd_wake * crowd


def link_of(name: str, costs: TransportCosts, send_share: float = 0.5) -> LinkClass:
    """The link class of a measured transport (its α, β, exchange, wake and cache costs)."""
    return LinkClass(name, costs.alpha, costs.beta, send_share, costs.exchange, costs.wake, costs.crowd_wake,
                     costs.crowd_beta, costs.cache_beta, costs.copy_beta, costs.send_overhead,
                     costs.recv_overhead, costs.core_alpha, costs.ahead_wake, costs.rota_wake, costs.sleep_wake)


def lockstep_bytes(transport: str) -> int:
    """Bytes beyond which a step's messages to one peer hold its sender to its receiver's pace
    (``Machine``'s ``lockstep_bytes``): tcp's socket buffers, which a sender fills and then
    waits on, runnable, while its receiver drains them; 0 for the others."""
    return TCP_SOCKET_BUFFER_BYTES if transport == "tcp" else 0
