"""Every environment knob in one place (prefix ``COLLECTIVES_``).

| variable | meaning | default |
|---|---|---|
| COLLECTIVES_ALGO | default algorithm: ring, tree, recursive, direct, hierarchical (like NCCL_ALGO) | automatic |
| COLLECTIVES_TRANSPORT | force one transport for every peer: shm, tcp, mpi, inproc | by host |
| COLLECTIVES_TIMEOUT | seconds any blocking wait may take | 600 |
| COLLECTIVES_STALL_WARNING | seconds an operation may wait before a warning lists the ranks missing from it (0: never) | half the timeout, at most 60 |
| COLLECTIVES_SECRET | per-job secret proven on every TCP connection | made by launcher |
| COLLECTIVES_INSECURE | 1 lets ranks on several hosts that meet in a store without authentication (torch's TCPStore) connect without COLLECTIVES_SECRET (anyone who can read the store can then join); a warning says so | off: such a job needs COLLECTIVES_SECRET |
| COLLECTIVES_OBJECT_CODEC | how the torch backend's object collectives (`all_gather_object`, ...) encode and decode: `safe` (plain data, arrays and tensors; never runs code) or `pickle` (any object, and any peer can run code in this process) | safe |
| COLLECTIVES_SOCKET_IFNAME | which interface's address TCP listeners bind, in NCCL_SOCKET_IFNAME's syntax plus subnets: comma-separated name prefixes (`eth`, `ib0`) or CIDR subnets (`10.0.0.0/8`, `fd00::/8`); `=` in front: exact names; `^` in front: exclusions (`^lo,docker`); IPv4 first, a link-local IPv6 address with its scope | loopback on one host; across hosts the first address not on loopback or a docker/virbr bridge |
| COLLECTIVES_SOCKET_ADDR | explicit address TCP listeners bind (IPv4, IPv6, `fe80::1%eth0`; loopback is refused when the ranks span several hosts) | as COLLECTIVES_SOCKET_IFNAME |
| COLLECTIVES_HOSTNAME | host identity override (network namespaces act as hosts) | hostname + boot id |
| COLLECTIVES_SHM_RING_BYTES | bytes of each shared-memory ring (one per ordered pair) | 4 MiB |
| COLLECTIVES_CHUNK_BYTES | pipelining chunk of bulk algorithms, one for every call | the step rule the tuner prices (collectives.steps): 1 MiB, 2 MiB for tcp all-reduces from 32 MiB |
| COLLECTIVES_MAX_FRAME_BYTES | largest frame on a stream; larger messages are split | 64 MiB |
| COLLECTIVES_CROSS_MEMORY | 0 turns off single-copy reads of and writes to peers' memory (process_vm_readv/writev) on one host | on where the kernel allows |
| COLLECTIVES_TOPO_FILE | recorded GPU topology (`nvidia-smi topo -m` text, optionally followed by `topo -p2p r`, or JSON from `python -m collectives.topology.discover`), used instead of probing, like NCCL_TOPO_FILE | probe |
| COLLECTIVES_DEVICE | device buffers: `auto` (cuda_ipc where every peer's GPU allows it, else staged through the host), `off` (always staged), `host` (the device path over host memory: the protocol without a GPU, for tests) | auto |
| COLLECTIVES_TUNE_FILE | cost profile the tuner reads (JSON from `collectives-tune`) | built in (collectives/tuning/default_profile.json) |
| COLLECTIVES_DEBUG | logging level of the ``collectives`` logger (INFO, DEBUG) | WARNING |
| COLLECTIVES_CHECK | 1: every collective first compares (op, dtype, count, root, reduce op, algorithm) across the ranks and raises CollectiveMismatchError on all of them before data moves (costs one small all-gather per call) | 0 |
| COLLECTIVES_TRACE_FILE | where the flight recorder dumps each rank's last operations (JSON lines; ``%r`` rank, ``%p`` pid) on a failure and on SIGUSR2 | failures: not dumped; SIGUSR2: ``$TMPDIR/collectives-trace.%r.%p.jsonl`` |
| COLLECTIVES_REVOKE_ON_FAILURE | 1: a timeout or lost peer seen by one rank revokes the communicator for every member (docs/fault-tolerance.md) | 0 |
| COLLECTIVES_RECOVERY_TIMEOUT | seconds an agreement (``agree``, ``shrink``, ``grow``) waits for a rank that neither answers nor is known dead before declaring it failed | 30 |
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from .errors import InvalidArgumentError
from .names import ALGORITHMS, TRANSPORTS

DEVICE_MODES = ("auto", "off", "host")

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


OBJECT_CODECS = ("safe", "pickle")


def _object_codec(text: str | None) -> str:
    codec = (text or "safe").strip().lower()
    if codec not in OBJECT_CODECS:
        raise InvalidArgumentError(f"COLLECTIVES_OBJECT_CODEC={text!r} is not one of {', '.join(OBJECT_CODECS)}")
    return codec


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings read once from the environment; arguments to ``init()`` override them."""

    algorithm: str | None = None
    transport: str | None = None
    timeout: float = 600.0
    stall_warning: float | None = None  # None: half the timeout, at most 60 s; 0: no warnings
    secret: str | None = None
    socket_ifname: str | None = None
    socket_addr: str | None = None
    hostname: str | None = None
    shm_ring_bytes: int = 4 << 20
    chunk_bytes: int | None = None  # None: the step rule (steps.step_bytes)
    max_frame_bytes: int = 64 << 20
    cross_memory: bool = True
    device: str = "auto"
    debug: str | None = None
    check: bool = False  # COLLECTIVES_CHECK: compare every call's signature across the ranks first
    trace_file: str | None = None  # COLLECTIVES_TRACE_FILE: where the flight recorder dumps
    revoke_on_failure: bool = False
    recovery_timeout: float = 30.0
    insecure: bool = False
    object_codec: str = "safe"
    tune_file: str | None = None  # None: the built-in cost profile
    pure_python: bool = False  # COLLECTIVES_PURE_PYTHON: nothing in C (engines/small_native.py, _fast_path.py, engines/express.py)

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
        device = (get("DEVICE") or "auto").lower()
        if device not in DEVICE_MODES:
            raise InvalidArgumentError(f"COLLECTIVES_DEVICE={device!r} is not one of {', '.join(DEVICE_MODES)}")
        timeout_text = get("TIMEOUT")
        try:
            timeout = float(timeout_text) if timeout_text else cls.timeout
        except ValueError:
            raise InvalidArgumentError(f"COLLECTIVES_TIMEOUT={timeout_text!r} is not a number of seconds") from None
        if timeout <= 0:
            raise InvalidArgumentError(f"COLLECTIVES_TIMEOUT={timeout_text!r} must be positive")

        stall_text = get("STALL_WARNING")
        try:
            stall_warning = float(stall_text) if stall_text else None
        except ValueError:
            raise InvalidArgumentError(f"COLLECTIVES_STALL_WARNING={stall_text!r} is not a number of seconds") from None
        if stall_warning is not None and stall_warning < 0:
            raise InvalidArgumentError(f"COLLECTIVES_STALL_WARNING={stall_text!r} must be 0 (off) or positive")

        def size(name: str, default: int) -> int:
            text = get(name)
            return parse_size(text, "COLLECTIVES_" + name) if text else default

        def seconds(name: str, default: float) -> float:
            text = get(name)
            try:
                value = float(text) if text else default
            except ValueError:
                raise InvalidArgumentError(f"COLLECTIVES_{name}={text!r} is not a number of seconds") from None
            if value <= 0:
                raise InvalidArgumentError(f"COLLECTIVES_{name}={text!r} must be positive")
            return value

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
            stall_warning=stall_warning,
            secret=get("SECRET"),
            socket_ifname=get("SOCKET_IFNAME"),
            socket_addr=get("SOCKET_ADDR"),
            hostname=get("HOSTNAME"),
            shm_ring_bytes=size("SHM_RING_BYTES", cls.shm_ring_bytes),
            chunk_bytes=max(1, size("CHUNK_BYTES", 0)) if get("CHUNK_BYTES") else None,
            max_frame_bytes=max(4096, size("MAX_FRAME_BYTES", cls.max_frame_bytes)),
            cross_memory=flag("CROSS_MEMORY", cls.cross_memory),
            device=device,
            debug=get("DEBUG"),
            check=flag("CHECK", cls.check),
            trace_file=get("TRACE_FILE"),
            revoke_on_failure=flag("REVOKE_ON_FAILURE", cls.revoke_on_failure),
            recovery_timeout=seconds("RECOVERY_TIMEOUT", cls.recovery_timeout),
            insecure=flag("INSECURE", cls.insecure),
            object_codec=_object_codec(get("OBJECT_CODEC")),
            tune_file=get("TUNE_FILE"),
            pure_python=flag("PURE_PYTHON", cls.pure_python),
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
        if overrides.get("device", "auto") not in DEVICE_MODES:
            raise InvalidArgumentError(f"device: {overrides['device']!r} is not one of {', '.join(DEVICE_MODES)}")
        if timeout is not None:
            if timeout <= 0:
                raise InvalidArgumentError(f"timeout: must be positive, got {timeout}")
            overrides["timeout"] = float(timeout)
        try:
            return dataclasses.replace(config, **overrides)  # type: ignore[arg-type]
        except TypeError as exc:
            raise InvalidArgumentError(f"{caller}: unknown setting ({exc})") from None
