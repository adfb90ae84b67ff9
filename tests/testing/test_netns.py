"""collectives.testing.netns: two hosts as network namespaces, made and always deleted; ranks
launched into them by run_world(netns=...), which the perf scripts' --netns uses.

The namespace tests need root and iproute2 and are skipped with the reason otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from collectives.errors import InvalidArgumentError
from collectives.testing import run_world
from collectives.testing import netns
from collectives.testing.netns import Host, NamespaceError, two_hosts, unavailable
from perf import validate_model


def _namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.strip()}


def test_a_world_in_namespaces_needs_host_names_and_processes() -> None:
    hosts = [Host("coll-a-x", "10.213.77.1"), Host("coll-b-x", "10.213.77.2")]
    with pytest.raises(InvalidArgumentError, match="netns: needs hosts="):
        run_world(lambda comm: None, 2, "auto", netns=hosts)
    with pytest.raises(InvalidArgumentError, match="netns: needs hosts="):
        run_world(lambda comm: None, 2, "inproc", hosts=["coll-a-x", "coll-b-x"], netns=hosts)
    with pytest.raises(InvalidArgumentError, match="'elsewhere' is none of the namespaces"):
        run_world(lambda comm: None, 2, "auto", hosts=["coll-a-x", "elsewhere"], netns=hosts)


def test_joining_a_namespace_that_is_not_there_is_an_error_that_names_it() -> None:
    with pytest.raises(NamespaceError, match="/run/netns/coll-none-x"):
        netns.join(Host("coll-none-x", "10.213.77.9"))


def test_without_root_or_iproute2_making_hosts_says_why() -> None:
    reason = unavailable()
    if reason is None:
        pytest.skip("namespaces can be made here")
    with pytest.raises(NamespaceError, match="network namespaces"):
        with two_hosts():
            pass


@pytest.mark.netns
def test_two_hosts_have_their_addresses_and_are_deleted_even_when_the_block_fails() -> None:
    if unavailable() is not None:
        pytest.skip(unavailable())
    try:
        with two_hosts() as hosts:
            names = {host.name for host in hosts}
            assert names <= _namespaces()
            for host in hosts:
                shown = subprocess.run(["ip", "-n", host.name, "-4", "addr", "show", "up"], capture_output=True,
                                       text=True, check=True).stdout
                assert f"inet {host.address}/24" in shown
            raise RuntimeError("the block fails")
    except NamespaceError as exc:
        pytest.skip(f"cannot create network namespaces here: {exc}")
    except RuntimeError:
        pass
    assert not names & _namespaces()


@pytest.mark.netns
def test_namespaces_made_before_a_failed_step_are_deleted(monkeypatch: pytest.MonkeyPatch) -> None:
    if unavailable() is not None:
        pytest.skip(unavailable())
    real = netns.ip

    def veth_fails(*args: str) -> None:
        if args[:2] == ("link", "add"):
            raise NamespaceError("ip link add: no veth today")
        real(*args)

    prefix = f"ct{uuid.uuid4().hex[:4]}"  # ours alone: other jobs may make namespaces meanwhile
    monkeypatch.setattr(netns, "ip", veth_fails)
    with pytest.raises(NamespaceError, match="no veth today"):
        with two_hosts(prefix):
            pass
    assert not any(name.startswith(prefix) for name in _namespaces())


@pytest.mark.netns
@pytest.mark.multiprocess
def test_each_rank_runs_in_its_hosts_namespace_with_shm_within_and_tcp_across(netns_hosts: list[Host]) -> None:
    a, b = netns_hosts

    def fn(comm: Any) -> tuple[str, dict[int, str], set[str], bool]:
        x = np.arange(1 << 12, dtype=np.float64) * (comm.rank + 1)
        comm.all_reduce(x)
        tcp = next(t for t in comm.transports if t.name == "tcp")
        ok = bool(np.array_equal(x, np.arange(1 << 12) * 10.0))
        bound = {channel.sock.getsockname()[0] for channel in tcp.channels.values()}
        return os.readlink("/proc/self/ns/net"), dict(comm.transport_names), bound, ok

    results = run_world(fn, 4, "auto", hosts=[a.name, a.name, b.name, b.name], netns=netns_hosts, timeout=60)
    spaces = [r[0] for r in results]
    assert spaces[0] == spaces[1] != spaces[2] == spaces[3] and os.readlink("/proc/self/ns/net") not in spaces
    for rank, (_, kinds, bound, ok) in enumerate(results):
        assert ok
        assert bound == {(a if rank < 2 else b).address}
        assert kinds == {peer: "shm" if peer // 2 == rank // 2 else "tcp" for peer in range(4) if peer != rank}


@pytest.mark.netns
@pytest.mark.multiprocess
def test_the_validation_script_measures_two_hosts_in_namespaces(tmp_path: Path) -> None:
    if unavailable() is not None:
        pytest.skip(unavailable())
    out = tmp_path / "v.json"
    assert validate_model.main(["--hosts", "2", "--netns", "--transports", "tcp", "--ranks", "4", "--sizes", "8",
                                "--collectives", "all_reduce", "--rounds", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    two = [r for r in rows if r["ranks_per_host"] == 2]
    assert len(two) == 3 and all(r.get("netns") and r["measured_us"] > 0 for r in two)
    assert not any(r.get("netns") for r in rows if r["ranks_per_host"] == 4)
