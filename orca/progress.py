"""Build progress output, BuildKit "plain" style, and the timings of each step.

Every step gets a number; its lines are prefixed with it so that the output of
concurrently running stages can be told apart.  The timings are kept for the
caller (tests and the bench read them instead of parsing text).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TextIO

MODES = ("auto", "plain", "quiet")
TAIL_LINES = 20


@dataclass
class StepTiming:
    number: int
    stage: str
    text: str
    start: float
    end: float | None = None
    cached: bool = False
    partial: bytes = b""            # output after the last newline
    tail: deque = field(default_factory=lambda: deque(maxlen=TAIL_LINES))  # for error messages


@dataclass
class Progress:
    mode: str = "plain"
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    redact: tuple[bytes, ...] = ()
    steps: list[StepTiming] = field(default_factory=list)

    def __post_init__(self):
        self._lock = threading.Lock()

    def _emit(self, line: str) -> None:
        if self.mode == "quiet":
            return
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def start(self, stage: str, text: str) -> StepTiming:
        with self._lock:
            step = StepTiming(len(self.steps) + 1, stage, text, time.monotonic())
            self.steps.append(step)
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

    def _line(self, step: StepTiming, raw: bytes) -> None:
        raw = raw.rstrip(b"\r").rsplit(b"\r", 1)[-1]
        for secret in self.redact:
            if secret:
                raw = raw.replace(secret, b"****")
        text = raw.decode("utf-8", "replace")
        step.tail.append(text)
        self._emit(f"#{step.number} {text}")

    def flush(self, step: StepTiming) -> None:
        if step.partial:
            self._line(step, step.partial)
            step.partial = b""

    def cached(self, step: StepTiming) -> None:
        step.cached = True
        step.end = time.monotonic()
        self._emit(f"#{step.number} CACHED")

    def done(self, step: StepTiming) -> None:
        self.flush(step)
        step.end = time.monotonic()
        self._emit(f"#{step.number} DONE {step.end - step.start:.1f}s")

    def failed(self, step: StepTiming, message: str) -> None:
        self.flush(step)
        step.end = time.monotonic()
        self._emit(f"#{step.number} ERROR: {message.splitlines()[0] if message else ''}")

    def info(self, text: str) -> None:
        self._emit(text)
