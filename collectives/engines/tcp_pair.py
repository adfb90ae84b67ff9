"""The 2-rank all-reduce over tcp in one C call a slice (engines/_tcp_pair_c.c), for large sums.

At 2 ranks over loopback tcp a large all-reduce is CPU-bound, and after the kernel's copies the
largest share left is the interpreter's turns between the socket calls (docs/performance.md,
"Thirty-first round, tcp's CPU per call" and the thirty-third and thirty-fourth rounds). Here the
recursive schedule's two halves (algorithms/recursive.py at 2 ranks: reduce-scatter, all-gather)
run as two byte streams in C, frame for frame the messages the executor would send and expect, so
that a peer on the executor (a busy channel, no C part, ``Config.pure_python``) still matches it.

The loop runs only where the channel is idle (``TcpChannel.stream_idle``) and hands it back idle;
a frame of another tag met between its frames goes to the channel as an unexpected message. Its
wait spins for the progress engine's spin (none where ranks outnumber cores), then sleeps in
poll() for at most ``SLICE_MS`` before the deadline, the channel and signals are checked here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

import numpy as np

from ..errors import MessageMismatchError, PeerLostError, TransportError
from ..ops import ReduceOp
from ..steps import TCP_LARGE_FROM_BYTES
from ..transports.base import Channel
from ..transports.tcp import TcpChannel

try:
    from ._tcp_pair_c import pair_all_reduce  # type: ignore[import-not-found]
except ImportError:  # no compiler at install time
    pair_all_reduce = None

PAIR_FROM_BYTES = TCP_LARGE_FROM_BYTES
"""From this size a 2-rank sum over tcp takes the loop (the size from which it steps in 2 MiB:
``steps.TCP_LARGE_FROM_BYTES``; below it the Python path's CPU per call was not measured to lose)."""

READ_BYTES = 1 << 20
"""A read of the fold half waits for at least this much (SO_RCVLOWAT): reads of what has arrived, or
of 256 KiB, cost the kernel more than they saved (docs/performance.md, thirty-third round)."""

WINDOW_BYTES = 2 << 20
"""How far a rank's send stream may run ahead of its receive stream (one 2 MiB step)."""

SLICE_MS = 50
"""The longest sleep in poll() before the loop returns to check the deadline, the channel, signals."""

KINDS = {np.dtype(np.float32): 0, np.dtype(np.float64): 1, np.dtype(np.int32): 2, np.dtype(np.int64): 3}
"""The dtypes the loop sums (its ``kind`` codes), native byte order."""

_DONE, _WAIT, _FOREIGN, _CLOSED, _MISMATCH = 0, 1, 2, 3, 4
_STATE_SLOTS, _HEADER_SLOT = 8, 5


def takes(channels: Mapping[int, Channel], size: int, dtype: np.dtype, count: int, op: ReduceOp, segment: int,
          in_c: bool) -> bool:
    """Whether a 2-rank all-reduce of ``count`` elements may take the loop: the C part built and
    allowed (``in_c``), tcp to the one peer, a sum of a dtype it folds, from ``PAIR_FROM_BYTES``,
    each ``segment`` one frame."""
    if pair_all_reduce is None or not in_c or size != 2 or op is not ReduceOp.SUM or dtype not in KINDS:
        return False
    channel = next(iter(channels.values()), None) if len(channels) == 1 else None
    return (isinstance(channel, TcpChannel) and count * dtype.itemsize >= PAIR_FROM_BYTES
            and segment * dtype.itemsize <= channel.max_frame_bytes)


class PairLoop:
    """The loop for one signature (rank, dtype, count, segment) over one tcp channel."""

    def __init__(self, channel: TcpChannel, rank: int, dtype: np.dtype, count: int, segment: int,
                 spin_seconds: float) -> None:
        self.channel = channel
        self.rank = rank
        self.kind = KINDS[dtype]
        self.count = count
        self.itemsize = dtype.itemsize
        self.segment = segment
        self.spin_ns = int(spin_seconds * 1e9)
        self._state = np.zeros(_STATE_SLOTS, dtype=np.int64)
        self._bounce = np.empty(READ_BYTES, dtype=np.uint8)
        self.calls = 0  # calls the loop ran (a count for tests)

    def run(self, x: np.ndarray, out: np.ndarray, tag: int, deadline: float,
            on_timeout: Callable[[list[int]], BaseException]) -> bool:
        """``out`` = the sum of both ranks' ``x`` (``out`` may be ``x``); False, with nothing done,
        where the channel is not idle or the buffers do not suit (the caller runs its schedule)."""
        channel = self.channel
        if not (x.flags.c_contiguous and out.flags.c_contiguous and (x is out or not np.may_share_memory(x, out))
                and channel.stream_idle(tag)):
            return False
        state = self._state
        state[:] = 0
        try:
            self._loop(x, out, tag, deadline, on_timeout)
        except BaseException as exc:  # an interrupt too: the streams are then out of step with the channel
            raise self._lost(exc)
        self.calls += 1
        return True

    def _loop(self, x: np.ndarray, out: np.ndarray, tag: int, deadline: float,
              on_timeout: Callable[[list[int]], BaseException]) -> None:
        channel, state = self.channel, self._state
        fd = channel.sock.fileno()
        while True:
            code = pair_all_reduce(fd, x, out, self.kind, self.rank, self.count, self.itemsize, self.segment, tag,
                                   state, self._bounce, WINDOW_BYTES, READ_BYTES, self.spin_ns, SLICE_MS)
            if code == _DONE:
                return
            if channel.error is not None:  # closed or failed from another thread meanwhile
                raise channel.error
            if code == _FOREIGN:
                if not channel.take_frame(state[_HEADER_SLOT:_HEADER_SLOT + 2].tobytes(), deadline):
                    raise on_timeout([channel.peer])
            elif code == _WAIT:
                if time.monotonic() >= deadline:
                    raise on_timeout([channel.peer])
            else:
                raise self._error(code)

    def _error(self, code: int) -> TransportError:
        peer = self.channel.peer
        if code == _CLOSED:
            return PeerLostError(f"rank {peer} closed the connection (it exited, crashed or closed its communicator)",
                                 peer=peer)
        if code == _MISMATCH:
            return MessageMismatchError(f"rank {peer} sent a message of this all-reduce that does not fit the one "
                                        "expected (ranks disagree on the size)", peer=peer)
        return PeerLostError(f"rank {peer} is gone: the stream to it failed ({os.strerror(-code)})", peer=peer)

    def _lost(self, exc: BaseException) -> BaseException:
        """``exc``, with the channel failed where the loop moved bytes of its streams (they are then out
        of step with what the channel knows): by ``exc`` itself where it is the stream's error."""
        channel = self.channel
        if isinstance(exc, TransportError):
            channel.fail_stream(exc)
        elif self._state[0] or self._state[1]:
            channel.fail_stream(TransportError(f"the stream to rank {channel.peer} stopped mid-call ({exc!r})",
                                               peer=channel.peer))
        return exc
