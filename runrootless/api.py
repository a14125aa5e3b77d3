"""Run a command in a rootless container with root emulation: the library entry point."""

from __future__ import annotations

import mmap
import os
import signal
import socket
import threading
from typing import Callable

from umoci_py.errors import UsageError

from . import notify
from .emulate import SETID, TABLE, USER_ONLY, user_filter
from .emulate.stat import NOTIFIED
from .emulate.base import Creds
from .sandbox import FORWARDED_SIGNALS, Channels, SandboxError, prepare_mount_points, setup_main
from .spec import Mount, RunSpec, spec_from_bundle
from .tracer import Stats, Tracer

__all__ = ["Mount", "RunSpec", "SandboxError", "Stats", "UsageError", "run", "spec_from_bundle"]


def run(spec: RunSpec, output: Callable[[bytes], None] | None = None, *,
        on_start: Callable[[int], None] | None = None, pin_cpu: bool = True,
        notify_stat: bool = True, stats: Stats | None = None) -> int:
    """Run spec.args in the container; the exit status (128+signal when killed).

    output None inherits stdin/stdout/stderr; otherwise stdin is /dev/null and
    stdout+stderr are merged and streamed to the callback (from a thread).
    on_start gets the host pid of the container's init.  pin_cpu keeps the
    tracer, the helper and the container on one CPU: a stop then costs a few
    times less (cross-CPU wake-ups dominate otherwise; on the apt bench,
    medians of 5, pinned runs were 1.04-1.21x the floor, unpinned
    1.28-1.55x).  notify_stat serves
    the stat family from a seccomp user-notification helper instead of
    ptrace stops (see notify.py).
    """
    if spec.network not in ("host", "none"):
        raise UsageError(f"network must be 'host' or 'none', not {spec.network!r}")
    if not spec.emulate and (spec.uid or spec.gid or spec.additional_gids):
        raise UsageError(f"{spec.rootfs}: user {spec.uid}:{spec.gid} with extra groups needs emulation "
                         "(only root is mapped)")
    points, host_files, mounts = prepare_mount_points(spec)
    err_r, err_w = os.pipe()
    out_r, out_w = os.pipe() if output is not None else (None, None)
    start_r, start_w = os.pipe()
    notified = sorted(NOTIFIED) if spec.emulate and notify_stat else []
    helper_sock, container_sock = socket.socketpair() if notified else (None, None)
    chans = Channels(err_w, out_w, trace=spec.emulate,
                     trapped=[nr for nr in sorted(TABLE) if nr not in notified and nr not in USER_ONLY],
                     notified=notified, notify_sock=container_sock.fileno() if notified else None,
                     user_filter=user_filter() if spec.emulate and (spec.uid or spec.gid) else None)
    served = memoryview(mmap.mmap(-1, 8 * 512)).cast("Q")   # helper's counts per syscall
    helpers: tuple[int, ...] = ()
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
        for fd in (err_w, out_w, start_w):
            if fd is not None:
                os.close(fd)
        err_w = out_w = start_w = None
        if notified:
            container_sock.close()
            helper = os.fork()
            if helper == 0:
                for sig in FORWARDED_SIGNALS:   # the runner forwards them; the helper serves to the end
                    signal.signal(sig, signal.SIG_IGN)
                notify.helper_main(helper_sock, served)
            helper_sock.close()
            helpers = (helper,)
        if output is not None:
            reader = threading.Thread(target=_pump, args=(out_r, output), daemon=True)
            reader.start()
        if spec.emulate:
            tracer = Tracer(TABLE, Creds.of(spec.uid, spec.gid, spec.additional_gids),
                            stats=stats if stats is not None else Stats(),
                            user_filter=user_filter(), setid=SETID, max_tasks=spec.max_tasks)
            if chans.user_filter is not None:
                tracer.filtered.add(pid)
            tracer.on_new_child = state.child_seen
            tracer.attach(pid)
            status = tracer.run(pid, companions=helpers)
            helpers = ()    # reaped with the tracees
            for nr in notified:
                if served[nr]:
                    tracer.stats.notified[nr] += served[nr]
        else:
            data = os.read(start_r, 16)
            if data:
                state.started(int(data))
            _, raw = os.waitpid(pid, 0)
            status = os.WEXITSTATUS(raw) if os.WIFEXITED(raw) else 128 + os.WTERMSIG(raw)
        if reader is not None:
            reader.join()
        os.set_blocking(err_r, False)
        try:
            message = os.read(err_r, 4096).decode(errors="replace")
        except BlockingIOError:
            message = ""
        if message:
            raise SandboxError(message)
        return status
    finally:
        state.restore(saved_handlers)
        os.sched_setaffinity(0, affinity)
        for sock in (helper_sock, container_sock):
            if sock is not None:
                sock.close()
        for helper in helpers:   # only when the tracer failed: it reaps the helper otherwise
            os.kill(helper, signal.SIGKILL)
            os.waitpid(helper, 0)
        for fd in (err_r, err_w, out_w, start_r, start_w):
            if fd is not None:
                os.close(fd)
        if out_r is not None and (reader is None or not reader.is_alive()):
            os.close(out_r)
        points.cleanup()


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
