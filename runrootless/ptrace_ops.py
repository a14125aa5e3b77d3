"""The tracer's ptrace(2) requests, called through ctypes.

libc's ptrace() is called directly, with the request numbers of
<sys/ptrace.h> and <linux/ptrace.h> for x86_64 (the only architecture
runrootless's syscall tables know).  Not python-ptrace: its import runs
`ldconfig -p` (ctypes.util.find_library) and loads logging, datetime and
subprocess, ~10 ms of every RUN helper's start, for wrappers this thin.
Registers are read into one preallocated Regs (struct user_regs_struct).
Errors come back as OSError subclasses (ProcessLookupError for a tracee that
died while stopped), as from the os module.
"""

from __future__ import annotations

import ctypes
import os

# requests
PTRACE_CONT = 7
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_DETACH = 17
PTRACE_SYSCALL = 24
PTRACE_SETOPTIONS = 0x4200
PTRACE_GETEVENTMSG = 0x4201
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_GET_SYSCALL_INFO = 0x420E
# options
PTRACE_O_TRACESYSGOOD = 0x1
PTRACE_O_TRACEFORK = 0x2
PTRACE_O_TRACEVFORK = 0x4
PTRACE_O_TRACECLONE = 0x8
PTRACE_O_TRACEEXEC = 0x10
PTRACE_O_TRACESECCOMP = 0x80
PTRACE_O_EXITKILL = 0x100000
# events (status >> 16 at a stop)
PTRACE_EVENT_FORK = 1
PTRACE_EVENT_VFORK = 2
PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_EXEC = 4
PTRACE_EVENT_SECCOMP = 7
PTRACE_EVENT_STOP = 128
PTRACE_SYSCALL_INFO_ENTRY = 1
PTRACE_SYSCALL_INFO_EXIT = 2


class Regs(ctypes.Structure):
    """struct user_regs_struct of x86_64 (<sys/user.h>)."""
    _fields_ = [(name, ctypes.c_ulong) for name in (
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi",
        "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs")]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_libc.ptrace.restype = ctypes.c_long


def _ptrace(request: int, pid: int, addr: int = 0, data: int = 0) -> int:
    result = _libc.ptrace(request, pid, addr, data)
    if result == -1:
        code = ctypes.get_errno()
        if code:
            raise OSError(code, os.strerror(code))
    return result


__all__ = ["Regs", "seize", "interrupt", "detach", "setoptions", "cont", "syscall", "get_regs", "set_regs", "event_msg",
           "syscall_info"]


def seize(pid: int, options: int) -> None:
    _ptrace(PTRACE_SEIZE, pid, 0, options)


def interrupt(pid: int) -> None:
    """Stop a seized tracee at its next chance (a PTRACE_EVENT_STOP)."""
    _ptrace(PTRACE_INTERRUPT, pid)


def detach(pid: int, sig: int = 0) -> None:
    _ptrace(PTRACE_DETACH, pid, 0, sig)


def setoptions(pid: int, options: int) -> None:
    _ptrace(PTRACE_SETOPTIONS, pid, 0, options)


def cont(pid: int, sig: int = 0) -> None:
    _ptrace(PTRACE_CONT, pid, 0, sig)


def syscall(pid: int, sig: int = 0) -> None:
    """Resume to the next syscall stop (used for the exit stop of a trapped call)."""
    _ptrace(PTRACE_SYSCALL, pid, 0, sig)


def get_regs(pid: int, regs: Regs) -> Regs:
    _ptrace(PTRACE_GETREGS, pid, 0, ctypes.addressof(regs))
    return regs


def set_regs(pid: int, regs: Regs) -> None:
    _ptrace(PTRACE_SETREGS, pid, 0, ctypes.addressof(regs))


_MSG = ctypes.c_ulong()


def event_msg(pid: int) -> int:
    _ptrace(PTRACE_GETEVENTMSG, pid, 0, ctypes.addressof(_MSG))
    return _MSG.value


_INFO = ctypes.create_string_buffer(8)   # struct ptrace_syscall_info: op (u8), 3 bytes pad, arch (u32)


def syscall_info(pid: int) -> tuple[int, int]:
    """(op, arch) of a syscall stop: PTRACE_SYSCALL_INFO_ENTRY or _EXIT, and its AUDIT_ARCH_*."""
    _ptrace(PTRACE_GET_SYSCALL_INFO, pid, ctypes.sizeof(_INFO), ctypes.addressof(_INFO))
    return _INFO.raw[0], int.from_bytes(_INFO.raw[4:8], "little")
