"""Network interfaces and which of their addresses a TCP listener binds and advertises.

``COLLECTIVES_SOCKET_IFNAME`` chooses among this host's interfaces, in NCCL's syntax
extended with Open MPI's subnets (``btl_tcp_if_include``): a comma-separated list whose
entries are interface-name prefixes (``eth`` matches ``eth0`` and ``eth1``) or subnets in
CIDR form (``10.0.0.0/8``, ``fd00::/8``); a leading ``=`` makes names exact, a leading
``^`` turns the list into exclusions (``^lo,docker``: anything but those). A job whose
ranks span several hosts, with no override, takes the first address that is up, not
loopback and not on a ``docker``/``virbr`` bridge (NCCL's default, which skips ``lo`` and
``docker``), IPv4 before IPv6; a link-local IPv6 address carries its scope
(``fe80::1%eth0``), which is how peers reach it. Loopback is never advertised to another
host: :func:`collectives._handshake.resolve_bind_address` refuses it with a clear error.

Addresses come from ``getifaddrs(3)`` (every address, IPv4 and IPv6), read through ctypes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import socket
import sys
from dataclasses import dataclass

from .errors import InvalidArgumentError

AUTO_EXCLUDED = ("docker", "virbr")
"""Interface-name prefixes that a multi-host job does not pick by itself: local bridges
(containers, libvirt) whose addresses no other host routes to."""

_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8


@dataclass(frozen=True)
class Address:
    """One address of one interface."""

    interface: str
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    up: bool
    loopback: bool

    @property
    def host(self) -> str:
        """The address as a host string to bind or connect to; a link-local IPv6 one
        with its scope (``fe80::1%eth0``)."""
        if self.ip.version == 6 and self.ip.is_link_local:
            return f"{self.ip}%{self.interface}"
        return str(self.ip)

    def preference(self) -> int:
        """Sort key among candidates: IPv4, then global IPv6, then link-local IPv6."""
        return 0 if self.ip.version == 4 else 2 if self.ip.is_link_local else 1


class _Ifaddrs(ctypes.Structure):
    pass


_Ifaddrs._fields_ = [
    ("ifa_next", ctypes.POINTER(_Ifaddrs)),
    ("ifa_name", ctypes.c_char_p),
    ("ifa_flags", ctypes.c_uint),
    ("ifa_addr", ctypes.c_void_p),
    ("ifa_netmask", ctypes.c_void_p),
    ("ifa_ifu", ctypes.c_void_p),
    ("ifa_data", ctypes.c_void_p),
]


def _family(sockaddr: int) -> int:
    if sys.platform.startswith(("darwin", "freebsd")):  # sa_len(u8) sa_family(u8)
        return ctypes.c_uint8.from_address(sockaddr + 1).value
    return ctypes.c_ushort.from_address(sockaddr).value


def addresses() -> list[Address]:
    """Every address of every interface, in the kernel's order (empty where
    ``getifaddrs`` is not available)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    head = ctypes.POINTER(_Ifaddrs)()
    if libc.getifaddrs(ctypes.byref(head)) != 0:
        return []
    found: list[Address] = []
    try:
        node = head
        while node:
            entry = node.contents
            sockaddr = entry.ifa_addr
            if sockaddr:
                family = _family(sockaddr)
                ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
                if family == socket.AF_INET:
                    ip = ipaddress.IPv4Address(ctypes.string_at(sockaddr + 4, 4))
                elif family == socket.AF_INET6:
                    ip = ipaddress.IPv6Address(ctypes.string_at(sockaddr + 8, 16))
                if ip is not None:
                    name = (entry.ifa_name or b"").decode(errors="replace")
                    flags = entry.ifa_flags
                    found.append(Address(name, ip, bool(flags & _IFF_UP), bool(flags & _IFF_LOOPBACK) or ip.is_loopback))
            node = entry.ifa_next
    finally:
        libc.freeifaddrs(head)
    return found


def _parse(spec: str) -> tuple[bool, bool, list[str], list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    """``(exclude, exact, names, subnets)`` of a COLLECTIVES_SOCKET_IFNAME value."""
    text = spec.strip()
    exclude = text.startswith("^")
    text = text[1:] if exclude else text
    exact = text.startswith("=")
    text = text[1:] if exact else text
    names: list[str] = []
    subnets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        if "/" in entry:
            try:
                subnets.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise InvalidArgumentError(
                    f"COLLECTIVES_SOCKET_IFNAME={spec!r}: {entry!r} is neither an interface name nor a subnet "
                    "in CIDR form (like 10.0.0.0/8)"
                ) from None
        else:
            names.append(entry)
    if not names and not subnets:
        raise InvalidArgumentError(f"COLLECTIVES_SOCKET_IFNAME={spec!r} names no interface or subnet")
    return exclude, exact, names, subnets


def _matches(addr: Address, exact: bool, name: str) -> bool:
    return addr.interface == name if exact else addr.interface.startswith(name)


def _listing(found: list[Address]) -> str:
    return ", ".join(f"{a.interface} {a.host}{'' if a.up else ' (down)'}" for a in found) or "none"


def select(spec: str, found: list[Address] | None = None) -> Address:
    """The address COLLECTIVES_SOCKET_IFNAME=``spec`` chooses: with inclusions, the
    entries in their order (for each, IPv4 first); with ``^`` exclusions, the first
    address matching none of them, loopback last. Interfaces that are down are skipped.
    Raises :class:`InvalidArgumentError` listing this host's addresses when none fits."""
    exclude, exact, names, subnets = _parse(spec)
    found = addresses() if found is None else found
    up = [a for a in found if a.up]
    if exclude:
        left = [a for a in up if not any(_matches(a, exact, n) for n in names) and not any(a.ip in s for s in subnets)]
        left.sort(key=lambda a: (a.loopback, a.preference()))
        if left:
            return left[0]
    else:
        for name in names:
            hits = sorted((a for a in up if _matches(a, exact, name)), key=Address.preference)
            if hits:
                return hits[0]
        for subnet in subnets:
            hits = sorted((a for a in up if a.ip in subnet), key=Address.preference)
            if hits:
                return hits[0]
    raise InvalidArgumentError(
        f"COLLECTIVES_SOCKET_IFNAME={spec!r}: no interface that is up matches (addresses here: {_listing(found)})"
    )


def routable(found: list[Address] | None = None) -> Address:
    """The address a rank of a multi-host job advertises when nothing is configured: the
    first one up, not loopback, not on a local bridge (:data:`AUTO_EXCLUDED`), IPv4
    first. Raises :class:`InvalidArgumentError` naming the overrides when there is none."""
    found = addresses() if found is None else found
    usable = [a for a in found if a.up and not a.loopback and not a.interface.startswith(AUTO_EXCLUDED)]
    usable.sort(key=Address.preference)
    if usable:
        return usable[0]
    raise InvalidArgumentError(
        "this job's ranks span several hosts, but this host has no address other hosts can reach: only "
        f"loopback or local bridges ({_listing(found)}); set COLLECTIVES_SOCKET_IFNAME (an interface, a "
        "subnet like 10.0.0.0/8) or COLLECTIVES_SOCKET_ADDR"
    )


def host_port(host: str, port: int) -> str:
    """``host:port`` for messages and the store, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
