"""Process-level tests of the shared-memory transport (and its futex helper).

Ranks are forked processes that meet through a tiny file-backed store in a temporary
directory; each reports its result through a multiprocessing queue.
"""

from __future__ import annotations

import ctypes
import fcntl
import glob
import mmap
import multiprocessing as mp
import os
import queue
import random
import secrets
import shutil
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from collectives.config import Config
from collectives.errors import ConnectError, PeerLostError, RendezvousTimeoutError
from collectives.store import Store
from collectives.transports import _futex
from collectives.transports.progress import ProgressEngine
from collectives.transports.shm import SHM_DIR, ShmTransport

pytestmark = [pytest.mark.skipif(not os.path.isdir(SHM_DIR), reason="needs /dev/shm"), pytest.mark.multiprocess]

CTX = mp.get_context("fork")


class DirStore(Store):
    """A test-only store shared by processes: one file per key in a directory."""

    def __init__(self, root: str, timeout: float = 30.0) -> None:
        self.root = root
        self.timeout = timeout

    def _path(self, key: str) -> str:
        return os.path.join(self.root, key.encode().hex())

    def _lock(self) -> Any:
        class Lock:
            def __enter__(s) -> None:
                s.fd = os.open(os.path.join(self.root, "lock"), os.O_CREAT | os.O_RDWR)
                fcntl.flock(s.fd, fcntl.LOCK_EX)

            def __exit__(s, *exc: object) -> None:
                os.close(s.fd)

        return Lock()

    def _read(self, key: str) -> bytes | None:
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def set(self, key: str, value: bytes) -> None:
        tmp = f"{self._path(key)}.{secrets.token_hex(4)}.tmp"
        with open(tmp, "wb") as f:
            f.write(value)
        os.replace(tmp, self._path(key))

    def get(self, key: str, timeout: float | None = None) -> bytes:
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while (value := self._read(key)) is None:
            if time.monotonic() >= deadline:
                raise self._timeout_error([key], timeout)
            time.sleep(0.001)
        return value

    def add(self, key: str, amount: int) -> int:
        with self._lock():
            value = int(self._read(key) or b"0") + amount
            self.set(key, str(value).encode())
            return value

    def compare_set(self, key: str, expected: bytes, desired: bytes) -> bytes:
        with self._lock():
            current = self._read(key)
            if current == expected or (current is None and expected == b""):
                self.set(key, desired)
                current = desired
            return current or b""

    def check(self, keys: Sequence[str]) -> bool:
        return all(os.path.exists(self._path(k)) for k in keys)

    def delete(self, key: str) -> bool:
        try:
            os.unlink(self._path(key))
            return True
        except FileNotFoundError:
            return False


# -- harness ---------------------------------------------------------------------------------

Body = Callable[[int, int, DirStore], Any]


def _child(rank: int, size: int, root: str, body: Body, results: Any) -> None:
    try:
        value = body(rank, size, DirStore(root))
        results.put((rank, "ok", value))
    except BaseException as exc:  # report, then exit non-zero
        results.put((rank, "error", (type(exc).__name__, str(exc), getattr(exc, "peer", None))))
        raise SystemExit(1) from None


def run_ranks(size: int, body: Body, limit: float = 40.0) -> tuple[dict[int, tuple[str, Any]], list[int]]:
    """Fork ``size`` ranks running ``body``; return {rank: (status, value)} and their pids."""
    root = tempfile.mkdtemp(prefix="shm-test-store-")
    results = CTX.Queue()
    procs = [CTX.Process(target=_child, args=(r, size, root, body, results)) for r in range(size)]
    out: dict[int, tuple[str, Any]] = {}
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + limit
        while len(out) < size and time.monotonic() < deadline:
            try:
                rank, status, value = results.get(timeout=0.05)
                out[rank] = (status, value)
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    try:  # a last look: results put just before exit
                        while True:
                            rank, status, value = results.get(timeout=0.2)
                            out[rank] = (status, value)
                    except queue.Empty:
                        break
        hung = [r for r, p in enumerate(procs) if p.is_alive() and r not in out]
        assert not hung, f"rank(s) {hung} hung"
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
        shutil.rmtree(root, ignore_errors=True)
    return out, [p.pid for p in procs]


