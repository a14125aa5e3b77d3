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

Whenever a task's fake effective or fs ids are not root, by whatever path
(set*id, setfsuid, an exec that makes the saved uid the effective one, a
set-id file), its permissions are checked and what it creates is recorded:
by the user filter, or, while its ids may still go back to root, by
stopping it at every syscall (Task.stepping).

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
from enum import Enum
from typing import Callable, NamedTuple

from umoci_py.rootless import XATTR_NAME

from . import linux
from . import ptrace_ops as pt
from . import syscalls as nr
from .seccomp_filter import AUDIT_ARCH_I386, AUDIT_ARCH_X86_64
from .emulate import USER_ONLY, ids, user
from .emulate.base import AtExit, Call, Creds, Return, TraceeFiles, TraceeMemory, owner_from

OPTIONS = (pt.PTRACE_O_TRACESYSGOOD | pt.PTRACE_O_TRACESECCOMP | pt.PTRACE_O_TRACEFORK
           | pt.PTRACE_O_TRACEVFORK | pt.PTRACE_O_TRACECLONE | pt.PTRACE_O_EXITKILL)
# Exec events only for tracees whose ids an ordinary exec changes (see _set_exec_tracing).
EXEC_OPTIONS = OPTIONS | pt.PTRACE_O_TRACEEXEC
SKIP = 2**64 - 1
SYSCALL_STOP = signal.SIGTRAP | 0x80
SECCOMP_STOP = signal.SIGTRAP | pt.PTRACE_EVENT_SECCOMP << 8   # status >> 8 of a seccomp stop
SYSCALL_INSN = b"\x0f\x05"
# At a syscall-entry stop a call cannot be skipped (seccomp then sees nr -1 and answers ENOSYS):
# it is replaced by getpid, whose result the exit stop overwrites (i386 numbers it 20).
STAND_IN = {AUDIT_ARCH_X86_64: nr.GETPID, AUDIT_ARCH_I386: 20}
# Calls followed one by one (see Task.stepping) before the user filter is installed anyway.
STEP_BUDGET = 4096
_VIEWS_CACHED = 4096
_DEPARTED_KEPT = 4096


@dataclass
class Stats:
    """What the tracer did: for the bench and tests (cheap enough to keep always on)."""

    trapped: int = 0
    stops: int = 0
    exit_stops: int = 0                                             # second stops (AtExit)
    stepped: int = 0                                                # syscall-entry stops of stepping tasks
    by_nr: Counter = field(default_factory=Counter)               # trapped calls per syscall
    ns_by_nr: Counter = field(default_factory=Counter)            # tracer time per syscall
    notified: Counter = field(default_factory=Counter)            # answered by the notification listener
    prefiltered: Counter = field(default_factory=Counter)         # of those, answered by the C pre-filter
    handler_errors: int = 0                                       # handler bugs, answered EINVAL


def needs_user_emulation(creds: Creds) -> bool:
    """Would the kernel check this task's permissions, or give what it creates a non-root owner?"""
    return creds.euid != 0 or creds.fsuid != 0 or creds.fsgid != 0


def settled(creds: Creds) -> bool:
    """Can it no longer become root again by a set*id call (only by exec of a set-id file)?"""
    return 0 not in (creds.ruid, creds.euid, creds.suid) and not creds.cap_permitted


class _View:
    """A task's memory and files, as the handlers see them."""

    __slots__ = ("mem", "files")

    def __init__(self, pid: int, vm: linux.VmBuffer, host_uid: int, host_gid: int):
        self.mem = TraceeMemory(pid, vm)
        self.files = TraceeFiles.for_pid(pid, host_uid, host_gid)


class Awaited(Enum):
    """What the next syscall stop of a task is for."""

    AT_EXIT = 1          # a handler's AtExit: fn(call, result)
    RESULT = 2           # give value as the result (a call answered at its entry stop)
    INJECTED = 3         # the exit of an injected seccomp call: note the filter, put regs back
    INJECTED_ENTRY = 4   # that call's entry (injected at an interrupt stop): on to its exit


class _Pending(NamedTuple):
    kind: Awaited
    fn: Callable | None = None
    call: Call | None = None
    regs: pt.Regs | None = None
    value: int = 0


