"""Moving a tensor from one Ray actor to another, three ways, side by side: the object store
(a plain actor method), Ray Direct Transport over Ray's ``"GLOO"`` transport, and over ours
(``"COLLECTIVES"``).

    python perf/ray_rdt.py                        # 8 B .. 64 MiB, 2 actors
    python perf/ray_rdt.py --sizes 1M,64M --rounds 5

One call is ``ray.get(b.consume.remote(a.produce.remote(n)))``: the producer makes the
tensor, the consumer receives it and sums it; so every figure includes two Ray task
round trips, which is what a user of either pays. Rounds alternate between the three ways
so that all see the same machine state; the table shows the median of ``--rounds`` rounds of
``--iters`` calls, per call, and the ratios against ours.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from collectives.config import parse_size  # noqa: E402

WAYS = ("object store", "GLOO", "COLLECTIVES")


def _actor_classes(ray: Any) -> dict[str, Any]:
    import torch

    class Stage:
        def produce(self, nbytes: int) -> Any:
            return torch.ones(max(nbytes // 4, 1), dtype=torch.float32)

        def consume(self, x: Any) -> float:
            return float(x.sum())

    classes = {}
    for way in WAYS:
        members: dict[str, Any] = {"consume": Stage.consume}
        if way == "object store":
            members["produce"] = Stage.produce
        else:
            members["produce"] = ray.method(tensor_transport=way)(Stage.produce)
        classes[way] = ray.remote(num_cpus=0)(type(f"Stage{way.replace(' ', '')}", (), members))
    return classes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="8,64K,1M,16M,64M")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=10)
    args = parser.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",")]

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    import ray
    from ray.experimental.collective import create_collective_group

    import collectives.ray as cray
    from collectives.ray.tensor_transport import register_tensor_transport

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    register_tensor_transport()
    classes = _actor_classes(ray)
    pairs = {way: (cls.remote(), cls.remote()) for way, cls in classes.items()}
    create_collective_group(list(pairs["GLOO"]), backend="torch_gloo", name="rdt-gloo")
    cray.create_group(list(pairs["COLLECTIVES"]), name="rdt-ours", timeout=120)

    def one_call(way: str, nbytes: int) -> float:
        a, b = pairs[way]
        return ray.get(b.consume.remote(a.produce.remote(nbytes)), timeout=300)

    print(f"# 2 actors, median of {args.rounds} rounds x {args.iters} calls; time per call in ms")
    print(f"# {'size':>10} " + " ".join(f"{w:>14}" for w in WAYS) + "   store/ours   GLOO/ours")
    for nbytes in sizes:
        for way in WAYS:  # warm up, and check
            assert one_call(way, nbytes) == max(nbytes // 4, 1)
        times: dict[str, list[float]] = {w: [] for w in WAYS}
        for _ in range(args.rounds):
            for way in WAYS:
                start = time.perf_counter()
                for _ in range(args.iters):
                    one_call(way, nbytes)
                times[way].append((time.perf_counter() - start) / args.iters * 1e3)
        med = {w: statistics.median(t) for w, t in times.items()}
        ours = med["COLLECTIVES"]
        print(f"  {nbytes:>10} " + " ".join(f"{med[w]:>14.2f}" for w in WAYS)
              + f"   {med['object store'] / ours:>10.2f}x {med['GLOO'] / ours:>10.2f}x", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
