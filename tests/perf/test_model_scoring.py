"""Scoring the cost model offline: saved measurements predicted again (validate_model --from),
the tuner's picks scored against saved times (tuner_check), a profile fitted to them (fit_profile)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from collectives.tuning import tuner
from collectives.tuning.profile import Profile, TransportCosts, current, load
from perf import between_hosts, fit_profile, tuner_check, validate_model

TRUE = Profile({"tcp": TransportCosts(5e-6, 20e-6, 0.5e-9, 0.02e-9, exchange=10e-6, wake=30e-6)}, "the truth",
               margin=0.0, cores=2)
START = Profile({"tcp": TransportCosts(5e-6, 10e-6, 0.2e-9, 0.02e-9)}, "a first guess", margin=0.0, cores=2)


def rows_measured_by(profile: Profile) -> list[dict[str, Any]]:
    """Rows as validate_model keeps them, 'measured' on a machine that is exactly ``profile``."""
    rows = []
    for p in (2, 3):
        for algorithm in ("ring", "tree", "recursive"):
            for n in (8, 1 << 20):
                row = {"transport": "tcp", "ranks": p, "ranks_per_host": p, "collective": "all_reduce",
                       "algorithm": algorithm, "size": n, "measured_us": 0.0}
                row["measured_us"] = validate_model.repredict([row], {"x": profile}, 2)[0]["x_us"]
                rows.append(row)
    return rows


def test_saved_rows_are_predicted_again_with_the_saved_profiles(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "v.json"
    path.write_text(json.dumps({"profiles": {"truth": TRUE.to_json()}, "cores": 2, "rows": rows_measured_by(TRUE)}))
    assert validate_model.main(["--from", str(path)]) == 0
    assert "# truth: 12 of 12 predictions within 25 %" in capsys.readouterr().out


def test_the_two_hosts_of_a_run_are_priced_as_parts_of_one_machine_sharing_its_cores() -> None:
    """A validation run's two hosts are host identities or namespaces of the measuring machine:
    its two-host rows are priced with the hosts queueing for all of its cores together."""
    from collectives.sim.cluster import cluster
    from collectives.sim.predict import predict

    profile = current()
    row = {"transport": "tcp", "ranks": 8, "ranks_per_host": 4, "collective": "all_gather", "algorithm": "ring",
           "size": 8, "measured_us": 1.0}
    priced = validate_model.repredict([row], {"x": profile}, 2)[0]["x_us"]

    def on(shared: bool) -> float:
        return predict("all_gather", "ring", 8, cluster("tcp", 8, 4, profile, 1, shared_cores=shared), "tcp",
                       profile) * 1e6

    assert priced == pytest.approx(on(True))
    assert on(True) < on(False)  # a host's ranks use the core the other host's leave while they wait


def test_a_fit_from_a_first_guess_comes_near_the_truth(tmp_path: Path) -> None:
    path = tmp_path / "v.json"
    rows = rows_measured_by(TRUE)
    path.write_text(json.dumps({"profiles": {}, "cores": 2, "rows": rows}))
    START.save(tmp_path / "start.json")
    assert fit_profile.main([str(path), "--start", str(tmp_path / "start.json"), "--transports", "tcp",
                             "--out", str(tmp_path / "fitted.json")]) == 0
    fitted = load(tmp_path / "fitted.json")
    assert fit_profile.loss(rows, fitted, 2) < 0.05 < fit_profile.loss(rows, START, 2)


def test_the_picks_are_scored_against_the_times_of_the_same_run() -> None:
    pick = tuner.choose("all_reduce", 8, 3, "tcp", False, 0, TRUE)
    other = next(a for a in tuner.candidates("all_reduce") if a != pick)
    rows = [{"transport": "tcp", "ranks": 3, "collective": "all_reduce", "size": 8,
             "times_us": {pick: 100.0, other: 150.0}},
            {"transport": "tcp", "ranks": 3, "collective": "all_reduce", "size": 8,
             "times_us": {pick: 100.0, other: 50.0}}]
    lines, inside = tuner_check.score(rows, TRUE)
    assert inside == 1
    assert "| tcp | 3 | 1/2 |" in lines
    assert any(f"picks {pick}" in line and f"best {other}" in line for line in lines)


def test_rows_of_two_hosts_are_scored_by_the_picks_for_two_hosts_in_a_row_of_their_own() -> None:
    """A choice run with --hosts 2 keeps ranks_per_host: the pick is the tuner's for that layout
    (the two-level all-reduce among the candidates), not the one-host pick."""
    profile = Profile({"tcp": TRUE.transports["tcp"], "shm": TransportCosts(2e-6, 5e-6, 0.1e-9, 0.02e-9,
                                                                          direct_alpha=3e-6, direct_beta=0.05e-9)},
                      "two hosts", margin=0.0, cores=2)
    n = 8 << 20
    pick = tuner.choose("all_reduce", n, 4, "tcp", False, 2, profile)
    assert pick != tuner.choose("all_reduce", n, 4, "tcp", False, 0, profile)
    times = {a: 100.0 if a == pick else 50.0 for a in tuner.candidates("all_reduce", hosts=True)}
    rows = [{"transport": "tcp", "ranks": 4, "ranks_per_host": 2, "collective": "all_reduce", "size": n,
             "times_us": times},
            {"transport": "tcp", "ranks": 4, "collective": "all_reduce", "size": n,
             "times_us": {a: t for a, t in times.items() if a != "hierarchical"}}]
    lines, inside = tuner_check.score(rows, profile)
    assert "| tcp | 4 (2 per host) | 0/1 |" in lines and "| tcp | 4 | 1/1 |" in lines and inside == 1
    assert any("4 (2/host) all_reduce" in line and f"picks {pick}" in line for line in lines)


def test_a_fit_keeps_what_it_is_told_to_and_prices_calls_back_to_back(tmp_path: Path) -> None:
    path = tmp_path / "v.json"
    path.write_text(json.dumps({"profiles": {}, "cores": 2, "rows": rows_measured_by(TRUE)}))
    START.save(tmp_path / "start.json")
    assert fit_profile.main([str(path), "--start", str(tmp_path / "start.json"), "--transports", "tcp",
                             "--keep", "tcp.alpha", "--set", "tcp.crowd_wake=2e-6", "--calls", "2",
                             "--out", str(tmp_path / "fitted.json")]) == 0
    fitted = load(tmp_path / "fitted.json")
    assert fitted.transports["tcp"].alpha == START.transports["tcp"].alpha
    assert fitted.transports["tcp"].beta != START.transports["tcp"].beta
    assert fitted.calls == 2


def test_saved_runs_are_tabled_by_layout_and_algorithm_for_each_named_profile(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = rows_measured_by(TRUE)
    for name in ("a", "b"):
        (tmp_path / f"{name}.json").write_text(json.dumps({"profiles": {}, "cores": 2, "rows": rows}))
    TRUE.save(tmp_path / "true.json")
    START.save(tmp_path / "start.json")
    assert validate_model.main(["--from", f"{tmp_path / 'a.json'},{tmp_path / 'b.json'}", "--table", "--profile",
                                f"truth={tmp_path / 'true.json'},guess={tmp_path / 'start.json'}",
                                "--baseline", str(tmp_path / "a.json")]) == 0
    out = capsys.readouterr().out
    assert "| tcp | 3 | 1 | 12 | +0 % | 12 |" in out
    assert "| ring | 8 | +0 % | 8 |" in out
    assert "# truth: 24 of 24 predictions within 25 %" in out
    assert "# baseline: 24 of 24 predictions within 25 %" in out  # run a's measurements predict b's exactly


def test_repeats_of_one_run_are_kept_and_their_agreement_printed(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    rows = rows_measured_by(TRUE)
    for k, row in enumerate(rows):  # half the cases' second repeat 50 % slower, half 5 %
        row["repeats_us"] = [row["measured_us"], row["measured_us"] * (1.5 if k % 2 else 1.05)]
    path = tmp_path / "v.json"
    path.write_text(json.dumps({"profiles": {"truth": TRUE.to_json()}, "cores": 2, "rows": rows}))
    assert validate_model.main(["--from", str(path), "--json", str(tmp_path / "again.json")]) == 0
    assert "agree within 10 % at 6 and within 25 % at 6 of 12 cases" in capsys.readouterr().out
    again = json.loads((tmp_path / "again.json").read_text())["rows"]
    assert [r["repeats_us"] for r in again] == [r["repeats_us"] for r in rows]


def test_picks_are_scored_against_each_repeat_and_the_runs_own_ceiling(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    pick = tuner.choose("all_reduce", 8, 3, "tcp", False, 0, TRUE)
    other = next(a for a in tuner.candidates("all_reduce") if a != pick)
    # repeat 1: the pick is best; repeat 2: the other is, by far; median of two: their mean
    row = {"transport": "tcp", "ranks": 3, "collective": "all_reduce", "size": 8,
           "times_us": {pick: 100.0, other: 100.0}, "repeats_us": {pick: [100.0, 100.0], other: [150.0, 50.0]}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"rows": [row]}))
    TRUE.save(tmp_path / "true.json")
    assert tuner_check.main(["--from", str(path), "--profile", str(tmp_path / "true.json")]) == 0
    out = capsys.readouterr().out
    assert "scored against each repeat alone: 1, 0 of 1; repeat 1's best scored against repeat 2" in out
    assert "(the run's own ceiling): 0" in out


def test_the_grid_keeps_only_profiles_that_keep_the_picks_and_takes_the_best_fit(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from perf import grid_profile

    start = load(grid_profile.DEFAULT_FILE)
    shm = start.costs("shm")  # the start's own memory constants: the one grid point that moves no pick by itself
    cache_beta, copy_beta, cache_mib = f"{shm.cache_beta * 1e9:g}", f"{shm.copy_beta * 1e9:g}", start.cache_bytes / 2**20
    truth = grid_profile.with_memory(start, 0.13, float(cache_beta), cache_mib, float(copy_beta))
    rows = []
    for algorithm in ("ring", "tree"):
        for n in (8, 1 << 20, 8 << 20):
            row = {"transport": "shm", "ranks": 2, "ranks_per_host": 2, "collective": "all_gather",
                   "algorithm": algorithm, "size": n, "measured_us": 0.0}
            row["measured_us"] = validate_model.repredict([row], {"x": truth}, 2)[0]["x_us"] / 3  # all 3x faster
            rows.append(row)
    (tmp_path / "v.json").write_text(json.dumps({"profiles": {}, "cores": 2, "rows": rows}))
    (tmp_path / "c.json").write_text(json.dumps({"rows": [
        {"transport": "shm", "ranks": 2, "collective": "all_gather", "size": 8 << 20,
         "times_us": {"ring": 900.0, "tree": 1100.0, "recursive": 900.0, "direct": 500.0}}]}))
    # beta 0.04 ns/B comes nearer the 3x faster rows (0.13: none within 25 %) but moves picks off the direct engine (the
    # 2-rank all-reduces of 256 KiB-2 MiB onto the schedules; 0.6, which did so once, moves none since the 2-rank
    # direct reduce is priced as its pipeline, the sixty-eighth round's second part)
    assert grid_profile.main([str(tmp_path / "v.json"), "--choices", str(tmp_path / "c.json"), "--beta", "0.13,0.04",
                              "--cache-beta", cache_beta, "--cache-mib", f"{cache_mib:g}", "--copy-beta", copy_beta,
                              "--out", str(tmp_path / "chosen.json")]) == 0
    out = capsys.readouterr().out
    assert "beta 0.04 " in out and "(not kept)" in out.split("beta 0.04 ")[1].splitlines()[0]
    chosen = load(tmp_path / "chosen.json")
    assert chosen.costs("shm").beta == 1.3e-10 and chosen.cache_bytes == start.cache_bytes


def test_a_held_fit_takes_no_step_that_moves_a_pick(tmp_path: Path) -> None:
    from perf import hold_picks

    # a truth whose 2-rank picks differ from the first guess's: with a core each, a rank that
    # waited pays its wake (tuning/machine.py), and TRUE's 30 us wake makes its picks the guess's
    truth = Profile({"tcp": dataclasses.replace(TRUE.transports["tcp"], wake=5e-6)}, "the truth", margin=0.0, cores=2)
    rows = rows_measured_by(truth)
    (tmp_path / "v.json").write_text(json.dumps({"profiles": {}, "cores": 2, "rows": rows}))
    START.save(tmp_path / "start.json")
    worlds = [(2, 0)]
    moved_free = [k for k, v in hold_picks.picks(truth, ["tcp"], worlds).items()
                  if hold_picks.picks(START, ["tcp"], worlds)[k] != v]
    assert moved_free  # the truth picks otherwise: an unheld fit that comes near it moves picks
    choices = [{"transport": "tcp", "ranks": 2, "collective": c, "size": n,
                "times_us": {a: 100.0 for a in tuner.candidates(c)}} for c, n in (("all_reduce", 8),)]
    (tmp_path / "c.json").write_text(json.dumps({"rows": choices}))
    assert fit_profile.main([str(tmp_path / "v.json"), "--start", str(tmp_path / "start.json"), "--transports", "tcp",
                             "--hold", str(tmp_path / "c.json"), "--hold-worlds", "2",
                             "--out", str(tmp_path / "held.json")]) == 0
    held = load(tmp_path / "held.json")
    hold = hold_picks.Hold([str(tmp_path / "c.json")], START, ["tcp"], worlds)
    assert hold.moved(held) == [] and hold.keeps(held)
    assert fit_profile.loss(rows, held, 2) < fit_profile.loss(rows, START, 2)  # it still fits what it can


def test_the_link_between_hosts_takes_the_tuned_beta_ratio_and_keeps_every_other_term(tmp_path: Path) -> None:
    tuned = [Profile({"tcp": TransportCosts(5e-6, 20e-6, b, 0.02e-9),
                      "tcp_hosts": TransportCosts(9e-6, 10e-6, h, 0.02e-9)})
             for b, h in ((0.4e-9, 0.6e-9), (0.4e-9, 1.0e-9))]  # β twice loopback's in all; α, overhead noise
    for k, profile in enumerate(tuned):
        profile.save(tmp_path / f"t{k}.json")
    TRUE.save(tmp_path / "base.json")
    assert between_hosts.main([f"{tmp_path / 't0.json'},{tmp_path / 't1.json'}", "--base", str(tmp_path / "base.json"),
                               "--out", str(tmp_path / "out.json")]) == 0
    out = load(tmp_path / "out.json")
    tcp = TRUE.transports["tcp"]
    assert out.transports["tcp"] == tcp
    hosts = out.between_hosts("tcp")
    assert hosts.beta == pytest.approx(2 * tcp.beta) and dataclasses.replace(hosts, beta=tcp.beta) == tcp


def test_two_host_rows_price_tcp_hosts_only_between_namespaces_and_host_identities_over_loopback() -> None:
    """A validation row of two host identities measured loopback between them, so a profile's
    ``tcp_hosts`` (the veth pair of ``--netns``) does not price it; a row with ``"netns": true``
    is priced by it (the fifty-second round, docs/simulation.md)."""
    tcp = TRUE.transports["tcp"]
    veth = Profile({**TRUE.transports, "tcp_hosts": dataclasses.replace(tcp, beta=2 * tcp.beta)}, "veth",
                   margin=0.0, cores=2)
    row = {"transport": "tcp", "ranks": 4, "ranks_per_host": 2, "collective": "all_reduce", "algorithm": "ring",
           "size": 4 << 20, "measured_us": 1.0}
    identities, namespaces = validate_model.repredict([row, {**row, "netns": True}], {"veth": veth, "plain": TRUE}, 2)
    assert identities["veth_us"] == identities["plain_us"] == namespaces["plain_us"]
    assert namespaces["veth_us"] > 1.2 * namespaces["plain_us"]


def test_the_tuners_picks_of_host_identities_are_scored_over_loopback() -> None:
    """tuner_check scores a saved two-host row of host identities with the pick of the profile
    without its link between hosts: where ``tcp_hosts`` alone moves the pick, the row measured
    over loopback is scored as the loopback pick."""
    tcp = TRUE.transports["tcp"]
    dear = Profile({**TRUE.transports, "tcp_hosts": dataclasses.replace(tcp, alpha=50 * tcp.alpha, beta=50 * tcp.beta)},
                   "a dear link", margin=0.0, cores=2)
    moved = [(c, n) for c in ("all_gather", "reduce_scatter") for n in (8, 1 << 16, 1 << 20)
             if tuner.choose(c, n, 8, "tcp", False, 4, dear) != tuner.choose(c, n, 8, "tcp", False, 4, TRUE)]
    assert moved, "no pick of two hosts of 4 moves with the link's price: the test would not test"
    collective, n = moved[0]
    loopback_pick = tuner.choose(collective, n, 8, "tcp", False, 4, TRUE)
    times = {a: (100.0 if a == loopback_pick else 1000.0) for a in ("ring", "tree", "recursive")}
    row = {"transport": "tcp", "ranks": 8, "ranks_per_host": 4, "collective": collective, "size": n, "times_us": times}
    assert tuner_check.score([row], dear)[1] == 1
    assert tuner_check.score([{**row, "netns": True}], dear)[1] == 0


def test_the_built_in_profile_prices_this_machines_held_out_shm_run_within_25_percent_at_most_rows() -> None:
    """Run X (docs/perf/validation_calib25_shm.json, 192 shm rows at 2-8 ranks, timed at main's code
    of 2026-12-06 on the machine the saved runs since U come from) was held out from the fit of the
    thirty-fourth round's shm terms: the built-in profile before them priced 85 of its rows within
    25 %, from them 110 (docs/simulation.md). Since the forty-eighth round the built-in profile's shm
    terms are those of this machine's quiet runs of 2026-12-07 (below); X is priced by the built-in
    profile of its own state, saved as docs/perf/profile_builtin_before_calib24.json."""
    docs = Path(__file__).parents[2] / "docs/perf"
    doc = json.loads((docs / "validation_calib25_shm.json").read_text())
    out = validate_model.repredict(doc["rows"], {"x": load(docs / "profile_builtin_before_calib24.json")}, doc["cores"])
    assert sum(abs(r["x_us"] / r["measured_us"] - 1) <= 0.25 for r in out) >= 100


def test_the_built_in_profile_prices_this_machines_held_out_quiet_shm_run_within_25_percent_at_most_rows() -> None:
    """The shm terms were refitted to the quiet run of 2026-12-07 08:14 (docs/perf/validation_quiet_shm_calib23.json,
    nothing beside it) with the choice runs' picks held; the quiet run of 09:10 the same day
    (validation_quiet_shm_calib24.json) was held out: the built-in profile before the refit priced 104
    of its 192 rows within 25 %, this one 148 (docs/simulation.md, the forty-eighth round)."""
    doc = json.loads((Path(__file__).parents[2] / "docs/perf/validation_quiet_shm_calib24.json").read_text())
    out = validate_model.repredict(doc["rows"], {"x": current()}, doc["cores"])
    assert sum(abs(r["x_us"] / r["measured_us"] - 1) <= 0.25 for r in out) >= 140


def test_the_built_in_profile_prices_this_machines_held_out_tcp_run_within_25_percent_at_more_rows() -> None:
    """Run AB (docs/perf/validation_calib29_tcp.json, 144 tcp rows at 2-8 ranks, timed at main's code
    of 2026-12-06 on this machine) was held out from the fit of the thirty-fifth round's tcp terms:
    the built-in profile before them priced 65 of its rows within 25 %, from them 89
    (docs/simulation.md). AB ran beside other work, its 2-rank calls without a core each; since the
    fifty-seventh round the built-in profile prices a quiet machine's 2-rank tcp calls by ``core_alpha``,
    so AB is priced by the built-in profile of its own state, saved as
    docs/perf/profile_builtin_before_calib26.json."""
    docs = Path(__file__).parents[2] / "docs/perf"
    doc = json.loads((docs / "validation_calib29_tcp.json").read_text())
    out = validate_model.repredict(doc["rows"], {"x": load(docs / "profile_builtin_before_calib26.json")}, doc["cores"])
    assert sum(abs(r["x_us"] / r["measured_us"] - 1) <= 0.25 for r in out) >= 80


def test_a_fit_told_undisturbed_sets_aside_the_rows_measured_beside_other_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Rows that record more than half a core of work outside the job (perf/disturbed.py), here
    three times their time, are left out of the fit with ``--undisturbed`` and pull it off without."""
    rows = rows_measured_by(TRUE)
    for row in rows:
        row["outside_cores"] = 0.0
    slowed = [{**r, "measured_us": 3 * r["measured_us"], "outside_cores": 1.0} for r in rows[:6]]
    path = tmp_path / "v.json"
    path.write_text(json.dumps({"profiles": {}, "cores": 2, "rows": rows + slowed}))
    START.save(tmp_path / "start.json")
    fitted = {}
    for told in (True, False):
        out = tmp_path / f"fitted_{told}.json"
        assert fit_profile.main([str(path), "--start", str(tmp_path / "start.json"), "--transports", "tcp",
                                 "--out", str(out), *(["--undisturbed"] if told else [])]) == 0
        fitted[told] = fit_profile.loss(rows, load(out), 2)
    assert "6 of 18 rows set aside" in capsys.readouterr().out
    assert fitted[True] < 0.05 < fitted[False]


