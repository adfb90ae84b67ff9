"""What plans need from the communicator's connections, built once by ``connect()``."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ..config import Config
from ..engines.device_direct import DeviceEngine
from ..engines.executor import Executor
from ..engines.windows import SharedWindows
from ..steps import LARGER_STEP_RANKS, LARGER_STEPS, step_bytes
from ..store import Store
from ..topology.hosts import two_level_layout
from ..transports.base import Transport
from ..transports.progress import ProgressEngine
from ..tuning.profile import Profile
from ..tuning.profile import current as current_profile
from ..tuning.profile import load as load_profile
from .two_level import Connect, TwoLevels


@dataclasses.dataclass
class PlanContext:
    """The resources every plan of one communicator draws on.

    Attributes:
        rank, size: this rank and the world size.
        executor: runs schedules over every peer's channel.
        windows: the shared windows where one transport maps every peer's memory, else None.
        levels: the two levels (within hosts, across) where the ranks' hosts allow them.
        chunk_bytes: the pipelining step of every schedule where COLLECTIVES_CHUNK_BYTES sets one
            (``chunk_fixed``), else the step of calls the larger steps do not cover.
        default_algorithm: COLLECTIVES_ALGO (or ``init(algorithm=)``), else None.
        label: who speaks in log lines ("rank 3", "rank 3 (within its host)").
        transport: the transport the tuner prices (the one between hosts where there are several).
        ranks_per_host: ranks on each host where the levels exist, else 0 (one host, or uneven).
        profile: the cost profile (COLLECTIVES_TUNE_FILE, else the built-in one).
        check: compare every call's signature across the ranks first (COLLECTIVES_CHECK).
        device: the device engine where device buffers stay on the device (cuda_ipc to
            every peer, chosen by ``collectives.devices``), else None (staged).
        chunk_fixed: COLLECTIVES_CHUNK_BYTES (or ``init(chunk_bytes=)``) is set: every call
            steps in ``chunk_bytes``; else the one rule, ``steps.step_bytes`` (``step_bytes``).
        in_c: the engines' C parts may run (not ``Config.pure_python``).
    """

    rank: int
    size: int
    executor: Executor
    windows: SharedWindows | None
    levels: TwoLevels | None
    chunk_bytes: int
    default_algorithm: str | None
    label: str
    transport: str = "shm"
    ranks_per_host: int = 0
    profile: Profile | None = None
    check: bool = False
    device: DeviceEngine | None = None
    chunk_fixed: bool = False
    in_c: bool = True

    @classmethod
    def build(
        cls,
        rank: int,
        size: int,
        transports: Sequence[Transport],
        config: Config,
        *,
        store: Store | None = None,
        hosts: Sequence[str] | None = None,
        connect: Connect | None = None,
    ) -> PlanContext:
        """The context of ``transports``: shared windows where one transport offers them to
        every peer, two levels where ``hosts`` (one identity per rank) span several hosts
        evenly and ``connect`` can make the levels' communicators."""
        channels = {peer: ch for t in transports for peer, ch in t.channels.items()}
        host_ranks = hosts.count(hosts[rank]) if hosts is not None else 1
        executor = Executor(channels, ProgressEngine(list(transports), host_ranks))
        label = f"rank {rank}"
        window_transport: Any = next(
            (t for t in transports if t.offers_windows and len(t.channels) == size - 1), None
        )
        windows = None
        if window_transport is not None and size > 1:
            windows = SharedWindows(window_transport, rank, size, executor, cross_memory=config.cross_memory,
                                    in_c=not config.pure_python, label=label)
        layout = two_level_layout(hosts) if hosts is not None else None
        levels = None
        if layout is not None and store is not None and connect is not None:
            levels = TwoLevels(rank, layout, store, config, connect, label)
        chunk = config.chunk_bytes or min((t.chunk_bytes for t in transports), default=1 << 20)
        names = [t.name for t in transports]
        across = next((n for n in names if n != "shm"), names[0] if names else "shm")
        per_host = layout.per_host if layout is not None and levels is not None else 0
        profile = load_profile(config.tune_file) if config.tune_file else current_profile()
        return cls(rank, size, executor, windows, levels, chunk, config.algorithm, label, across, per_host, profile,
                   config.check, chunk_fixed=bool(config.chunk_bytes), in_c=not config.pure_python)

    @property
    def large_chunk(self) -> tuple[int, int] | None:
        """(from, chunk): an all-reduce of at least ``from`` bytes steps in ``chunk`` (the
        rule's larger step for this context's transport), else None."""
        if self.chunk_fixed or self.size > LARGER_STEP_RANKS:
            return None
        return LARGER_STEPS.get(self.transport)

    def step_bytes(self, collective: str, nbytes: int) -> int:
        """The pipelining step of a ``collective`` of ``nbytes``: the one rule that the tuner
        prices (``steps.step_bytes`` for the transport it prices, ``transport``), unless
        COLLECTIVES_CHUNK_BYTES sets one step for every call."""
        return self.chunk_bytes if self.chunk_fixed else step_bytes(self.transport, collective, nbytes, self.size)

    def relabel(self, label: str) -> None:
        """Speak as ``label`` from now on (the levels of a two-level communicator)."""
        self.label = label
        if self.windows is not None:
            self.windows.label = label

    def close(self, *, abort: bool) -> None:
        """Release the device engine, the windows, the executor's scratch and the levels."""
        if self.device is not None:
            self.device.close()
        self.executor.release_scratch()
        if self.windows is not None:
            self.windows.close()
        if self.levels is not None:
            self.levels.close(abort=abort)

