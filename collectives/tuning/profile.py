"""The measured constants of the cost model, per transport, and the file that keeps them.

A profile holds, for each transport, what one call costs beyond its messages (``overhead``),
what one message costs (``alpha``), what one byte on the wire costs (``beta``) and what one
reduced byte costs (``gamma``), all in seconds; for shared memory also what the one-copy
direct engine costs per call and per byte (``direct_alpha``, ``direct_beta``), since direct
algorithms are loads from peers' windows, not messages, and what its calls by reads of peers'
memory cost per C call, per peer and per byte (``reads_call``, ``reads_alpha``, ``reads_beta``).
``collectives-tune`` measures them and writes a JSON profile; ``COLLECTIVES_TUNE_FILE`` names the profile the tuner reads,
else the built-in one (``default_profile.json``, fitted to this project's measured figures).
A transport's link between hosts may cost otherwise than between ranks of one host (loopback
TCP is not a NIC): an entry ``tcp_hosts`` (``between_hosts``; ``collectives-tune --netns``
measures one) prices the messages between hosts, and without it they cost what ``tcp``'s do.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError

DEFAULT_FILE = Path(__file__).with_name("default_profile.json")
DEFAULT_MARGIN = 1.25
"""How much faster (a share: 1.25 is 2.25 times as fast) the model must predict another
algorithm before the tuner leaves the measured size rule's choice, unless a profile says
otherwise: the model's error when fitted at 2 ranks alone (docs/simulation.md)."""
ENV = "COLLECTIVES_TUNE_FILE"
BETWEEN_HOSTS = "_hosts"
"""A transport's name and this (``tcp_hosts``): the entry of its link between hosts."""
RETIRED_FIELDS = frozenset({"loop_step", "loop_send", "loop_recv"})
"""Constants of models since removed, which older profile files (and saved runs' profiles)
still carry: read and ignored (the loop of short one-way calls, docs/simulation.md, *The
thirty-second round*)."""


@dataclasses.dataclass(frozen=True)
class TransportCosts:
    """The α-β-γ constants of one transport, in seconds (per call, message, byte, reduced byte).

    Optional (0 in profiles that predate them): ``exchange``, what a step that sends and
    receives costs beyond a one-way step's α (both ends busy at once); ``wake``, what a rank
    pays to resume after waiting for a message on a host whose cores are counted (a context
    switch; with a core each, nothing more); ``crowd_wake``, what it pays more per rank
    sharing its core (ranks per core: it resumes behind them in its core's run queue; where
    all share one core, once); ``crowd_beta``, what a byte costs more per rank sharing a core
    on such a host (the ranks' copies share caches and the memory bus); ``mixed_wait``, what a step costs more whose sends and receives use this
    transport and shared memory at once (its wait cannot sleep on both; between hosts only);
    ``split_wait``, what a step costs more in which a rank with peers over this transport
    and over shared memory waited for a message (its wait sleeps in slices on each in turn;
    between hosts only); ``cache_beta``, what a byte costs more where the call's buffers
    outgrow the profile's ``cache_bytes``, times the share of them beyond it (``cache``);
    ``copy_beta``, per byte a rank copies within its own memory around a schedule (an
    out-of-place call's input into its work buffer, its block out of it: ``copies``);
    ``reads_alpha`` and ``reads_beta``, shared memory only: what a call by single-copy reads of
    peers' memory costs per read or write of a peer and per byte copied (``reads``;
    ``reads_beta`` 0: reads not priced, as where the kernel refuses them); ``reads_call``, per
    call by reads that runs in one C call (all-to-all, all-gather, gather, scatter, and the
    all-reduce where every rank has a core), in place of the engine's ``direct_alpha``, which the
    reads in Python (reduce-scatter, reduce, the all-reduce where ranks outnumber cores) pay;
    ``direct_sync``, shared memory only: per turn beyond the first of a direct call through the
    windows in which every rank waits for every peer, where ranks outnumber the cores (the cores
    handed from one turn's ranks to the next's at a flag: ``tuner.switches``);
    ``send_overhead`` and ``recv_overhead``, a one-way message's α split LogP-style (0: not
    split): a sender whose step receives nothing goes on after ``send_overhead`` (its side of
    the transport's send path), and the receiver of a message that was
    already there pays ``recv_overhead`` to take it (``machine.Machine.message``);
    ``peer_alpha``, ``peer_beta`` and ``heap_beta``, shared memory only, the steps of an all-gather
    by single copies where every rank has a core, as ``perf/cma_copies.py`` times them alone: per
    ``process_vm_readv`` or ``process_vm_writev``, per byte read from a peer's heap or written into
    it (the two measured alike), per byte copied within a rank's heap, all in the cache
    (``reads.once_time``; ``heap_beta`` 0: priced by ``reads.reads_time`` instead);
    ``core_alpha``, what a message costs in place of ``alpha`` where every rank of a host has a
    core of its own (the profile's ``cores`` counted, no more ranks than they): nobody queues
    for the cores its send and receive run on, and a waiting rank spins for it
    (``transports.progress``), where ``alpha`` is fitted to worlds whose ranks share the cores
    (0: ``alpha`` in every world; ``machine.with_a_core``);
    ``ahead_wake``, what a rank resuming after a wait pays per rank ahead of it in its core's run
    queue, itself not counted, where every core of one host is shared (at least two ranks a core),
    in place of ``crowd_wake`` per rank per core (0: ``crowd_wake`` there too; ``machine.Machine``);
    ``rota_wake``, where ranks keep to their cores (one host), what a rank resuming after a wait pays
    per rank of its own core then blocked waiting in the replay, itself counted, in every call, in
    place of ``crowd_wake`` per rank whose home is its core (0: ``crowd_wake``): the core runs its
    ranks in a rota, each until it blocks, so a rank queues behind those still runnable, not all;
    ``sleep_wake``, what a rank pays more to resume where its wait for a message outlasted the
    progress engine's yield window (``transports.progress``: it slept on the transport's futex or
    selector and is woken by its peer's post), priced from the replay's own wait lengths (0: not
    priced; ``machine.Machine.step_extra``; docs/simulation.md, *The sixty-third round*).
    """

    overhead: float
    alpha: float
    beta: float
    gamma: float
    direct_alpha: float = 0.0
    direct_beta: float = 0.0
    exchange: float = 0.0
    wake: float = 0.0
    mixed_wait: float = 0.0
    crowd_wake: float = 0.0
    split_wait: float = 0.0
    crowd_beta: float = 0.0
    cache_beta: float = 0.0
    copy_beta: float = 0.0
    reads_alpha: float = 0.0
    reads_beta: float = 0.0
    reads_call: float = 0.0
    direct_sync: float = 0.0
    send_overhead: float = 0.0
    recv_overhead: float = 0.0
    peer_alpha: float = 0.0
    peer_beta: float = 0.0
    heap_beta: float = 0.0
    core_alpha: float = 0.0
    ahead_wake: float = 0.0
    rota_wake: float = 0.0
    sleep_wake: float = 0.0

    def scaled(self, factor: float) -> TransportCosts:
        """Every constant times ``factor`` (ranks sharing a core share its time)."""
        return TransportCosts(*(v * factor for v in dataclasses.astuple(self)))


