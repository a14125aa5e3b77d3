"""The run loop under user notification: emulated calls answered from the listener,
ptrace kept for the tasks whose credentials differ from the initial ones.

Every emulated call of the first filter, and execve, comes to the listener;
the caller wakes once with the answer, without a ptrace stop.  A task whose
credentials stay the initial ones (the fake root of an apt or dpkg run, and
everything it forks) needs nothing else: its ids are the initial ones, so
it is never traced and its forks, signals and exits cost nothing.  A task
that changes its ids (set*id, setgroups) or execs a set-id file that would
is seized then, while it waits for the answer; from there the tracer
follows its forks (children inherit its credentials), its execs, and its
user filter (creations and permission checks of a non-root user).  When the
run starts as a non-root user, every task is traced from the start.

One thread serves the listener and makes every ptrace request; another
only waits for ptrace stops and exits and hands them over.  In front of the
listener, a C thread (prefilter.py) answers the stats and execs no
emulation applies to and forwards the rest here.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import stat as st
import threading
from collections import deque
from typing import Callable

from . import linux, notify, syscalls
from .prefilter import Prefilter
from .emulate import EXEC, MUTATING, ids
from .emulate.base import AT_EMPTY_PATH, AT_FDCWD, AT_SYMLINK_NOFOLLOW, Call, Return, emulated_owner
from .tracer import Tracer


class Supervisor:
    def __init__(self, tracer: Tracer, table: dict[int, Callable], prefilter: bool = True):
        self.tracer = tracer
        self.table = table
        self.use_prefilter = prefilter
        self.listener: notify.Listener | None = None
        self.prefilter: Prefilter | None = None

    def run(self, main_pid: int, sock: socket.socket, start_fd: int, started: Callable[[int], None]) -> int:
        """Serve until every child and tracee is gone; the exit status of main_pid.

        sock brings the listener from the workload; start_fd the host pid of
        the container's init.  waitpid runs in a thread of its own (reports
        come through a pipe): SIGCHLD cannot be relied on when the runner has
        other threads, and every ptrace request stays in this thread.
        """
        reports: deque = deque()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        waiter = threading.Thread(target=_wait_all, args=(reports, wake_w), daemon=True)
        waiter.start()
        ended, main_alive = False, True
        poller = select.poll()
        for fd in (wake_r, sock.fileno(), start_fd):
            poller.register(fd, select.POLLIN)
        try:
            while True:
                for fd, events in poller.poll():
                    if self.prefilter is not None and fd == self.prefilter.fd:
                        forwarded = self.prefilter.take()
                        if forwarded is None:   # no task uses the filter any more
                            poller.unregister(fd)
                            error = self._stop_prefilter()
                            if error:
                                raise OSError(error, f"seccomp listener: {os.strerror(error)}")
                        else:
                            for got in forwarded:
                                self._serve(got)
                    elif self.listener is not None and fd == self.listener.fd:
                        if events & select.POLLIN:
                            got = self.listener.recv()
                            if got is not None:
                                self._serve(got)
                        elif events & (select.POLLHUP | select.POLLERR):
                            poller.unregister(fd)   # no task uses the filter any more
                    elif fd == wake_r:
                        _drain(wake_r)
                        while reports:
                            report = reports.popleft()
                            if report is None:
                                ended = True
                                return self.tracer.result
                            if report[0] == main_pid and report[1] & 0xFF != 0x7F:
                                main_alive = False   # reaped: its pid is never signalled again
                            self.tracer.handle(*report, main_pid)
                    elif fd == start_fd:
                        poller.unregister(fd)
                        data = os.read(fd, 16)
                        if data:
                            started(int(data))
                    else:
                        poller.unregister(fd)
                        listener = notify.receive_listener(sock)
                        if listener is not None:
                            self.listener = notify.Listener(listener)
                            if self.use_prefilter:
                                self.prefilter = Prefilter(listener)
                                poller.register(self.prefilter.fd, select.POLLIN)
                            else:
                                poller.register(listener, select.POLLIN)
        finally:
            if not ended and main_alive:   # left by an exception: end the container, or the join never returns
                try:
                    os.kill(main_pid, signal.SIGKILL)   # setup; init and the rest follow (PDEATHSIG)
                except ProcessLookupError:
                    pass
            waiter.join()
            os.close(wake_r)
            self._stop_prefilter()   # still running only when the loop is left by an exception
            if self.listener is not None:
                os.close(self.listener.fd)

    def _stop_prefilter(self) -> int:
        """End the pre-filter's thread and count what it answered; the errno that ended it early."""
        if self.prefilter is None:
            return 0
        prefilter, self.prefilter = self.prefilter, None
        answered, error = prefilter.stop()
        self.tracer.stats.prefiltered.update(answered)
        self.tracer.stats.notified.update(answered)
        return error

    def _serve(self, got: tuple[int, int, int, tuple[int, ...]]) -> None:
        notif_id, tid, nr, args = got
        self.listener.send(notif_id, self.answer(tid, nr, args))
        tracer = self.tracer
        if nr in MUTATING and tracer.is_seized(tid) and tracer.creds_of(tid) == tracer.initial:
            # A temporary seteuid and back (apt as root does): untraced again, after the answer
            # (the call then completes without a restart).
            tracer.request_detach(tid)

    def answer(self, tid: int, nr: int, args: tuple[int, ...]) -> tuple[int, int, int]:
        """(val, error, flags) for one notified call."""
        tracer = self.tracer
        stats = tracer.stats
        stats.notified[nr] += 1
        creds = tracer.creds_of(tid)
        try:
            if nr in EXEC:
                return self._exec(tid, nr, args, creds)
            handler = self.table.get(nr)
            if handler is None:
                return notify.CONTINUE
            if creds is None and nr in MUTATING:
                creds = tracer.initial.copy()
                view = tracer.tracee(tid)
                result = notify.run_handler(handler, Call(nr, args, creds, view.mem, view.files))
                if creds == tracer.initial:
                    return notify.response(result)
                tracer.seize(tid, creds)
            else:
                view = tracer.tracee(tid)
                call = Call(nr, args, tracer.initial if creds is None else creds, view.mem, view.files)
                result = notify.run_handler(handler, call)
            if nr in MUTATING and result is not None:
                tracer.after_change(tid, result.value)
            return notify.response(result)
        except OSError as err:
            return notify.response(Return(-(err.errno or errno.EIO)))
        except Exception:  # noqa: BLE001 - arguments no handler foresaw fail the call, not the run
            stats.handler_errors += 1
            return notify.response(Return(-errno.EINVAL))

    def _exec(self, tid: int, nr: int, args: tuple[int, ...], creds) -> tuple[int, int, int]:
        """An untraced task execs a set-id file that changes its ids: seize it for the exec event."""
        tracer = self.tracer
        if creds is not None:
            return notify.CONTINUE   # traced: its exec event applies the set-id bits
        view = tracer.tracee(tid)
        files = view.files
        call = Call(nr, args, tracer.initial, view.mem, files)
        try:
            if nr == syscalls.EXECVE:
                fd = files.open(AT_FDCWD, call.path_arg(0))
            else:
                flags = call.int_arg(4)
                fd = files.open(call.int_arg(0), call.path_arg(1), follow=not flags & AT_SYMLINK_NOFOLLOW,
                                empty_path=bool(flags & AT_EMPTY_PATH))
        except OSError:
            return notify.CONTINUE   # the kernel fails it the same way
        try:
            info = os.fstat(fd)
            if not st.S_ISREG(info.st_mode) or not info.st_mode & (st.S_ISUID | st.S_ISGID):
                return notify.CONTINUE
            after = tracer.initial.copy()
            ids.on_exec(after, info.st_mode, emulated_owner(files, fd, info), False)
        finally:
            os.close(fd)
        if after != tracer.initial:
            tracer.seize(tid, tracer.initial.copy())
        return notify.CONTINUE


def _wait_all(reports: deque, wake: int) -> None:
    """Every waitpid report, in order, then None once there is nothing left to wait for."""
    try:
        while True:
            try:
                reports.append(os.waitpid(-1, linux.WALL))
            except ChildProcessError:
                reports.append(None)
                return
            os.write(wake, b"w")
    finally:
        os.write(wake, b"w")
        os.close(wake)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
