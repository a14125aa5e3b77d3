"""Build progress output and the timings of each step.

"plain" is BuildKit's plain style: every step gets a number and its lines are
prefixed with it, so the output of concurrently running stages can be told
apart.  On a terminal, "auto" is a live view instead: finished steps scroll up
as one line each, and below them the running steps with their elapsed time and
the last lines of their output are redrawn in place.  The timings are kept for
the caller (tests and the bench read them instead of parsing text).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

TYPE_CHECKING = False  # typing's, without importing typing: ~2 ms of every orca-build start
if TYPE_CHECKING:
    from typing import TextIO

MODES = ("auto", "plain", "quiet")
TAIL_LINES = 20
LIVE_TAIL_LINES = 6     # output lines shown under a running step in the live view
LIVE_REFRESH = 0.1      # seconds between redraws of the elapsed times


@dataclass
class StepTiming:
    """One step of the build: its number, text, times and output."""
    number: int
    stage: str
    text: str
    start: float
    end: float | None = None
    cached: bool = False
    partial: bytes = b""            # output after the last newline
    tail: deque = field(default_factory=lambda: deque(maxlen=TAIL_LINES))  # its output, for errors
    shown: deque = field(default_factory=lambda: deque(maxlen=LIVE_TAIL_LINES))  # output and notes, live


@dataclass
class Progress:
    """The build's progress in the "plain" or "quiet" mode (LiveProgress: "live")."""
    mode: str = "plain"
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    redact: tuple[bytes, ...] = ()
    steps: list[StepTiming] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self):
        self._lock = threading.Lock()
        self._current = threading.local()   # the step each build thread is on
        self._log_capture: str | None = None  # the logger capturing_logs routes to steps
        self._log_release: Callable[[], None] | None = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        pass

    @contextmanager
    def capturing_logs(self, logger: str = "umoci_py"):
        """The library's warnings (e.g. the rootless unpack's device
        placeholders) become output lines of the step whose thread logged
        them, instead of lines written across the terminal view: so they are
        in the plain log under the step's number, kept out of quiet, and in
        the live view only as that step's last lines.  The library logs
        through umoci_py.logs, which loads logging at its first warning: the
        capture is set up then, so a build that never warns never loads it."""
        from umoci_py import logs

        self._log_capture = logger
        logs.before_first_warning(self.capture_logs)
        try:
            yield self
        finally:
            logs.forget(self.capture_logs)
            self._log_capture = None
            release, self._log_release = self._log_release, None
            if release is not None:
                release()

    def capture_logs(self) -> None:
        """Inside capturing_logs: route the logger's records to the steps from now on."""
        with self._lock:
            if self._log_capture is None or self._log_release is not None:
                return
            import logging  # loaded already: see capturing_logs
            handler = _step_log_handler(self)
            log = logging.getLogger(self._log_capture)
            saved = log.propagate
            log.addHandler(handler)
            log.propagate = False

            def release() -> None:
                log.removeHandler(handler)
                log.propagate = saved
            self._log_release = release

    def _new_step(self, stage: str, text: str) -> StepTiming:
        with self._lock:
            step = StepTiming(len(self.steps) + 1, stage, text, self.clock())
            self.steps.append(step)
        self._current.step = step
        return step

    def _ended(self, step: StepTiming) -> None:
        if getattr(self._current, "step", None) is step:
            self._current.step = None

    def log_line(self, text: str) -> None:
        """A line logged by the library: a note of the current step, or a line of its own."""
        step = getattr(self._current, "step", None)
        if step is not None and step.end is None:
            self.note(step, text)
        else:
            self.info(text)

    def note(self, step: StepTiming, text: str) -> None:
        """A line about the step that is not its output (not in its error's tail)."""
        self._emit(f"#{step.number} {text}")

    def _emit(self, line: str) -> None:
        if self.mode == "quiet":
            return
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def start(self, stage: str, text: str) -> StepTiming:
        step = self._new_step(stage, text)
        self._emit(f"#{step.number} [{stage}] {text}")
        return step

    def output(self, step: StepTiming, data: bytes) -> None:
        """A chunk of a RUN step's output, shown line by line (a line redrawn
        with carriage returns shows as its last state); secret values never
        reach the log."""
        data = step.partial + data
        *lines, step.partial = data.split(b"\n")
        for line in lines:
            self._line(step, line)

    def _text(self, raw: bytes) -> str:
        raw = raw.rstrip(b"\r").rsplit(b"\r", 1)[-1]
        for secret in self.redact:
            if secret:
                raw = raw.replace(secret, b"****")
        return raw.decode("utf-8", "replace")

    def _line(self, step: StepTiming, raw: bytes) -> None:
        text = self._text(raw)
        step.tail.append(text)
        self._emit(f"#{step.number} {text}")

    def flush(self, step: StepTiming) -> None:
        if step.partial:
            self._line(step, step.partial)
            step.partial = b""

    def cached(self, step: StepTiming) -> None:
        self._ended(step)
        step.cached = True
        step.end = self.clock()
        self._emit(f"#{step.number} CACHED")

    def done(self, step: StepTiming) -> None:
        self._ended(step)
        self.flush(step)
        step.end = self.clock()
        self._emit(f"#{step.number} DONE {step.end - step.start:.1f}s")

    def failed(self, step: StepTiming, message: str) -> None:
        self._ended(step)
        self.flush(step)
        step.end = self.clock()
        self._emit(f"#{step.number} ERROR: {message.splitlines()[0] if message else ''}")

    def info(self, text: str) -> None:
        self._emit(text)


