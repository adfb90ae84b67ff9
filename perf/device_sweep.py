"""The device sweep of the GPU check (tests/gpu/device_check.sh): all_reduce, all_gather and
reduce_scatter on device buffers through the device path (cuda_ipc), over a range of sizes,
for each process count, beside the device's own device-to-device copy bandwidth measured
in the same run and the host-staged path the device path replaces.

    python -m perf.device_sweep                       # CUDA: torch tensors, 1 MiB - 1 GiB, 2 and 4 processes
    python -m perf.device_sweep --backend host ...    # the host device (COLLECTIVES_DEVICE=host): CI

Each world is started by ``collectives-run`` (fresh interpreters; every rank on GPU
``rank % device_count``). Times are nccl-tests': the slowest rank's mean over ``iters``
back-to-back calls after ``warmup`` ones, the device synchronized around them; algbw is
the collective's size over that time and busbw = algbw · 2(p-1)/p (all_reduce) or (p-1)/p
(all_gather, reduce_scatter). The copy bandwidth counts the bytes copied once (a copy of
n bytes in t: n/t; it reads and writes 2n). Every size is checked once (inputs of ones).

Ends with one line: the targets of issue 20, 2-process all_reduce busbw at >= 256 MiB
against 40 % of the copy bandwidth, and against 20x the staged path at the staged size.
Writes ``device_sweep.json`` under ``--out`` (default ``$OUT`` when set).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from perf.options import parse_size as _parse_size

ROOT = Path(__file__).resolve().parents[1]
COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter")
TARGET_COPY_SHARE = 0.40
TARGET_OVER_STAGED = 20.0
TARGET_FROM_BYTES = 256 << 20


def parse_size(text: str) -> int:
    """A size argument (8, 64K, 1M, 1G): bytes, refused when it is not one."""
    value = _parse_size(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (like 64K, 1M, 1G)")
    return value


def size_text(nbytes: int) -> str:
    return f"{nbytes >> 20} MiB" if nbytes >= 1 << 20 else f"{nbytes >> 10} KiB"


def bus_factor(collective: str, p: int) -> float:
    return 2.0 * (p - 1) / p if collective == "all_reduce" else (p - 1) / p


def sizes(low: int, high: int) -> list[int]:
    out, size = [], low
    while size <= high:
        out.append(size)
        size *= 2
    return out


# -- one rank ------------------------------------------------------------------------------------


class _Buffers:
    """Device buffers of float32 for one backend: torch on CUDA, or the host device."""

    def __init__(self, backend: str, comm: Any) -> None:
        self.backend = backend
        if backend == "cuda":
            import torch

            self.torch = torch
            self.device = torch.device("cuda", torch.cuda.current_device())
        elif comm._context.device is not None:
            self.host = comm._context.device.device  # the host device (COLLECTIVES_DEVICE=host)
        else:
            self.host = None  # the staged path on the host backend: plain numpy arrays

    def ones(self, count: int) -> Any:
        if self.backend == "cuda":
            return self.torch.ones(count, dtype=self.torch.float32, device=self.device)
        values = np.ones(count, dtype=np.float32)
        return values if self.host is None else self.host.array(values)

    def to_host(self, x: Any) -> np.ndarray:
        if self.backend == "cuda":
            return x.cpu().numpy()
        return x if isinstance(x, np.ndarray) else x.get()

    def sync(self) -> None:
        if self.backend == "cuda":
            self.torch.cuda.synchronize()
        elif self.host is not None:
            self.host.synchronize(self.host.stream)

    def copy_bandwidth(self, nbytes: int, iters: int) -> float:
        """Bytes per second of a device-to-device copy of ``nbytes`` (counted once)."""
        if self.backend == "cuda":
            torch = self.torch
            a = torch.empty(nbytes, dtype=torch.uint8, device=self.device).random_(0, 255)
            b = torch.empty_like(a)
            b.copy_(a)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                b.copy_(a)
            end.record()
            end.synchronize()
            return nbytes * iters / (start.elapsed_time(end) / 1e3)
        a = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8)
        b = np.empty_like(a)
        t0 = time.perf_counter()
        for _ in range(iters):
            np.copyto(b, a)
        return nbytes * iters / (time.perf_counter() - t0)


def _call(comm: Any, collective: str, x: Any, out: Any) -> None:
    if collective == "all_reduce":
        comm.all_reduce(x, out=out)
    elif collective == "all_gather":
        comm.all_gather(x, out)
    else:
        comm.reduce_scatter(x, out)


def _expected(collective: str, p: int) -> float:
    return float(p) if collective != "all_gather" else 1.0


def rank_main(args: argparse.Namespace) -> None:
    """One rank of a world: the measurements, printed by rank 0 as ``SWEEP {json}`` lines."""
    import collectives

    if args.backend == "cuda":  # chosen before init(), which binds the communicator to the current device
        import torch

        torch.cuda.set_device(int(os.environ["COLLECTIVES_RANK"]) % torch.cuda.device_count())
    comm = collectives.init()
    p, r = comm.size, comm.rank
    buffers = _Buffers(args.backend, comm)
    path = "cuda_ipc" if comm._context.device is not None else "staged"

    def say(record: dict[str, Any]) -> None:
        if r == 0:
            print("SWEEP " + json.dumps(record), flush=True)

    if args.copy_bytes and r == 0:
        say({"kind": "copy", "bytes": args.copy_bytes,
             "bytes_per_s": buffers.copy_bandwidth(args.copy_bytes, max(3, args.iters))})
    comm.barrier()
    for collective in args.collectives.split(","):
        for size in sizes(args.min_bytes, args.max_bytes):
            count = size // 4 // p * p  # divisible among ranks
            per_rank = count // p
            x = buffers.ones(per_rank if collective == "all_gather" else count)
            out = buffers.ones(per_rank if collective == "reduce_scatter" else count)
            _call(comm, collective, x, out)
            buffers.sync()
            wrong = int(np.count_nonzero(buffers.to_host(out) != _expected(collective, p)))
            iters = max(2, min(args.iters, (8 << 30) // max(size, 1)))
            for _ in range(args.warmup):
                _call(comm, collective, x, out)
            buffers.sync()
            comm.barrier()
            t0 = time.perf_counter()
            for _ in range(iters):
                _call(comm, collective, x, out)
            buffers.sync()
            elapsed = (time.perf_counter() - t0) / iters
            slowest = float(comm.all_gather(np.array([elapsed])).max())
            algbw = count * 4 / slowest
            say({"kind": "coll", "path": path, "procs": p, "collective": collective, "bytes": count * 4,
                 "time_us": slowest * 1e6, "algbw": algbw, "busbw": algbw * bus_factor(collective, p), "wrong": wrong})
            del x, out
    comm.close()


# -- the sweep ------------------------------------------------------------------------------------


def _world(args: argparse.Namespace, procs: int, *, staged: bool, extra: list[str]) -> tuple[list[dict[str, Any]], str]:
    """The records of one world, and what went wrong ("" when nothing did): a world that
    fails or runs past ``--timeout`` leaves the others' figures standing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTIVES_")}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["COLLECTIVES_DEVICE"] = "off" if staged else ("host" if args.backend == "host" else "auto")
    command = [sys.executable, "-m", "collectives.run", "-n", str(procs), "--no-prefix", "-m", "perf.device_sweep",
               "--rank", "--backend", args.backend, "--iters", str(args.iters), "--warmup", str(args.warmup), *extra]
    what = f"the {procs}-process {'staged' if staged else 'device'} world"
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        records = [json.loads(line[6:]) for line in out.splitlines() if line.startswith("SWEEP ")]
        return records, f"{what} ran past {args.timeout:.0f} s"
    records = [json.loads(line[6:]) for line in done.stdout.splitlines() if line.startswith("SWEEP ")]
    if done.returncode != 0:
        print(f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}", file=sys.stderr)
        return records, f"{what} failed (exit {done.returncode})"
    return records, ""


