"""The model's costs beyond the wire: exchanges, ranks queueing for cores (and their wake-ups
and bytes costing more the more ranks share a core), mixed and split waits; and the profile
fields that carry them (optional, so older profiles still load and price as before)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collectives.tuning import tuner
from collectives.tuning import profile as profiles
from collectives.sim.cluster import cluster
from collectives.tuning.events import largest_to_a_peer
from collectives.tuning.machine import MIGRATION_COST, LinkClass, Machine, link_of, lockstep_bytes
from collectives.tuning.profile import Profile, TransportCosts

ALPHA = 10e-6


def link(exchange: float = 0.0, wake: float = 0.0) -> LinkClass:
    return LinkClass("x", ALPHA, 0.0, 0.5, exchange, wake)


def test_an_exchange_costs_more_than_a_one_way_step() -> None:
    """Two ranks: a broadcast is one message one way, a recursive all-gather one exchange;
    ``exchange`` is added to the second only."""
    def make() -> Machine:
        return Machine(2, 2, link(exchange=7e-6))

    assert tuner.replay_time("broadcast", "tree", 8, make) == pytest.approx(ALPHA)
    assert tuner.replay_time("all_gather", "recursive", 8, make) == pytest.approx(ALPHA + 7e-6)


def test_ranks_beyond_the_cores_queue_for_them_in_a_ring_but_hardly_in_a_chain() -> None:
    """Four ranks on two cores: every step of a ring all-gather has all four sending at once,
    so each step takes two rounds of the cores; a ring broadcast is a chain, one rank busy at
    a time, and costs what it costs with a core each."""
    def machine(cores: int) -> Machine:
        return Machine(4, 4, link(), cores=cores)

    ring_free = tuner.replay_time("all_gather", "ring", 16, lambda: machine(0))
    ring_queued = tuner.replay_time("all_gather", "ring", 16, lambda: machine(2))
    assert ring_free == pytest.approx(3 * ALPHA)
    assert ring_queued == pytest.approx(2 * ring_free)
    chain_free = tuner.replay_time("broadcast", "ring", 16, lambda: machine(0))
    assert tuner.replay_time("broadcast", "ring", 16, lambda: machine(2)) == pytest.approx(chain_free)


def test_a_waiting_rank_pays_its_wake_where_cores_are_short_and_none_where_they_are_not_counted() -> None:
    def make(cores: int) -> Machine:
        return Machine(3, 3, link(wake=5e-6), cores=cores)

    free = tuner.replay_time("broadcast", "ring", 8, lambda: make(0))
    assert free == pytest.approx(2 * ALPHA)  # a chain of two hops; nobody queues, nobody pays a wake
    assert tuner.replay_time("broadcast", "ring", 8, lambda: make(2)) == pytest.approx(2 * ALPHA + 2 * 5e-6)


def test_a_rank_with_a_core_of_its_own_pays_wake_alone_after_a_wait_where_cores_are_counted() -> None:
    """Three ranks on four cores: a rank whose message came after it was ready still switches
    back in (``wake``), with nobody queued ahead (no ``crowd_wake``); one that did not wait pays
    nothing, and where cores are not counted (0) no step pays a wake. A chain of two hops pays
    it at each."""
    def make(cores: int) -> Machine:
        return Machine(3, 3, LinkClass("x", ALPHA, 0.0, 0.5, wake=5e-6, crowd_wake=2e-6), cores=cores)

    m = make(4)
    assert not m.oversubscribed
    assert m.step_extra(1, [], [0], True) == pytest.approx(5e-6)
    assert m.step_extra(1, [], [0], False) == 0.0
    assert make(0).step_extra(1, [], [0], True) == 0.0
    assert tuner.replay_time("broadcast", "ring", 8, lambda: make(4)) == pytest.approx(2 * ALPHA + 2 * 5e-6)
    assert tuner.replay_time("broadcast", "ring", 8, lambda: make(0)) == pytest.approx(2 * ALPHA)


def test_a_woken_rank_pays_crowd_wake_per_rank_sharing_its_core() -> None:
    """Three ranks on two cores: each hop of a chain of two pays wake plus crowd_wake times
    1.5 ranks per core; with a core each, neither."""
    def make(crowd: float, cores: int) -> Machine:
        return Machine(3, 3, LinkClass("x", ALPHA, 0.0, 0.5, wake=5e-6, crowd_wake=crowd), cores=cores)

    assert tuner.replay_time("broadcast", "ring", 8, lambda: make(2e-6, 2)) == pytest.approx(
        2 * ALPHA + 2 * (5e-6 + 1.5 * 2e-6))
    assert tuner.replay_time("broadcast", "ring", 8, lambda: make(2e-6, 0)) == pytest.approx(2 * ALPHA)


def test_bytes_cost_crowd_beta_more_per_rank_per_core_where_ranks_outnumber_the_cores() -> None:
    """Four ranks on two cores: each of a chain's three one-way hops of n bytes costs half of
    n * (beta + crowd_beta * 2) on its receiver; with four cores, crowd_beta costs nothing."""
    n = 1 << 16

    def make(crowd: float, cores: int) -> Machine:
        return Machine(4, 4, LinkClass("x", ALPHA, 1e-9, 0.5, crowd_beta=crowd), cores=cores)

    plain = tuner.replay_time("broadcast", "ring", n, lambda: make(0.0, 2))
    assert tuner.replay_time("broadcast", "ring", n, lambda: make(1e-9, 2)) == pytest.approx(plain + 3 * n * 1e-9)
    assert tuner.replay_time("broadcast", "ring", n, lambda: make(1e-9, 4)) == pytest.approx(
        tuner.replay_time("broadcast", "ring", n, lambda: make(0.0, 4)))


def test_a_rank_with_peers_on_other_hosts_resumes_at_their_links_cost_whatever_it_waited_for() -> None:
    """Two hosts of two on one core each: in a tree broadcast ranks 1 and 3 wait for messages
    within their host, yet every rank polls its channels to the other host on every pass of its
    wait, so each resumes at the dearer link's wake: a free wake within hosts changes nothing."""
    def make(shm_wake: float, tcp_wake: float) -> Machine:
        return Machine(4, 2, LinkClass("shm", ALPHA, 0.0, wake=shm_wake), LinkClass("tcp", 2 * ALPHA, 0.0,
                                                                                   wake=tcp_wake), cores=1)

    dear = tuner.replay_time("broadcast", "tree", 8, lambda: make(20e-6, 20e-6))
    assert tuner.replay_time("broadcast", "tree", 8, lambda: make(0.0, 20e-6)) == pytest.approx(dear)
    assert dear > tuner.replay_time("broadcast", "tree", 8, lambda: make(0.0, 0.0)) + 20e-6


