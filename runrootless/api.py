"""Run a command in a rootless container with root emulation: the library entry point."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from typing import Callable

from umoci_py.errors import UsageError

from .emulate import EXEC, NOTIFY_TABLE, SETID, TABLE, USER_ONLY, user_filter
from .emulate.base import Creds
from .sandbox import FORWARDED_SIGNALS, Channels, SandboxError, prepare_mount_points, setup_main
from .spec import Mount, RunSpec, spec_from_bundle
from .supervisor import Supervisor
from .tracer import Stats, Tracer

__all__ = ["Mount", "RunSpec", "SandboxError", "Stats", "UsageError", "run", "spec_from_bundle"]


def run(spec: RunSpec, output: Callable[[bytes], None] | None = None, *,
        on_start: Callable[[int], None] | None = None, pin_cpu: bool = True,
        notify: bool = True, prefilter: bool = True, stats: Stats | None = None,
        note: Callable[[str], None] | None = None) -> int:
    """Run spec.args in the container; the exit status (128+signal when killed).

    output None inherits stdin/stdout/stderr; otherwise stdin is /dev/null and
    stdout+stderr are merged and streamed to the callback (from a thread).
    on_start gets the host pid of the container's init.  pin_cpu keeps the
    runner and the container on one CPU (on the apt bench 1.21x the floor
    either way, but unpinned burns 1.18x the floor's CPU against 1.06x:
    with sync wake-ups the listener runs on its caller's CPU, while ptrace
    stops and forwarded notifications still cross CPUs).  notify (the default)
    answers the emulated calls from a seccomp user-notification listener and
    traces only tasks whose ids change (supervisor.py); notify=False traces
    every task and traps every emulated call with ptrace.  prefilter (the
    default, with notify) answers the stats and execs no emulation applies to
    in C before Python sees them (prefilter.py); off, every notification
    reaches the Python listener (the same answers, slower).  note gets one
    line for each setting the container had to do without (a masked /proc
    shares the pid namespace, a refused hostname keeps the inherited one);
    by default they go to stderr.
    """
    if spec.network not in ("host", "none"):
        raise UsageError(f"network must be 'host' or 'none', not {spec.network!r}")
    if not spec.emulate and (spec.uid or spec.gid or spec.additional_gids):
        raise UsageError(f"{spec.rootfs}: user {spec.uid}:{spec.gid} with extra groups needs emulation "
                         "(only root is mapped)")
    points, host_files, mounts = prepare_mount_points(spec)
    err_r, err_w = os.pipe()
    notes_r, notes_w = os.pipe()
    out_r, out_w = os.pipe() if output is not None else (None, None)
    start_r, start_w = os.pipe()
    notify = notify and spec.emulate
    runner_sock, container_sock = socket.socketpair() if notify else (None, None)
    initial = Creds.of(spec.uid, spec.gid, spec.additional_gids)
    as_user = spec.emulate and (spec.uid or spec.gid)
    base = [nr for nr in sorted(TABLE) if nr not in USER_ONLY]
    chans = Channels(err_w, notes_w, out_w, emulate=spec.emulate,
                     stop_for_tracer=spec.emulate and (as_user or not notify),
                     trapped=[] if notify else base,
                     notified=sorted({*NOTIFY_TABLE, *EXEC}) if notify else [],
                     notify_sock=container_sock.fileno() if notify else None,
                     user_filter=user_filter() if as_user else None,
                     max_tasks=spec.max_tasks, runner_pid=os.getpid())
    state = _RunState(on_start)
    affinity = os.sched_getaffinity(0)
    saved_handlers = state.install_forwarding()
    reader = None
    try:
        if pin_cpu and spec.emulate:
            os.sched_setaffinity(0, {max(affinity)})
        pid = os.fork()
        if pid == 0:
            os.close(start_r)
            setup_main(spec, chans, host_files, mounts, start_w)
        state.setup_pid = pid
        for fd in (err_w, notes_w, out_w, start_w):
            if fd is not None:
                os.close(fd)
        err_w = notes_w = out_w = start_w = None
        if container_sock is not None:
            container_sock.close()
            container_sock = None
        if output is not None:
            reader = threading.Thread(target=_pump, args=(out_r, output), daemon=True)
            reader.start()
        if spec.emulate:
            tracer = Tracer(TABLE, initial, stats=stats if stats is not None else Stats(),
                            user_filter=user_filter(), setid=SETID, follow_all_execs=notify)
            tracer.on_new_child = state.child_seen
            if chans.stop_for_tracer:
                tracer.attach(pid, filtered=chans.user_filter is not None)
            if notify:
                status = Supervisor(tracer, NOTIFY_TABLE, prefilter).run(pid, runner_sock, start_r, state.child_seen)
            else:
                status = tracer.run(pid)
        else:
            data = os.read(start_r, 16)
            if data:
                state.started(int(data))
            _, raw = os.waitpid(pid, 0)
            status = os.WEXITSTATUS(raw) if os.WIFEXITED(raw) else 128 + os.WTERMSIG(raw)
        if reader is not None:
            reader.join()
        for line in _pending(notes_r).splitlines():
            (note or _note_to_stderr)(line)
        message = _pending(err_r)
        if message:
            raise SandboxError(message)
        return status
    finally:
        state.restore(saved_handlers)
        os.sched_setaffinity(0, affinity)
        for sock in (runner_sock, container_sock):
            if sock is not None:
                sock.close()
        for fd in (err_r, err_w, notes_r, notes_w, out_w, start_r, start_w):
            if fd is not None:
                os.close(fd)
        if out_r is not None and (reader is None or not reader.is_alive()):
            os.close(out_r)
        points.cleanup()


def _pending(fd: int) -> str:
    """What the container side wrote to a pipe (all of it has exited)."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 65536).decode(errors="replace")
    except BlockingIOError:
        return ""


def _note_to_stderr(line: str) -> None:
    sys.stderr.write(f"runrootless: note: {line}\n")


def _pump(fd: int, output: Callable[[bytes], None]) -> None:
    while True:
        data = os.read(fd, 65536)
        if not data:
            return
        output(data)


class _RunState:
    """Forwards the runner's termination signals to the container's init once it exists."""

    def __init__(self, on_start):
        self.on_start = on_start
        self.setup_pid: int | None = None
        self.init_pid: int | None = None
        self.queued: list[int] = []

    def child_seen(self, pid: int) -> None:
        if self.init_pid is None:
            self.started(pid)

    def started(self, pid: int) -> None:
        self.init_pid = pid
        if self.on_start is not None:
            self.on_start(pid)
        for sig in self.queued:
            self._send(sig)

    def _send(self, sig: int) -> None:
        try:
            os.kill(self.init_pid, sig)
        except ProcessLookupError:
            pass

    def forward(self, sig, _frame) -> None:
        if self.init_pid is None:
            self.queued.append(sig)
        else:
            self._send(sig)

    def install_forwarding(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self.forward) for sig in FORWARDED_SIGNALS}

    def restore(self, saved: dict) -> None:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