def summarize(records: list[dict[str, Any]], staged_bytes: int, errors: list[str] | None = None) -> str:
    """The one-line verdict on the targets of issue 20 (and what failed, if anything)."""
    copy = next((r["bytes_per_s"] for r in records if r["kind"] == "copy"), None)
    two = {r["bytes"]: r for r in records
           if r["kind"] == "coll" and r["path"] == "cuda_ipc" and r["procs"] == 2 and r["collective"] == "all_reduce"}
    staged = next((r for r in records if r["kind"] == "coll" and r["path"] == "staged"), None)
    wrong = sum(r.get("wrong", 0) for r in records if r["kind"] == "coll")
    parts = []
    large = [r["busbw"] for size, r in two.items() if size >= TARGET_FROM_BYTES]
    if large and copy:
        share = min(large) / copy
        parts.append(f"2-proc all_reduce busbw >= 256 MiB {min(large) / 1e9:.1f} GB/s = {share:.0%} of D2D copy "
                     f"{copy / 1e9:.1f} GB/s (target {TARGET_COPY_SHARE:.0%}: {'PASS' if share >= TARGET_COPY_SHARE else 'FAIL'})")
    else:
        parts.append("no 2-proc all_reduce at >= 256 MiB or no copy bandwidth measured")
    if staged is not None and staged["bytes"] in two:
        ratio = two[staged["bytes"]]["busbw"] / staged["busbw"]
        parts.append(f"{ratio:.0f}x the staged path at {size_text(staged['bytes'])} ({staged['busbw'] / 1e9:.2f} GB/s; "
                     f"target {TARGET_OVER_STAGED:.0f}x: {'PASS' if ratio >= TARGET_OVER_STAGED else 'FAIL'})")
    else:
        parts.append(f"no staged measurement at a swept size ({size_text(staged_bytes)})")
    parts.append(f"{wrong} wrong elements")
    parts += errors or []
    return "device_sweep: " + "; ".join(parts)


