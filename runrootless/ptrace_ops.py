"""The tracer's ptrace requests, through python-ptrace's binding layer.

Only ptrace.binding (the thin wrappers over ptrace(2)) is used, not its
debugger objects: those keep per-process state and decode every stop, which
the hot path cannot afford.  Registers are read into one preallocated
user_regs_struct (the binding's own ptrace_getregs allocates one per call).
Errors come back as OSError subclasses (ProcessLookupError for a tracee that
died while stopped), as from the os module.
"""

from __future__ import annotations

import ctypes
import os

from ptrace import binding
from ptrace.binding import func
from ptrace.binding.linux_struct import user_regs_struct as Regs
from ptrace.error import PtraceError

# python-ptrace names neither the seccomp/exitkill options nor the seccomp event.
PTRACE_O_TRACESECCOMP = 0x80
PTRACE_O_EXITKILL = 0x100000
PTRACE_EVENT_SECCOMP = 7
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_EVENT_STOP = 128
PTRACE_GET_SYSCALL_INFO = 0x420E
PTRACE_SYSCALL_INFO_ENTRY = 1
PTRACE_SYSCALL_INFO_EXIT = 2
PTRACE_O_TRACESYSGOOD = func.PTRACE_O_TRACESYSGOOD
PTRACE_O_TRACEFORK = func.PTRACE_O_TRACEFORK
PTRACE_O_TRACEVFORK = func.PTRACE_O_TRACEVFORK
PTRACE_O_TRACECLONE = func.PTRACE_O_TRACECLONE
PTRACE_O_TRACEEXEC = func.PTRACE_O_TRACEEXEC
PTRACE_EVENT_FORK = func.PTRACE_EVENT_FORK
PTRACE_EVENT_VFORK = func.PTRACE_EVENT_VFORK
PTRACE_EVENT_CLONE = func.PTRACE_EVENT_CLONE
PTRACE_EVENT_EXEC = func.PTRACE_EVENT_EXEC

__all__ = ["Regs", "seize", "interrupt", "detach", "setoptions", "cont", "syscall", "get_regs", "set_regs", "event_msg",
           "syscall_info"]


def _os_error(err: PtraceError) -> OSError:
    code = err.errno or 0
    return OSError(code, os.strerror(code))


def seize(pid: int, options: int) -> None:
    try:
        func.ptrace(PTRACE_SEIZE, pid, 0, options)
    except PtraceError as err:
        raise _os_error(err) from None


def interrupt(pid: int) -> None:
    """Stop a seized tracee at its next chance (a PTRACE_EVENT_STOP)."""
    try:
        func.ptrace(PTRACE_INTERRUPT, pid, 0, 0)
    except PtraceError as err:
        raise _os_error(err) from None


def detach(pid: int, sig: int = 0) -> None:
    try:
        binding.ptrace_detach(pid, sig)
    except PtraceError as err:
        raise _os_error(err) from None


def setoptions(pid: int, options: int) -> None:
    try:
        binding.ptrace_setoptions(pid, options)
    except PtraceError as err:
        raise _os_error(err) from None


def cont(pid: int, sig: int = 0) -> None:
    try:
        binding.ptrace_cont(pid, sig)
    except PtraceError as err:
        raise _os_error(err) from None


def syscall(pid: int, sig: int = 0) -> None:
    """Resume to the next syscall stop (used for the exit stop of a trapped call)."""
    try:
        binding.ptrace_syscall(pid, sig)
    except PtraceError as err:
        raise _os_error(err) from None


def get_regs(pid: int, regs: Regs) -> Regs:
    try:
        func.ptrace(func.PTRACE_GETREGS, pid, 0, ctypes.addressof(regs))
    except PtraceError as err:
        raise _os_error(err) from None
    return regs


def set_regs(pid: int, regs: Regs) -> None:
    try:
        func.ptrace(func.PTRACE_SETREGS, pid, 0, ctypes.addressof(regs))
    except PtraceError as err:
        raise _os_error(err) from None


def event_msg(pid: int) -> int:
    try:
        return binding.ptrace_geteventmsg(pid)
    except PtraceError as err:
        raise _os_error(err) from None



_INFO = ctypes.create_string_buffer(8)   # struct ptrace_syscall_info: op (u8), 3 bytes pad, arch (u32)


def syscall_info(pid: int) -> tuple[int, int]:
    """(op, arch) of a syscall stop: PTRACE_SYSCALL_INFO_ENTRY or _EXIT, and its AUDIT_ARCH_*."""
    try:
        func.ptrace(PTRACE_GET_SYSCALL_INFO, pid, ctypes.sizeof(_INFO), ctypes.addressof(_INFO))
    except PtraceError as err:
        raise _os_error(err) from None
    return _INFO.raw[0], int.from_bytes(_INFO.raw[4:8], "little")
