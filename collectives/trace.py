"""``collectives-trace FILE...``: line up the flight-recorder dumps of all ranks.

Reads the JSON-lines dumps that ranks wrote (``COLLECTIVES_TRACE_FILE``, SIGUSR2 or
``comm.dump_trace()``; see :mod:`collectives.flight_recorder`), groups them by
communicator, lines the ranks' operations up by sequence number and names the first one
where they differ: another collective, dtype, count, root or reduce op, or ranks that
never reached it. Prints the last operations before it side by side.

Exit status: 0 when the ranks agree on every operation they all remember, 1 when they
differ somewhere (or a rank's dump is missing), 2 when a file cannot be read.

    collectives-trace /tmp/trace.*.jsonl
    python -m collectives.trace /tmp/trace.*.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

COMPARED = ("op", "dtype", "count", "root", "reduce_op")
"""The fields every rank must agree on (the algorithm may differ where it is "auto")."""
CONTEXT = 4
"""Operations shown before the first difference."""


@dataclass
class Group:
    """The dumps of one communicator: its size and each rank's operations by seq."""

    name: str
    size: int = 0
    ops: dict[int, dict[int, dict[str, Any]]] = field(default_factory=dict)  # rank -> seq -> record

    def last(self, rank: int) -> int:
        return max(self.ops[rank], default=-1)

    def first(self, rank: int) -> int:
        return min(self.ops[rank], default=0)


def load(paths: Sequence[str]) -> dict[str, Group]:
    """Every communicator found in ``paths``, by name."""
    groups: dict[str, Group] = {}
    for path in paths:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not a JSON line ({exc})") from None
                group = groups.setdefault(str(record.get("comm")), Group(str(record.get("comm"))))
                rank = int(record["rank"])
                ranks_ops = group.ops.setdefault(rank, {})
                if record.get("kind") == "communicator":
                    group.size = max(group.size, int(record.get("size", 0)))
                elif record.get("kind") == "op":
                    ranks_ops[int(record["seq"])] = record
    return groups


def describe(record: dict[str, Any] | None) -> str:
    """One operation in a few words: ``all_reduce float32 x4 sum [completed]``."""
    if record is None:
        return "-"
    words = [str(record.get("op"))]
    if record.get("dtype"):
        words.append(str(record["dtype"]))
    if record.get("count") is not None:
        words.append(f"x{record['count']}")
    if record.get("reduce_op"):
        words.append(str(record["reduce_op"]))
    if record.get("root") is not None:
        words.append(f"root={record['root']}")
    return " ".join(words) + f" [{record.get('state')}]"


def first_difference(group: Group) -> tuple[int, str] | None:
    """(seq, what differs) at the first operation the ranks do not agree on, else None.
    A rank whose ring no longer holds a seq is left out of that seq's comparison."""
    ranks = sorted(group.ops)
    missing = [r for r in range(group.size) if r not in group.ops]
    if missing:
        return -1, f"no dump from rank(s) {', '.join(map(str, missing))}"
    seqs = sorted({s for r in ranks for s in group.ops[r]})
    for seq in seqs:
        present = {r: group.ops[r][seq] for r in ranks if seq in group.ops[r]}
        absent = [r for r in ranks if seq not in group.ops[r] and seq > group.last(r)]
        if absent:
            have = ", ".join(map(str, sorted(present)))
            lines = [f"rank(s) {have} reached {describe(next(iter(present.values())))}"]
            for r in absent:
                last = group.ops[r].get(group.last(r))
                lines.append(f"rank {r} never reached it (its last: #{group.last(r)} {describe(last)})")
            return seq, "; ".join(lines)
        for name in COMPARED:
            values = {r: rec.get(name) for r, rec in present.items()}
            if len({json.dumps(v) for v in values.values()}) > 1:
                by_rank = ", ".join(f"rank {r}: {v}" for r, v in sorted(values.items()))
                return seq, f"the ranks differ on {name} ({by_rank})"
    return None


def report(group: Group, out: Any) -> bool:
    """Print ``group``'s verdict and context; returns whether the ranks differ."""
    found = first_difference(group)
    ranks = sorted(group.ops)
    print(f"communicator {group.name}: {group.size or len(ranks)} rank(s), dumps from {len(ranks)}", file=out)
    if found is None:
        lo = max((group.first(r) for r in ranks), default=0)
        hi = min((group.last(r) for r in ranks), default=0)
        print(f"  the ranks agree on every operation they all remember (#{lo} to #{hi})", file=out)
        unfinished = [(r, group.ops[r][s]) for r in ranks for s in group.ops[r] if group.ops[r][s].get("state") != "completed"]
        for r, record in unfinished:
            print(f"  rank {r}: #{record['seq']} {describe(record)}{'  ' + record['error'] if record.get('error') else ''}",
                  file=out)
        return False
    seq, what = found
    if seq < 0:
        print(f"  {what}", file=out)
        return True
    print(f"  first difference at #{seq}: {what}", file=out)
    shown = [s for s in sorted({s for r in ranks for s in group.ops[r]}) if seq - CONTEXT <= s <= seq]
    width = 34
    print("  " + "seq".rjust(6) + "  " + "".join(f"rank {r}".ljust(width) for r in ranks), file=out)
    for s in shown:
        cells = "".join(describe(group.ops[r].get(s))[: width - 1].ljust(width) for r in ranks)
        print(f"  {('#' + str(s)).rjust(6)}  {cells}", file=out)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="collectives-trace", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="flight-recorder dumps (JSON lines), one or more per rank")
    args = parser.parse_args(argv)
    try:
        groups = load(args.files)
    except (OSError, ValueError, KeyError) as exc:
        print(f"collectives-trace: {exc}", file=sys.stderr)
        return 2
    if not groups:
        print("collectives-trace: no operations in these files", file=sys.stderr)
        return 2
    differ = False
    for name in sorted(groups):
        differ = report(groups[name], sys.stdout) or differ
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
