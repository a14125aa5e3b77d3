"""Running a RUN step's container in a process of its own, on a CPU of its own.

runrootless's tracer waits for any child of its process (waitpid(-1)) and
pins itself to one CPU, so two RUN steps traced from threads of the build
process would take each other's stops and share a CPU.  Each step therefore
runs in a worker process pinned to the least busy CPU; the container's
merged stdout+stderr come back on one pipe and the outcome on another.

Workers are forked by one helper process per build, a fresh interpreter
(`python -P -m orca.runstep`) that imports runrootless before the first
step asks: a fresh interpreter per step spent ~40 ms starting and importing
before its container could start.  orca-build starts it before it even
reads the Dockerfile, so that start overlaps everything before the first
RUN; other callers' builds start it at a stage's first miss.
"""

from __future__ import annotations

import _socket  # not socket: see "A request" below
import json
import os
import resource
import signal
import struct
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from orca.errors import BuildError

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


# A request: the spec, rlimits and CPU as JSON, with the worker's output and
# status pipes' write ends passed along (SCM_RIGHTS).  SOCK_SEQPACKET keeps
# each request one message; a zero-length one never comes (EOF ends the helper).
# The build's side uses the C module _socket, not socket: importing socket (and
# its selectors) cost every build ~1.7 ms at start, and the build only needs a
# socketpair and sendmsg.  The helper's side, off the build's path, uses socket.
_MAX_REQUEST = 1 << 20
_HELPER_FD = 3  # the helper's end of the socket, in the helper


class Helpers:
    """The build's RUN helper process; close() ends it."""

    def __init__(self):
        self._sock: _socket.socket | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def start(self) -> Helpers:
        """Start the helper now, if it is not running yet."""
        with self._lock:
            self._started()
        return self

    def _started(self) -> _socket.socket:
        if self._sock is None:
            ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)  # close-on-exec
            try:
                # posix_spawn, not subprocess (~2 ms to import): a cached build
                # starts a helper it never uses.  -P: `-m` would put the working
                # directory first on sys.path, and a build run where an orca/ or
                # runrootless/ directory lies would run that.
                self._pid = os.posix_spawn(
                    sys.executable, [sys.executable, "-P", "-m", "orca.runstep", str(_HELPER_FD)], os.environ,
                    file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                                  (os.POSIX_SPAWN_DUP2, theirs.fileno(), _HELPER_FD)],
                    setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))  # as Python found them
            except BaseException:
                ours.close()
                raise
            finally:
                theirs.close()
            self._sock = ours
        return self._sock

    def submit(self, request: bytes, out_w: int, status_w: int) -> None:
        """Have a worker run request, writing to the two pipes given."""
        with self._lock:
            sock = self._started()
        try:
            # socket.send_fds's message: the descriptors as an array of C ints
            sock.sendmsg([request], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("2i", out_w, status_w))])
        except OSError as err:
            raise BuildError(f"cannot hand the step to the RUN helper process: {err.strerror}") from None

    def __enter__(self) -> Helpers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            sock, pid = self._sock, self._pid
            self._sock = self._pid = None
        if sock is None:
            return
        sock.close()
        # killed rather than left to see the socket's end: it may still be
        # importing; its workers are processes of their own and run on
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def run_isolated(spec, output: Callable[[bytes], None], slots: CpuSlots, ulimits=(),
                 note: Callable[[str], None] | None = None, helpers: Helpers | None = None) -> int:
    """Run a runrootless RunSpec; output gets the merged output as it comes,
    note the sandbox's notes; the exit status (128+signal when killed).
    ulimits (orca.runsettings.Ulimit) are set in the worker process, so the
    container inherits them.  Sandbox failures raise BuildError."""
    own = helpers is None
    helpers = helpers or Helpers()
    cpu = slots.acquire()
    out_r, out_w = os.pipe()
    status_r, status_w = os.pipe()
    try:
        limits = [[u.resource, u.soft, u.hard] for u in ulimits]
        request = json.dumps({"spec": _spec_to_json(spec), "rlimits": limits, "cpu": cpu}).encode()
        try:
            helpers.submit(request, out_w, status_w)
        finally:
            os.close(out_w)
            os.close(status_w)
        while data := os.read(out_r, 65536):
            output(data)
        with os.fdopen(status_r, "rb") as f:
            status_r = -1
            outcome = f.read()
    finally:
        slots.release(cpu)
        os.close(out_r)
        if status_r != -1:
            os.close(status_r)
        if own:
            helpers.close()
    try:
        result = json.loads(outcome)
    except ValueError:
        raise BuildError("the RUN helper process died") from None
    for text in result.get("notes", ()) if note is not None else ():
        note(text)
    if "error" in result:
        raise BuildError(result["error"])
    return result["status"]


def _serve(fd: int) -> None:
    """The helper: fork a worker per request until the build closes the socket fd."""
    import socket

    sock = socket.socket(fileno=fd)
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped by the kernel
        try:
            import runrootless.api  # noqa: F401  (the point: every worker starts with it)
        except Exception:  # noqa: BLE001  (a worker's own import reports it as the step's error)
            pass
        while True:
            try:
                msg, fds, _flags, _addr = socket.recv_fds(sock, _MAX_REQUEST, 2)
            except InterruptedError:
                continue
            if not msg:
                return
            if os.fork() == 0:
                sock.close()
                _worker(msg, *fds)
            for fd in fds:
                os.close(fd)
    finally:
        os._exit(0)


def _worker(request_bytes: bytes, out_fd: int, status_fd: int) -> None:
    """Run one step with stdout and stderr on out_fd and its outcome on status_fd; never returns."""
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the tracer waits for its children
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        for fd in (null, out_fd):
            os.close(fd)
        from runrootless import api
        from umoci_py.errors import UmociError
        request = json.loads(request_bytes)
        os.sched_setaffinity(0, {request["cpu"]})
        notes: list[str] = []
        try:
            for res, soft, hard in request["rlimits"]:
                resource.setrlimit(res, (soft, hard))
            result = {"status": api.run(_spec_from_json(request["spec"]), None, pin_cpu=True, note=notes.append)}
        except (UmociError, OSError) as err:
            result = {"error": str(err)}
        result["notes"] = notes
        with os.fdopen(status_fd, "w") as f:
            f.write(json.dumps(result))
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(0)


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
