"""``--plot FILE.png``: algbw and busbw against size (matplotlib, Agg backend)."""

from __future__ import annotations

from typing import Any

from .colls import Collective


def write_plot(path: str, coll: Collective, result: Any, peers: list[str]) -> str | None:
    """Draw the sweep into ``path``; return why not (None when written)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib); no plot written"

    series: dict[tuple[str, str], list[tuple[int, float, float]]] = {}
    for row in result.rows:
        if row.size <= 0:
            continue
        block = f"{row.type} {row.redop}" + (f" root {row.root}" if row.root >= 0 else "")
        for place, cell in zip(("out-of-place", "in-place"), row.cells):
            series.setdefault((f"collectives {place}", block), []).append((row.size, cell.algbw, cell.busbw))
        for name in peers:
            cells = row.peers.get(name)
            if cells:
                for place, cell in zip(("out-of-place", "in-place"), cells):
                    series.setdefault((f"{name} {place}", block), []).append((row.size, cell.algbw, cell.busbw))
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharex=True)
    blocks = sorted({b for _, b in series})
    for (who, block), points in sorted(series.items()):
        xs = [p[0] for p in points]
        style = "-" if who.startswith("collectives") else "--"
        marker = "o" if "out-of-place" in who else "s"
        label = who if len(blocks) == 1 else f"{who}, {block}"
        axes[0].plot(xs, [p[1] for p in points], style, marker=marker, markersize=3, label=label)
        axes[1].plot(xs, [p[2] for p in points], style, marker=marker, markersize=3, label=label)
    for ax, what in zip(axes, ("algbw", "busbw")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("size (bytes)")
        ax.set_ylabel(f"{what} (GB/s)")
        ax.set_title(f"{coll.program}: {what}")
        ax.grid(True, which="both", alpha=0.3)
    if series:
        axes[1].legend(fontsize="small")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        return f"cannot write {path}: {exc}"
    finally:
        plt.close(fig)
    return None
