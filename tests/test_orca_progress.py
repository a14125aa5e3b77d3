"""The live progress view, read back through a small terminal emulator."""

import io
import logging
import os
import pty
import re
import subprocess
import sys
import threading

from orca.progress import LiveProgress, Progress, open_progress

_CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


class Screen:
    """Enough of a VT100 for the view: text, CR, LF, cursor up, erase below/right."""

    def __init__(self):
        self.lines = [""]
        self.row = self.col = 0

    def feed(self, text: str) -> None:
        pos = 0
        while pos < len(text):
            m = _CSI.match(text, pos)
            if m:
                self._csi(m.group(1), m.group(2))
                pos = m.end()
                continue
            ch = text[pos]
            pos += 1
            if ch == "\r":
                self.col = 0
            elif ch == "\n":
                self.row, self.col = self.row + 1, 0  # a pty's onlcr adds the CR too
                while len(self.lines) <= self.row:
                    self.lines.append("")
            else:
                line = self.lines[self.row].ljust(self.col)
                self.lines[self.row] = line[:self.col] + ch + line[self.col + 1:]
                self.col += 1

    def _csi(self, arg: str, op: str) -> None:
        if op == "A":
            self.row = max(0, self.row - int(arg or 1))
        elif op == "J":
            self.lines[self.row] = self.lines[self.row][:self.col]
            del self.lines[self.row + 1:]
        elif op == "K":
            self.lines[self.row] = self.lines[self.row][:self.col]
        else:
            raise AssertionError(f"unexpected escape {arg}{op}")

    def text(self) -> list[str]:
        lines = [line.rstrip() for line in self.lines]
        while lines and not lines[-1]:
            lines.pop()
        return lines


class FakeTerminal(io.StringIO):
    def __init__(self):
        super().__init__()
        self.screen = Screen()

    def write(self, text: str) -> int:
        self.screen.feed(text)
        return len(text)

    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_running_steps_are_redrawn_in_place_and_finished_ones_kept():
    term, clock = FakeTerminal(), Clock()
    view = LiveProgress(term, width=60, clock=clock)
    a = view.start("stage-0 1/2", "FROM bookworm")
    clock.now += 0.5
    view.cached(a)
    b = view.start("stage-0 2/2", "RUN make")
    view.output(b, b"".join(b"line %d\n" % i for i in range(10)) + b"50%\r75%")
    clock.now += 2.0
    view.redraw()
    assert term.screen.text() == [
        "#1 [stage-0 1/2] FROM bookworm  CACHED 0.5s",
        "[+] Building 2.5s (1/2 steps)",
        "#2 [stage-0 2/2] RUN make  2.0s",
        "#2   line 5", "#2   line 6", "#2   line 7", "#2   line 8", "#2   line 9",
        "#2   75%",
    ]
    clock.now += 1.0
    view.output(b, b"\n" + b"x" * 100 + b"\n")
    view.redraw()
    assert term.screen.text()[2:] == ["#2 [stage-0 2/2] RUN make  3.0s",
                                      "#2   line 6", "#2   line 7", "#2   line 8", "#2   line 9",
                                      "#2   75%", "#2   " + "x" * 54]
    view.done(b)
    view.close()
    assert term.screen.text() == [
        "#1 [stage-0 1/2] FROM bookworm  CACHED 0.5s",
        "#2 [stage-0 2/2] RUN make  DONE 3.0s",
        "[+] Built in 3.5s (2 steps)",
    ]
    assert [s.end - s.start for s in view.steps] == [0.5, 3.0]


def test_a_failed_step_keeps_its_output_and_info_lines_stay():
    term, clock = FakeTerminal(), Clock()
    with LiveProgress(term, width=80, clock=clock, redact=(b"hunter2",)) as view:
        view.info("warning: something")
        step = view.start("build 1/1", "RUN false")
        view.output(step, b"password hunter2\nno good")
        view.failed(step, "RUN false: exit code 1\n  more")
    assert term.screen.text() == [
        "warning: something",
        "#1 [build 1/1] RUN false  ERROR: RUN false: exit code 1 0.0s",
        "#1 password ****",
        "#1 no good",
        "[+] Built in 0.0s (1 steps)",
    ]


def test_auto_is_plain_off_a_terminal_and_quiet_prints_nothing():
    out = io.StringIO()
    progress = open_progress("auto", out)
    assert type(progress) is Progress and progress.mode == "plain"
    step = progress.start("s 1/1", "RUN x")
    progress.output(step, b"hi\n")
    progress.done(step)
    assert out.getvalue().splitlines()[:2] == ["#1 [s 1/1] RUN x", "#1 hi"]
    quiet = io.StringIO()
    progress = open_progress("quiet", quiet)
    progress.done(progress.start("s", "RUN x"))
    assert quiet.getvalue() == ""