class LiveProgress(Progress):
    """The terminal view: permanent lines above, a redrawn region below.

    The region is erased by moving the cursor up over the lines drawn last
    time; lines are cut to the terminal width so none of them wraps and
    throws that count off."""

    def __init__(self, stream: TextIO, width: int | None = None, **kw):
        super().__init__("live", stream, **kw)
        self.width = width or _terminal_width(stream)
        self._begin = self.clock()
        self._pending: list[str] = []   # permanent lines not yet written
        self._drawn = 0                 # lines of the region now on screen
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> "LiveProgress":
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        self._ticker.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        self.close()

    def _tick(self) -> None:
        while not self._stop.wait(LIVE_REFRESH):
            self.redraw()

    def _emit(self, line: str) -> None:
        # Only info() gets here: step lines are overridden below.
        with self._lock:
            self._pending.append(line)
        self.redraw()

    def start(self, stage: str, text: str) -> StepTiming:
        step = self._new_step(stage, text)
        self.redraw()
        return step

    def _line(self, step: StepTiming, raw: bytes) -> None:
        text = self._text(raw)
        with self._lock:
            step.tail.append(text)
            step.shown.append(text)

    def note(self, step: StepTiming, text: str) -> None:
        with self._lock:
            step.shown.append(text)

    def cached(self, step: StepTiming) -> None:
        self._ended(step)
        self._finish(step, "CACHED", cached=True)

    def done(self, step: StepTiming) -> None:
        self._ended(step)
        self.flush(step)
        self._finish(step, "DONE")

    def failed(self, step: StepTiming, message: str) -> None:
        self._ended(step)
        self.flush(step)
        first = message.splitlines()[0] if message else ""
        self._finish(step, f"ERROR: {first}", output=True)

    def _finish(self, step: StepTiming, state: str, cached: bool = False, output: bool = False) -> None:
        with self._lock:
            step.cached = cached
            step.end = self.clock()
            self._pending.append(f"{self._title(step)}  {state} {step.end - step.start:.1f}s")
            if output:  # a failure keeps the output that explains it
                self._pending += [f"#{step.number} {text}" for text in step.tail]
        self.redraw()

    @staticmethod
    def _title(step: StepTiming) -> str:
        return f"#{step.number} [{step.stage}] {step.text}"

    def _region(self, now: float) -> list[str]:
        running = [s for s in self.steps if s.end is None]
        done = len(self.steps) - len(running)
        lines = [f"[+] Building {now - self._begin:.1f}s ({done}/{len(self.steps)} steps)"]
        for step in running:
            lines.append(f"{self._title(step)}  {now - step.start:.1f}s")
            tail = list(step.shown)
            if step.partial:
                tail = (tail + [self._text(step.partial)])[-LIVE_TAIL_LINES:]
            lines += [f"#{step.number}   {text}" for text in tail]
        return lines

    def redraw(self, final: bool = False) -> None:
        with self._lock:
            now = self.clock()
            region = [] if final else self._region(now)
            if final:
                self._pending.append(f"[+] Built in {now - self._begin:.1f}s ({len(self.steps)} steps)")
            cut = self.width - 1
            text = (f"\r\x1b[{self._drawn}A" if self._drawn else "\r") + "\x1b[J"
            text += "".join(line[:cut] + "\n" for line in self._pending + region)
            self._pending.clear()
            self._drawn = len(region)
            self.stream.write(text)
            self.stream.flush()

    def close(self) -> None:
        """Replace the region by the final summary line."""
        self.redraw(final=True)


def _step_log_handler(progress: Progress):
    """A logging handler writing each record as a line of the progress."""
    import logging

    class StepLogHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                progress.log_line(record.getMessage())
            except Exception:  # noqa: BLE001 - logging must never break the build
                self.handleError(record)

    return StepLogHandler(logging.INFO)


def _terminal_width(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (OSError, ValueError, AttributeError):
        return 80


def open_progress(mode: str, stream: TextIO) -> Progress:
    """The progress for a --progress mode: auto is the live view on a
    terminal (not a dumb one) and plain anywhere else."""
    if mode == "auto":
        live = stream.isatty() and os.environ.get("TERM", "dumb") != "dumb"
        return LiveProgress(stream) if live else Progress("plain", stream)
    return Progress(mode, stream)