@dataclass(eq=False)
class Task:
    """What the tracer keeps per traced thread between stops."""

    creds: Creds
    pending: _Pending | None = None
    # Has the user filter (inherited on fork, kept across exec).
    filtered: bool = False
    # PTRACE_O_TRACEEXEC is on (inherited on fork).
    exec_events: bool = False
    # The executable (st_dev, st_ino) a fake root's ids were last brought up to date for.
    exe: tuple[int, int] | None = None
    # Stopped by PTRACE_INTERRUPT in a set*id notification: the result to return at that stop.
    answer: int | None = None
    # Stopped by PTRACE_INTERRUPT to be let go (its ids are the initial ones again).
    leaving: bool = False
    # Needs its permissions checked and creations recorded but has no user filter, which
    # cannot be removed once installed: while its ids may still go back to root (apt's
    # sandbox probe: seteuid(_apt), a few calls, seteuid(0); then dpkg, which must not pay
    # for creating files), every syscall stops (PTRACE_SYSCALL) and the user filter's calls
    # are handled at their entry.  Once its ids can no longer go back (or after STEP_BUDGET
    # calls), the filter is injected at the next entry instead.
    stepping: bool = False
    steps: int = 0
    # The filter could not be injected (no room on the stack): stepping for good.
    filter_refused: bool = False
    # Its pid in the container (0: not looked up), noted once its ids differ from the initial ones.
    ns_pid: int = 0
    view: _View | None = None

    def inherit(self) -> "Task":
        """The record of a new child or thread: credentials and filters as the kernel copies them."""
        return Task(self.creds.copy(), filtered=self.filtered, exec_events=self.exec_events, exe=self.exe,
                    stepping=self.stepping)