def test_a_fit_searches_tcps_one_way_split_only_where_the_start_splits_it(tmp_path: Path) -> None:
    """A broadcast's root goes on after ``send_overhead``: rows priced with a split are fitted
    back toward it from a start with another split, and a start without one stays unsplit
    (0 is no split, not a split of 0)."""
    truth = Profile({"tcp": dataclasses.replace(TRUE.transports["tcp"], send_overhead=4e-6, recv_overhead=2e-6)},
                    "the truth", margin=0.0, cores=2)
    rows = [{"transport": "tcp", "ranks": p, "ranks_per_host": p, "collective": c, "algorithm": a, "size": n,
             "measured_us": 0.0}
            for p in (2, 3, 4) for c in ("broadcast", "all_reduce") for a in ("tree", "ring") for n in (8, 1 << 16)]
    for row in rows:
        row["measured_us"] = validate_model.repredict([row], {"x": truth}, 2)[0]["x_us"]
    path = tmp_path / "v.json"
    path.write_text(json.dumps({"profiles": {}, "cores": 2, "rows": rows}))
    split = Profile({"tcp": dataclasses.replace(TRUE.transports["tcp"], send_overhead=16e-6, recv_overhead=2e-6)},
                    "a split too dear", margin=0.0, cores=2)
    for name, start in (("split", split), ("unsplit", TRUE)):
        start.save(tmp_path / f"{name}.json")
        assert fit_profile.main([str(path), "--start", str(tmp_path / f"{name}.json"), "--transports", "tcp",
                                 "--out", str(tmp_path / f"{name}_fitted.json")]) == 0
    fitted = load(tmp_path / "split_fitted.json").transports["tcp"]
    assert 0 < fitted.send_overhead < 16e-6
    assert fit_profile.loss(rows, load(tmp_path / "split_fitted.json"), 2) < fit_profile.loss(rows, split, 2)
    unsplit = load(tmp_path / "unsplit_fitted.json").transports["tcp"]
    assert (unsplit.send_overhead, unsplit.recv_overhead) == (0.0, 0.0)
