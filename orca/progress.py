"""Build progress output, BuildKit "plain" style, and the timings of each step.

Every step gets a number; its lines are prefixed with it so that the output of
concurrently running stages can be told apart.  The timings are kept for the
caller (tests and the bench read them instead of parsing text).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TextIO

MODES = ("auto", "plain", "quiet")


@dataclass
class StepTiming:
    number: int
    stage: str
    text: str
    start: float
    end: float | None = None
    cached: bool = False


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
        """A chunk of a RUN step's output; secret values never reach the log."""
        for secret in self.redact:
            if secret:
                data = data.replace(secret, b"****")
        text = data.decode("utf-8", "replace")
        for line in text.splitlines():
            self._emit(f"#{step.number} {line}")

    def cached(self, step: StepTiming) -> None:
        step.cached = True
        step.end = time.monotonic()
        self._emit(f"#{step.number} CACHED")

    def done(self, step: StepTiming) -> None:
        step.end = time.monotonic()
        self._emit(f"#{step.number} DONE {step.end - step.start:.1f}s")

    def failed(self, step: StepTiming, message: str) -> None:
        step.end = time.monotonic()
        self._emit(f"#{step.number} ERROR: {message}")

    def info(self, text: str) -> None:
        self._emit(text)