@dataclasses.dataclass(frozen=True)
class Profile:
    """Costs per transport name, and where they came from (a file, or how they were measured)."""

    transports: Mapping[str, TransportCosts]
    source: str = ""
    margin: float = DEFAULT_MARGIN
    cores: int = 0
    """Cores per host of the machine the profile describes: where a host has more ranks, they
    queue for the cores (``machine.Machine``). 0: not modelled (as many cores as ranks)."""
    calls: int = 1
    """Calls priced back to back, the time per call their mean (up to ``tuner.REPLAY_RANKS``
    ranks): a loop of calls, as the harness times them, where a rank done with one call (a
    broadcast's root) starts the next while the others finish. 1: one call alone."""
    cache_bytes: int = 0
    """The last-level cache of a host, in bytes: a call whose buffers on a host outgrow it pays
    each transport's ``cache_beta`` per byte times the share beyond it (``cache``). 0: not modelled."""

    def __hash__(self) -> int:  # the tuner's caches key on the profile
        return hash((self.source, self.margin, self.cores, self.calls, self.cache_bytes,
                     tuple(sorted(self.transports.items()))))

    def costs(self, transport: str) -> TransportCosts:
        """The constants of ``transport``; an unmeasured one (mpi, inproc) borrows tcp's."""
        if transport in self.transports:
            return self.transports[transport]
        return self.transports.get("tcp") or next(iter(self.transports.values()))

    def between_hosts(self, transport: str) -> TransportCosts:
        """The constants of ``transport``'s link between two hosts: its ``_hosts`` entry where
        the profile has one, else the transport's own."""
        return self.transports.get(transport + BETWEEN_HOSTS) or self.costs(transport)

    def over_loopback(self) -> Profile:
        """This profile with no link between hosts (every ``_hosts`` entry dropped): the prices of
        hosts that are host identities on one machine, whose messages between them go over its
        loopback as its ranks' do (``perf/validate_model.py --hosts``, without ``--netns``)."""
        if not any(name.endswith(BETWEEN_HOSTS) for name in self.transports):
            return self
        return dataclasses.replace(self, transports={name: c for name, c in self.transports.items()
                                                     if not name.endswith(BETWEEN_HOSTS)})

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "margin": self.margin, **({"cores": self.cores} if self.cores else {}),
                **({"calls": self.calls} if self.calls != 1 else {}),
                **({"cache_bytes": self.cache_bytes} if self.cache_bytes else {}),
                "transports": {name: dataclasses.asdict(c) for name, c in sorted(self.transports.items())}}

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")

    def describe(self) -> list[str]:
        """One line per transport, in µs and ns per byte (what ``collectives-tune`` prints)."""
        lines = [f"# cost profile: {self.source}; the rule's choice stands unless another is predicted"
                 f" {1 + self.margin:g}x as fast" + (f"; {self.cores} cores per host" if self.cores else "")
                 + (f"; per call of {self.calls} back to back" if self.calls != 1 else "")
                 + (f"; last-level cache {self.cache_bytes >> 10} KiB" if self.cache_bytes else ""),
                 "# transport  overhead_us  alpha_us  core_alpha_us  beta_ns/B  gamma_ns/B  direct_alpha_us"
                 "  direct_beta_ns/B  exchange_us  wake_us  mixed_wait_us  crowd_wake_us  split_wait_us"
                 "  crowd_beta_ns/B  cache_beta_ns/B  copy_beta_ns/B  reads_alpha_us  reads_beta_ns/B  reads_call_us"
                 "  direct_sync_us  peer_alpha_us  peer_beta_ns/B  heap_beta_ns/B  send_overhead_us  recv_overhead_us"
                 "  sleep_wake_us"]
        for name, c in sorted(self.transports.items()):
            lines.append(f"  {name:<9} {c.overhead * 1e6:>11.2f} {c.alpha * 1e6:>9.2f} {c.core_alpha * 1e6:>14.2f}"
                         f" {c.beta * 1e9:>10.4f}"
                         f" {c.gamma * 1e9:>11.4f} {c.direct_alpha * 1e6:>16.2f} {c.direct_beta * 1e9:>17.4f}"
                         f" {c.exchange * 1e6:>12.2f} {c.wake * 1e6:>8.2f} {c.mixed_wait * 1e6:>14.2f}"
                         f" {c.crowd_wake * 1e6:>14.2f} {c.split_wait * 1e6:>14.2f} {c.crowd_beta * 1e9:>16.4f}"
                         f" {c.cache_beta * 1e9:>16.4f} {c.copy_beta * 1e9:>15.4f}"
                         f" {c.reads_alpha * 1e6:>15.2f} {c.reads_beta * 1e9:>16.4f} {c.reads_call * 1e6:>14.2f}"
                         f" {c.direct_sync * 1e6:>15.2f} {c.peer_alpha * 1e6:>14.2f} {c.peer_beta * 1e9:>15.4f}"
                         f" {c.heap_beta * 1e9:>15.4f} {c.send_overhead * 1e6:>17.2f} {c.recv_overhead * 1e6:>17.2f}"
                         f" {c.sleep_wake * 1e6:>13.2f}")
        return lines