def with_transport(fn: Callable[[int, int, ShmTransport], Any], ring_bytes: int = 1 << 20,
                   peers: Callable[[int, int], list[int]] | None = None, timeout: float = 20.0) -> Body:
    """A rank body that builds the transport, runs ``fn`` and closes it."""

    def body(rank: int, size: int, store: DirStore) -> Any:
        ps = peers(rank, size) if peers else [p for p in range(size) if p != rank]
        t = ShmTransport(rank, size, ps, store, Config(shm_ring_bytes=ring_bytes), timeout)
        try:
            return fn(rank, size, t)
        finally:
            t.close()

    return body


def wait_all(t: ShmTransport, requests: Sequence[Any], timeout: float = 20.0) -> None:
    engine = ProgressEngine([t])
    engine.wait(requests, time.monotonic() + timeout, lambda peers: TimeoutError(f"waiting on {peers}"))


def leftovers(pids: Sequence[int]) -> list[str]:
    # collectives-<pid namespace>-<pid>-<start time>-<random> (shm_names.segment_name)
    return [f for pid in pids for f in glob.glob(os.path.join(SHM_DIR, f"collectives-*-{pid}-*-*"))]


def ok_values(out: dict[int, tuple[str, Any]], size: int) -> list[Any]:
    assert sorted(out) == list(range(size)), out
    for rank, (status, value) in out.items():
        assert status == "ok", f"rank {rank}: {value}"
    return [out[r][1] for r in range(size)]


