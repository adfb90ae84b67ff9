"""The replay's pricing of one step: a waiting receiver copies out as the bytes arrive, a
busy one after; the same with ranks queueing for cores; and calls made back to back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from collectives.algorithms.schedule import Recv, Send, Step
from collectives.tuning import tuner
from collectives.tuning.events import replay, replay_calls
from collectives.tuning.machine import LinkClass, Machine

ALPHA, BETA, N = 5e-6, 1e-9, 1 << 20


def machine(ranks: int = 2, cores: int = 0) -> Machine:
    return Machine(ranks, ranks, LinkClass("x", ALPHA, BETA, 0.5), cores=cores)


def test_a_one_way_message_costs_the_larger_half_of_its_copy() -> None:
    """The sender writes half, the waiting receiver copies the other half out as it comes."""
    done = replay([iter([(Send(1, 0, N // 4),)]), iter([(Recv(0, 0, N // 4),)])], machine())
    assert max(done) == pytest.approx(ALPHA + N * BETA / 2)


def test_an_exchange_costs_both_halves() -> None:
    """Both ranks send, then copy out what came: the copy cannot overlap their own sending."""
    done = replay([iter([(Send(1 - r, 0, N // 4), Recv(1 - r, 0, N // 4))]) for r in range(2)], machine())
    assert max(done) == pytest.approx(ALPHA + N * BETA)


def test_three_ranks_on_two_cores_take_turns() -> None:
    """Three ranks each send a message at once: two hold the cores, the third waits for one."""
    def ring() -> list[Iterator[Step]]:
        return [iter([(Send((r + 1) % 3, 0, 1), Recv((r - 1) % 3, 0, 1))]) for r in range(3)]

    free = max(replay(ring(), machine(3)))
    queued = max(replay(ring(), machine(3, cores=2)))
    assert free == pytest.approx(ALPHA + 4 * BETA)
    assert queued > free + ALPHA * 0.99


def test_calls_back_to_back_overlap_where_a_rank_is_done_early() -> None:
    """A chain of three (a ring broadcast): the root sends the second call's message as soon as
    the first is out, so the second call ends one hop after the first, not two; an exchange
    of two ranks overlaps nothing."""
    def chain() -> list[Iterator[Step]]:
        return [iter([(Send(1, 0, 1),)]), iter([(Recv(0, 0, 1),), (Send(2, 0, 1),)]), iter([(Recv(1, 0, 1),)])]

    def wire(ranks: int) -> Machine:
        return Machine(ranks, ranks, LinkClass("x", ALPHA, 0.0, 0.5))

    first, second = replay_calls([chain(), chain()], wire(3))
    assert max(first) == pytest.approx(2 * ALPHA)
    assert max(second) == pytest.approx(3 * ALPHA)
    assert tuner.replay_time("broadcast", "ring", 8, lambda: wire(3), calls=2) == pytest.approx(1.5 * ALPHA)
    assert tuner.replay_time("all_gather", "recursive", 8, lambda: wire(2), calls=2) == pytest.approx(
        tuner.replay_time("all_gather", "recursive", 8, lambda: wire(2)))


def test_a_profile_prices_its_calls_back_to_back() -> None:
    from collectives.tuning.profile import Profile, TransportCosts

    costs = TransportCosts(0.0, ALPHA, 0.0, 0.0)
    one, two = Profile({"tcp": costs}, "one"), Profile({"tcp": costs}, "two", calls=2)
    assert tuner.predict("broadcast", "ring", 8, 3, "tcp", 0, one) == pytest.approx(2 * ALPHA)
    assert tuner.predict("broadcast", "ring", 8, 3, "tcp", 0, two) == pytest.approx(1.5 * ALPHA)


def whole(ranks: int = 2) -> Machine:
    return Machine(ranks, ranks, LinkClass("x", ALPHA, BETA, 0.5), whole_messages=True)


def test_where_messages_are_copied_whole_a_round_trip_pays_both_halves_each_way() -> None:
    """Over shared memory a channel publishes a message once all of it is written, so a rank
    that waits for it copies out after, not as it comes: there and back costs α and both
    halves of the copy each way, where overlapped halves would cost one half each way."""
    def there_and_back() -> list[Iterator[Step]]:
        return [iter([(Send(1, 0, N // 4),), (Recv(1, 0, N // 4),)]),
                iter([(Recv(0, 0, N // 4),), (Send(0, 0, N // 4),)])]

    assert max(replay(there_and_back(), machine())) == pytest.approx(2 * (ALPHA + N * BETA / 2))
    assert max(replay(there_and_back(), whole())) == pytest.approx(2 * (ALPHA + N * BETA))


def test_a_call_whose_messages_flow_one_way_keeps_its_halves_overlapped() -> None:
    """A broadcast's chain: in a loop the sender writes the next call's message while the
    receiver copies out this one's, which the overlapped halves stand for."""
    chain = [iter([(Send(1, 0, N // 4),)]), iter([(Recv(0, 0, N // 4),)])]
    assert max(replay(chain, whole())) == pytest.approx(ALPHA + N * BETA / 2)


def test_shared_memory_prices_the_two_rank_tree_all_reduce_with_its_messages_whole() -> None:
    """The tuner's shm machine copies messages whole, tcp's does not: the 2-rank tree
    all-reduce (there and back) costs more over shm than the ring (an exchange each way)."""
    from collectives.tuning.profile import Profile, TransportCosts

    costs = TransportCosts(0.0, ALPHA, BETA, 0.0)
    profile = Profile({"shm": costs, "tcp": costs}, "flat")
    tree = {t: tuner.predict("all_reduce", "tree", N, 2, t, 0, profile) for t in ("shm", "tcp")}
    assert tree["shm"] == pytest.approx(tree["tcp"] + N * BETA, rel=0.02)


def folding(gamma: float, in_place: bool = True) -> Machine:
    return Machine(2, 2, LinkClass("x", ALPHA, BETA, 0.5), gamma=gamma, whole_messages=True, folds_in_place=in_place)


def reduce_there_and_back(count: int = N // 4) -> list[Iterator[Step]]:
    """A 2-rank tree all-reduce of one segment: rank 1's piece folded into rank 0's, sent back."""
    return [iter([(Recv(1, 0, count, reduce=True),), (Send(1, 0, count),)]),
            iter([(Send(0, 0, count),), (Recv(0, 0, count),)])]


@pytest.mark.parametrize("gamma", [BETA / 4, BETA])
def test_where_folds_read_the_ring_a_reducing_receive_costs_one_pass_over_its_bytes(gamma: float) -> None:
    """Over shared memory a reducing receive of 64 KiB or more that folds as it arrives reads the
    channel's ring itself (``engines/fold_sink.py``): in a call whose messages come back round its
    receiver pays the larger of its copy out and its fold, not the one and then the other. The 2-rank
    tree all-reduce's root measured its fold from the ring of 1 MiB in a copy's time, 67 µs against the
    writer's 65 (docs/simulation.md, the sixty-eighth round)."""
    copy, fold = N * BETA / 2, N * gamma
    trip = 2 * (ALPHA + N * BETA)  # there and back, both halves each way (messages copied whole)
    assert max(replay(reduce_there_and_back(), folding(gamma, in_place=False))) == pytest.approx(trip + fold)
    assert max(replay(reduce_there_and_back(), folding(gamma))) == pytest.approx(trip - copy + max(copy, fold))


def test_a_receive_folded_from_scratch_keeps_its_copy_and_its_fold() -> None:
    """Below ``STREAM_FOLD_BYTES`` a reducing receive lands in scratch: a copy, then the fold."""
    small = 8 << 10  # 32 KiB of float32
    trip = 2 * (ALPHA + small * 4 * BETA)
    assert max(replay(reduce_there_and_back(small), folding(BETA))) == pytest.approx(trip + small * 4 * BETA)


def test_in_a_one_way_call_a_fold_from_the_ring_is_one_pass_overlapped_with_the_arrival() -> None:
    """A call whose messages flow one way (a reduce) overlaps its receiver's copy with the sender's next
    write; where the receive folds from the ring its one pass, the dearer of copy and fold, takes the copy's
    place and no fold follows (the 2-rank reduce's root measured folding from the ring in a copy's time, and
    the later choice runs' one-way ring reduces at 2-4 ranks cost what their reduce-scatters do: the
    sixty-eighth round). Where folds do not read the ring the copy overlaps and the fold follows."""
    one_way = [iter([(Recv(1, 0, N // 4, reduce=True),)]), iter([(Send(0, 0, N // 4),)])]
    arrival = ALPHA + N * BETA / 2
    assert max(replay(one_way, folding(BETA, in_place=False))) == pytest.approx(arrival + N * BETA)
    one_way = [iter([(Recv(1, 0, N // 4, reduce=True),)]), iter([(Send(0, 0, N // 4),)])]
    assert max(replay(one_way, folding(BETA))) == pytest.approx(max(arrival, N * BETA))


def test_shared_memorys_folds_read_the_ring_and_tcps_do_not() -> None:
    from collectives.tuning.machine import folds_from_ring

    assert folds_from_ring("shm") and not folds_from_ring("tcp")


@pytest.mark.parametrize("name", ["validation_quiet_shm_calib24.json", "validation_shm48_calib27_h27f.json"])
def test_the_quiet_runs_large_schedule_all_reduces_at_2_and_4_ranks_are_priced_within_a_quarter(name: str) -> None:
    """This machine's quiet run (2026-12-07 09:10 UTC) and a fresh one (17:40, 4 and 8 ranks): every ring,
    tree and recursive all-reduce of 1 and 4 MiB at 2 and 4 ranks within 25 %. With each folded receive's
    copy out of the ring priced before its fold the quiet run's 2-rank tree all-reduces were 1.40 and 1.36
    times their time and its 4-rank ring and recursive ones of 4 MiB 1.33 and 1.27."""
    import json
    from pathlib import Path

    from collectives.sim.cluster import cluster
    from collectives.sim.predict import predict
    from collectives.tuning.profile import current

    doc = json.loads((Path(__file__).resolve().parents[2] / "docs" / "perf" / name).read_text())
    profile = current()
    rows = [r for r in doc["rows"] if r["collective"] == "all_reduce" and r["algorithm"] in tuner.FLAT
            and r["size"] >= 1 << 20 and r["ranks"] in (2, 4)]
    assert len(rows) >= 6
    for r in rows:
        c = cluster("shm", r["ranks"], None, profile, doc["cores"])
        ratio = predict("all_reduce", r["algorithm"], r["size"], c, "shm", profile) * 1e6 / r["measured_us"]
        assert 0.75 <= ratio <= 1.25, (r["ranks"], r["algorithm"], r["size"], ratio)


@pytest.mark.parametrize("name, ranks, size", [("choices_calib26_shm2_h26d.json", 2, 2 << 20),
                                                ("choices_calib27_shm4_h27f.json", 4, 2 << 20),
                                                ("choices_calib27_shm4_h27f.json", 4, 8 << 20)])
def test_the_later_runs_one_way_ring_reduces_are_priced_within_a_quarter(name: str, ranks: int, size: int) -> None:
    """The chain of a ring reduce folds every piece from the ring as it arrives, one way: runs 26 and 27
    (2026-12-07) measured it at 219, 1015 and 4693 µs, about their ring reduce-scatters (4873 µs at 4 ranks
    and 8 MiB). With each of its folds priced after a copy out of the ring it was 1.32, 1.27 and 1.28 times
    its time, and the 4-rank recursive reduce, whose exchanges come back round, priced below the ring and
    the tree where it measured above both (docs/simulation.md, the sixty-eighth round)."""
    import json
    from pathlib import Path

    doc = json.loads((Path(__file__).resolve().parents[2] / "docs" / "perf" / name).read_text())
    [row] = [r for r in doc["rows"] if r["transport"] == "shm" and r["collective"] == "reduce"
             and r["ranks"] == ranks and r["size"] == size]
    ratio = tuner.predict("reduce", "ring", size, ranks, "shm") * 1e6 / row["times_us"]["ring"]
    assert 0.75 <= ratio <= 1.25, ratio


SEND, RECEIVE, EXCHANGE = 2e-6, 1e-6, 3e-6


def ahead(send: float = SEND, cores: int = 0) -> list[float]:
    """Rank 0 first waits for rank 2's message, then exchanges with rank 1, which sent its half
    at once and waits: by the time rank 0 issues the exchange, rank 1's message is in."""
    cls = LinkClass("x", ALPHA, 0.0, 0.5, exchange=EXCHANGE, send_overhead=send, recv_overhead=RECEIVE)
    return replay([iter([(Recv(2, 0, 1),), (Send(1, 0, 1), Recv(1, 0, 1))]),
                   iter([(Send(0, 0, 1), Recv(0, 0, 1))]),
                   iter([(Send(0, 0, 1),)])], Machine(3, 3, cls, cores=cores))


def test_an_exchange_whose_peer_ran_ahead_costs_its_rank_a_one_way_send() -> None:
    """Over a link that splits α (tcp), the rank that finds its peer's message in goes on after
    its send overhead and pays no ``exchange``: its two ends are not busy at once (the 3-rank
    recursive schedule's lone rank, docs/simulation.md, the fifty-third round). The peer, which
    waited, still has the message α after it was sent and pays the exchange."""
    done = ahead()
    assert done[0] == pytest.approx(ALPHA + SEND)
    assert done[1] == pytest.approx(2 * ALPHA + EXCHANGE)


def test_without_the_split_an_exchange_costs_alpha_whole_and_exchange_however_early_the_peer() -> None:
    assert ahead(send=0.0)[0] == pytest.approx(2 * ALPHA + EXCHANGE)


def test_an_exchange_of_peers_that_meet_at_once_is_priced_whole() -> None:
    """Neither message is in when both ranks issue the exchange: α whole and ``exchange`` each."""
    cls = LinkClass("x", ALPHA, 0.0, 0.5, exchange=EXCHANGE, send_overhead=SEND, recv_overhead=RECEIVE)
    done = replay([iter([(Send(1 - r, 0, 1), Recv(1 - r, 0, 1))]) for r in range(2)], Machine(2, 2, cls))
    assert done == pytest.approx([ALPHA + EXCHANGE] * 2)


def test_tcp_picks_the_recursive_schedule_at_three_ranks_below_64_kib() -> None:
    """Choice runs 21 and 25 (docs/simulation.md, the fifty-third round) measured the 3-rank
    recursive all-reduce and reduce-scatter 3-35 % faster than the tree from 8 B to 32 KiB over
    tcp; priced with the lone rank's exchange as a whole exchange, the tree was picked."""
    for collective in ("all_reduce", "reduce_scatter"):
        for size in (8, 512, 8192, 32768):
            assert tuner.choose(collective, size, 3, "tcp") == "recursive", (collective, size)
