"""Running a RUN step's container in a process of its own, on a CPU of its own.

runrootless's tracer waits for any child of its process (waitpid(-1)) and
pins itself to one CPU, so two RUN steps traced from threads of the build
process would take each other's stops and share a CPU.  Each step therefore
runs in a fresh interpreter pinned to the least busy CPU; the container's
merged stdout+stderr come back on one pipe and the outcome on another.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from orca.errors import BuildError

if TYPE_CHECKING:
    import subprocess

# The hostname RUN steps see, BuildKit's: the hosts file mounted into the step
# resolves it (runrootless adds it), so `sudo` and the like find their host.
BUILD_HOSTNAME = "buildkitsandbox"


class Notes:
    """The sandbox's notes (a masked /proc, a refused hostname), each shown once per build."""

    def __init__(self, show: Callable[[str], None]):
        self._show = show
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, text: str) -> None:
        with self._lock:
            if text in self._seen:
                return
            self._seen.add(text)
        self._show(text)


class CpuSlots:
    """Hands each running step the CPU fewest running steps are pinned to."""

    def __init__(self):
        self._cpus = sorted(os.sched_getaffinity(0))
        self._users = {cpu: 0 for cpu in self._cpus}
        self._lock = threading.Lock()

    def acquire(self) -> int:
        with self._lock:
            cpu = min(reversed(self._cpus), key=lambda c: self._users[c])
            self._users[cpu] += 1
            return cpu

    def release(self, cpu: int) -> None:
        with self._lock:
            self._users[cpu] -= 1


def _spec_to_json(spec) -> dict:
    d = dict(vars(spec))
    d["rootfs"] = str(spec.rootfs)
    d["mounts"] = [dict(vars(m)) for m in spec.mounts]
    d["additional_gids"] = list(spec.additional_gids)
    return d


def _spec_from_json(d: dict):
    from runrootless.spec import Mount, RunSpec
    d = dict(d)
    d["rootfs"] = Path(d["rootfs"])
    d["mounts"] = tuple(Mount(m["source"], m["destination"], m["type"], tuple(m["options"]))
                        for m in d["mounts"])
    d["additional_gids"] = tuple(d["additional_gids"])
    d["extra_hosts"] = tuple(tuple(h) for h in d["extra_hosts"])
    return RunSpec(**d)


class Helpers:
    """RUN helper processes (`python -m orca.runstep`) started ahead of their
    step: a helper spends ~60 ms starting Python and importing runrootless,
    which then overlaps the steps before its RUN (the COPY before a compile).
    At most one waits at a time; close() ends an unused one."""

    def __init__(self):
        self._idle: list[tuple[subprocess.Popen, int]] = []
        self._lock = threading.Lock()

    def prestart(self) -> None:
        with self._lock:
            if not self._idle:
                self._idle.append(_spawn())

    def take(self) -> tuple[subprocess.Popen, int]:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return _spawn()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for proc, status_r in idle:
            proc.kill()  # it has done nothing but import: nothing to clean up
            proc.wait()
            proc.stdin.close()
            proc.stdout.close()
            os.close(status_r)


def _spawn() -> tuple[subprocess.Popen, int]:
    """(helper, read end of its status pipe)."""
    import subprocess  # ~2 ms to import: only builds that run a step spawn a helper

    status_r, status_w = os.pipe()
    try:
        # -P: `-m` would put the working directory first on sys.path, and a
        # build run where an orca/ or runrootless/ directory lies would run that
        proc = subprocess.Popen([sys.executable, "-P", "-m", "orca.runstep", str(status_w)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                pass_fds=(status_w,), close_fds=True)
    except BaseException:
        os.close(status_r)
        raise
    finally:
        os.close(status_w)
    return proc, status_r


def run_isolated(spec, output: Callable[[bytes], None], slots: CpuSlots, ulimits=(),
                 note: Callable[[str], None] | None = None, helpers: Helpers | None = None) -> int:
    """Run a runrootless RunSpec; output gets the merged output as it comes,
    note the sandbox's notes; the exit status (128+signal when killed).
    ulimits (orca.runsettings.Ulimit) are set in the helper process, so the
    container inherits them.  Sandbox failures raise BuildError."""
    cpu = slots.acquire()
    status_r = None
    try:
        proc, status_r = (helpers or Helpers()).take()
        limits = [[u.resource, u.soft, u.hard] for u in ulimits]
        proc.stdin.write(json.dumps({"spec": _spec_to_json(spec), "rlimits": limits, "cpu": cpu}).encode())
        proc.stdin.close()
        fd = proc.stdout.fileno()
        while data := os.read(fd, 65536):
            output(data)
        proc.stdout.close()
        proc.wait()
        with os.fdopen(status_r, "rb") as f:
            status_r = None
            outcome = f.read()
    finally:
        slots.release(cpu)
        if status_r is not None:
            os.close(status_r)
    try:
        result = json.loads(outcome)
    except ValueError:
        raise BuildError(f"the RUN helper process died (exit {proc.returncode})") from None
    for text in result.get("notes", ()) if note is not None else ():
        note(text)
    if "error" in result:
        raise BuildError(result["error"])
    return result["status"]


def _child(status_fd: int) -> None:
    from runrootless import api
    from umoci_py.errors import UmociError
    data = sys.stdin.buffer.read()
    if not data:  # a helper started ahead and not needed
        return
    request = json.loads(data)
    cpu = request["cpu"]
    spec = _spec_from_json(request["spec"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.sched_setaffinity(0, {cpu})
    notes: list[str] = []
    try:
        for res, soft, hard in request["rlimits"]:
            resource.setrlimit(res, (soft, hard))
        result = {"status": api.run(spec, None, pin_cpu=True, note=notes.append)}
    except (UmociError, OSError) as err:
        result = {"error": str(err)}
    result["notes"] = notes
    sys.stdout.flush()
    with os.fdopen(status_fd, "w") as f:
        f.write(json.dumps(result))


if __name__ == "__main__":
    _child(int(sys.argv[1]))