def pattern(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


# -- data movement ---------------------------------------------------------------------------


def test_64mib_and_empty_messages_both_directions_at_once() -> None:
    n = (64 << 20) + 3  # odd, so frames and wrap-arounds land at odd offsets

    def fn(rank: int, size: int, t: ShmTransport) -> bool:
        peer = 1 - rank
        ch = t.channels[peer]
        big = pattern(rank, n)
        got = np.empty(n, np.uint8)
        empty_in = bytearray()
        reqs = [ch.isend(b"", 7), ch.isend(big, 1), ch.irecv(got, 1), ch.irecv(empty_in, 7), ch.isend(b"x", 8)]
        tail = bytearray(1)
        reqs.append(ch.irecv(tail, 8))
        wait_all(t, reqs)
        return bool(np.array_equal(got, pattern(peer, n))) and tail == b"x"

    # a ring of 1 MiB + 5 bytes: not a power of two, and far smaller than the message
    assert ok_values(run_ranks(2, with_transport(fn, ring_bytes=(1 << 20) + 5))[0], 2) == [True, True]


def test_many_interleaved_tags_small_ring() -> None:
    def messages(sender: int) -> list[tuple[int, bytes]]:
        rng = random.Random(sender)
        return [(tag, rng.randbytes(rng.randrange(0, 3000))) for _ in range(4) for tag in range(25)]

    def fn(rank: int, size: int, t: ShmTransport) -> bool:
        peer = 1 - rank
        ch = t.channels[peer]
        sends = [ch.isend(data, tag) for tag, data in messages(rank)]
        expected = messages(peer)
        order = list(range(len(expected)))
        random.Random(rank + 10).shuffle(order)
        # receives per tag must be posted in send order; across tags any order
        by_tag: dict[int, list[int]] = {}
        for i in order:
            by_tag.setdefault(expected[i][0], []).append(i)
        bufs: dict[int, bytearray] = {}
        recvs = []
        for tag in random.Random(rank).sample(sorted(by_tag), len(by_tag)):
            for i in sorted(by_tag[tag]):
                bufs[i] = bytearray(len(expected[i][1]))
                recvs.append(ch.irecv(bufs[i], tag))
        wait_all(t, sends + recvs)
        return all(bytes(bufs[i]) == expected[i][1] for i in range(len(expected)))

    assert ok_values(run_ranks(2, with_transport(fn, ring_bytes=4099))[0], 2) == [True, True]


def test_a_sender_running_ahead_fills_receives_posted_one_by_one_without_extra_copies() -> None:
    # The pattern of every pipelined algorithm: the receiver posts chunk i+1 only once
    # chunk i is in, while the sender has already queued all of them. Each chunk must
    # still land in its posted buffer, not be read ahead into an unexpected copy.
    chunks, nbytes = 32, 64 << 10

    def fn(rank: int, size: int, t: ShmTransport) -> tuple[bool, int]:
        ch = t.channels[1 - rank]
        if rank == 0:
            sends = [ch.isend(pattern(i, nbytes), i) for i in range(chunks)]
            wait_all(t, sends)
            return True, 0
        time.sleep(0.2)  # let the sender fill the ring
        ok = True
        for i in range(chunks):
            out = np.empty(nbytes, np.uint8)
            wait_all(t, [ch.irecv(out, i)])
            ok = ok and np.array_equal(out, pattern(i, nbytes))
        return ok, ch.unexpected_bytes

    values = ok_values(run_ranks(2, with_transport(fn, ring_bytes=4 << 20))[0], 2)
    assert tuple(values[1]) == (True, 0)


def test_four_ranks_everyone_sends_to_everyone() -> None:
    def fn(rank: int, size: int, t: ShmTransport) -> bool:
        reqs, bufs = [], {}
        for p in range(size):
            if p != rank:
                reqs.append(t.channels[p].isend(pattern(100 * rank + p, 300_000 + p), 5))
                bufs[p] = np.empty(300_000 + rank, np.uint8)
                reqs.append(t.channels[p].irecv(bufs[p], 5))
        wait_all(t, reqs)
        return all(np.array_equal(b, pattern(100 * p + rank, 300_000 + rank)) for p, b in bufs.items())

    assert ok_values(run_ranks(4, with_transport(fn, ring_bytes=65536))[0], 4) == [True] * 4


# -- lifetime and cleanup --------------------------------------------------------------------


def test_segment_is_unlinked_right_after_setup_and_nothing_left_after_exit() -> None:
    def fn(rank: int, size: int, t: ShmTransport) -> list[str]:
        still_there = leftovers([os.getpid()])
        wait_all(t, [t.channels[1 - rank].isend(b"hi", 0), t.channels[1 - rank].irecv(bytearray(2), 0)])
        return still_there

    out, pids = run_ranks(2, with_transport(fn))
    assert ok_values(out, 2) == [[], []]
    assert leftovers(pids) == []


def test_segment_mode_0600_and_cleanup_when_a_peer_never_comes() -> None:
    def body(rank: int, size: int, store: DirStore) -> Any:
        if rank == 1:  # never builds a transport: looks at rank 0's inbox and leaves
            st = os.stat(os.path.join(SHM_DIR, store.get("shm/0/name").decode()))
            return stat.S_IMODE(st.st_mode), st.st_uid
        ShmTransport(0, 2, [1], store, Config(shm_ring_bytes=4096), timeout=1.0)
        return "built"

    out, pids = run_ranks(2, body)
    assert out[1] == ("ok", (0o600, os.geteuid()))
    assert out[0][0] == "error" and out[0][1][0] == RendezvousTimeoutError.__name__, out[0]
    assert leftovers(pids) == []


def test_exception_in_a_rank_fails_its_peer_and_leaves_nothing() -> None:
    def fn(rank: int, size: int, t: ShmTransport) -> Any:
        if rank == 1:
            raise RuntimeError("boom")
        start = time.monotonic()
        try:
            wait_all(t, [t.channels[1].irecv(bytearray(4), 3)])
        except PeerLostError as exc:
            return exc.peer, str(exc), time.monotonic() - start
        return "no error"

    out, pids = run_ranks(2, with_transport(fn))
    assert out[1] == ("error", ("RuntimeError", "boom", None))
    peer, message, elapsed = out[0][1]
    assert peer == 1 and "rank 1" in message and elapsed < 1.0
    assert leftovers(pids) == []


def test_sigkilled_peer_raises_peer_lost_quickly_and_leaves_nothing() -> None:
    def fn(rank: int, size: int, t: ShmTransport) -> Any:
        ch = t.channels[1 - rank]
        if rank == 1:
            wait_all(t, [ch.isend(b"last words", 0)])
            os.kill(os.getpid(), signal.SIGKILL)
        first = bytearray(10)
        wait_all(t, [ch.irecv(first, 0)])
        start = time.monotonic()
        try:
            wait_all(t, [ch.irecv(bytearray(4), 0)], timeout=5)
        except PeerLostError as exc:
            return bytes(first), exc.peer, str(exc), time.monotonic() - start
        return "no error"

    out, pids = run_ranks(2, with_transport(fn))
    assert 1 not in out  # killed before it could report
    first, peer, message, elapsed = out[0][1]
    assert first == b"last words" and peer == 1
    assert f"rank 1 (pid {pids[1]})" in message
    assert elapsed < 1.5
    assert leftovers(pids) == []


def test_a_peer_found_lost_stays_lost_for_every_later_check() -> None:
    # A window wait that finds its value posted by a peer that then died returns it; its
    # next wait on that peer asks again, and must hear the same answer, not silence.
    def fn(rank: int, size: int, t: ShmTransport) -> Any:
        if rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        answers = []
        deadline = time.monotonic() + 10
        while not answers and time.monotonic() < deadline:  # (until its process is seen gone)
            try:
                t.check_peers([1])
                time.sleep(0.01)
            except PeerLostError as exc:
                answers.append((exc.peer, str(exc)))
        for _ in range(2):
            try:
                t.check_peers([1])
                answers.append(None)
            except PeerLostError as exc:
                answers.append((exc.peer, str(exc)))
        return answers

    out, pids = run_ranks(2, with_transport(fn))
    first, *later = out[0][1]
    assert first is not None and first[0] == 1 and f"rank 1 (pid {pids[1]})" in first[1]
    assert later == [first, first]
    assert leftovers(pids) == []


def test_rank_killed_during_setup_is_reported_and_its_segment_removed() -> None:
    class KillBeforeMapped(DirStore):
        def set(self, key: str, value: bytes) -> None:
            if key == "shm/1/mapped":  # rank 1 has mapped rank 0's inbox but not said so
                os.kill(os.getpid(), signal.SIGKILL)
            super().set(key, value)

    def body(rank: int, size: int, store: DirStore) -> Any:
        if rank == 1:
            store = KillBeforeMapped(store.root)
        start = time.monotonic()
        try:
            ShmTransport(rank, 2, [1 - rank], store, Config(shm_ring_bytes=4096), timeout=10.0)
        except ConnectError as exc:
            return exc.peer, str(exc), time.monotonic() - start
        return "built"

    out, pids = run_ranks(2, body)
    assert 1 not in out
    peer, message, elapsed = out[0][1]
    assert peer == 1 and f"rank 1 (pid {pids[1]})" in message and elapsed < 2.0
    assert leftovers(pids) == []  # rank 0 removed its own inbox and the dead rank's


def test_not_enough_space_is_a_clear_error() -> None:
    root = tempfile.mkdtemp()
    try:
        with pytest.raises(ConnectError, match=r"need [\d.]+ MB in /dev/shm, have [\d.]+ MB"):
            ShmTransport(0, 2, [1], DirStore(root), Config(shm_ring_bytes=1 << 60), 1.0)
    finally:
        shutil.rmtree(root)
    assert leftovers([os.getpid()]) == []


# -- waiting ---------------------------------------------------------------------------------


def test_idle_wait_sleeps_instead_of_spinning() -> None:
    def fn(rank: int, size: int, t: ShmTransport) -> Any:
        ch = t.channels[1 - rank]
        if rank == 1:
            time.sleep(1.0)
            wait_all(t, [ch.isend(b"late", 0)])
            return None
        cpu, wall = time.process_time(), time.monotonic()
        wait_all(t, [ch.irecv(bytearray(4), 0)])
        return time.process_time() - cpu, time.monotonic() - wall

    cpu, wall = ok_values(run_ranks(2, with_transport(fn))[0], 2)[0]
    assert wall > 0.8 and cpu < 0.2 * wall, (cpu, wall)


def test_eight_ranks_on_two_cores_ping_pong_with_a_neighbor() -> None:
    rounds = 200

    def fn(rank: int, size: int, t: ShmTransport) -> float:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
        peer = rank ^ 1
        ch = t.channels[peer]
        buf = bytearray(8)
        start = time.monotonic()
        for i in range(rounds):
            if rank % 2 == 0:
                wait_all(t, [ch.isend(i.to_bytes(8, "little"), 1)])
                wait_all(t, [ch.irecv(buf, 2)])
            else:
                wait_all(t, [ch.irecv(buf, 1)])
                wait_all(t, [ch.isend(buf, 2)])
            assert int.from_bytes(buf, "little") == i
        return time.monotonic() - start

    times = ok_values(run_ranks(8, with_transport(fn, ring_bytes=4096, peers=lambda r, s: [r ^ 1]))[0], 8)
    # Lost wake-ups would cost a 50 ms sleep slice each (> 10 s); spinning would starve peers.
    assert max(times) < 5.0, times


# -- futex helper ----------------------------------------------------------------------------


def test_futex_wake_crosses_processes_and_wait_checks_the_value() -> None:
    mm = mmap.mmap(-1, 4096)  # MAP_SHARED anonymous: shared with the forked child
    word = ctypes.c_uint32.from_buffer(mm)
    address = ctypes.addressof(word)
    start = time.monotonic()
    _futex.futex_wait(address, 1, 5.0)  # value differs: returns at once
    assert time.monotonic() - start < 0.5

    def wake() -> None:  # in the child: set the shared word, then wake the parent
        time.sleep(0.2)
        ctypes.c_uint32.from_buffer(mm).value = 1
        _futex.futex_wake(address)

    child = CTX.Process(target=wake)
    child.start()
    start = time.monotonic()
    while word.value == 0 and time.monotonic() - start < 5:
        _futex.futex_wait(address, 0, 5.0)
    elapsed = time.monotonic() - start
    child.join()
    assert word.value == 1 and elapsed < 2.0, elapsed
    del word


def test_futex_wait_times_out() -> None:
    word = ctypes.c_uint32(0)
    start = time.monotonic()
    _futex.futex_wait(ctypes.addressof(word), 0, 0.05)
    assert 0.04 < time.monotonic() - start < 1.0


def test_futex_wake_from_a_thread() -> None:
    word = ctypes.c_uint32(0)
    address = ctypes.addressof(word)
    timer = threading.Timer(0.1, lambda: (setattr(word, "value", 1), _futex.futex_wake(address)))
    timer.start()
    start = time.monotonic()
    while word.value == 0 and time.monotonic() - start < 5:
        _futex.futex_wait(address, 0, 5.0)
    timer.join()
    assert time.monotonic() - start < 2.0


def test_futex_fallback_polls_the_word(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_futex, "_futex", None)
    word = ctypes.c_uint32(0)
    timer = threading.Timer(0.05, lambda: setattr(word, "value", 1))
    timer.start()
    start = time.monotonic()
    _futex.futex_wait(ctypes.addressof(word), 0, 5.0)
    timer.join()
    assert word.value == 1 and time.monotonic() - start < 2.0


def test_waiting_ranks_spin_only_where_every_rank_of_the_host_has_a_cpu(monkeypatch) -> None:
    """Oversubscribed, a spinning rank holds the core the rank it waits for needs."""
    from collectives.transports import progress

    monkeypatch.setattr(progress, "usable_cpus", lambda: 2)
    assert progress.spin_seconds(1) == progress.spin_seconds(2) == progress.SPIN_SECONDS > 0
    assert progress.spin_seconds(3) == progress.spin_seconds(8) == 0.0


@pytest.mark.parametrize("gap", [0, 16, 31, 32, 4095])
@pytest.mark.parametrize("nbytes", [100, 5000, 200003, 300000, 600000])
def test_copy_array_copies_exactly_whatever_the_alignment(gap: int, nbytes: int, monkeypatch) -> None:
    """copy_array takes another route for 4K-aliased buffers (1-31 bytes apart modulo a
    page) of 192-512 KiB; every route copies every byte, tail included, and nothing more."""
    from collectives.buffers import ALIASED_COPY_BYTES, address_of, copy_array

    page = 4096
    src_pages = mmap.mmap(-1, nbytes + 2 * page)
    dst_pages = mmap.mmap(-1, nbytes + 3 * page)
    src = np.frombuffer(src_pages, np.uint8)[page : page + nbytes]
    start = page + gap
    dst_all = np.frombuffer(dst_pages, np.uint8)
    dst = dst_all[start : start + nbytes]
    assert (address_of(dst) - address_of(src)) % page == gap
    src[...] = np.random.default_rng(nbytes + gap).integers(0, 256, nbytes, dtype=np.uint8)
    dst_all[...] = 0xAB
    detours = []
    word_copy = np.bitwise_or
    monkeypatch.setattr(np, "bitwise_or", lambda *a, **k: detours.append(1) or word_copy(*a, **k))
    copy_array(dst, src)
    assert np.array_equal(dst, src)
    assert (dst_all[:start] == 0xAB).all() and (dst_all[start + nbytes :] == 0xAB).all()
    aliased = 0 < gap < 32 and ALIASED_COPY_BYTES[0] <= nbytes < ALIASED_COPY_BYTES[1]
    assert len(detours) == int(aliased), "the word-wise route is taken exactly for aliased mid-size copies"