def test_a_rank_with_peers_over_two_kinds_of_link_pays_split_wait_for_each_step_it_waited() -> None:
    """Two hosts of two, a tree broadcast from 0: rank 2 waits for 0 (across) before it sends
    to 3 (within), and 3 waits for 2, so the critical path pays split_wait twice; on one host
    of four it costs nothing."""
    def make(split: float, per_host: int) -> Machine:
        return Machine(4, per_host, LinkClass("shm", ALPHA, 0.0), LinkClass("tcp", 2 * ALPHA, 0.0), split_wait=split)

    plain = tuner.replay_time("broadcast", "tree", 8, lambda: make(0.0, 2))
    assert plain == pytest.approx(3 * ALPHA)
    assert tuner.replay_time("broadcast", "tree", 8, lambda: make(100e-6, 2)) == pytest.approx(plain + 2 * 100e-6)
    assert tuner.replay_time("broadcast", "tree", 8, lambda: make(100e-6, 4)) == pytest.approx(2 * ALPHA)


def test_a_wait_over_two_kinds_of_link_pays_the_mixed_wait() -> None:
    """Two hosts of two: a ring step of rank 1 receives over shared memory from 0 and sends
    over the NIC to 2; recursive doubling talks to one kind of link per step."""
    def make(mixed: float) -> Machine:
        return Machine(4, 2, LinkClass("shm", ALPHA, 0.0), LinkClass("tcp", ALPHA, 0.0), mixed_wait=mixed)

    for algorithm in ("ring", "recursive"):
        plain = tuner.replay_time("all_gather", algorithm, 64, lambda: make(0.0))
        mixed = tuner.replay_time("all_gather", algorithm, 64, lambda: make(100e-6))
        if algorithm == "ring":
            assert mixed >= plain + 100e-6
        else:
            assert mixed == pytest.approx(plain)


