"""Which address TCP listens on and advertises (issue 16, launch and config; acceptance
case 16): with lo, a docker0 bridge and a veth present, a job whose ranks span several
hosts takes the veth's address (not loopback, not docker0), refuses loopback with a
clear error on every rank, and advertises a routable address for a wildcard bind even
where the host name resolves to 127.0.1.1; COLLECTIVES_SOCKET_IFNAME's names, prefixes,
``^`` exclusions and CIDR subnets choose as documented; jobs run over ``::1`` and over a
scoped link-local ``fe80::1%veth0``, the store included.

The selection rules are checked on made-up interface lists anywhere; the real thing runs
in a network namespace (root and iproute2, marker ``netns``; skipped with the reason
otherwise), where the ranks are threads of one process, each given a machine identity of
its own (as hostname and boot id differ between machines).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from collectives._interfaces import Address, routable, select
from collectives.errors import InvalidArgumentError

REPO = Path(__file__).resolve().parents[2]


def _a(name: str, ip: str, up: bool = True) -> Address:
    parsed = ipaddress.ip_address(ip)
    return Address(name, parsed, up, parsed.is_loopback)


HOST = [_a("lo", "127.0.0.1"), _a("lo", "::1"), _a("docker0", "172.17.0.1"), _a("eth0", "fe80::1"),
        _a("eth0", "10.1.2.3"), _a("eth1", "192.168.5.5"), _a("ib0", "10.200.0.7", up=False), _a("ib1", "fd00::7")]


@pytest.mark.parametrize("spec,expected", [
    ("eth", "10.1.2.3"),                 # a prefix; IPv4 before the link-local IPv6 of the same interface
    ("=eth1", "192.168.5.5"),            # exact
    ("eth1,eth0", "192.168.5.5"),        # entries in their order
    ("ib", "fd00::7"),                   # ib0 is down: skipped
    ("^lo,docker", "10.1.2.3"),          # NCCL's exclusion syntax
    ("^lo,docker,eth0", "192.168.5.5"),
    ("10.0.0.0/8", "10.1.2.3"),          # a subnet (CIDR)
    ("172.16.0.0/12", "172.17.0.1"),
    ("fd00::/8", "fd00::7"),
    ("fe80::/10", "fe80::1%eth0"),       # link-local IPv6 carries its scope
    ("^10.0.0.0/8,lo,docker,eth", "fd00::7"),
    ("lo", "127.0.0.1"),
])
def test_socket_ifname_selects_by_name_prefix_exclusion_and_subnet(spec: str, expected: str) -> None:
    assert select(spec, HOST).host == expected


def test_unknown_interfaces_and_bad_subnets_are_refused_with_the_addresses_listed() -> None:
    with pytest.raises(InvalidArgumentError, match=r"'nosuch'.*eth0 10\.1\.2\.3.*ib0 10\.200\.0\.7 \(down\)"):
        select("nosuch", HOST)
    with pytest.raises(InvalidArgumentError, match="neither an interface name nor a subnet"):
        select("10.0.0.0/99", HOST)
    with pytest.raises(InvalidArgumentError, match="names no interface"):
        select("^", HOST)


def test_multi_host_picks_the_routable_address_or_refuses() -> None:
    assert routable(HOST).host == "10.1.2.3"
    assert routable([a for a in HOST if a.interface in ("lo", "docker0", "ib1")]).host == "fd00::7"
    assert routable([_a("lo", "127.0.0.1"), _a("veth0", "fe80::2")]).host == "fe80::2%veth0"
    with pytest.raises(InvalidArgumentError, match="no address other hosts can reach.*COLLECTIVES_SOCKET_IFNAME"):
        routable([_a("lo", "127.0.0.1"), _a("lo", "::1"), _a("docker0", "172.17.0.1"), _a("virbr0", "192.168.122.1")])


# -- for real, in a network namespace -------------------------------------------------------

JOB_SCRIPT = textwrap.dedent(
    """
    import json, socket, sys, threading
    import numpy as np
    import collectives, collectives.connect
    from collectives._handshake import advertised_host
    from collectives.store import TCPStore, TCPStoreServer
    size, cases = int(sys.argv[1]), json.loads(sys.argv[2])
    identity = collectives.connect.host_identity
    def job(store_host, several, env):
        # Several: each thread a machine of its own (COLLECTIVES_HOSTNAME would say "namespaces of one machine").
        collectives.connect.host_identity = (
            (lambda config: f"machine-{threading.current_thread().name}") if several else identity)
        server = TCPStoreServer(store_host, 0, secret="s")
        out = {"store": TCPStore(store_host, server.port, "s", timeout=5).where,
               "wildcard": advertised_host("0.0.0.0"), "ranks": {}}
        def rank(r):
            store = TCPStore(store_host, server.port, "s", timeout=10)
            try:
                comm = collectives.init(r, size, store, transport="tcp", timeout=4, env=env)
                x = np.full(1000, r + 1.0)
                comm.all_reduce(x)
                tcp = [t for t in comm.transports if t.name == "tcp"][0]
                bound = [c.sock.getsockname()[0] for c in tcp.channels.values()]
                out["ranks"][r] = {"ok": bool((x == size * (size + 1) / 2).all()), "address": tcp.address,
                                   "local": sorted(set(bound))}
                comm.close()
            except Exception as exc:
                out["ranks"][r] = {"error": f"{type(exc).__name__}: {exc}"}
            finally:
                store.close()
        threads = [threading.Thread(target=rank, args=(r,), name=f"rank-{r}") for r in range(size)]
        for t in threads: t.start()
        for t in threads: t.join()
        server.close()
        return out
    print(json.dumps([job(*case) for case in cases]))
    """
)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def netns_host():
    """A namespace with lo, a 'docker0' bridge (172.17.0.1/16) and 'veth0' (10.9.0.1/24
    and fe80::1), whose /etc/hosts maps the host name to 127.0.1.1, as Debian's does."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to make network namespaces")
    tag = uuid.uuid4().hex[:6]
    name = f"coll-if-{tag}"
    try:
        _ip("netns", "add", name)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create network namespaces here: {exc.stderr.strip()}")
    etc = Path("/etc/netns") / name
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "add", "docker0", "type", "bridge")
        _ip("-n", name, "addr", "add", "172.17.0.1/16", "dev", "docker0")
        _ip("-n", name, "link", "set", "docker0", "up")
        _ip("link", "add", f"vi{tag}", "type", "veth", "peer", "name", f"vo{tag}")
        for dev, new in ((f"vi{tag}", "veth0"), (f"vo{tag}", "veth1")):
            _ip("link", "set", dev, "netns", name)
            _ip("-n", name, "link", "set", dev, "name", new)
        _ip("-n", name, "addr", "add", "10.9.0.1/24", "dev", "veth0")
        _ip("-n", name, "-6", "addr", "add", "fe80::1/64", "dev", "veth0", "nodad")
        for dev in ("veth0", "veth1"):
            _ip("-n", name, "link", "set", dev, "up")
        etc.mkdir(parents=True)  # `ip netns exec` mounts this over /etc/hosts
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {socket.gethostname()}\n::1 localhost\n")
        yield name
    finally:
        shutil.rmtree(etc, ignore_errors=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _jobs(ns: str, size: int, *cases: tuple[str, bool, dict]) -> list[dict]:
    """Run each (store host, several machines?, environment) case as one job of ``size``
    ranks (threads) in the namespace, one process for all of them."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTIVES_SOCKET_")}
    environ["PYTHONPATH"] = f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-c", JOB_SCRIPT, str(size), json.dumps(cases)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=environ)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _host(address: str) -> str:
    return address.rsplit(":", 1)[0]


@pytest.mark.netns
@pytest.mark.multiprocess
@pytest.mark.parametrize("size", [2, 4])
def test_ranks_on_several_hosts_take_the_veth_not_loopback_or_docker0(netns_host: str, size: int) -> None:
    several, single = _jobs(netns_host, size, ("10.9.0.1", True, {}), ("127.0.0.1", False, {}))
    ranks = several["ranks"]
    assert all(ranks[str(r)].get("ok") for r in range(size)), ranks
    # Every rank but 0 listens (for its lower peers) and advertises the veth's address.
    assert {_host(ranks[str(r)]["address"]) for r in range(1, size)} == {"10.9.0.1"}
    assert {a for r in range(size) for a in ranks[str(r)]["local"]} == {"10.9.0.1"}
    # The host name resolves to 127.0.1.1 there: a wildcard listener advertises the veth instead.
    assert several["wildcard"] == "10.9.0.1", several
    # One host: loopback, as before.
    assert all(single["ranks"][str(r)].get("ok") for r in range(size)), single["ranks"]
    assert _host(single["ranks"]["1"]["address"]) == "127.0.0.1"


OVERRIDES = [
    ({"COLLECTIVES_SOCKET_IFNAME": "docker"}, "172.17.0.1"),
    ({"COLLECTIVES_SOCKET_IFNAME": "^lo,docker"}, "10.9.0.1"),
    ({"COLLECTIVES_SOCKET_IFNAME": "172.16.0.0/12"}, "172.17.0.1"),
    ({"COLLECTIVES_SOCKET_IFNAME": "fe80::1/128"}, "[fe80::1%veth0]"),  # a subnet choosing a scoped address
    ({"COLLECTIVES_SOCKET_ADDR": "0.0.0.0"}, "10.9.0.1"),  # advertised: not the 127.0.1.1 the name resolves to
]


@pytest.mark.netns
@pytest.mark.multiprocess
def test_interface_and_subnet_overrides_are_obeyed(netns_host: str) -> None:
    outs = _jobs(netns_host, 2, *(("10.9.0.1", True, env) for env, _ in OVERRIDES))
    for (env, expected), out in zip(OVERRIDES, outs):
        assert out["ranks"]["0"].get("ok") and out["ranks"]["1"].get("ok"), (env, out["ranks"])
        assert _host(out["ranks"]["1"]["address"]) == expected, (env, out["ranks"])


@pytest.mark.netns
@pytest.mark.multiprocess
def test_several_hosts_refuse_to_advertise_loopback_on_every_rank(netns_host: str) -> None:
    envs = [{"COLLECTIVES_SOCKET_IFNAME": "lo"}, {"COLLECTIVES_SOCKET_ADDR": "127.0.0.1"},
            {"COLLECTIVES_SOCKET_ADDR": "::1"}]
    for env, out in zip(envs, _jobs(netns_host, 2, *(("10.9.0.1", True, env) for env in envs))):
        for r in ("0", "1"):
            error = out["ranks"][r].get("error", "")
            assert error.startswith("InvalidArgumentError") and "loopback" in error and "several hosts" in error, \
                (env, error)


@pytest.mark.netns
@pytest.mark.multiprocess
@pytest.mark.parametrize("size", [2, 4])
def test_ipv6_loopback_and_scoped_link_local_carry_the_store_and_the_data(netns_host: str, size: int) -> None:
    scoped = "fe80::1%veth0"
    loop, link = _jobs(netns_host, size, ("::1", False, {"COLLECTIVES_SOCKET_ADDR": "::1"}),
                       (scoped, True, {"COLLECTIVES_SOCKET_ADDR": scoped}))
    for out, host in ((loop, "::1"), (link, scoped)):
        assert out["store"].startswith(f"[{host}]:")
        assert all(out["ranks"][str(r)].get("ok") for r in range(size)), out["ranks"]
        assert _host(out["ranks"]["1"]["address"]) == f"[{host}]"
