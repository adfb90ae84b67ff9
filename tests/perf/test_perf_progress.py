"""Progress while a sweep runs: on stderr, only when stderr is a terminal (``--progress
auto``), a live line per row without tqdm; stdout is the table and nothing else, piped or
not. Terminals are real pseudo-terminals (``pty.openpty``)."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from perf import report
from perf.progress import CLEAR, LiveLine, Printer, human_size, progress_wanted

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["-b", "8", "-e", "4K", "-f", "4", "-n", "2", "-w", "1", "-c", "1"]  # 5 rows: 8 B .. 2 KiB
NO_TQDM = "import sys; sys.modules['tqdm'] = None; from perf.cli import main; sys.exit(main())"
WITH_TQDM = "import sys; from perf.cli import main; sys.exit(main())"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLLECTIVES_", "PMI_", "OMPI_"))
           and k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            data = os.read(fd, 1 << 16)
        except OSError:  # EIO: every writer of the terminal is gone
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def _run(tmp_path: Path, *args: str, stdout_tty: bool, stderr_tty: bool, code: str = NO_TQDM
         ) -> tuple[int, str, str]:
    """Run ``all_reduce_perf args`` with stdout and stderr each a pipe (a file here) or
    one pseudo-terminal; return (status, stdout, stderr), the terminal's bytes in the
    stream(s) that went to it."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a fresh pty is 0 x 0
    out_file, err_file = tmp_path / "out", tmp_path / "err"
    with open(out_file, "wb") as out, open(err_file, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", code, "all_reduce_perf", *args], cwd=ROOT, env=_env(),
                                stdin=subprocess.DEVNULL, stdout=slave if stdout_tty else out,
                                stderr=slave if stderr_tty else err)
        os.close(slave)
        terminal = _read_all(master).decode(errors="replace")
        status = proc.wait(timeout=120)
    os.close(master)
    stdout = terminal if stdout_tty else out_file.read_text()
    stderr = terminal if stderr_tty and not stdout_tty else err_file.read_text()
    return status, stdout, stderr


pytestmark = pytest.mark.multiprocess


def test_piped_output_is_the_table_and_nothing_else(tmp_path: Path) -> None:
    status, out, err = _run(tmp_path, "--np", "2", *SMALL, stdout_tty=False, stderr_tty=False)
    assert status == 0, out + err
    assert "\r" not in out and "\x1b" not in out
    assert "\r" not in err and "row 1" not in err  # --progress auto: no terminal, no progress
    assert [r.size for r in report.parse_table(out).rows] == [8, 32, 128, 512, 2048]


def test_a_terminal_on_stderr_gets_a_live_line_per_row_and_stdout_stays_clean(tmp_path: Path) -> None:
    status, out, err = _run(tmp_path, "--np", "2", *SMALL, stdout_tty=False, stderr_tty=True)
    assert status == 0, out + err
    assert "\r" not in out and "\x1b" not in out
    assert [r.size for r in report.parse_table(out).rows] == [8, 32, 128, 512, 2048]
    for n, label in [(1, "8 B float sum"), (2, "32 B float sum"), (5, "2 KiB float sum")]:
        assert re.search(rf"{re.escape(CLEAR)}all_reduce_perf: row {n}/5, {label}, \d+\.\d s", err), err
    assert err.endswith(CLEAR), "the live line is erased at the end"


def test_a_person_at_a_terminal_sees_the_whole_table(tmp_path: Path) -> None:
    """stdout and stderr on one terminal: every table line comes out whole, the live line
    cleared before it and drawn again after it."""
    status, screen, _ = _run(tmp_path, "--np", "2", *SMALL, stdout_tty=True, stderr_tty=True)
    assert status == 0, screen
    visible = [chunk.split(CLEAR)[-1] for chunk in screen.split("\r\n")]
    table = report.parse_table("\n".join(visible))
    assert [r.size for r in table.rows] == [8, 32, 128, 512, 2048]
    assert all(r.oop_wrong == 0 and r.ip_wrong == 0 for r in table.rows)
    assert "all_reduce_perf: row 1/5" in screen


def test_progress_off_says_nothing_even_on_a_terminal(tmp_path: Path) -> None:
    status, out, err = _run(tmp_path, "--np", "2", *SMALL, "--progress", "off", stdout_tty=False, stderr_tty=True)
    assert status == 0, out + err
    assert "row 1" not in err and CLEAR not in err


def test_with_tqdm_a_terminal_gets_the_bar_naming_the_row(tmp_path: Path) -> None:
    pytest.importorskip("tqdm")  # the perf extra; the live line above is the fallback without it
    status, out, err = _run(tmp_path, "--np", "2", *SMALL, "--progress", "on", stdout_tty=False, stderr_tty=True,
                            code=WITH_TQDM)
    assert status == 0, out + err
    assert "all_reduce_perf:" in err and "float sum" in err and "row" in err
    assert "\r" not in out and len(report.parse_table(out).rows) == 5


# -- the pieces ----------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(("mode", "tty", "env", "want"), [
    ("auto", True, None, True), ("auto", False, None, False), ("auto", False, "1", True),
    ("on", False, None, True), ("off", True, None, False),
])
def test_progress_wanted(monkeypatch: pytest.MonkeyPatch, mode: str, tty: bool, env: str | None, want: bool) -> None:
    monkeypatch.delenv("COLLECTIVES_PERF_PROGRESS", raising=False)
    if env is not None:
        monkeypatch.setenv("COLLECTIVES_PERF_PROGRESS", env)
    assert progress_wanted(mode, _Terminal(tty)) is want


def test_live_line_clears_itself_around_table_lines(capsys: pytest.CaptureFixture[str]) -> None:
    stream = _Terminal(True)
    line = LiveLine(stream, total=2, desc="x_perf")
    line.row_started("8 B float sum")
    assert stream.getvalue().startswith(CLEAR + "x_perf: row 1/2, 8 B float sum, 0.")
    line.write_line("#  table line")
    assert capsys.readouterr().out == "#  table line\n"
    before = len(stream.getvalue())
    line.row_done()
    assert stream.getvalue()[before:] == CLEAR
    line.row_started("32 B float sum")
    assert "row 2/2, 32 B float sum" in stream.getvalue()
    line.close()
    assert stream.getvalue().endswith(CLEAR)
    assert not line.ticker.is_alive()


def test_a_printer_without_progress_writes_plain_lines(capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", _Terminal(False))
    monkeypatch.delenv("COLLECTIVES_PERF_PROGRESS", raising=False)
    out = Printer(True)
    out.start_progress(3, "auto", "x_perf")
    assert out.display is None and out.bar is None
    out.row_started("8 B")
    out.line("row")
    out.tick()
    out.stop_progress()
    assert capsys.readouterr().out == "row\n"
    assert sys.stderr.getvalue() == ""


@pytest.mark.parametrize(("nbytes", "text"), [(0, "0 B"), (8, "8 B"), (2048, "2 KiB"), (1536, "1.5 KiB"),
                                              (64 << 20, "64 MiB"), (3 << 30, "3 GiB")])
def test_human_size(nbytes: int, text: str) -> None:
    assert human_size(nbytes) == text
