"""Every environment knob in one place (prefix ``COLLECTIVES_``).

| variable | meaning | default |
|---|---|---|
| COLLECTIVES_ALGO | default algorithm: ring, tree, recursive, direct, hierarchical (like NCCL_ALGO) | automatic |
| COLLECTIVES_TRANSPORT | force one transport for every peer: shm, tcp, mpi, inproc | by host |
| COLLECTIVES_TIMEOUT | seconds any blocking wait may take | 600 |
| COLLECTIVES_SECRET | per-job secret proven on every TCP connection | made by launcher |
| COLLECTIVES_SOCKET_IFNAME | interface whose address TCP listeners bind (like NCCL_SOCKET_IFNAME) | loopback |
| COLLECTIVES_SOCKET_ADDR | explicit address TCP listeners bind | loopback |
| COLLECTIVES_HOSTNAME | host identity override (network namespaces act as hosts) | hostname + boot id |
| COLLECTIVES_SHM_RING_BYTES | bytes of each shared-memory ring (one per ordered pair) | 4 MiB |
| COLLECTIVES_CHUNK_BYTES | pipelining chunk of bulk algorithms | the transports' own (Transport.chunk_bytes): 1 MiB |
| COLLECTIVES_MAX_FRAME_BYTES | largest frame on a stream; larger messages are split | 64 MiB |
| COLLECTIVES_CROSS_MEMORY | 0 turns off single-copy reads of and writes to peers' memory (process_vm_readv/writev) on one host | on where the kernel allows |
| COLLECTIVES_TOPO_FILE | recorded GPU topology (`nvidia-smi topo -m` text, optionally followed by `topo -p2p r`, or JSON from `python -m collectives.topology.discover`), used instead of probing, like NCCL_TOPO_FILE | probe |
| COLLECTIVES_TUNE_FILE | cost profile the tuner reads (JSON from `collectives-tune`) | built in (collectives/tuning/default_profile.json) |
| COLLECTIVES_DEBUG | logging level of the ``collectives`` logger (INFO, DEBUG) | WARNING |
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from .errors import InvalidArgumentError
from .names import ALGORITHMS, TRANSPORTS

_SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str, name: str = "size") -> int:
    """Parse ``8``, ``64K``, ``128M``, ``1G`` (optionally ``KB``/``KiB``) into bytes."""
    raw = text.strip().upper().removesuffix("IB").removesuffix("B")
    suffix = raw[-1:] if raw[-1:] in _SIZE_SUFFIXES else ""
    number = raw[: len(raw) - len(suffix)]
    try:
        value = int(float(number) * _SIZE_SUFFIXES[suffix])
    except ValueError:
        raise InvalidArgumentError(f"{name}: cannot read {text!r} as a size (like 8, 64K, 128M, 1G)") from None
    if value < 0:
        raise InvalidArgumentError(f"{name}: {text!r} is negative")
    return value


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings read once from the environment; arguments to ``init()`` override them."""

    algorithm: str | None = None
    transport: str | None = None
    timeout: float = 600.0
    secret: str | None = None
    socket_ifname: str | None = None
    socket_addr: str | None = None
    hostname: str | None = None
    shm_ring_bytes: int = 4 << 20
    chunk_bytes: int | None = None  # None: each transport's own (Transport.chunk_bytes)
    max_frame_bytes: int = 64 << 20
    cross_memory: bool = True
    debug: str | None = None
    tune_file: str | None = None  # None: the built-in cost profile

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get("COLLECTIVES_" + name)
            return value if value not in (None, "") else None

        algorithm = get("ALGO")
        if algorithm is not None:
            algorithm = algorithm.lower()
            if algorithm == "auto":
                algorithm = None
            elif algorithm not in ALGORITHMS:
                raise InvalidArgumentError(
                    f"COLLECTIVES_ALGO={algorithm!r} is not one of {', '.join(ALGORITHMS)}, auto"
                )
        transport = get("TRANSPORT")
        if transport is not None:
            transport = transport.lower()
            if transport not in TRANSPORTS:
                raise InvalidArgumentError(
                    f"COLLECTIVES_TRANSPORT={transport!r} is not one of {', '.join(TRANSPORTS)}"
                )
        timeout_text = get("TIMEOUT")
        try:
            timeout = float(timeout_text) if timeout_text else cls.timeout
        except ValueError:
            raise InvalidArgumentError(f"COLLECTIVES_TIMEOUT={timeout_text!r} is not a number of seconds") from None
        if timeout <= 0:
            raise InvalidArgumentError(f"COLLECTIVES_TIMEOUT={timeout_text!r} must be positive")

        def size(name: str, default: int) -> int:
            text = get(name)
            return parse_size(text, "COLLECTIVES_" + name) if text else default

        def flag(name: str, default: bool) -> bool:
            text = get(name)
            if text is None:
                return default
            value = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
            if text.strip().lower() not in value:
                raise InvalidArgumentError(f"COLLECTIVES_{name}={text!r} is not one of 1, 0, true, false, yes, no, on, off")
            return value[text.strip().lower()]

        return cls(
            algorithm=algorithm,
            transport=transport,
            timeout=timeout,
            secret=get("SECRET"),
            socket_ifname=get("SOCKET_IFNAME"),
            socket_addr=get("SOCKET_ADDR"),
            hostname=get("HOSTNAME"),
            shm_ring_bytes=size("SHM_RING_BYTES", cls.shm_ring_bytes),
            chunk_bytes=max(1, size("CHUNK_BYTES", 0)) if get("CHUNK_BYTES") else None,
            max_frame_bytes=max(4096, size("MAX_FRAME_BYTES", cls.max_frame_bytes)),
            cross_memory=flag("CROSS_MEMORY", cls.cross_memory),
            debug=get("DEBUG"),
            tune_file=get("TUNE_FILE"),
        )

    @classmethod
    def resolve(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        transport: str | None = None,
        algorithm: str | None = None,
        timeout: float | None = None,
        settings: Mapping[str, object] | None = None,
        caller: str = "init",
    ) -> Config:
        """The environment's settings with a caller's explicit arguments on top (what
        ``init()`` and ``from_mpi()`` take), each checked and named when wrong."""
        config = cls.from_env(env)
        overrides: dict[str, object] = dict(settings or {})
        if transport is not None:
            if transport not in TRANSPORTS:
                raise InvalidArgumentError(f"transport: {transport!r} is not one of {', '.join(TRANSPORTS)}")
            overrides["transport"] = transport
        if algorithm is not None:
            overrides["algorithm"] = None if algorithm == "auto" else algorithm
        if timeout is not None:
            if timeout <= 0:
                raise InvalidArgumentError(f"timeout: must be positive, got {timeout}")
            overrides["timeout"] = float(timeout)
        try:
            return dataclasses.replace(config, **overrides)  # type: ignore[arg-type]
        except TypeError as exc:
            raise InvalidArgumentError(f"{caller}: unknown setting ({exc})") from None