def test_an_oversubscribed_machine_beyond_the_replay_is_priced_with_cores_shared_evenly(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Above REPLAY_RANKS one rank's steps price everyone's; queueing cannot be replayed there,
    so the cores are shared evenly (every cost times ranks per core)."""
    monkeypatch.setattr(tuner, "REPLAY_RANKS", 4)
    free = tuner.replay_time("all_reduce", "ring", 1 << 16, lambda: Machine(8, 8, link()))
    shared = tuner.replay_time("all_reduce", "ring", 1 << 16, lambda: Machine(8, 8, link(), cores=2))
    assert shared == pytest.approx(4 * free)


def test_the_tuner_models_the_profiles_cores() -> None:
    costs = TransportCosts(0.0, ALPHA, 1e-10, 0.0)
    plain = Profile({"tcp": costs}, "no cores")
    two = Profile({"tcp": costs}, "two cores", cores=2)
    assert tuner.predict("all_gather", "ring", 64, 4, "tcp", 0, two) == pytest.approx(
        2 * tuner.predict("all_gather", "ring", 64, 4, "tcp", 0, plain))
    assert tuner.predict("all_gather", "ring", 64, 2, "tcp", 0, two) == pytest.approx(
        tuner.predict("all_gather", "ring", 64, 2, "tcp", 0, plain))


def test_profiles_without_the_new_fields_still_load_and_new_ones_survive_their_file(tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"transports": {"tcp": {"overhead": 1e-5, "alpha": 2e-5, "beta": 1e-10,
                                                      "gamma": 1e-11}}}))
    loaded = profiles.load(old)
    assert loaded.cores == 0 and loaded.transports["tcp"].wake == 0.0
    assert loaded.calls == 1 and loaded.transports["tcp"].crowd_wake == loaded.transports["tcp"].crowd_beta == 0.0
    new = Profile({"tcp": TransportCosts(1e-5, 2e-5, 1e-10, 1e-11, exchange=3e-6, wake=4e-6, mixed_wait=5e-4,
                                         crowd_wake=6e-6, split_wait=7e-5, crowd_beta=1e-11)}, "new", cores=2, calls=2)
    new.save(tmp_path / "new.json")
    assert profiles.load(tmp_path / "new.json") == new
    assert "crowd_beta_ns/B" in "\n".join(new.describe()) and "per call of 2 back to back" in new.describe()[0]


def test_an_old_profile_prices_as_one_whose_new_fields_are_zero() -> None:
    old = Profile({"tcp": TransportCosts(1e-5, 2e-5, 1e-10, 1e-11, wake=4e-6)}, "old", cores=2)
    for n in (8, 1 << 20):
        assert tuner.predict("all_gather", "ring", n, 4, "tcp", 2, old) == pytest.approx(tuner.predict(
            "all_gather", "ring", n, 4, "tcp", 2, Profile({"tcp": TransportCosts(
                1e-5, 2e-5, 1e-10, 1e-11, wake=4e-6, crowd_wake=0.0, split_wait=0.0, crowd_beta=0.0)}, "zeros",
                cores=2, calls=1)))


@pytest.mark.parametrize(("field", "value"), [("calls", 0), ("calls", 1.5), ("calls", True),
                                             ("cores", -1), ("cores", 1.5), ("cores", True)])
def test_a_profile_with_a_bad_count_is_refused_naming_it(tmp_path: Path, field: str, value: object) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({field: value, "transports": {"tcp": {"overhead": 0, "alpha": 0, "beta": 0,
                                                                      "gamma": 0}}}))
    with pytest.raises(profiles.InvalidArgumentError, match=field):
        profiles.load(path)


def test_hosts_on_one_machine_queue_for_all_of_its_cores_together() -> None:
    """Two hosts of two ranks, a core each: as separate machines, host 0's second rank waits
    for host 0's core while host 1's stands idle; as parts of one machine (``shared_cores``,
    as the validation runs' host identities and network namespaces are) it takes host 1's."""
    apart = Machine(4, 2, link(), cores=1)
    together = Machine(4, 2, link(), cores=1, shared_cores=True)
    for m in (apart, together):
        m.release(0, m.acquire(0, 0.0) + 5e-6)
    assert apart.acquire(1, 0.0) == pytest.approx(5e-6)
    assert together.acquire(1, 0.0) == 0.0
    together.release(1, 3e-6)
    assert together.acquire(2, 0.0) == pytest.approx(3e-6)  # two cores in all, both taken: the first free


def test_shared_cores_change_nothing_where_every_rank_works_at_once() -> None:
    """A ring all-gather on two hosts of two, a core each: every step has all four ranks
    sending, so two cores in one pool serve them as two cores one per host do."""
    def make(shared: bool) -> Machine:
        return Machine(4, 2, link(), link(), cores=1, shared_cores=shared)

    assert tuner.replay_time("all_gather", "ring", 16, lambda: make(True)) == pytest.approx(
        tuner.replay_time("all_gather", "ring", 16, lambda: make(False)))


def sticky_machine(**kw: float) -> Machine:
    """Three ranks on two cores keeping to their cores, as one host over shared memory."""
    return Machine(3, 3, LinkClass("x", ALPHA, 0.0, 0.5, 0.0, kw.get("wake", 0.0), kw.get("crowd_wake", 0.0)),
                   cores=2, sticky=True)


def test_a_sticky_rank_queues_on_its_own_core_while_it_is_cache_hot() -> None:
    """Rank 2 last ran on core 0 at 5 µs; core 0 is busy until 100 µs, core 1 frees at 20 µs:
    within ``MIGRATION_COST`` of its last run it waits for core 0 (where the shared pool would
    give it core 1 at 20 µs), but it takes a core that is idle when it wakes."""
    m = sticky_machine()
    assert m.acquire(2, 0.0) == 0.0  # its home: core 2 mod 2
    m.release(2, 5e-6)
    assert m.acquire(0, 5e-6) == pytest.approx(5e-6)
    m.release(0, 100e-6)
    assert m.acquire(1, 0.0) == 0.0
    m.release(1, 20e-6)
    assert m.acquire(2, 10e-6) == pytest.approx(100e-6)
    m.release(2, 110e-6)
    assert m.acquire(0, 105e-6) == pytest.approx(105e-6)  # core 0 busy until 110 µs, core 1 idle since 20
    m.release(0, 115e-6)
    assert m.acquire(0, 120e-6) == pytest.approx(120e-6)  # it now runs on core 1, free again


def test_a_sticky_rank_moves_to_a_core_that_frees_sooner_once_it_is_cold() -> None:
    """The same queue, but core 1 frees at 600 µs and core 0 at 900: rank 2 last ran at 5 µs,
    more than ``MIGRATION_COST`` before core 1 frees, so it moves there."""
    assert MIGRATION_COST == pytest.approx(500e-6)
    m = sticky_machine()
    m.acquire(2, 0.0)
    m.release(2, 5e-6)
    m.acquire(0, 5e-6)
    m.release(0, 900e-6)
    m.acquire(1, 0.0)
    m.release(1, 600e-6)
    assert m.acquire(2, 10e-6) == pytest.approx(600e-6)


def test_a_sticky_rank_pays_crowd_wake_for_the_ranks_of_its_own_core() -> None:
    """Three ranks on two cores: ranks 0 and 2 start on core 0, rank 1 alone on core 1; a wait
    costs wake plus crowd_wake times the ranks of the waiter's core (2 or 1), where the shared
    pool charges every rank the mean, 1.5."""
    m = sticky_machine(wake=1e-6, crowd_wake=4e-6)
    assert [m.home_ranks(r) for r in range(3)] == [2, 1, 2]
    assert m.step_extra(0, [], [1], True) == pytest.approx(1e-6 + 2 * 4e-6)
    assert m.step_extra(1, [], [0], True) == pytest.approx(1e-6 + 4e-6)
    pooled = Machine(3, 3, LinkClass("x", ALPHA, 0.0, 0.5, 0.0, 1e-6, 4e-6), cores=2)
    assert pooled.step_extra(1, [], [0], True) == pytest.approx(1e-6 + 1.5 * 4e-6)


def test_ranks_taking_turns_on_one_core_pay_one_wake_and_crowd_wake_a_step_however_many() -> None:
    """k ranks on one core (k = 2, 3, 4; kept to it or pooled): every step a rank receives in
    resumes it from the core's run queue once, waited or not, at wake plus crowd_wake, not k
    crowd_wakes; a step that receives nothing pays none."""
    for k in (2, 3, 4):
        for sticky in (True, False):
            m = Machine(k, k, LinkClass("x", ALPHA, 0.0, 0.5, wake=1e-6, crowd_wake=4e-6), cores=1, sticky=sticky)
            assert m.one_core
            assert m.step_extra(0, [1], [k - 1], True) == pytest.approx(1e-6 + 4e-6)
            assert m.step_extra(0, [1], [k - 1], False) == pytest.approx(1e-6 + 4e-6)
            assert m.step_extra(0, [1], [], False) == 0.0


def test_one_core_means_every_rank_queues_for_that_one_core() -> None:
    """Two cores, a core each, or hosts of one core sharing the machine's two: not one core;
    hosts of one core each, queueing apart: one core each."""
    assert not sticky_machine().one_core
    assert not Machine(2, 2, link(), cores=2).one_core and not Machine(3, 3, link()).one_core
    assert not Machine(4, 2, link(), link(), cores=1, shared_cores=True).one_core
    assert Machine(4, 2, link(), link(), cores=1).one_core


def test_only_one_host_keeps_its_ranks_to_their_cores() -> None:
    """The tuner and the simulator build sticky machines for shm and tcp on one host (tcp's in
    calls whose messages come back round only: ``begin``); hosts that share one machine's cores,
    and the simulator's other links, keep the shared pool."""
    profile = profiles.current()
    assert cluster("shm", 3, None, profile, 2).factory()().sticky
    assert cluster("tcp", 3, None, profile, 2).factory()().sticky
    assert not cluster("tcp", 4, 2, profile, 2, shared_cores=True).factory()().sticky
    assert not Machine(4, 2, link(), cores=2, sticky=True).sticky  # two hosts
    assert not cluster("nvlink", 16, None, profile).factory()().sticky


def test_tcp_keeps_its_ranks_to_their_cores_only_where_messages_come_back_round() -> None:
    """Told that a call flows one way (``begin``), a tcp machine's ranks take whichever core
    frees first (the shared pool); in rings and exchanges they keep to their cores, as shm's
    do in both."""
    tcp = cluster("tcp", 3, None, profiles.current(), 2).factory()()
    shm = cluster("shm", 3, None, profiles.current(), 2).factory()()
    tcp.begin(True)
    shm.begin(True)
    assert not tcp.sticky and shm.sticky
    tcp.begin(False, 64 << 20)  # a large call (below: only beyond the socket buffers)
    assert tcp.sticky
    pooled = Machine(3, 3, link(), cores=2)
    pooled.begin(False, 64 << 20)
    assert not pooled.sticky  # begin keeps to what the machine was built with


def test_tcp_keeps_its_ranks_to_their_cores_only_where_a_call_outgrows_its_socket_buffers() -> None:
    """Rings and exchanges over tcp keep their ranks to their cores only where a rank sends one
    peer more than the socket buffers hold in the call (a sender then waits on its receiver,
    runnable); below, and in one-way calls, the ranks take whichever core frees first. shm's
    keep to their cores at any size."""
    from collectives.transports.tcp import SOCKET_BUFFER_BYTES

    assert lockstep_bytes("tcp") == SOCKET_BUFFER_BYTES and lockstep_bytes("shm") == 0
    for largest, kept in ((0, False), (SOCKET_BUFFER_BYTES, False), (SOCKET_BUFFER_BYTES + 1, True)):
        tcp = cluster("tcp", 4, None, profiles.current(), 2).factory()()
        tcp.begin(False, largest)
        assert tcp.sticky == kept, largest
        tcp.begin(True, largest)
        assert not tcp.sticky
        shm = cluster("shm", 4, None, profiles.current(), 2).factory()()
        shm.begin(False, largest)
        assert shm.sticky


def test_a_call_counts_the_most_bytes_one_rank_sends_one_peer() -> None:
    """Summed over the call's steps, per rank and peer: a ring all-reduce of 3 ranks sends its
    next neighbour 2 (p - 1) blocks of n / p."""
    steps = [list(s) for s in tuner.schedules("all_reduce", "ring", 3 << 20, 3, 1 << 20)]
    assert largest_to_a_peer(steps, 4) == 4 << 20  # 2 (p - 1) blocks of 1 MiB to the next rank
    assert largest_to_a_peer([[], []], 4) == 0


def test_a_replay_tells_the_machine_how_its_messages_flow() -> None:
    """A tcp tree broadcast over three ranks on two cores is priced on the shared pool, as
    before; a ring all-reduce keeps its ranks to their cores, where two of the three queue on
    one core and it costs more than on the pool."""
    costs = profiles.current().costs("tcp")
    tcp = link_of("tcp", costs)

    def make(sticky: bool, flowing: bool = False) -> Machine:
        return Machine(3, 3, tcp, cores=2, sticky=sticky, sticky_flowing=flowing, crowd_of_waiters=True)

    n = 1 << 20
    assert tuner.replay_time("broadcast", "tree", n, lambda: make(True)) == pytest.approx(
        tuner.replay_time("broadcast", "tree", n, lambda: make(False)))
    assert tuner.replay_time("broadcast", "tree", n, lambda: make(True, True)) != pytest.approx(
        tuner.replay_time("broadcast", "tree", n, lambda: make(False)))
    assert tuner.replay_time("all_reduce", "ring", n, lambda: make(True)) > tuner.replay_time(
        "all_reduce", "ring", n, lambda: make(False))


def test_the_line_of_a_large_tcp_call_keeps_its_cores_at_both_ends_by_the_calls_own_rule() -> None:
    """A 3-rank tcp all-gather by Bruck's steps sends each peer 2.7 MiB at 8 MiB and 5.3 MiB at
    16 MiB: replayed as themselves, the line's two ends would fall on either side of the socket
    buffers and its slope carry the switch to kept cores. Both ends take the call's own rule."""
    big = 32 << 20
    assert tuner.line_lockstep("all_gather", "recursive", big, 3, 1 << 20, lockstep_bytes("tcp")) == tuner.KEEPS_ALWAYS
    assert tuner.line_lockstep("all_gather", "recursive", big, 3, 1 << 20, 0) == -1  # shm: no rule by size
    assert tuner.line_lockstep("all_gather", "recursive", big, 3, 1 << 20, big) == tuner.KEEPS_NEVER
    half, full = tuner.LINEAR_BYTES // 2, tuner.LINEAR_BYTES
    ends = [tuner.predict("all_gather", "recursive", n, 3, "tcp", lockstep=tuner.KEEPS_ALWAYS) for n in (half, full)]
    assert tuner.predict("all_gather", "recursive", big, 3, "tcp") == pytest.approx(
        tuner.on_the_line(big, dict(zip((half, full), ends)).__getitem__))
    assert ends[0] > tuner.predict("all_gather", "recursive", half, 3, "tcp")  # 8 MiB alone is on the pool


def test_the_simulator_draws_the_same_line_as_the_tuner() -> None:
    """``sim.predict`` prices a large tcp call on the line with the call's own rule too."""
    from collectives.sim.predict import predict

    profile = profiles.current()
    c = cluster("tcp", 3, None, profile, profile.cores)
    for algorithm in ("ring", "recursive"):
        assert predict("all_gather", algorithm, 64 << 20, c, "tcp", profile) == pytest.approx(
            tuner.predict("all_gather", algorithm, 64 << 20, 3, "tcp"), rel=1e-6)


def test_the_3_rank_tcp_all_gather_takes_bruck_at_32_and_64_mib() -> None:
    """Measured ahead of or level with the ring at both sizes (docs/simulation.md, the forty-first
    round); priced below it once the line's ends keep their cores as the call does."""
    for size in (32 << 20, 64 << 20):
        assert tuner.choose("all_gather", size, 3, "tcp") == "recursive"


def test_an_exchange_is_taken_in_hand_over_a_split_alpha_unless_every_rank_shares_one_core() -> None:
    """Where a sender goes on after its send overhead (tcp), the rest of α is spent elsewhere
    while it works on, unless all ranks take turns on one core (``one_core``), where it is not."""
    split = LinkClass("tcp", 10e-6, 0.0, 0.5, exchange=5e-6, send_overhead=4e-6, recv_overhead=1e-6)
    assert Machine(3, 3, split, cores=2).takes_in_hand(0, 1)
    assert Machine(3, 3, split).takes_in_hand(0, 1)
    assert not Machine(3, 3, split, cores=1).takes_in_hand(0, 1)
    assert not Machine(3, 3, link(exchange=5e-6), cores=2).takes_in_hand(0, 1)


def test_an_exchange_taken_in_hand_pays_no_exchange_term() -> None:
    m = Machine(2, 2, link(exchange=5e-6))
    assert m.step_extra(0, [1], [1], False) == pytest.approx(5e-6)
    assert m.step_extra(0, [1], [1], False, in_hand=True) == 0.0