def table(records: list[dict[str, Any]]) -> str:
    lines = [f"{'path':>9} {'procs':>5} {'collective':>15} {'bytes':>12} {'time_us':>11} {'algbw GB/s':>11} "
             f"{'busbw GB/s':>11} {'wrong':>6}"]
    for r in records:
        if r["kind"] == "copy":
            lines.append(f"# device-to-device copy of {r['bytes']} bytes: {r['bytes_per_s'] / 1e9:.1f} GB/s "
                         f"({2 * r['bytes_per_s'] / 1e9:.1f} GB/s read + written)")
        else:
            lines.append(f"{r['path']:>9} {r['procs']:>5} {r['collective']:>15} {r['bytes']:>12} {r['time_us']:>11.1f} "
                         f"{r['algbw'] / 1e9:>11.2f} {r['busbw'] / 1e9:>11.2f} {r['wrong']:>6}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.device_sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("cuda", "host"), default="cuda")
    parser.add_argument("--procs", default="2,4", help="process counts, comma-separated (default 2,4)")
    parser.add_argument("--min-bytes", type=parse_size, default=1 << 20)
    parser.add_argument("--max-bytes", type=parse_size, default=1 << 30)
    parser.add_argument("--staged-bytes", type=parse_size, default=64 << 20,
                        help="size of the staged-path all_reduce (2 processes); one of the swept sizes")
    parser.add_argument("--copy-bytes", type=parse_size, default=1 << 30)
    parser.add_argument("--collectives", default=",".join(COLLECTIVES))
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=100.0, help="seconds one world may take (default 100)")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="folder for device_sweep.json (default $OUT)")
    parser.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)  # one rank of a world
    args = parser.parse_args(argv)
    if args.rank:
        rank_main(args)
        return 0
    records: list[dict[str, Any]] = []
    errors: list[str] = []
    span = ["--min-bytes", str(args.min_bytes), "--max-bytes", str(args.max_bytes), "--collectives", args.collectives]
    one = ["--min-bytes", str(args.staged_bytes), "--max-bytes", str(args.staged_bytes), "--collectives", "all_reduce",
           "--copy-bytes", "0"]
    worlds = [(int(p), False, span + ["--copy-bytes", str(args.copy_bytes if i == 0 else 0)])
              for i, p in enumerate(args.procs.split(","))] + [(2, True, one)]
    for procs, staged, extra in worlds:
        got, error = _world(args, procs, staged=staged, extra=extra)
        print(table(got), flush=True)  # as each world ends: a later failure keeps these
        records += got
        errors += [error] if error else []
    summary = summarize(records, args.staged_bytes, errors)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "device_sweep.json").write_text(json.dumps({"records": records, "summary": summary}, indent=1))
    print(summary, flush=True)
    return 1 if errors or any(r.get("wrong") for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