def from_json(doc: Any, where: str) -> Profile:
    """A profile from its JSON form; raises InvalidArgumentError naming ``where`` and the fault."""
    if not isinstance(doc, dict) or not isinstance(doc.get("transports"), dict) or not doc["transports"]:
        raise InvalidArgumentError(f"{where}: a cost profile is an object with a non-empty 'transports' object")
    fields = {f.name for f in dataclasses.fields(TransportCosts)}
    transports: dict[str, TransportCosts] = {}
    for name, values in doc["transports"].items():
        if not isinstance(values, dict):
            raise InvalidArgumentError(f"{where}: transport {name!r} is not an object")
        unknown = set(values) - fields - RETIRED_FIELDS
        if unknown:
            raise InvalidArgumentError(f"{where}: transport {name!r} has unknown fields {sorted(unknown)}")
        try:
            costs = TransportCosts(**{k: float(v) for k, v in values.items() if k in fields})
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"{where}: transport {name!r}: {exc}") from None
        if any(v < 0 for v in dataclasses.astuple(costs)):
            raise InvalidArgumentError(f"{where}: transport {name!r} has a negative cost")
        transports[name] = costs
    margin = doc.get("margin", DEFAULT_MARGIN)
    if not isinstance(margin, (int, float)) or margin < 0:
        raise InvalidArgumentError(f"{where}: margin {margin!r} is not a number >= 0")
    cores = doc.get("cores", 0)
    if not isinstance(cores, int) or isinstance(cores, bool) or cores < 0:
        raise InvalidArgumentError(f"{where}: cores {cores!r} is not a whole number >= 0")
    calls = doc.get("calls", 1)
    if not isinstance(calls, int) or isinstance(calls, bool) or calls < 1:
        raise InvalidArgumentError(f"{where}: calls {calls!r} is not a whole number >= 1")
    cache_bytes = doc.get("cache_bytes", 0)
    if not isinstance(cache_bytes, int) or isinstance(cache_bytes, bool) or cache_bytes < 0:
        raise InvalidArgumentError(f"{where}: cache_bytes {cache_bytes!r} is not a whole number of bytes >= 0")
    return Profile(transports, str(doc.get("source", where)), float(margin), cores, calls, cache_bytes)


def load(path: str | os.PathLike[str]) -> Profile:
    """The profile in ``path`` (JSON as ``Profile.save`` writes it)."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise InvalidArgumentError(f"cost profile {str(path)!r}: cannot read it ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(f"cost profile {str(path)!r}: not JSON ({exc})") from None
    return from_json(doc, str(path))


_cached: dict[str, Profile] = {}


def current(env: Mapping[str, str] | None = None) -> Profile:
    """The profile the tuner uses: ``COLLECTIVES_TUNE_FILE``, else the built-in one (read once each)."""
    path = (os.environ if env is None else env).get(ENV) or str(DEFAULT_FILE)
    if path not in _cached:
        _cached[path] = load(path)
    return _cached[path]