@dataclass
class Tracer:
    table: dict[int, Callable]
    initial: Creds
    stats: Stats = field(default_factory=Stats)
    tasks: dict[int, Task] = field(default_factory=dict)
    # New tracees whose first stop came before their parent's fork event (no record yet).
    held: set[int] = field(default_factory=set)
    on_new_child: Callable[[int], None] | None = None
    # Views of untraced tasks (under user notification), dropped whole at a bound.
    views: dict[int, _View] = field(default_factory=dict)
    vm: linux.VmBuffer = field(default_factory=linux.VmBuffer)
    regs: pt.Regs = field(default_factory=pt.Regs)
    host_ids: tuple[int, int] = field(default_factory=lambda: (os.getuid(), os.getgid()))
    # The second filter (emulate.user), the calls it traps, and its refused i386 calls.
    user_filter: bytes | None = None
    user_only: frozenset[int] = USER_ONLY
    user_i386: tuple[int, ...] = user.I386
    # Calls after which a task may need the user filter.
    setid: frozenset[int] = frozenset()
    # Exec events for every tracee: under user notification no trapped call could catch up.
    follow_all_execs: bool = False
    # Exit status of the main pid, once it has ended.
    result: int = 1
    # The last ids of ended processes whose ids were not the initial ones, by pid in the container
    # (SO_PEERCRED of a peer that has gone; a bounded record, oldest dropped first).
    departed: dict[int, Creds] = field(default_factory=dict)

    def attach(self, pid: int, filtered: bool = False) -> None:
        """pid, a child stopped by its own SIGSTOP, is seized and continued."""
        _, status = os.waitpid(pid, linux.WALL | os.WUNTRACED)
        if not os.WIFSTOPPED(status):
            raise OSError(errno.ESRCH, "traced child died before starting")
        task = self.tasks[pid] = Task(self.initial.copy(), filtered=filtered)
        self._note_ns_pid(pid, task)
        pt.seize(pid, EXEC_OPTIONS if self.follow_all_execs else OPTIONS)
        task.exec_events = self.follow_all_execs
        self._set_exec_tracing(pid, task)
        self._update_mode(task)
        os.kill(pid, signal.SIGCONT)

    def seize(self, pid: int, creds: Creds) -> None:
        """Follow a running task from now on (its forks inherit creds; exec events on).

        Under user notification only tasks whose credentials differ from the
        initial ones are traced; pid is blocked in a notification meanwhile.
        """
        try:
            pt.seize(pid, EXEC_OPTIONS)
        except ProcessLookupError:
            self._forget(pid)
            return
        except OSError:
            # Traced by someone else (a debugger in the container): ids kept, forks not followed.
            self._note_ns_pid(pid, self.tasks.setdefault(pid, Task(creds)))
            return
        self.tasks[pid] = Task(creds, exec_events=True)
        self._note_ns_pid(pid, self.tasks[pid])

    def creds_of(self, pid: int) -> Creds | None:
        task = self.tasks.get(pid)
        return None if task is None else task.creds

    def creds_in_container(self, pid: int) -> Creds:
        """The fake credentials of the process whose pid in the container is pid (for SO_PEERCRED).

        Untraced processes have the initial ones.  An ended one's last ids
        are kept (a peer may be gone by the time the server asks); a pid
        reused since by an untraced process would then be answered wrongly.
        """
        for task in self.tasks.values():
            if task.ns_pid == pid:
                return task.creds
        return self.departed.get(pid, self.initial)

    def _note_ns_pid(self, pid: int, task: Task) -> None:
        """Look up pid's pid in the container while it lives, once its ids differ from the initial ones."""
        if not task.ns_pid and task.creds != self.initial:
            try:
                task.ns_pid = self.tracee(pid).files.own_pid()
            except OSError:
                pass

    def is_seized(self, pid: int) -> bool:
        task = self.tasks.get(pid)
        return task is not None and task.exec_events

    def after_change(self, pid: int, value: int) -> None:
        """A seized task blocked in a notified call that changed its ids: emulate for it from now on.

        PTRACE_INTERRUPT before the answer: the task stops on its way out of
        the call, before running any instruction of its own, and
        _at_interrupt gives it the user filter, or makes it stop at every call,
        then returns value.
        """
        task = self.tasks.get(pid)
        if task is not None:
            self._note_ns_pid(pid, task)
        if (task is None or not task.exec_events or task.stepping or not self._want_stepping(task)
                or task.answer is not None):
            return
        try:
            pt.interrupt(pid)
        except OSError:
            return
        task.answer = value

    def request_detach(self, pid: int) -> None:
        """Stop following a seized task whose ids are the initial ones again (and has no user filter)."""
        task = self.tasks.get(pid)
        if task is None or not task.exec_events or task.filtered or task.answer is not None or task.leaving:
            return
        try:
            pt.interrupt(pid)
        except OSError:
            return
        task.leaving = True

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
            task = self.tasks.get(pid)
            if task is not None and task.ns_pid:
                if len(self.departed) >= _DEPARTED_KEPT:
                    del self.departed[next(iter(self.departed))]
                self.departed[task.ns_pid] = task.creds
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
        self.tasks.pop(pid, None)
        self.held.discard(pid)
        self.views.pop(pid, None)

    def tracee(self, pid: int) -> _View:
        """Memory and file views of a task (traced or, under user notification, not).

        Untraced tasks are never forgotten one by one, so their cache is
        dropped whole at a bound; tids are reused, but a view holds only
        /proc/TID paths.
        """
        task = self.tasks.get(pid)
        if task is not None:
            if task.view is None:
                task.view = _View(pid, self.vm, *self.host_ids)
            return task.view
        view = self.views.get(pid)
        if view is None:
            if len(self.views) >= _VIEWS_CACHED:
                self.views.clear()
            view = self.views[pid] = _View(pid, self.vm, *self.host_ids)
        return view

    def _resume(self, pid: int, task: Task | None, sig: int = 0) -> None:
        """Continue to the next trap, or to the next syscall stop when one is awaited.

        A task to be let go is let go at whatever stop comes first: any ptrace
        stop (a syscall-exit stop of a stepping task, say) takes the place of
        the PTRACE_EVENT_STOP its interrupt asked for.
        """
        if task is not None and (task.pending is not None or task.stepping):
            pt.syscall(pid, sig)
        elif task is not None and task.leaving:
            self._forget(pid)
            pt.detach(pid, sig)
        else:
            pt.cont(pid, sig)

    def _want_stepping(self, task: Task) -> bool:
        return self.user_filter is not None and not task.filtered and needs_user_emulation(task.creds)

    def _update_mode(self, task: Task) -> None:
        """After a change of ids: stop at every call if they need emulation and no filter does it."""
        stepping = self._want_stepping(task)
        if stepping and not task.stepping:
            task.steps = 0
        task.stepping = stepping

    def _stopped(self, pid: int, status: int) -> None:
        sig = os.WSTOPSIG(status)
        event = status >> 16
        task = self.tasks.get(pid)
        if task is not None and task.answer is not None and event != pt.PTRACE_EVENT_STOP:
            # This stop (a signal's) took the place of the interrupt: the call's own result
            # stands (or it restarts), and the task is followed from here.
            task.answer = None
            self._update_mode(task)
        if event == pt.PTRACE_EVENT_STOP:
            if task is None:
                self.held.add(pid)  # first stop of a child whose fork event is still to come
            elif task.answer is not None:
                self._at_interrupt(pid, task)
            elif task.leaving:
                self._forget(pid)
                pt.detach(pid)
            else:
                # A new child's first stop, or a group-stop: job control is not
                # supported, keep running.
                self._resume(pid, task)
        elif sig == signal.SIGTRAP and event:
            self._event(pid, event)
        elif sig == SYSCALL_STOP:
            self._syscall_stop(pid, task)
        else:   # a signal: delivered; a pending exit stop must still come
            self._resume(pid, task, sig)

    def _event(self, pid: int, event: int) -> None:
        task = self.tasks.get(pid)
        if event in (pt.PTRACE_EVENT_FORK, pt.PTRACE_EVENT_VFORK, pt.PTRACE_EVENT_CLONE):
            child = pt.event_msg(pid)
            self.tasks[child] = task.inherit() if task is not None else Task(self.initial.copy())
            self._note_ns_pid(child, self.tasks[child])
            if self.on_new_child is not None:
                self.on_new_child(child)
            if child in self.held:
                self.held.discard(child)
                self._resume(child, self.tasks[child])
        elif event == pt.PTRACE_EVENT_EXEC:
            former = pt.event_msg(pid)
            if former != pid:
                # A non-leader thread exec'd: it now has the leader's pid and the leader is gone.
                moved = self.tasks.pop(former, None)
                self._forget(former)
                if moved is not None:
                    moved.view = None
                    moved.ns_pid = 0   # it now has the leader's pid
                    self.tasks[pid] = moved
            task = self.tasks.get(pid)
            if task is None:
                task = self.tasks[pid] = Task(self.initial.copy())
            self._exec(pid, task)
        self._resume(pid, task)

    def _exec(self, pid: int, task: Task) -> None:
        try:
            info = os.stat(f"/proc/{pid}/exe")
        except OSError:
            return
        self._apply_exec(pid, task.creds, info)
        self._note_ns_pid(pid, task)
        self._set_exec_tracing(pid, task)
        self._update_mode(task)

    def _catch_up_exec(self, pid: int, task: Task) -> None:
        """Apply the set-id bits of a fake root's executable if it exec'd since last seen."""
        try:
            info = os.stat(f"/proc/{pid}/exe")
        except OSError:
            return
        if task.exe != (info.st_dev, info.st_ino):
            task.exe = (info.st_dev, info.st_ino)
            self._apply_exec(pid, task.creds, info)

    def _set_exec_tracing(self, pid: int, task: Task) -> None:
        """Exec events for pid unless an exec without set-id bits leaves its ids as they are."""
        if self.follow_all_execs:
            return
        creds = task.creds
        wanted = not (creds.euid == creds.suid == creds.fsuid == 0 and creds.egid == creds.sgid == creds.fsgid)
        if wanted != task.exec_events:
            pt.setoptions(pid, EXEC_OPTIONS if wanted else OPTIONS)
            task.exec_events = wanted
            task.exe = None
            if not wanted:
                try:
                    info = os.stat(f"/proc/{pid}/exe")
                except OSError:
                    return
                task.exe = (info.st_dev, info.st_ino)

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
        number = regs.orig_rax
        stats = self.stats
        stats.trapped += 1
        stats.by_nr[number] += 1
        try:
            self._emulate(pid, regs)
        finally:
            stats.ns_by_nr[number] += time.perf_counter_ns() - start

    def _task(self, pid: int) -> Task:
        task = self.tasks.get(pid)
        if task is None:
            task = self.tasks[pid] = Task(self.initial.copy())
        return task

    def _emulate(self, pid: int, regs: pt.Regs) -> None:
        """A seccomp stop: the handler's answer, given before the call runs or at its exit."""
        number = regs.orig_rax
        task = self._task(pid)
        handler = self.table.get(number)
        if handler is None:
            self._resume(pid, task)
            return
        if not task.exec_events:
            self._catch_up_exec(pid, task)
        result, call = self._run_handler(pid, task, number, regs, handler)
        if number in self.setid:
            self._set_exec_tracing(pid, task)
            self._note_ns_pid(pid, task)
        self._update_mode(task)
        if (isinstance(result, Return) and number in self.setid and task.stepping and settled(task.creds)
                and not task.filter_refused and self._inject_filter(pid, task, regs, result.value)):
            return
        self._answer(pid, task, regs, result, call, at_entry=0)

    def _run_handler(self, pid: int, task: Task, number: int, regs: pt.Regs,
                     handler: Callable) -> tuple[Return | AtExit | None, Call]:
        view = self.tracee(pid)
        call = Call(number, (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9),
                    task.creds, view.mem, view.files, self.creds_in_container)
        try:
            return handler(call), call
        except OSError as err:
            return Return(-(err.errno or errno.EIO)), call
        except Exception:  # noqa: BLE001 - arguments no handler foresaw fail the call, not the run
            self.stats.handler_errors += 1
            return Return(-errno.EINVAL), call

    def _answer(self, pid: int, task: Task, regs: pt.Regs, result: Return | AtExit | None,
                call: Call | None, at_entry: int) -> None:
        """Apply a handler's result at a seccomp stop, or at a syscall-entry stop (at_entry: its ABI's AUDIT_ARCH)."""
        if isinstance(result, Return) and at_entry:
            regs.orig_rax = STAND_IN[at_entry]
            pt.set_regs(pid, regs)
            task.pending = _Pending(Awaited.RESULT, value=result.value)
        elif isinstance(result, Return):
            regs.orig_rax = SKIP
            regs.rax = result.value & SKIP
            pt.set_regs(pid, regs)
        elif result is not None:
            task.pending = _Pending(Awaited.AT_EXIT, result.fn, call)
        self._resume(pid, task)

    def _syscall_stop(self, pid: int, task: Task | None) -> None:
        if task is None:
            pt.cont(pid, 0)
            return
        pending, task.pending = task.pending, None
        if pending is not None:
            self._pending_stop(pid, task, pending)
        elif task.stepping:
            op, arch = pt.syscall_info(pid)
            if op == pt.PTRACE_SYSCALL_INFO_ENTRY:
                self._step_entry(pid, task, arch)
                return
            self._update_mode(task)
        self._resume(pid, task)

    def _step_entry(self, pid: int, task: Task, arch: int) -> None:
        """A syscall-entry stop of a stepping task: the user filter's work, or the filter itself."""
        self._update_mode(task)
        if not task.stepping:
            self._resume(pid, task)
            return
        self.stats.stepped += 1
        task.steps += 1
        regs = pt.get_regs(pid, self.regs)
        number = regs.orig_rax
        if arch == AUDIT_ARCH_I386:
            # Refused as the user filter refuses them: never run unchecked.
            result = Return(-errno.ENOSYS) if number in self.user_i386 else None
            self._answer(pid, task, regs, result, None, at_entry=AUDIT_ARCH_I386)
            return
        if ((settled(task.creds) or task.steps > STEP_BUDGET) and not task.filter_refused
                and self._inject_filter(pid, task, regs, None)):
            return
        handler = self.table.get(number) if number in self.user_only else None
        result, call = (None, None) if handler is None else self._run_handler(pid, task, number, regs, handler)
        self._answer(pid, task, regs, result, call, at_entry=AUDIT_ARCH_X86_64)

    def _inject_filter(self, pid: int, task: Task, regs: pt.Regs, value: int | None) -> bool:
        """Turn the stopped call into seccomp(SET_MODE_FILTER, 0, prog); False if there is no room.

        At a seccomp stop (value: the emulated result of the set*id call it
        replaces) or a syscall-entry stop (value None: the call is run again
        afterwards, from its syscall instruction).  The program and its
        sock_fprog go below the red zone of the thread's stack; the exit stop
        puts every register back.
        """
        saved = pt.Regs.from_buffer_copy(regs)
        if value is None:
            saved.rip -= len(SYSCALL_INSN)
            saved.rax = saved.orig_rax
        else:
            saved.rax = value & SKIP
        prog = self.user_filter
        addr = (regs.rsp - 128 - 16 - len(prog)) & ~0xF
        try:
            self.vm.write(pid, addr, struct.pack("HxxxxxxQ", len(prog) // 8, addr + 16) + prog)
        except OSError:
            task.filter_refused = True
            return False
        regs.orig_rax, regs.rdi, regs.rsi, regs.rdx = nr.SECCOMP, linux.SECCOMP_SET_MODE_FILTER, 0, addr
        pt.set_regs(pid, regs)
        task.pending = _Pending(Awaited.INJECTED, regs=saved)
        self._resume(pid, task)
        return True

    def _at_interrupt(self, pid: int, task: Task) -> None:
        """At the interrupt stop after a notified set*id call: return its result, and emulate from here on.

        Settled ids get the user filter now, through that call's own syscall
        instruction (seccomp(SET_MODE_FILTER), then every register restored
        with the result); others stop at every call from here on.
        """
        value, task.answer = task.answer, None
        regs = pt.get_regs(pid, self.regs)
        saved = pt.Regs.from_buffer_copy(regs)
        saved.rax = value & SKIP
        saved.orig_rax = SKIP   # no syscall restart: the call is answered
        self._update_mode(task)
        if task.stepping and settled(task.creds) and not task.filter_refused:
            prog = self.user_filter
            addr = (regs.rsp - 128 - 16 - len(prog)) & ~0xF
            try:
                if self.vm.read(pid, regs.rip - 2, 2) != SYSCALL_INSN:
                    raise OSError(errno.EFAULT, "no syscall instruction")
                self.vm.write(pid, addr, struct.pack("HxxxxxxQ", len(prog) // 8, addr + 16) + prog)
            except OSError:
                pass   # stepping instead: the filter comes at the next call's entry
            else:
                regs.rip -= len(SYSCALL_INSN)
                regs.orig_rax = SKIP
                regs.rax, regs.rdi, regs.rsi, regs.rdx = nr.SECCOMP, linux.SECCOMP_SET_MODE_FILTER, 0, addr
                pt.set_regs(pid, regs)
                task.pending = _Pending(Awaited.INJECTED_ENTRY, regs=saved)
                self._resume(pid, task)
                return
        pt.set_regs(pid, saved)
        self._resume(pid, task)

    def _pending_stop(self, pid: int, task: Task, pending: _Pending) -> None:
        """The syscall stop a handler or an injection asked for."""
        if pending.kind == Awaited.INJECTED_ENTRY:   # the injected call's entry: on to its exit
            task.pending = _Pending(Awaited.INJECTED, regs=pending.regs)
            return
        self.stats.exit_stops += 1
        regs = pt.get_regs(pid, self.regs)
        if pending.kind == Awaited.INJECTED:
            if regs.rax == 0:
                task.filtered = True
                self._update_mode(task)
            else:
                task.filter_refused = True   # stepping to the end rather than trying at every call
            pt.set_regs(pid, pending.regs)
        elif pending.kind == Awaited.RESULT:
            regs.rax = pending.value & SKIP
            pt.set_regs(pid, regs)
        else:
            start = time.perf_counter_ns()
            value = regs.rax - 2**64 if regs.rax >= 2**63 else regs.rax
            try:
                new = pending.fn(pending.call, value)
            except OSError as err:
                new = -(err.errno or errno.EIO)
            except Exception:  # noqa: BLE001 - as in _emulate
                self.stats.handler_errors += 1
                new = -errno.EINVAL
            if new is not None:
                regs.rax = new & SKIP
                pt.set_regs(pid, regs)
            self.stats.ns_by_nr[regs.orig_rax] += time.perf_counter_ns() - start
