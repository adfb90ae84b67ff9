"""What the harness writes while it runs: the table on stdout, progress on stderr.

stdout carries the table and nothing else, byte for byte nccl-tests' layout, whether it
is a terminal, a pipe or a file. Progress goes to stderr only: ``--progress auto`` (the
default) shows it when stderr is a terminal (a person is watching), so ``| tee``, ``> f``,
``2>&1 | ...`` and CI logs get nothing extra; ``--progress on`` shows it anyway, ``off``
never. It is a tqdm bar where tqdm is installed (the ``perf`` extra) and a live line of
our own where it is not; either way it names the row that is running (size, type, op)
and, for the live line, how long it has been running, refreshed twice a second.

Table lines and progress share a terminal when both streams go to it, so every table
line first clears the live line and then draws it again below (tqdm does the same
through ``tqdm.write``).
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol, TextIO

PROGRESS_ENV = "COLLECTIVES_PERF_PROGRESS"
"""``1`` shows progress in ``--progress auto`` mode even when stderr is no terminal (tests)."""
REFRESH_SECONDS = 0.5
"""How often the live line's clock is redrawn while a row runs."""
CLEAR = "\r\x1b[K"
"""Carriage return, then erase to the end of the line: how a live line is redrawn."""

__all__ = ["CLEAR", "PROGRESS_ENV", "LiveLine", "Printer", "human_size", "note", "progress_wanted"]


def note(text: str) -> None:
    """A note on stderr (never in the table)."""
    sys.stderr.write(f"{text}\n")
    sys.stderr.flush()


def human_size(nbytes: int) -> str:
    """``8 B``, ``64 KiB``, ``1.5 MiB``: a row's size for the progress display."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if value == int(value) else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def progress_wanted(mode: str, stream: TextIO) -> bool:
    """Whether ``--progress mode`` shows progress on ``stream``: ``on`` always, ``off``
    never, ``auto`` when the stream is a terminal (or PROGRESS_ENV is 1)."""
    if mode == "on":
        return True
    if mode == "off":
        return False
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return tty or os.environ.get(PROGRESS_ENV) == "1"


class _Display(Protocol):
    """A progress display on stderr."""

    def row_started(self, label: str) -> None: ...
    def row_done(self) -> None: ...
    def write_line(self, text: str) -> None: ...
    def close(self) -> None: ...


class LiveLine:
    """One line on ``stream``, redrawn in place: ``all_reduce_perf: row 3/12, 4 MiB
    float sum, 1.5 s``. A daemon thread redraws the clock every REFRESH_SECONDS while a
    row runs; table lines clear it, go to stdout, and it comes back below them."""

    def __init__(self, stream: TextIO, total: int | None, desc: str) -> None:
        self.stream = stream
        self.total = total
        self.desc = desc
        self.done = 0
        self.label = ""
        self.started = time.monotonic()
        self.shown = False
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.ticker = threading.Thread(target=self._tick, name="perf-progress", daemon=True)
        self.ticker.start()

    def text(self) -> str:
        """The line as it reads now, cut to the terminal's width (a wrapped line could
        not be redrawn in place)."""
        count = f"row {self.done + 1}/{self.total}" if self.total else f"row {self.done + 1}"
        text = f"{self.desc}: {count}, {self.label}, {time.monotonic() - self.started:.1f} s"
        width = shutil.get_terminal_size((80, 24)).columns
        return text[: max(10, width - 1)]

    def _draw(self) -> None:
        if self.label:
            self.stream.write(CLEAR + self.text())
            self.stream.flush()
            self.shown = True

    def _clear(self) -> None:
        if self.shown:
            self.stream.write(CLEAR)
            self.stream.flush()
            self.shown = False

    def _tick(self) -> None:
        while not self.stopping.wait(REFRESH_SECONDS):
            with self.lock:
                self._draw()

    def row_started(self, label: str) -> None:
        """Say that the row ``label`` runs now; its clock starts."""
        with self.lock:
            self.label = label
            self.started = time.monotonic()
            self._draw()

    def row_done(self) -> None:
        """Count a finished row; nothing runs until the next one starts."""
        with self.lock:
            self.done += 1
            self.label = ""
            self._clear()

    def write_line(self, text: str) -> None:
        """Write a table line to stdout with the live line out of its way."""
        with self.lock:
            self._clear()
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
            self._draw()

    def close(self) -> None:
        """Stop the clock and erase the line."""
        self.stopping.set()
        self.ticker.join(2 * REFRESH_SECONDS)
        with self.lock:
            self._clear()


class _Bar:
    """A tqdm bar of rows on stderr; the running row is its postfix."""

    def __init__(self, total: int | None, desc: str, delay: float) -> None:
        from tqdm import tqdm  # type: ignore[import-untyped]

        self.tqdm = tqdm
        self.bar: Any = tqdm(total=total, file=sys.stderr, desc=desc, unit="row", leave=False, dynamic_ncols=True,
                             delay=delay)

    def row_started(self, label: str) -> None:
        self.bar.set_postfix_str(label)

    def row_done(self) -> None:
        self.bar.update(1)

    def write_line(self, text: str) -> None:
        self.tqdm.write(text, file=sys.stdout)
        sys.stdout.flush()

    def close(self) -> None:
        self.bar.close()


class Printer:
    """stdout lines of rank 0 (the other ranks print nothing), kept apart from progress."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.display: _Display | None = None

    @property
    def bar(self) -> Any:
        """The tqdm bar while one shows, else None (the name this attribute had)."""
        return self.display.bar if isinstance(self.display, _Bar) else None

    def line(self, text: str = "") -> None:
        """One line of the table (or a ``#`` note in it) on stdout."""
        if not self.enabled:
            return
        if self.display is not None:
            self.display.write_line(text)
            return
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def lines(self, texts: Sequence[str]) -> None:
        """Several lines, in order."""
        for t in texts:
            self.line(t)

    def start_progress(self, total: int | None, mode: str, desc: str) -> None:
        """Show progress on stderr for ``total`` rows (None: endless, ``-N 0``) if
        ``mode`` (``--progress``) wants it there: a tqdm bar, or a live line without tqdm."""
        if not self.enabled or not progress_wanted(mode, sys.stderr):
            return
        try:
            self.display = _Bar(total, desc, delay=0.0 if mode == "on" else 1.0)
        except ImportError:
            self.display = LiveLine(sys.stderr, total, desc)

    def row_started(self, label: str) -> None:
        """The row ``label`` (``4 MiB float sum``) starts running."""
        if self.display is not None:
            self.display.row_started(label)

    def tick(self) -> None:
        """A row is done (and printed)."""
        if self.display is not None:
            self.display.row_done()

    def stop_progress(self) -> None:
        """Take the progress display away (the table stays)."""
        if self.display is not None:
            self.display.close()
            self.display = None
