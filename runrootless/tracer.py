"""The ptrace side: seccomp stops dispatched to the emulation table, forks and execs followed.

ptrace requests go through python-ptrace's binding layer (ptrace_ops.py);
its debugger objects would add per-stop bookkeeping on the hot path.

Every tracee is restarted with PTRACE_CONT, so untrapped syscalls never
stop; a handler that needs the result asks for the exit stop (PTRACE_SYSCALL).

Under user notification (supervisor.py, the default) only tasks whose ids
differ from the initial ones are traced: they are seized while they wait
for the answer to the set*id call (or the execve of a set-id file) that
changes them, and what stops here is their life cycle (forks, whose
children inherit their credentials; execs) and the calls of the user
filter a non-root task gets (creations, permission checks).  With
notify=False every task is traced and every emulated call stops here.

Tracees are seized (PTRACE_SEIZE), so an exec stops only where
PTRACE_O_TRACEEXEC is set: under user notification for every tracee;
otherwise for tracees whose saved or fs ids differ from the effective ones.
A fake root (euid = suid = fsuid = 0, one egid) then execs with no event;
the set-id bits of what it runs are applied when it next makes a trapped
call (_catch_up_exec), the only way its ids can be seen.
"""

from __future__ import annotations

import errno
import os
import signal
import stat as st
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from umoci_py.rootless import XATTR_NAME

from . import linux
from . import ptrace_ops as pt
from .emulate import ids
from .emulate.base import Call, Creds, Return, TraceeFiles, TraceeMemory, owner_from

OPTIONS = (pt.PTRACE_O_TRACESYSGOOD | pt.PTRACE_O_TRACESECCOMP | pt.PTRACE_O_TRACEFORK
           | pt.PTRACE_O_TRACEVFORK | pt.PTRACE_O_TRACECLONE | pt.PTRACE_O_EXITKILL)
# Exec events only for tracees whose ids an ordinary exec changes (see _set_exec_tracing).
EXEC_OPTIONS = OPTIONS | pt.PTRACE_O_TRACEEXEC
SKIP = 2**64 - 1
SECCOMP_NR = 317
SYSCALL_STOP = signal.SIGTRAP | 0x80
SECCOMP_STOP = signal.SIGTRAP | pt.PTRACE_EVENT_SECCOMP << 8   # status >> 8 of a seccomp stop
SYSCALL_INSN = b"\x0f\x05"
_TRACEES_CACHED = 4096
_ENTRY = object()   # pending marker: the next syscall stop is an injected call's entry


@dataclass
class Stats:
    """What the tracer did: for the bench and tests (cheap enough to keep always on)."""

    trapped: int = 0
    stops: int = 0
    exit_stops: int = 0                                             # second stops (AtExit)
    by_nr: Counter = field(default_factory=Counter)               # trapped calls per syscall
    ns_by_nr: Counter = field(default_factory=Counter)            # tracer time per syscall
    notified: Counter = field(default_factory=Counter)            # answered by the notification listener
    prefiltered: Counter = field(default_factory=Counter)         # of those, answered by the C pre-filter
    handler_errors: int = 0                                       # handler bugs, answered EINVAL


class _Tracee:
    """What the tracer keeps per traced thread between stops."""

    __slots__ = ("mem", "files")

    def __init__(self, pid: int, vm: linux.VmBuffer, host_uid: int, host_gid: int):
        self.mem = TraceeMemory(pid, vm)
        self.files = TraceeFiles.for_pid(pid, host_uid, host_gid)


