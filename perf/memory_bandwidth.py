"""The physical limit on one host: single-core memory copy and add bandwidth (numpy).

A one-host collective moves bytes with copies and reductions, so these two numbers bound
what any shared-memory algorithm can reach here. Run it beside the harness:

    python -m perf.memory_bandwidth            # table on stdout
    python -m perf.memory_bandwidth --json mem.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

SIZES = (1 << 20, 16 << 20, 64 << 20)


def measure(nbytes: int, repeats: int = 5) -> dict[str, float]:
    """GB/s (10^9 B/s) of copy (dst = a) and add (dst = a + b) over float32 arrays of
    ``nbytes``, counting the bytes of one array per operation (as busbw counts payload),
    best of ``repeats``."""
    a = np.ones(nbytes // 4, dtype=np.float32)
    b = np.ones_like(a)
    dst = np.empty_like(a)
    inner = max(1, (256 << 20) // nbytes)
    out = {}
    for name, fn in (("copy", lambda: np.copyto(dst, a)), ("add", lambda: np.add(a, b, out=dst))):
        fn()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            best = min(best, (time.perf_counter() - start) / inner)
        out[name] = nbytes / best / 1e9
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args(argv)
    rows = {n: measure(n) for n in SIZES}
    print("# single-core numpy bandwidth (GB/s, one float32 array's bytes per operation)")
    print(f"# {'size':>10}  {'copy':>7}  {'add':>7}")
    for n, r in rows.items():
        print(f"  {n:>10}  {r['copy']:7.2f}  {r['add']:7.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({str(n): r for n, r in rows.items()}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
