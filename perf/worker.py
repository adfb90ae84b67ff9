"""A rank of a world started by the harness (``--np N``), and the control protocol.

The harness process (the *coordinator*) listens on a loopback socket. Every rank of every
world it starts (ours, and the ``--vs`` peers) connects to it, says hello (job token,
world, rank, pid, host, what it can run), then blocks in ``recv`` on that socket until
the coordinator sends the next command, one JSON object per line:

* ``{"cmd": "warmup", ...}`` -> ``{"ok": true}``
* ``{"cmd": "row", ...}`` (perf.bench.RowSpec) -> ``{"ok": true, "time": [...], "wrong": [...]}``
* ``{"cmd": "exit"}`` -> ``{"ok": true}``, then the rank closes its backend and exits.

Any exception is answered with ``{"error": "<traceback>"}``. Because idle ranks sit in a
blocking socket read (not in a library collective, which may busy-poll), a world that is
not being measured uses no CPU while another one is.

Run as ``python -m perf.worker --rank R --size N --store HOST:PORT`` for our library
(``perf.peers.mpi`` / ``perf.peers.gloo`` for the peers).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import traceback
from collections.abc import Callable
from typing import Any

ENV_CONTROL = "COLLECTIVES_PERF_CONTROL"  # host:port of the coordinator
ENV_TOKEN = "COLLECTIVES_PERF_TOKEN"  # proves a connection belongs to this run
ENV_WORLD = "COLLECTIVES_PERF_WORLD"  # which world this rank belongs to
ENV_STORE_SECRET = "COLLECTIVES_PERF_STORE_SECRET"  # secret of the coordinator's TCPStoreServer


def send_msg(sock: socket.socket, obj: dict[str, Any]) -> None:
    sock.sendall((json.dumps(obj) + "\n").encode())


def _connect() -> socket.socket:
    host, _, port = os.environ[ENV_CONTROL].rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def serve(backend_or_factory: Any, rank_hint: int = -1) -> None:
    """Say hello to the coordinator and run its commands until told to exit."""
    from .backend import host_name, local_device_index
    from .bench import RowSpec, run_row, warmup

    sock = _connect()
    hello: dict[str, Any] = {
        "hello": os.environ.get(ENV_WORLD, "?"),
        "token": os.environ.get(ENV_TOKEN, ""),
        "pid": os.getpid(),
        "host": host_name(),
        "rank": rank_hint,
    }
    try:
        backend = backend_or_factory() if callable(backend_or_factory) else backend_or_factory
    except BaseException:  # noqa: BLE001 - reported to the coordinator, which decides
        send_msg(sock, {**hello, "error": traceback.format_exc()})
        sock.close()
        raise SystemExit(1) from None
    device = local_device_index()
    hello.update(
        rank=backend.rank, size=backend.size, device=device if device >= 0 else backend.rank,
        info=backend.describe(), dtypes=list(backend.dtypes), ops=list(backend.ops),
    )
    send_msg(sock, hello)
    reader = sock.makefile("rb")
    try:
        for line in reader:
            msg = json.loads(line)
            cmd = msg.get("cmd")
            try:
                if cmd == "exit":
                    send_msg(sock, {"ok": True})
                    break
                if cmd == "warmup":
                    warmup(backend, msg["coll"], msg["dtype"], msg["op"], msg["root"], msg["minbytes"],
                           msg["maxbytes"], msg["iters"], msg.get("unalign", 0))
                    send_msg(sock, {"ok": True})
                elif cmd == "row":
                    result = run_row(backend, RowSpec.from_msg(msg))
                    send_msg(sock, {"ok": True, **result.to_msg()})
                else:
                    send_msg(sock, {"error": f"unknown command {cmd!r}"})
            except Exception:  # noqa: BLE001 - reported; the coordinator stops this world
                send_msg(sock, {"error": traceback.format_exc()})
    finally:
        try:
            backend.close()
        finally:
            sock.close()


def _ours_factory(args: argparse.Namespace) -> Callable[[], Any]:
    def make() -> Any:
        from collectives.store.tcp_store import TCPStore

        from .backend import CollectivesBackend

        host, _, port = args.store.rpartition(":")
        timeout = args.timeout or 600.0
        store = TCPStore(host, int(port), secret=os.environ.get(ENV_STORE_SECRET, ""), timeout=timeout)
        return CollectivesBackend.connect(args.rank, args.size, store, transport=args.transport,
                                          algorithm=args.algo, timeout=args.timeout)

    return make


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m perf.worker")
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--store", required=True, help="host:port of the coordinator's TCPStoreServer")
    parser.add_argument("--transport", default=None)
    parser.add_argument("--algo", default=None)
    parser.add_argument("--timeout", type=float, default=None)
    args = parser.parse_args(argv)
    serve(_ours_factory(args), rank_hint=args.rank)


if __name__ == "__main__":
    sys.exit(main())