def test_orca_build_on_a_pty_draws_the_live_view(busybox_layout, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM latest\nRUN echo made-here > /f\nCOPY Dockerfile /d\n")
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "100"}
    proc = subprocess.Popen([sys.executable, "-c", "from orca.cli import main; main()",
                             "--layout", str(busybox_layout), "--cache-dir", str(tmp_path / "cache"), str(ctx)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    reader = threading.Thread(target=_drain, args=(master, chunks))
    reader.start()
    digest = proc.stdout.read().decode()
    assert proc.wait() == 0
    reader.join()
    screen = Screen()
    screen.feed(b"".join(chunks).decode())
    lines = screen.text()
    assert digest.startswith("sha256:")
    times = [re.sub(r"\d+\.\d", "T", line) for line in lines]
    assert times == ["#1 [stage-0] RUN echo made-here > /f  DONE Ts",
                     "#2 [stage-0] COPY Dockerfile /d  DONE Ts",
                     "[+] Built in Ts (2 steps)"]
    # the running step was on screen before the region was erased
    assert "#1 [stage-0] RUN echo made-here > /f  " in b"".join(chunks).decode().split("DONE")[0]


def _drain(fd: int, chunks: list) -> None:
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(fd)


DEVICE_WARNING = ("rootless{%s} creating empty file in place of device %d:%d", "dev/null", 1, 3)


def test_library_warnings_are_notes_of_the_step_on_their_thread(capsys):
    log = logging.getLogger("umoci_py.layer.extract")
    out = io.StringIO()
    progress = Progress("plain", out)
    with progress.capturing_logs():
        step = progress.start("s 1/1", "RUN x")
        log.warning(*DEVICE_WARNING)
        progress.output(step, b"out\n")
        progress.failed(step, "RUN x: exit code 1")
        log.warning("after the step")
    assert out.getvalue().splitlines() == ["#1 [s 1/1] RUN x",
                                           "#1 rootless{dev/null} creating empty file in place of device 1:3",
                                           "#1 out", "#1 ERROR: RUN x: exit code 1", "after the step"]
    assert list(step.tail) == ["out"]          # a failure shows the step's output, not the notes
    quiet = Progress("quiet", io.StringIO())
    with quiet.capturing_logs():
        quiet.start("s 1/1", "RUN x")
        log.warning(*DEVICE_WARNING)
    assert quiet.stream.getvalue() == ""
    assert capsys.readouterr().err == ""       # nothing went past the progress to stderr
    assert logging.getLogger("umoci_py").propagate  # and the logger is as it was


def test_a_warning_before_logging_is_loaded_is_still_a_note_of_its_step():
    # a fresh process: nothing loads logging until the library's first warning
    script = f"""
import io, sys
from orca.progress import Progress
from umoci_py import logs
out = io.StringIO()
progress = Progress("plain", out)
with progress.capturing_logs():
    step = progress.start("s 1/1", "RUN x")
    assert "logging" not in sys.modules
    logs.warning("umoci_py.layer.extract", *{DEVICE_WARNING!r})
    assert "logging" in sys.modules
    progress.done(step)
print(out.getvalue(), end="")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:2] == ["#1 [s 1/1] RUN x", "#1 rootless{dev/null} creating empty file in place of device 1:3"]
    assert len(lines) == 3 and lines[2].startswith("#1 DONE")
    assert proc.stderr == ""


def test_live_view_shows_notes_while_the_step_runs_only():
    term, clock = FakeTerminal(), Clock()
    log = logging.getLogger("umoci_py.layer.extract")
    with LiveProgress(term, width=80, clock=clock) as view, view.capturing_logs():
        step = view.start("s 1/1", "RUN x")
        log.warning(*DEVICE_WARNING)
        view.output(step, b"out\n")
        view.redraw()
        assert term.screen.text() == ["[+] Building 0.0s (0/1 steps)", "#1 [s 1/1] RUN x  0.0s",
                                      "#1   rootless{dev/null} creating empty file in place of device 1:3",
                                      "#1   out"]
        view.failed(step, "RUN x: exit code 1")
    assert term.screen.text() == ["#1 [s 1/1] RUN x  ERROR: RUN x: exit code 1 0.0s", "#1 out",
                                  "[+] Built in 0.0s (1 steps)"]