@dataclass
class Tracer:
    table: dict[int, Callable]
    initial: Creds
    stats: Stats = field(default_factory=Stats)
    creds: dict[int, Creds] = field(default_factory=dict)
    pending: dict[int, tuple[Callable, Call]] = field(default_factory=dict)
    # New tracees whose first stop came before their parent's fork event.
    held: set[int] = field(default_factory=set)
    # New tracees announced by a fork event whose first stop is still to come.
    expected: set[int] = field(default_factory=set)
    on_new_child: Callable[[int], None] | None = None
    tracees: dict[int, _Tracee] = field(default_factory=dict)
    vm: linux.VmBuffer = field(default_factory=linux.VmBuffer)
    regs: pt.Regs = field(default_factory=pt.Regs)
    host_ids: tuple[int, int] = field(default_factory=lambda: (os.getuid(), os.getgid()))
    # The second filter (emulate.user) and the tracees that have it (inherited on fork).
    user_filter: bytes | None = None
    setid: frozenset[int] = frozenset()
    filtered: set[int] = field(default_factory=set)
    # Exec events for every tracee: under user notification no trapped call could catch up.
    follow_all_execs: bool = False
    # Exit status of the main pid, once it has ended.
    result: int = 1
    # Tracees stopped by PTRACE_INTERRUPT to get the user filter: the set*id result to return.
    inject: dict[int, int] = field(default_factory=dict)
    # Seized tasks stopped by PTRACE_INTERRUPT to be let go (their ids are the initial ones again).
    detach: set[int] = field(default_factory=set)
    # Tracees with exec events on (PTRACE_O_TRACEEXEC; inherited on fork).
    exec_traced: set[int] = field(default_factory=set)
    # The executable (st_dev, st_ino) each fake root's ids were last brought up to date for.
    exe: dict[int, tuple[int, int]] = field(default_factory=dict)

    def attach(self, pid: int) -> None:
        """pid, a child stopped by its own SIGSTOP, is seized and continued."""
        _, status = os.waitpid(pid, linux.WALL | os.WUNTRACED)
        if not os.WIFSTOPPED(status):
            raise OSError(errno.ESRCH, "traced child died before starting")
        creds = self.creds[pid] = self.initial.copy()
        pt.seize(pid, EXEC_OPTIONS if self.follow_all_execs else OPTIONS)
        if self.follow_all_execs:
            self.exec_traced.add(pid)
        self._set_exec_tracing(pid, creds)
        os.kill(pid, signal.SIGCONT)

    def seize(self, pid: int, creds: Creds) -> None:
        """Follow a running task from now on (its forks inherit creds; exec events on).

        Under user notification only tasks whose credentials differ from the
        initial ones are traced; pid is blocked in a notification meanwhile.
        """
        self.creds[pid] = creds
        try:
            pt.seize(pid, EXEC_OPTIONS)
        except ProcessLookupError:
            self._forget(pid)
            return
        except OSError:
            return   # traced by someone else (a debugger in the container): ids kept, forks not followed
        self.exec_traced.add(pid)

    def request_filter(self, pid: int, value: int) -> None:
        """Give the user filter to a seized task blocked in a set*id notification.

        PTRACE_INTERRUPT before the answer: the task stops on its way out of
        the call, before running any instruction of its own, and
        _inject_at_interrupt makes it install the filter then return value.
        """
        if pid in self.exec_traced and self.user_filter is not None:
            try:
                pt.interrupt(pid)
            except OSError:
                return
            self.inject[pid] = value

    def request_detach(self, pid: int) -> None:
        """Stop following a seized task whose ids are the initial ones again (and has no user filter)."""
        if pid in self.exec_traced and pid not in self.filtered and pid not in self.inject:
            try:
                pt.interrupt(pid)
            except OSError:
                return
            self.detach.add(pid)

    def run(self, main_pid: int) -> int:
        """Serve stops until every child is gone; the exit status of main_pid."""
        waitpid = os.waitpid
        while True:
            try:
                pid, status = waitpid(-1, linux.WALL)
            except ChildProcessError:
                return self.result
            self.handle(pid, status, main_pid)

    def handle(self, pid: int, status: int, main_pid: int) -> None:
        """One waitpid report: a stop to serve, or a task's end."""
        self.stats.stops += 1
        if status & 0xFF != 0x7F:   # exited or killed (not stopped)
            self._forget(pid)
            if pid == main_pid:
                self.result = (os.WEXITSTATUS(status) if os.WIFEXITED(status)
                               else 128 + os.WTERMSIG(status))
            return
        try:
            if status >> 8 == SECCOMP_STOP:
                self._seccomp(pid)
            else:
                self._stopped(pid, status)
        except ProcessLookupError:
            self._forget(pid)  # killed while stopped (e.g. SIGKILL mid-syscall)

    def _forget(self, pid: int) -> None:
        self.creds.pop(pid, None)
        self.pending.pop(pid, None)
        self.held.discard(pid)
        self.expected.discard(pid)
        self.tracees.pop(pid, None)
        self.filtered.discard(pid)
        self.exec_traced.discard(pid)
        self.exe.pop(pid, None)
        self.inject.pop(pid, None)
        self.detach.discard(pid)

    def tracee(self, pid: int) -> _Tracee:
        """Memory and file views of a task (traced or, under user notification, not).

        Untraced tasks are never forgotten one by one, so the cache is
        dropped whole at a bound; tids are reused, but a view holds only
        /proc/TID paths.
        """
        tracee = self.tracees.get(pid)
        if tracee is None:
            if len(self.tracees) >= _TRACEES_CACHED:
                self.tracees.clear()
            tracee = self.tracees[pid] = _Tracee(pid, self.vm, *self.host_ids)
        return tracee

    def _resume(self, pid: int, sig: int = 0, request: Callable[[int, int], None] = pt.cont) -> None:
        request(pid, sig)

    def _stopped(self, pid: int, status: int) -> None:
        sig = os.WSTOPSIG(status)
        event = status >> 16
        if event == pt.PTRACE_EVENT_STOP:
            if pid in self.inject:
                self._inject_at_interrupt(pid)
            elif pid in self.detach:
                self._forget(pid)
                pt.detach(pid)
            elif pid not in self.creds:
                self.held.add(pid)  # first stop of a child whose fork event is still to come
            else:
                # A new child's first stop, or a group-stop: job control is not
                # supported, keep running.
                self.expected.discard(pid)
                self._resume(pid)
        elif sig == signal.SIGTRAP and event:
            self._event(pid, event)
        elif sig == SYSCALL_STOP:
            self._syscall_exit(pid)
        else:   # a signal: delivered; a pending exit stop must still come
            self._resume(pid, sig, pt.syscall if pid in self.pending else pt.cont)

    def _event(self, pid: int, event: int) -> None:
        if event in (pt.PTRACE_EVENT_FORK, pt.PTRACE_EVENT_VFORK, pt.PTRACE_EVENT_CLONE):
            child = pt.event_msg(pid)
            parent = self.creds.get(pid)
            self.creds[child] = (parent if parent is not None else self.initial).copy()
            if pid in self.filtered:
                self.filtered.add(child)
            if pid in self.exec_traced:
                self.exec_traced.add(child)
            if pid in self.exe:
                self.exe[child] = self.exe[pid]
            if self.on_new_child is not None:
                self.on_new_child(child)
            if child in self.held:
                self.held.discard(child)
                self._resume(child)
            else:
                self.expected.add(child)
        elif event == pt.PTRACE_EVENT_EXEC:
            former = pt.event_msg(pid)
            if former != pid:
                # A non-leader thread exec'd: it now has the leader's pid.
                if former in self.creds:
                    self.creds[pid] = self.creds.pop(former)
                if former in self.filtered:
                    self.filtered.add(pid)
                if former in self.exec_traced:
                    self.exec_traced.add(pid)
                self._forget(former)
            self._exec(pid)
        self._resume(pid)

    def _exec(self, pid: int) -> None:
        creds = self.creds.get(pid)
        if creds is None:
            creds = self.creds[pid] = self.initial.copy()
        try:
            info = os.stat(f"/proc/{pid}/exe")
        except OSError:
            return
        self._apply_exec(pid, creds, info)
        self._set_exec_tracing(pid, creds)

    def _catch_up_exec(self, pid: int, creds: Creds) -> None:
        """Apply the set-id bits of a fake root's executable if it exec'd since last seen."""
        try:
            info = os.stat(f"/proc/{pid}/exe")
        except OSError:
            return
        if self.exe.get(pid) != (info.st_dev, info.st_ino):
            self.exe[pid] = (info.st_dev, info.st_ino)
            self._apply_exec(pid, creds, info)

    def _set_exec_tracing(self, pid: int, creds: Creds) -> None:
        """Exec events for pid unless an exec without set-id bits leaves its ids as they are."""
        if self.follow_all_execs:
            return
        wanted = not (creds.euid == creds.suid == creds.fsuid == 0 and creds.egid == creds.sgid == creds.fsgid)
        if wanted != (pid in self.exec_traced):
            pt.setoptions(pid, EXEC_OPTIONS if wanted else OPTIONS)
            if wanted:
                self.exec_traced.add(pid)
                self.exe.pop(pid, None)
            else:
                self.exec_traced.discard(pid)
                try:
                    info = os.stat(f"/proc/{pid}/exe")
                except OSError:
                    return
                self.exe[pid] = (info.st_dev, info.st_ino)

    def _apply_exec(self, pid: int, creds: Creds, info: os.stat_result) -> None:
        owner, nnp = (0, 0), False
        try:
            if info.st_mode & (st.S_ISUID | st.S_ISGID):
                try:
                    payload = os.getxattr(f"/proc/{pid}/exe", XATTR_NAME)
                except OSError:
                    payload = None
                owner = owner_from(payload, (0, 0))
                nnp = self.tracee(pid).files.status_field(b"NoNewPrivs:") == [b"1"]
        except OSError:
            return
        ids.on_exec(creds, info.st_mode, owner, nnp)

    def _seccomp(self, pid: int) -> None:
        start = time.perf_counter_ns()
        regs = pt.get_regs(pid, self.regs)
        nr = regs.orig_rax
        stats = self.stats
        stats.trapped += 1
        stats.by_nr[nr] += 1
        try:
            self._emulate(pid, regs)
        finally:
            stats.ns_by_nr[nr] += time.perf_counter_ns() - start

    def _emulate(self, pid: int, regs: pt.Regs) -> None:
        nr = regs.orig_rax
        handler = self.table.get(nr)
        if handler is None:
            self._resume(pid)
            return
        creds = self.creds.get(pid)
        if creds is None:
            creds = self.creds[pid] = self.initial.copy()
        if pid not in self.exec_traced:
            self._catch_up_exec(pid, creds)
        tracee = self.tracee(pid)
        call = Call(nr, (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9),
                    creds, tracee.mem, tracee.files)
        try:
            result = handler(call)
        except OSError as err:
            result = Return(-(err.errno or errno.EIO))
        except Exception:  # noqa: BLE001 - arguments no handler foresaw fail the call, not the run
            self.stats.handler_errors += 1
            result = Return(-errno.EINVAL)
        if nr in self.setid:
            self._set_exec_tracing(pid, creds)
        if result is None:
            self._resume(pid)
        elif isinstance(result, Return) and nr in self.setid and self.wants_filter(pid, creds):
            self._inject_filter(pid, regs, result.value)
        elif isinstance(result, Return):
            regs.orig_rax = SKIP
            regs.rax = result.value & SKIP
            pt.set_regs(pid, regs)
            self._resume(pid)
        else:
            self.pending[pid] = (result.fn, call)
            self._resume(pid, request=pt.syscall)

    def wants_filter(self, pid: int, creds: Creds) -> bool:
        """Has the process dropped root for good (no root among real/effective/saved uid)?

        A temporary seteuid (apt's sandbox probe) keeps root as saved uid and
        gets no filter: installed filters cannot be removed, and apt/dpkg as
        root must not pay for creating files.
        """
        return (self.user_filter is not None and pid not in self.filtered
                and creds.ruid != 0 and creds.euid != 0 and creds.suid != 0)

    def _inject_filter(self, pid: int, regs: pt.Regs, value: int) -> None:
        """Turn the trapped set*id call into seccomp(SET_MODE_FILTER, 0, prog).

        The program and its sock_fprog go below the red zone of the thread's
        stack; the exit stop puts every register back with the emulated result.
        """
        saved = pt.Regs.from_buffer_copy(regs)
        saved.rax = value & SKIP
        prog = self.user_filter
        addr = (regs.rsp - 128 - 16 - len(prog)) & ~0xF
        try:
            self.vm.write(pid, addr, struct.pack("HxxxxxxQ", len(prog) // 8, addr + 16) + prog)
        except OSError:
            regs.orig_rax = SKIP   # no room on its stack: the ids change, creations stay unrecorded
            regs.rax = saved.rax
            pt.set_regs(pid, regs)
            self._resume(pid)
            return
        regs.orig_rax, regs.rdi, regs.rsi, regs.rdx = SECCOMP_NR, 1, 0, addr   # SECCOMP_SET_MODE_FILTER
        pt.set_regs(pid, regs)
        self.pending[pid] = (None, saved)
        self._resume(pid, request=pt.syscall)

    def _inject_at_interrupt(self, pid: int) -> None:
        """At the interrupt stop after a set*id call: run seccomp(SET_MODE_FILTER) through
        that call's own syscall instruction, then restore every register with the result."""
        value = self.inject.pop(pid)
        regs = pt.get_regs(pid, self.regs)
        saved = pt.Regs.from_buffer_copy(regs)
        saved.rax = value & SKIP
        saved.orig_rax = SKIP   # no syscall restart: the call is answered
        prog = self.user_filter
        addr = (regs.rsp - 128 - 16 - len(prog)) & ~0xF
        try:
            if self.vm.read(pid, regs.rip - 2, 2) != SYSCALL_INSN:
                raise OSError(errno.EFAULT, "no syscall instruction")
            self.vm.write(pid, addr, struct.pack("HxxxxxxQ", len(prog) // 8, addr + 16) + prog)
        except OSError:
            pt.set_regs(pid, saved)   # ids changed, creations stay unrecorded
            self._resume(pid)
            return
        regs.rip -= 2
        regs.orig_rax = SKIP
        regs.rax, regs.rdi, regs.rsi, regs.rdx = SECCOMP_NR, 1, 0, addr   # SECCOMP_SET_MODE_FILTER
        pt.set_regs(pid, regs)
        self.pending[pid] = (_ENTRY, saved)
        self._resume(pid, request=pt.syscall)

    def _syscall_exit(self, pid: int) -> None:
        entry = self.pending.pop(pid, None)
        if entry is not None and entry[0] is _ENTRY:   # the injected call's entry: on to its exit
            self.pending[pid] = (None, entry[1])
            self._resume(pid, request=pt.syscall)
            return
        if entry is not None and entry[0] is None:   # after _inject_filter
            regs = pt.get_regs(pid, self.regs)
            if regs.rax == 0:
                self.filtered.add(pid)
            pt.set_regs(pid, entry[1])
            self.stats.exit_stops += 1
        elif entry is not None:
            start = time.perf_counter_ns()
            self.stats.exit_stops += 1
            fn, call = entry
            regs = pt.get_regs(pid, self.regs)
            value = regs.rax - 2**64 if regs.rax >= 2**63 else regs.rax
            try:
                new = fn(call, value)
            except OSError as err:
                new = -(err.errno or errno.EIO)
            except Exception:  # noqa: BLE001 - as in _emulate
                self.stats.handler_errors += 1
                new = -errno.EINVAL
            if new is not None:
                regs.rax = new & SKIP
                pt.set_regs(pid, regs)
            self.stats.ns_by_nr[regs.orig_rax] += time.perf_counter_ns() - start
        self._resume(pid)
