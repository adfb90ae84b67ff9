"""Hosts as Linux network namespaces: two hosts on one machine, each with its own address.

:func:`two_hosts` makes two namespaces joined by a veth pair and deletes them on the way
out, failed or not. A rank runs on such a host by :func:`join`-ing its namespace (what
``ip netns exec`` does for the network, for a forked process) and binding its address;
:func:`inside` moves only the calling thread in, for a block, so that a listening socket
(the job's store) is opened there. :func:`unavailable` says why none can be made here (they
need root and iproute2). Used by :func:`collectives.testing.run_world` (``netns=``), the
tests of several hosts and the perf scripts' ``--netns``.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import CollectivesError

__all__ = ["Host", "NamespaceError", "inside", "ip", "join", "two_hosts", "unavailable"]

SUBNET = "10.213.77"
"""The /24 the two hosts' addresses are taken from (.1 and .2); private to their namespaces."""
_CLONE_NEWNET = 0x40000000  # <sched.h>: setns(2) into a network namespace


class NamespaceError(CollectivesError):
    """A network namespace could not be made, entered or deleted (the command or call and why)."""


@dataclass(frozen=True)
class Host:
    """One namespace as a host: ``name`` is the namespace's and also the host identity of
    its ranks (``COLLECTIVES_HOSTNAME``); ``address`` is its IPv4 address on the link."""

    name: str
    address: str

    @property
    def path(self) -> str:
        """The namespace's file (``ip netns add`` makes it), what :func:`join` opens."""
        return f"/run/netns/{self.name}"


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can (as far as can be
    told without making one)."""
    if os.geteuid() != 0:
        return "needs root to make network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (the ip command) to make network namespaces"
    return None


def ip(*args: str) -> None:
    """Run ``ip ARGS``; NamespaceError with its message when it fails."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise NamespaceError(f"ip {' '.join(args)}: {done.stderr.strip() or f'exit status {done.returncode}'}")


@contextmanager
def two_hosts(prefix: str = "coll") -> Iterator[list[Host]]:
    """Two namespaces ``PREFIX-a-TAG`` and ``PREFIX-b-TAG`` (a fresh random tag), each with
    loopback up and one end of a veth pair at ``SUBNET.1`` and ``SUBNET.2``; deleted (the
    pair with them) when the block ends, however it ends, and when making them fails."""
    reason = unavailable()
    if reason is not None:
        raise NamespaceError(reason)
    tag = uuid.uuid4().hex[:6]
    hosts = [Host(f"{prefix}-a-{tag}", f"{SUBNET}.1"), Host(f"{prefix}-b-{tag}", f"{SUBNET}.2")]
    devices = [f"va{tag}", f"vb{tag}"]
    made: list[Host] = []
    try:
        for host in hosts:
            ip("netns", "add", host.name)
            made.append(host)
        ip("link", "add", devices[0], "type", "veth", "peer", "name", devices[1])
        for host, device in zip(hosts, devices):
            ip("link", "set", device, "netns", host.name)
            ip("-n", host.name, "addr", "add", f"{host.address}/24", "dev", device)
            ip("-n", host.name, "link", "set", device, "up")
            ip("-n", host.name, "link", "set", "lo", "up")
        yield hosts
    finally:
        subprocess.run(["ip", "link", "del", devices[0]], capture_output=True)  # left here if never moved
        for host in made:
            subprocess.run(["ip", "netns", "del", host.name], capture_output=True)


def _setns(path: str) -> int:
    """Move the calling thread into the network namespace of the file ``path``; returns a
    descriptor of the namespace it was in (the caller closes it)."""
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NamespaceError(f"network namespace {path}: {exc.strerror} (deleted, or never made?)") from None
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _enter(target, path)
    except BaseException:
        os.close(own)
        raise
    finally:
        os.close(target)
    return own


def _enter(fd: int, what: str) -> None:
    """setns(2) into the network namespace of the descriptor ``fd`` (``what`` names it in the error)."""
    if ctypes.CDLL(None, use_errno=True).setns(fd, _CLONE_NEWNET) != 0:
        raise NamespaceError(f"setns({what}): {os.strerror(ctypes.get_errno())}")


def join(host: Host) -> None:
    """Move the calling thread, and the threads it starts from now on, into ``host``'s
    namespace for good (a forked rank, which has one thread: the whole process)."""
    os.close(_setns(host.path))


@contextmanager
def inside(host: Host) -> Iterator[None]:
    """The calling thread in ``host``'s namespace for the block, back in its own after.
    Sockets opened inside stay in the namespace; threads started inside stay there too."""
    own = _setns(host.path)
    try:
        yield
    finally:
        try:
            _enter(own, "the namespace the thread came from")
        finally:
            os.close(own)
