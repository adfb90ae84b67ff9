"""Markdown tables from harness JSON files (``--json``), for docs/performance.md.

    python -m perf.summarize docs/perf/all_reduce_shm_np2.json ...

One table per file: size, then busbw (GB/s) of collectives and of each peer, out-of-place
and in-place, and the in-place busbw ratio collectives / peer (> 1: collectives faster).
"""

from __future__ import annotations

import json
import sys


def table(path: str) -> str:
    with open(path) as f:
        data = json.load(f)
    env = data.get("environment", {})
    peers = sorted(env.get("peers", {}))
    title = " ".join(data.get("args", [path])[:1]) + (
        f" — {env.get('world_size')} ranks, {env.get('transport')}, algorithm {env.get('algorithm')}"
    )
    head = ["size (B)", "ours oop", "ours ip"]
    for p in peers:
        head += [f"{p} oop", f"{p} ip", f"ip ratio vs {p}"]
    lines = [f"**{title}** (busbw GB/s; oop out-of-place, ip in-place)", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for row in data["results"]:
        ours_ip = row["in_place"]["bus_bw"]
        cells = [str(row["size"]), f"{row['out_of_place']['bus_bw']:.2f}", f"{ours_ip:.2f}"]
        for p in peers:
            peer = row.get("peers", {}).get(p)
            if not peer:
                cells += ["n/a"] * 3
                continue
            pip = peer["in_place"]["bus_bw"]
            ratio = ours_ip / pip if pip else float("inf")
            # busbw rounds to 0 for tiny sizes: compare times there instead
            if row["size"] < 4096:
                ratio = peer["in_place"]["time"] / row["in_place"]["time"]
            cells += [f"{peer['out_of_place']['bus_bw']:.2f}", f"{pip:.2f}", f"{ratio:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    print("\n\n".join(table(p) for p in paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
