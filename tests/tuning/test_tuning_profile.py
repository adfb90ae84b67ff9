"""The cost profile: written, read back, refused when wrong, chosen by COLLECTIVES_TUNE_FILE."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collectives.errors import InvalidArgumentError
from collectives.tuning import profile as profiles
from collectives.tuning.profile import Profile, TransportCosts


def test_a_profile_survives_its_file(tmp_path: Path) -> None:
    original = Profile({"tcp": TransportCosts(1e-5, 2e-5, 3e-10, 4e-11)}, "a test")
    path = tmp_path / "p.json"
    original.save(path)
    assert profiles.load(path) == original
    assert hash(profiles.load(path)) == hash(original)
    assert "tcp" in "\n".join(original.describe())


def test_the_printout_shows_each_column_with_core_alpha_beside_alpha() -> None:
    """``core_alpha`` (the α of ranks with a core each) is printed next to α, under a header of as many columns."""
    lines = Profile({"tcp": TransportCosts(0.0, 17e-6, 3e-10, 4e-11, core_alpha=8e-6)}).describe()
    header, row = lines[1].split()[1:], lines[2].split()  # the header less its "#"
    assert len(header) == len(row) and header[1:4] == ["overhead_us", "alpha_us", "core_alpha_us"]
    assert [float(row[header.index(name)]) for name in ("alpha_us", "core_alpha_us")] == [17.0, 8.0]


def test_an_unmeasured_transport_borrows_tcp() -> None:
    tcp = TransportCosts(1e-5, 2e-5, 3e-10, 4e-11)
    assert Profile({"tcp": tcp, "shm": TransportCosts(0, 0, 0, 0)}).costs("mpi") == tcp


def test_the_link_between_hosts_is_its_own_entry_else_the_transports() -> None:
    tcp, veth = TransportCosts(1e-5, 2e-5, 3e-10, 4e-11), TransportCosts(1e-5, 3e-5, 6e-10, 4e-11)
    assert Profile({"tcp": tcp}).between_hosts("tcp") == tcp
    both = Profile({"tcp": tcp, "tcp_hosts": veth})
    assert both.between_hosts("tcp") == veth and both.costs("tcp") == tcp


def test_over_loopback_drops_the_link_between_hosts_and_keeps_every_transport() -> None:
    """Host identities on one machine talk over its loopback: their prices are the profile's
    without its ``tcp_hosts`` entry."""
    tcp, veth = TransportCosts(1e-5, 2e-5, 3e-10, 4e-11), TransportCosts(1e-5, 3e-5, 6e-10, 4e-11)
    shm = TransportCosts(1e-6, 2e-6, 1e-10, 4e-11)
    both = Profile({"tcp": tcp, "shm": shm, "tcp_hosts": veth}, "x", cores=2, calls=2)
    loopback = both.over_loopback()
    assert loopback.between_hosts("tcp") == tcp and dict(loopback.transports) == {"tcp": tcp, "shm": shm}
    assert (loopback.cores, loopback.calls, loopback.source) == (2, 2, "x")
    plain = Profile({"tcp": tcp})
    assert plain.over_loopback() is plain


@pytest.mark.parametrize("doc, fault", [
    ({"transports": {}}, "non-empty 'transports'"),
    ({"transports": {"tcp": {"alpha": 1, "speed": 2}}}, "unknown fields"),
    ({"transports": {"tcp": {"overhead": 0, "alpha": -1, "beta": 0, "gamma": 0}}}, "negative"),
    ({"transports": {"tcp": {"alpha": 1}}}, "transport 'tcp'"),
], ids=["empty", "unknown-field", "negative", "missing-field"])
def test_a_wrong_profile_is_refused_by_name(tmp_path: Path, doc: object, fault: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InvalidArgumentError, match=fault) as info:
        profiles.load(path)
    assert str(path) in str(info.value)


def test_a_profile_with_a_retired_models_fields_is_read_without_them(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    costs = {"overhead": 0, "alpha": 1e-5, "beta": 1e-10, "gamma": 1e-11}
    path.write_text(json.dumps({"transports": {"shm": {**costs, "loop_step": 7.5e-6, "loop_send": 7e-6,
                                                       "loop_recv": 7e-6}}}))
    assert profiles.load(path).costs("shm") == TransportCosts(**costs)


def test_an_unreadable_profile_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="cannot read"):
        profiles.load(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(InvalidArgumentError, match="not JSON"):
        profiles.load(tmp_path / "x.json")


def test_the_environment_names_the_profile_else_the_built_in_one(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    Profile({"tcp": TransportCosts(1e-5, 2e-5, 3e-10, 4e-11)}, "mine").save(path)
    assert profiles.current({profiles.ENV: str(path)}).source == "mine"
    built_in = profiles.current({})
    assert {"shm", "tcp"} <= set(built_in.transports)
    assert built_in.transports["shm"].direct_alpha > 0


def test_the_built_in_profile_folds_a_shared_memory_byte_no_faster_than_it_copies_it_once() -> None:
    """A fold reads two streams and writes one, the direct engine's copy of a byte through a
    window reads one and writes one: the built-in γ is the fold measured on this machine, not a
    rate below the copy's (docs/simulation.md, *The twenty-seventh round*)."""
    shm = profiles.current({}).costs("shm")
    assert shm.gamma >= shm.direct_beta
