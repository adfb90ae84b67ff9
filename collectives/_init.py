"""``collectives.init()``: find rank, size and a store, then connect the ranks.

Sources, first match wins:

1. explicit arguments: ``init(rank=, size=, store=)``;
2. our launcher (``collectives-run``): COLLECTIVES_RANK, COLLECTIVES_WORLD_SIZE,
   COLLECTIVES_STORE_ADDR (host:port of the store it hosts), COLLECTIVES_SECRET;
3. torchrun: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (rank 0 hosts the store there);
4. mpiexec (PMI_RANK, OMPI_COMM_WORLD_RANK, ...; see :mod:`collectives.mpi`): rank and
   size from ``MPI.COMM_WORLD`` through mpi4py, as ``from_mpi`` does;
5. nothing: a world of one. Variables of a launcher set only in part (``WORLD_SIZE`` and
   ``MASTER_*`` without ``RANK``, say) are an error, not a world of one
   (:func:`collectives.environment.incomplete_launcher`); so is a rank out of range.

Then every rank publishes its host identity; peers on the same host are connected by
shared memory and the others by TCP, unless COLLECTIVES_TRANSPORT (or ``transport=``)
forces one transport for all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from .communicator import Communicator
from .config import Config
from .connect import configure_logging, connect
from .environment import COLLECTIVES_RUN, MPIEXEC, TORCHRUN, detect_launcher, incomplete_launcher
from .errors import InvalidArgumentError
from .store import HashStore, Store

logger = logging.getLogger("collectives")

DEFAULT_SECRET_NOTE = "no COLLECTIVES_SECRET set"


def _int_env(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise InvalidArgumentError(f"{name}={env[name]!r} is not an integer") from None


def _launcher_rank(env: Mapping[str, str], rank_name: str, size_name: str) -> tuple[int, int]:
    """Rank and world size from a launcher's two variables, checked: a clear error names
    the variables (a rank out of range is a launcher or job-script mistake)."""
    rank, size = _int_env(env, rank_name), _int_env(env, size_name)
    if size < 1:
        raise InvalidArgumentError(f"init: {size_name}={env[size_name]} must be at least 1")
    if not 0 <= rank < size:
        raise InvalidArgumentError(
            f"init: {rank_name}={env[rank_name]} is out of range for {size_name}={size} (ranks are 0..{size - 1})"
        )
    return rank, size


def _split_addr(text: str, name: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidArgumentError(f"{name}={text!r} is not host:port")
    return host.strip("[]"), int(port)


def _store_from_env(
    env: Mapping[str, str], rank: int, config: Config
) -> tuple[Store | None, list[Any]]:
    """The store our launcher or torchrun points at (and what to close with it)."""
    from .store.tcp_store import TCPStore, TCPStoreServer

    secret = config.secret or ""
    if env.get("COLLECTIVES_STORE_ADDR"):
        host, port = _split_addr(env["COLLECTIVES_STORE_ADDR"], "COLLECTIVES_STORE_ADDR")
        return TCPStore(host, port, secret=secret, timeout=config.timeout), []
    if env.get("MASTER_ADDR") and env.get("MASTER_PORT"):
        host, port = env["MASTER_ADDR"], _int_env(env, "MASTER_PORT")
        size = _int_env(env, "WORLD_SIZE") if env.get("WORLD_SIZE") else 1
        try:
            from .store.torch_store import TorchStore
        except ImportError:
            TorchStore = None  # type: ignore[assignment,misc]  # noqa: N806
        if TorchStore is not None:
            # torchrun's agent already serves MASTER_PORT (TORCHELASTIC_USE_AGENT_STORE);
            # otherwise rank 0 hosts a torch TCPStore there, as init_process_group does.
            agent = env.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
            store = TorchStore.connect(host, port, rank, size, is_server=rank == 0 and not agent, timeout=config.timeout)
            return store, []
        # Without torch and COLLECTIVES_SECRET the store's secret is guessable: it keeps scans
        # out, but the store is not private, so the data plane's keys do not come from it.
        guessable = not secret
        secret = secret or f"torchrun:{env.get('TORCHELASTIC_RUN_ID', '')}:{port}"
        owned: list[Any] = []
        if rank == 0:
            owned.append(TCPStoreServer(host=host, port=port, secret=secret))
        client = TCPStore(host, port, secret=secret, timeout=config.timeout)
        client.private = not guessable
        return client, owned
    return None, []


def init(
    rank: int | None = None,
    size: int | None = None,
    store: Store | None = None,
    *,
    transport: str | None = None,
    algorithm: str | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    **settings: Any,
) -> Communicator:
    """Create the communicator of this process.

    Args:
        rank: this process's rank (else read from the environment).
        size: the world size (else read from the environment).
        store: the rendezvous store (else the one the launcher or torchrun points at).
        transport: "shm", "tcp", "mpi" or "inproc" for every peer (default: by host).
        algorithm: default algorithm ("ring", "tree", "recursive"; default automatic).
        timeout: seconds any wait may take (default COLLECTIVES_TIMEOUT or 600).
        settings: other Config fields (e.g. ``chunk_bytes=4096``).

    Raises:
        InvalidArgumentError: inconsistent or missing rank, size or store.
        RendezvousTimeoutError / ConnectError: the other ranks did not show up in time.
    """
    env = os.environ if env is None else env
    config = Config.resolve(env, transport=transport, algorithm=algorithm, timeout=timeout, settings=settings)
    configure_logging(config)

    owned: list[Any] = []
    if rank is None and size is None:
        missing = incomplete_launcher(env)
        if missing is not None:
            raise InvalidArgumentError(f"init: {missing}; set them all, or none for a world of one")
        launcher = detect_launcher(env)
        if launcher == COLLECTIVES_RUN.name:
            rank, size = _launcher_rank(env, "COLLECTIVES_RANK", "COLLECTIVES_WORLD_SIZE")
        elif launcher == TORCHRUN.name:
            rank, size = _launcher_rank(env, "RANK", "WORLD_SIZE")
        elif store is None and launcher == MPIEXEC.name:
            from .mpi import init_from_mpiexec  # mpiexec: rank and size come from MPI.COMM_WORLD

            return init_from_mpiexec(config, env)
        else:
            rank, size = 0, 1
    if rank is None or size is None:
        raise InvalidArgumentError("init: give both rank and size, or neither")
    if size < 1 or not 0 <= rank < size:
        raise InvalidArgumentError(f"init: rank {rank} is out of range for world size {size}")
    if store is None:
        store, owned = _store_from_env(env, rank, config) if size > 1 else (None, [])
        if store is None:
            if size > 1:
                raise InvalidArgumentError(
                    f"init: no store to meet the other {size - 1} rank(s): pass store=, run under "
                    "collectives-run or torchrun, or set MASTER_ADDR and MASTER_PORT (rank 0 hosts a store there)"
                )
            store = HashStore(timeout=config.timeout)
        owned.append(store)
    try:
        return connect(rank, size, store, config, owned=owned)
    except BaseException:
        for resource in reversed(owned):
            resource.close()
        raise


def join(store: Store | None = None, *, timeout: float | None = None, env: Mapping[str, str] | None = None,
         **settings: Any) -> Communicator:
    """Join a running group as a new rank: wait until its members call ``comm.grow(n)``,
    take one of the ``n`` places, and return the larger communicator (docs/fault-tolerance.md).

    Args:
        store: the store the group meets in (else the launcher's: COLLECTIVES_STORE_ADDR and
            COLLECTIVES_SECRET, whose secret every connection to it proves).
        timeout: seconds to wait for a place (the new communicator takes the group's timeout).
        settings: other Config fields, as for ``init()``; they must match the group's
            (``init()``'s check of versions and settings holds joiners to it too).

    Raises:
        InvalidArgumentError: no store given or found in the environment.
        RendezvousTimeoutError: no group offered a place within ``timeout``.
    """
    from .recovery.grow import join_group

    env = os.environ if env is None else env
    config = Config.resolve(env, timeout=timeout, settings=settings, caller="join")
    configure_logging(config)
    owned: list[Any] = []
    if store is None:
        store, owned = _store_from_env(env, -1, config)  # (rank -1: never the store's server)
        if store is None:
            raise InvalidArgumentError("join: no store to meet the group in: pass store=, or set COLLECTIVES_STORE_ADDR")
        owned.append(store)
    try:
        comm = join_group(store, config, connect)
    except BaseException:
        for resource in owned:
            resource.close()
        raise
    comm._owned.extend(owned)
    return comm
