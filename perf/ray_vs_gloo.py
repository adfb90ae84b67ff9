"""Collectives between Ray actors: ``collectives.ray`` and ``ray.util.collective``'s gloo
backend on the same actors, side by side, as ratios.

    python perf/ray_vs_gloo.py                                   # 2 and 4 actors, 8 B .. 64 MiB
    python perf/ray_vs_gloo.py --worlds 2 --sizes 8,1M --rounds 3
    python perf/ray_vs_gloo.py --kill                           # also: how long survivors take to raise

Starts a local Ray cluster and, per world size, that many actors, each in both groups: a
``create_group`` group (numpy arrays) and a ``ray.util.collective`` gloo group (torch CPU
tensors, which is what its gloo takes). Every measurement starts at a barrier of its own
library; a round is ``--iters`` calls and its time is the slowest rank's; the table shows
the median round per call, rounds alternating between the libraries so both see the same
machine state. Sizes are as nccl-tests counts them: the buffer all-reduced or broadcast,
and the whole gathered output of all_gather. Results of both are checked once per size.

``--kill`` kills rank 1 of a world of ``--kill-world`` (4) in the middle of an all_reduce loop, in each
library, and reports when each survivor raised (or that it was still blocked at
``--kill-wait`` seconds).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from collectives.config import parse_size  # noqa: E402

OPS = ("all_reduce", "all_gather", "broadcast")
GLOO = "gloo-bench"
OURS = "ours-bench"


def human(nbytes: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:g} {unit}"
    return f"{nbytes} B"


class Bencher:
    """One rank: the same collective through either library, timed between barriers."""

    def setup_gloo(self, world: int, rank: int) -> None:
        import ray.util.collective as col

        col.init_collective_group(world, rank, backend="gloo", group_name=GLOO)
        self.rank, self.world = rank, world

    def buffers(self, op: str, nbytes: int, lib: str) -> tuple[Any, Any]:
        import torch

        per_rank = nbytes // self.world if op == "all_gather" else nbytes
        n = max(per_rank // 4, 1)
        x = np.arange(n, dtype=np.float32) + self.rank
        if lib == "ours":
            out = np.empty(n * self.world, np.float32) if op == "all_gather" else None
            return x, out
        tx = torch.from_numpy(x)
        outs = [torch.empty(n, dtype=torch.float32) for _ in range(self.world)] if op == "all_gather" else None
        return tx, outs

    def bench(self, lib: str, op: str, nbytes: int, iters: int) -> tuple[float, list[float]]:
        """(seconds per call, the first 4 values of the result) for ``iters`` calls."""
        import ray.util.collective as col

        import collectives.ray as cray

        x, out = self.buffers(op, nbytes, lib)
        comm = cray.get_communicator(OURS)
        if lib == "ours":
            call = {"all_reduce": lambda: comm.all_reduce(x), "all_gather": lambda: comm.all_gather(x, out),
                    "broadcast": lambda: comm.broadcast(x, 0)}[op]
            call()  # warm: plans, the two-level levels
            comm.barrier()
        else:
            call = {"all_reduce": lambda: col.allreduce(x, GLOO), "all_gather": lambda: col.allgather(out, x, GLOO),
                    "broadcast": lambda: col.broadcast(x, 0, GLOO)}[op]
            call()
            col.barrier(GLOO)
        start = time.perf_counter()
        for _ in range(iters):
            call()
        elapsed = (time.perf_counter() - start) / iters
        result = out if op == "all_gather" else x
        flat = np.concatenate([np.asarray(t) for t in result]) if isinstance(result, list) else np.asarray(result)
        return elapsed, [float(v) for v in flat[:4]]

    def kill_loop(self, lib: str) -> tuple[str, float]:
        """All-reduce until it fails; (what was raised, when, as time.time())."""
        import ray.util.collective as col

        import collectives.ray as cray

        x = np.ones(1 << 14, np.float32)
        if lib == "ours":
            comm = cray.get_communicator(OURS)
            step = lambda: comm.all_reduce(x)  # noqa: E731
        else:
            import torch

            t = torch.from_numpy(x)
            step = lambda: col.allreduce(t, GLOO)  # noqa: E731
        try:
            while True:
                step()
        except Exception as exc:  # noqa: BLE001 - reported, not handled
            return f"{type(exc).__name__}: {str(exc)[:120]}", time.time()


def iterations(nbytes: int, base: int) -> int:
    return max(3, min(base, int(base * (1 << 16) / max(nbytes, 1))))


def measure(ray: Any, args: argparse.Namespace, world: int) -> list[tuple[str, int, int, float, float]]:
    import collectives.ray as cray

    actors = [ray.remote(num_cpus=0)(Bencher).remote() for _ in range(world)]
    ray.get([a.__ray_call__.remote(lambda self: cray.register()) for a in actors], timeout=120)
    cray.create_group(actors, OURS, timeout=args.timeout)
    ray.get([a.setup_gloo.remote(world, r) for r, a in enumerate(actors)], timeout=120)
    rows = []
    try:
        for op in OPS:
            for nbytes in args.sizes:
                iters = iterations(nbytes, args.iters)
                times: dict[str, list[float]] = {"ours": [], "gloo": []}
                firsts: dict[str, list[float]] = {}
                for _ in range(args.rounds):
                    for lib in ("ours", "gloo"):
                        got = ray.get([a.bench.remote(lib, op, nbytes, iters) for a in actors], timeout=args.timeout)
                        times[lib].append(max(t for t, _ in got))
                        firsts[lib] = got[-1][1]
                if not np.allclose(firsts["ours"], firsts["gloo"]):
                    raise SystemExit(f"{op} {human(nbytes)}: ours {firsts['ours']} != gloo {firsts['gloo']}")
                ours, gloo = statistics.median(times["ours"]), statistics.median(times["gloo"])
                rows.append((op, world, nbytes, ours, gloo))
                print(f"{op:>10} {world:>5} {human(nbytes):>9} {ours * 1e6:>12.1f} {gloo * 1e6:>12.1f} "
                      f"{gloo / ours:>8.1f}x", flush=True)
    finally:
        cray.destroy_group(OURS)
        for a in actors:
            ray.kill(a)
    return rows


def kill_test(ray: Any, args: argparse.Namespace) -> None:
    import collectives.ray as cray

    for lib in ("ours", "gloo"):
        actors = [ray.remote(num_cpus=0)(Bencher).remote() for _ in range(args.kill_world)]
        ray.get([a.__ray_call__.remote(lambda self: cray.register()) for a in actors], timeout=120)
        cray.create_group(actors, OURS, timeout=args.kill_timeout)
        if lib == "gloo":
            ray.get([a.setup_gloo.remote(args.kill_world, r) for r, a in enumerate(actors)], timeout=120)
        loops = [a.kill_loop.remote(lib) for a in actors]
        time.sleep(1.0)
        ray.kill(actors[1])
        killed = time.time()
        for rank in [r for r in range(args.kill_world) if r != 1]:
            ready, _ = ray.wait([loops[rank]], timeout=args.kill_wait)
            if ready:
                what, at = ray.get(loops[rank])
                print(f"{lib:>5} rank {rank}: raised after {at - killed:.2f} s: {what}", flush=True)
            else:
                print(f"{lib:>5} rank {rank}: still blocked after {args.kill_wait:g} s", flush=True)
        try:
            cray.destroy_group(OURS)
        except Exception as exc:  # noqa: BLE001 - blocked gloo ranks cannot leave
            print(f"{lib:>5}: destroy_group: {type(exc).__name__}", flush=True)
        for a in actors:
            ray.kill(a)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", default="2,4", help="actor counts (default 2,4)")
    parser.add_argument("--sizes", default="8,64K,1M,16M,64M", help="bytes (default 8,64K,1M,16M,64M)")
    parser.add_argument("--iters", type=int, default=100, help="calls per round at 64 KiB and below (fewer above)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--kill", action="store_true", help="also time survivors of a killed actor")
    parser.add_argument("--kill-timeout", type=float, default=10.0, help="our group's timeout in the --kill test")
    parser.add_argument("--kill-world", type=int, default=4, help="actors in the --kill test (rank 1 is killed)")
    parser.add_argument("--kill-wait", type=float, default=30.0, help="seconds to wait for each survivor")
    args = parser.parse_args(argv)
    args.sizes = [max(parse_size(s, "--sizes"), 4) for s in args.sizes.split(",")]
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    print(f"# ray {ray.__version__}, {os.cpu_count()} CPUs; median of {args.rounds} rounds; "
          "us per call, slowest rank; ratio = gloo / ours", flush=True)
    print(f"{'op':>10} {'world':>5} {'size':>9} {'ours us':>12} {'gloo us':>12} {'ratio':>9}", flush=True)
    try:
        for world in (int(w) for w in args.worlds.split(",")):
            measure(ray, args, world)
        if args.kill:
            kill_test(ray, args)
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
