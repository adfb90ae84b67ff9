"""A harness run under the kernel's scheduler trace, its slow calls lined up with who ran where.

    python perf/sched_trace.py run DIR -- python -m perf sendrecv_perf --np 4 -b 4M -e 4M -n 50 -c 0
    python perf/sched_trace.py report DIR [--slow_ms 1] [--factor 3] [--show 12] [--json F]

``run`` (root; Linux tracefs) opens a tracefs instance of its own (``instances/perf_sched_trace``,
so that another tracer's settings are left alone) with ``trace_clock`` mono, records
``sched_switch``, ``sched_waking``/``sched_wakeup``, ``sched_migrate_task``, the local timer's
ticks and the ``futex`` system calls (``--syscalls`` adds others by number, e.g. 24 for
``sched_yield``) while the command runs with ``PERF_CALL_LOG=DIR/calls``, under which every rank of
every ``--np`` world appends each cell's per-call end times on CLOCK_MONOTONIC (perf/bench.py).
``report`` reads both and prints each cell's per-rank median call, then for each slow call (over
``--slow_ms`` and ``--factor`` times the rank's median call, on any rank) each rank's part of it:
the time it ran (by CPU), was off its CPU while runnable (preempted, or a ``sched_yield`` that
let another task run), slept, and waited between its wake-up and running (with the waker), its
migrations and its long futex calls; and each CPU's tasks over the call (our ranks as ``O<rank>``,
a peer library's as ``M<rank>``, anything else by name and pid: the outsiders) and its longest
gap between timer ticks. The count of slow calls per cell, and how many had an outsider holding
a CPU for ``--outsider_ms`` or more, close the report. What it found: docs/performance.md,
"Forty-seventh round, the stalls under the scheduler's trace".
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
INSTANCE = "perf_sched_trace"
EVENTS = ("sched/sched_switch", "sched/sched_waking", "sched/sched_wakeup", "sched/sched_wakeup_new",
          "sched/sched_migrate_task", "irq_vectors/local_timer_entry")
FUTEX = 202  # x86-64's futex number (the syscalls traced by default)
CALL_LOG_ENV = "PERF_CALL_LOG"  # perf.bench.CALL_LOG_ENV (kept equal by tests/perf/test_sched_trace.py)

LINE = re.compile(r"^\s*(.+)-(\d+)\s+\[(\d+)\]\s+\S+\s+(\d+)\.(\d+):\s+(\w+):\s*(.*)$")
PAIR = re.compile(r"(\w+)=(\S+)")


@dataclass(frozen=True)
class Event:
    ns: int
    cpu: int
    comm: str  # the task that was running when the event was recorded
    pid: int
    name: str
    text: str

    def fields(self) -> dict[str, str]:
        """``key=value`` pairs of the event (a switch's ``prev_*`` and ``next_*`` both)."""
        return dict(PAIR.findall(self.text.replace("==>", " ")))


def parse_line(line: str) -> Event | None:
    """One line of a tracefs ``trace`` file (None for comments and lines of other formats)."""
    m = LINE.match(line)
    if m is None or line.startswith("#"):
        return None
    comm, pid, cpu, sec, frac, name, text = m.groups()
    return Event(int(sec) * 1_000_000_000 + int(frac.ljust(9, "0")[:9]), int(cpu), comm, int(pid), name, text)


def parse(lines: Any) -> list[Event]:
    events = [e for e in (parse_line(line) for line in lines) if e is not None]
    events.sort(key=lambda e: e.ns)
    return events


@dataclass
class Off:
    """A stretch a task spent off its CPU: from switched out (``state``: R runnable, S/D asleep) to run."""

    out: int
    back: int
    state: str
    woken: int | None = None
    waker: str = ""


@dataclass
class Timeline:
    """Who ran on each CPU when, and each task's stretches off its CPU, migrations and futex calls."""

    runs: dict[int, list[tuple[int, int, int, str]]] = field(default_factory=lambda: collections.defaultdict(list))
    offs: dict[int, list[Off]] = field(default_factory=lambda: collections.defaultdict(list))
    moves: dict[int, list[tuple[int, int, int, str]]] = field(default_factory=lambda: collections.defaultdict(list))
    futex: dict[int, list[tuple[int, int]]] = field(default_factory=lambda: collections.defaultdict(list))
    ticks: dict[int, list[int]] = field(default_factory=lambda: collections.defaultdict(list))

    @classmethod
    def build(cls, events: list[Event]) -> Timeline:
        t = cls()
        if not events:
            return t
        first, last = events[0].ns, events[-1].ns
        on_cpu: dict[int, tuple[int, int, str]] = {}
        switched_out: dict[int, tuple[int, str]] = {}
        woken: dict[int, tuple[int, str]] = {}
        in_syscall: dict[int, int] = {}
        for e in events:
            if e.name == "sched_switch":
                f = e.fields()
                prev, nxt = int(f["prev_pid"]), int(f["next_pid"])
                start, pid, comm = on_cpu.get(e.cpu, (first, prev, f["prev_comm"]))
                t.runs[e.cpu].append((start, e.ns, pid, comm))
                on_cpu[e.cpu] = (e.ns, nxt, f["next_comm"])
                if prev:
                    switched_out[prev] = (e.ns, f["prev_state"])
                if nxt and nxt in switched_out:
                    out, state = switched_out.pop(nxt)
                    w = woken.get(nxt)
                    t.offs[nxt].append(Off(out, e.ns, state, w[0] if w else None, w[1] if w else ""))
                woken.pop(nxt, None)
            elif e.name == "sched_waking":
                pid = int(e.fields()["pid"])
                woken.setdefault(pid, (e.ns, f"{e.comm}-{e.pid}"))
            elif e.name == "sched_migrate_task":
                f = e.fields()
                t.moves[int(f["pid"])].append((e.ns, int(f["orig_cpu"]), int(f["dest_cpu"]), f"{e.comm}-{e.pid}"))
            elif e.name == "sys_enter":
                in_syscall[e.pid] = e.ns
            elif e.name == "sys_exit" and e.pid in in_syscall:
                t.futex[e.pid].append((in_syscall.pop(e.pid), e.ns))
            elif e.name == "local_timer_entry":
                t.ticks[e.cpu].append(e.ns)
        for cpu, (start, pid, comm) in on_cpu.items():
            t.runs[cpu].append((start, last, pid, comm))
        return t

    def share(self, cpu: int, lo: int, hi: int) -> collections.Counter[tuple[int, str]]:
        """ns each task (pid, comm) ran on ``cpu`` within [lo, hi); pid 0 is idle."""
        c: collections.Counter[tuple[int, str]] = collections.Counter()
        for s, e, pid, comm in self.runs.get(cpu, []):
            if e > lo and s < hi:
                c[(pid, comm)] += min(e, hi) - max(s, lo)
        return c

    def ran(self, pid: int, lo: int, hi: int) -> dict[int, int]:
        """ns ``pid`` ran on each CPU within [lo, hi)."""
        out: dict[int, int] = collections.defaultdict(int)
        for cpu, runs in self.runs.items():
            for s, e, p, _ in runs:
                if p == pid and e > lo and s < hi:
                    out[cpu] += min(e, hi) - max(s, lo)
        return dict(out)


@dataclass
class RankPart:
    """One rank's part of a slow call (ns)."""

    ran: dict[int, int]
    runnable_off: int  # off its CPU while runnable: preempted, or yielded to another task
    asleep: int
    woken_waiting: int  # between its wake-up and running
    late_wakes: list[tuple[int, int, str]]  # (woken at, ran at, waker) where that took over 300 us
    moves: list[tuple[int, int, int, str]]
    long_syscalls: list[int]  # traced syscalls over 100 us


def rank_part(t: Timeline, pid: int, lo: int, hi: int) -> RankPart:
    runnable = asleep = woken_waiting = 0
    late = []
    for o in t.offs.get(pid, []):
        if o.back <= lo or o.out >= hi:
            continue
        a, b = max(o.out, lo), min(o.back, hi)
        if o.state.startswith("R"):
            runnable += b - a
        elif o.woken is None:
            asleep += b - a
        else:
            asleep += max(0, min(o.woken, hi) - a)
            woken_waiting += max(0, b - max(o.woken, a))
            if o.back - o.woken > 300_000:
                late.append((o.woken, o.back, o.waker))
    syscalls = [e - s for s, e in t.futex.get(pid, []) if e > lo and s < hi and e - s > 100_000]
    moves = [m for m in t.moves.get(pid, []) if lo <= m[0] <= hi]
    return RankPart(t.ran(pid, lo, hi), runnable, asleep, woken_waiting, late, moves, syscalls)


@dataclass
class Cell:
    """One rank's cell from the call log."""

    pid: int
    rank: int
    peer: bool  # a --vs world's rank (not our library's)
    coll: str
    nbytes: int
    in_place: bool
    start: int
    ends: list[int]

    @property
    def calls(self) -> list[tuple[int, int]]:
        edges = [self.start] + self.ends
        return list(zip(edges, edges[1:]))

    @property
    def name(self) -> str:
        return f"{'M' if self.peer else 'O'}{self.rank}"


def read_cells(folder: str) -> list[Cell]:
    cells = []
    for path in sorted(glob.glob(os.path.join(folder, "*.jsonl"))):
        with open(path) as fh:
            for line in fh:
                r = json.loads(line)
                cells.append(Cell(r["pid"], r["rank"], "Collectives" not in r["backend"], r["coll"], r["bytes"],
                                  r["in_place"], r["start"], r["ends"]))
    return cells


def worlds(cells: list[Cell]) -> list[list[Cell]]:
    """The cells of one world and row, rank by rank: each rank's k-th cell with the others' k-th."""
    by_pid: dict[int, list[Cell]] = collections.defaultdict(list)
    for c in cells:
        by_pid[c.pid].append(c)
    by_world: dict[bool, list[int]] = collections.defaultdict(list)
    for pid, cs in by_pid.items():
        cs.sort(key=lambda c: c.start)
        by_world[cs[0].peer].append(pid)
    out = []
    for peer in sorted(by_world):
        pids = sorted(by_world[peer], key=lambda p: by_pid[p][0].rank)
        for k in range(min(len(by_pid[p]) for p in pids)):
            out.append([by_pid[p][k] for p in pids])
    return out


def slow_calls(world: list[Cell], slow_ns: float, factor: float) -> list[int]:
    """Indices of the calls that took over ``slow_ns`` and ``factor`` times the rank's median on some rank."""
    n = min(len(c.ends) for c in world)
    medians = []
    for c in world:
        d = sorted(e - s for s, e in c.calls)
        medians.append(d[len(d) // 2] if d else 0)
    return [i for i in range(n)
            if any(c.calls[i][1] - c.calls[i][0] > max(slow_ns, factor * m) for c, m in zip(world, medians))]


def label(pid: int, comm: str, names: dict[int, str]) -> str:
    return "idle" if pid == 0 else names.get(pid, f"{comm}-{pid}")


def outsider_ns(t: Timeline, lo: int, hi: int, names: dict[int, str]) -> tuple[int, str]:
    """The longest time one task that is no rank held a CPU within [lo, hi), and who."""
    best, who = 0, ""
    for cpu in t.runs:
        for (pid, comm), ns in t.share(cpu, lo, hi).items():
            if pid != 0 and pid not in names and ns > best:
                best, who = ns, f"{comm}-{pid} on cpu{cpu}"
    return best, who


SCHED_YIELD = 24  # x86-64's sched_yield, for ``--syscalls 202,24``


@dataclass
class Crowding:
    """Within a library's timed cells: the stretches (ns) in which a CPU sat idle while a rank of that library
    was runnable in another CPU's queue (the balancer did not pull it), and, where ``sched_yield`` was traced,
    the yields that found a rank of theirs queued on their own CPU and returned without a switch (EEVDF lets a
    yielder run on while the others queued there are not eligible)."""

    idle_beside_queued: dict[str, list[int]] = field(default_factory=lambda: collections.defaultdict(list))
    yields: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)

    @classmethod
    def measure(cls, events: list[Event], library: dict[int, str], windows: list[tuple[int, int, str]]) -> Crowding:
        """``library``: each rank's pid -> "O" or "M"; ``windows``: (start, end, library) of the timed cells."""
        c = cls()
        windows = sorted(windows)
        queued: dict[int, int] = {}  # pid -> the CPU whose queue it waits in
        running: dict[int, int] = {}  # cpu -> pid
        opened: dict[int, tuple[int, str]] = {}  # idle cpu -> (since, library)
        in_yield: dict[int, tuple[int, bool]] = {}  # pid -> (cpu, found one of its library queued there)
        switched: set[int] = set()
        cpus: set[int] = set()

        def window(ns: int) -> str | None:
            for a, b, lib in windows:
                if a <= ns <= b:
                    return lib
                if a > ns:
                    break
            return None

        for e in events:
            cpus.add(e.cpu)
            if e.name == "sched_switch":
                f = e.fields()
                prev, nxt = int(f["prev_pid"]), int(f["next_pid"])
                if prev and f["prev_state"].startswith("R"):
                    queued[prev] = e.cpu
                else:
                    queued.pop(prev, None)
                queued.pop(nxt, None)
                running[e.cpu] = nxt
                if prev in in_yield:
                    switched.add(prev)
            elif e.name == "sched_wakeup":
                pid = int(e.fields()["pid"])
                if pid not in running.values():
                    queued[pid] = int(e.fields()["target_cpu"])
            elif e.name == "sched_migrate_task":
                pid = int(e.fields()["pid"])
                if pid in queued:
                    queued[pid] = int(e.fields()["dest_cpu"])
            elif e.name in ("sys_enter", "sys_exit") and e.pid in library and e.text.split()[1:2] == [str(SCHED_YIELD)]:
                lib = library[e.pid]
                if e.name == "sys_enter":
                    if window(e.ns) == lib:
                        mates = any(q == e.cpu and library.get(p) == lib and p != e.pid for p, q in queued.items())
                        in_yield[e.pid] = (e.cpu, mates)
                        switched.discard(e.pid)
                elif e.pid in in_yield:
                    _, mates = in_yield.pop(e.pid)
                    c.yields[(lib, "all")] += 1
                    if mates:
                        c.yields[(lib, "queued")] += 1
                        c.yields[(lib, "kept")] += e.pid not in switched
                continue
            else:
                continue
            lib_now = window(e.ns)
            for cpu in cpus:
                waiting = lib_now is not None and running.get(cpu) == 0 and any(
                    q != cpu and library.get(p) == lib_now for p, q in queued.items())
                if waiting and cpu not in opened:
                    opened[cpu] = (e.ns, lib_now or "")
                elif not waiting and cpu in opened:
                    since, lib = opened.pop(cpu)
                    c.idle_beside_queued[lib].append(e.ns - since)
        return c

    def lines(self, cell_ns: dict[str, int]) -> list[str]:
        out = []
        for lib in sorted(cell_ns):
            st = sorted(self.idle_beside_queued.get(lib, []))
            long = [x for x in st if x > 100_000]
            out.append(f"  {lib}: a CPU idle while a rank of theirs was queued on another: {sum(st) / 1e6:.1f} ms of "
                       f"{cell_ns[lib] / 1e6:.1f} ms of timed cells, {len(long)} stretches over 100 us, longest "
                       f"{(st[-1] if st else 0) / 1e3:.0f} us")
        for lib in sorted({k[0] for k in self.yields}):
            y = self.yields
            out.append(f"  {lib}: sched_yield calls {y[(lib, 'all')]}, {y[(lib, 'queued')]} of them with a rank of "
                       f"theirs queued on their CPU, of which {y[(lib, 'kept')]} returned without a switch")
        return out


def report(folder: str, slow_ms: float, factor: float, show: int, outsider_ms: float) -> tuple[list[str], list[dict]]:
    """The report's lines and, for each slow call, a record (for ``--json``)."""
    with open(os.path.join(folder, "trace.txt")) as fh:
        events = parse(fh)
    t = Timeline.build(events)
    cells = read_cells(os.path.join(folder, "calls"))
    names = {c.pid: c.name for c in cells}
    windows = [(min(c.start for c in w), max(c.ends[-1] for c in w if c.ends), "M" if w[0].peer else "O")
               for w in worlds(cells) if all(c.ends for c in w)]
    cell_ns: collections.Counter[str] = collections.Counter()
    for a, b, lib in windows:
        cell_ns[lib] += b - a
    crowding = Crowding.measure(events, {c.pid: c.name[0] for c in cells}, windows)
    lines: list[str] = []
    records: list[dict] = []
    counts: dict[str, list[int]] = {}
    us = 1e3
    for world in worlds(cells):
        c0 = world[0]
        cell = f"{'M' if c0.peer else 'O'} {c0.coll} {c0.nbytes} {'in' if c0.in_place else 'out'}"
        meds = []
        for c in world:
            d = sorted(e - s for s, e in c.calls)
            meds.append(round(d[len(d) // 2] / us, 1) if d else 0.0)
        mean = sum((c.ends[-1] - c.start) / len(c.ends) for c in world if c.ends) / len(world) / us
        lines.append(f"cell {cell}: median call by rank {meds} us, mean call {mean:.1f} us")
        slow = slow_calls(world, slow_ms * 1e6, factor)
        held = 0
        for i in slow:
            lo = min(c.calls[i][0] for c in world)
            hi = max(c.calls[i][1] for c in world)
            o_ns, o_who = outsider_ns(t, lo, hi, names)
            held += o_ns >= outsider_ms * 1e6
            rec: dict[str, Any] = {"cell": cell, "call": i, "window_us": (hi - lo) / us,
                                   "outsider_us": o_ns / us, "outsider": o_who, "ranks": {}, "cpus": {}}
            records.append(rec)
            if len(records) > show:
                continue
            lines.append(f"  slow call {i}: {(hi - lo) / us:.0f} us from the first rank's start to the last's end;"
                         f" longest outsider {o_ns / us:.0f} us ({o_who or '-'})")
            for c in world:
                s, e = c.calls[i]
                p = rank_part(t, c.pid, s, e)
                ran = ", ".join(f"cpu{k} {v / us:.0f}" for k, v in sorted(p.ran.items())) or "0"
                text = (f"    {c.name}: call {(e - s) / us:.0f} us [{(s - lo) / us:+.0f}, {(e - lo) / us:+.0f}]"
                        f" ran {ran}"
                        f"; runnable off its CPU {p.runnable_off / us:.0f}; asleep {p.asleep / us:.0f};"
                        f" woken, waiting {p.woken_waiting / us:.0f}; syscalls > 100 us "
                        f"{[round(x / us) for x in p.long_syscalls]}; moves {[(m[1], m[2]) for m in p.moves]}")
                lines.append(text)
                for w, b, by in p.late_wakes:
                    wpid = int(by.rsplit("-", 1)[1]) if "-" in by else -1
                    lines.append(f"      woken at {(w - lo) / us:+.0f} by {label(wpid, by.rsplit('-', 1)[0], names)},"
                                 f" ran at {(b - lo) / us:+.0f} ({(b - w) / us:.0f} us later)")
                rec["ranks"][c.name] = text.strip()
            for cpu in sorted(t.runs):
                share = sorted(t.share(cpu, lo, hi).items(), key=lambda kv: -kv[1])
                ticks = [x for x in t.ticks.get(cpu, []) if lo <= x <= hi]
                gap = max((b - a for a, b in zip(ticks, ticks[1:])), default=0)
                text = ", ".join(f"{label(pid, comm, names)} {ns / us:.0f}" for (pid, comm), ns in share[:8])
                lines.append(f"    cpu{cpu}: {text}; ticks {len(ticks)}, longest gap {gap / us:.0f} us")
                rec["cpus"][cpu] = text
        counts[cell] = [len(slow), held, min(len(c.ends) for c in world)]
    lines.append(f"slow calls (over {slow_ms} ms and {factor}x the rank's median) per cell, "
                 f"those with an outsider on a CPU for {outsider_ms} ms or more, calls:")
    for cell, (n, held, calls) in counts.items():
        if n:
            lines.append(f"  {cell}: {n} ({held}) of {calls}")
    lines.append("crowding within the timed cells (O: our library, M: the --vs peer's):")
    lines.extend(crowding.lines(dict(cell_ns)))
    return lines, records


# -- recording -------------------------------------------------------------------------------


def tracefs() -> str:
    """The mounted tracefs (mounting it where it is absent: root only)."""
    for root in TRACEFS:
        if os.path.exists(os.path.join(root, "instances")):
            return root
    subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS[0]], check=True)
    return TRACEFS[0]


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def record(folder: str, command: list[str], buffer_kb: int, syscalls: list[int]) -> int:
    """Run ``command`` under the trace; write DIR/trace.txt, DIR/calls/, DIR/meta.json. Its exit status."""
    inst = os.path.join(tracefs(), "instances", INSTANCE)
    os.makedirs(inst, exist_ok=True)
    os.makedirs(os.path.join(folder, "calls"), exist_ok=True)
    _write(f"{inst}/tracing_on", "0")
    _write(f"{inst}/trace_clock", "mono")
    _write(f"{inst}/buffer_size_kb", str(buffer_kb))
    for ev in EVENTS:
        _write(f"{inst}/events/{ev}/enable", "1")
    wanted = " || ".join(f"id == {n}" for n in syscalls)
    for ev in ("sys_enter", "sys_exit"):
        _write(f"{inst}/events/raw_syscalls/{ev}/filter", wanted)
        _write(f"{inst}/events/raw_syscalls/{ev}/enable", "1")
    _write(f"{inst}/trace", "")
    meta: dict[str, Any] = {"command": command, "start_utc": time.strftime("%H:%M:%S", time.gmtime()),
                            "load_before": open("/proc/loadavg").read().split()[:3]}
    env = {**os.environ, CALL_LOG_ENV: os.path.join(os.path.abspath(folder), "calls")}
    _write(f"{inst}/tracing_on", "1")
    try:
        rc = subprocess.run(command, env=env).returncode
    finally:
        _write(f"{inst}/tracing_on", "0")
    meta.update(end_utc=time.strftime("%H:%M:%S", time.gmtime()), load_after=open("/proc/loadavg").read().split()[:3],
                returncode=rc)
    lost = 0
    for stats in glob.glob(f"{inst}/per_cpu/cpu*/stats"):
        for line in open(stats):
            if line.startswith("overrun:"):
                lost += int(line.split()[1])
    meta["events_lost"] = lost
    with open(f"{inst}/trace") as src, open(os.path.join(folder, "trace.txt"), "w") as dst:
        for line in src:
            dst.write(line)
    for ev in EVENTS:
        _write(f"{inst}/events/{ev}/enable", "0")
    for ev in ("sys_enter", "sys_exit"):
        _write(f"{inst}/events/raw_syscalls/{ev}/enable", "0")
    _write(f"{inst}/trace", "")
    with open(os.path.join(folder, "meta.json"), "w") as fh:
        json.dump(meta, fh, indent=1)
    if lost:
        print(f"# {lost} trace events lost: raise --buffer_kb", file=sys.stderr)
    return rc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run", help="run a command under the scheduler trace")
    r.add_argument("dir")
    r.add_argument("--buffer_kb", type=int, default=131072, help="trace buffer per CPU (KiB)")
    r.add_argument("--syscalls", default=str(FUTEX), help="syscall numbers to trace, comma separated")
    p = sub.add_parser("report", help="line a traced run's slow calls up with the trace")
    p.add_argument("dir")
    p.add_argument("--slow_ms", type=float, default=1.0)
    p.add_argument("--factor", type=float, default=3.0)
    p.add_argument("--show", type=int, default=12, help="slow calls shown in full")
    p.add_argument("--outsider_ms", type=float, default=1.0)
    p.add_argument("--json")
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[args.index("--") + 1:] if "--" in args else []
    a = ap.parse_args(args[:args.index("--")] if "--" in args else args)
    if a.what == "run":
        if not command:
            ap.error("run needs the command after --")
        return record(a.dir, command, a.buffer_kb, [int(x) for x in a.syscalls.split(",") if x])
    lines, records = report(a.dir, a.slow_ms, a.factor, a.show, a.outsider_ms)
    print("\n".join(lines))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(records, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
