"""Single-copy reads of and writes to another process's memory (process_vm_readv/writev)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from collectives.errors import PeerLostError, TransportError
from collectives.transports import cma

pytestmark = pytest.mark.skipif(not cma.AVAILABLE, reason="process_vm_readv does not exist here")


@pytest.fixture
def child_with_data():
    """A forked process holding 10 MiB of known bytes; yields (pid, address, bytes)."""
    data = np.random.default_rng(7).integers(0, 256, 10 << 20, dtype=np.uint8)
    ready_r, ready_w = os.pipe()
    stop_r, stop_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child keeps its copy of `data` at the same address
        os.close(ready_r)
        os.write(ready_w, b"1")
        os.read(stop_r, 1)
        os._exit(0)
    os.close(ready_w)
    os.read(ready_r, 1)
    try:
        yield pid, cma.address_of(data), data.copy()
    finally:
        os.write(stop_w, b"x")
        os.waitpid(pid, 0)
        for fd in (ready_r, stop_r, stop_w):
            os.close(fd)


def test_reads_a_large_range_in_pieces_and_a_slice_at_an_offset(child_with_data):
    pid, address, data = child_with_data
    into = np.empty(data.size, np.uint8)
    cma.read(pid, address, into, peer=1)  # 10 MiB: three 4 MiB pieces
    assert np.array_equal(into, data)
    part = np.empty(12345, np.uint8)
    cma.read(pid, address + 777, part, peer=1)
    assert np.array_equal(part, data[777 : 777 + 12345])


def test_writes_land_in_the_other_process_in_pieces_and_at_an_offset(child_with_data):
    pid, address, data = child_with_data
    new = (data + 1).astype(np.uint8)  # 10 MiB: three 4 MiB pieces
    cma.write(pid, address, new, peer=1)
    back = np.empty(data.size, np.uint8)
    cma.read(pid, address, back, peer=1)
    assert np.array_equal(back, new)
    cma.write(pid, address + 777, data[:12345], peer=1)
    cma.read(pid, address, back, peer=1)
    assert np.array_equal(back[777 : 777 + 12345], data[:12345])
    assert np.array_equal(back[:777], new[:777]) and np.array_equal(back[777 + 12345 :], new[777 + 12345 :])
    with pytest.raises(TransportError, match="process_vm_writev with rank 4 .*EFAULT"):
        cma.write(pid, 8, data[:16], peer=4)


def test_probe_checks_the_bytes_not_just_the_call(child_with_data):
    pid, address, data = child_with_data
    assert cma.probe(pid, address, data[:8].tobytes())
    assert not cma.probe(pid, address, bytes(8) if data[:8].any() else b"\1" * 8)


def test_a_bad_address_is_a_transport_error_naming_the_rank(child_with_data):
    pid, _, _ = child_with_data
    with pytest.raises(TransportError, match="rank 3 .*EFAULT") as info:
        cma.read(pid, 8, np.empty(16, np.uint8), peer=3)
    assert info.value.peer == 3


def test_a_process_that_is_gone_is_a_lost_peer():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    with pytest.raises(PeerLostError, match="rank 2 .*exited"):
        cma.read(pid, 4096, np.empty(8, np.uint8), peer=2)


def test_the_machine_check_agrees_with_a_read_of_a_child_and_says_no_without_the_calls(child_with_data,
                                                                                      monkeypatch):
    """allowed_here (what collectives-tune records) forks its own child: here, where reading a
    child works (the fixture's), it says so; where the calls do not exist, it says no."""
    pid, address, data = child_with_data
    into = np.empty(64, dtype=np.uint8)
    cma.read(pid, address, into, peer=1)
    assert cma.allowed_here() is True
    monkeypatch.setattr(cma, "_LIBC", None)
    assert cma.allowed_here() is False
