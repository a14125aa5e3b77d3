"""The seccomp BPF program: trap the emulated syscalls, let everything else run.

Written by hand rather than with libseccomp so that each ABI gets exactly
its action in one linear program: x86_64 emulated calls -> SECCOMP_RET_TRACE;
x32 calls and the i386 versions of emulated calls -> ENOSYS (never through
unemulated); any other architecture kills the process.  io_uring_setup gets
ENOSYS in both ABIs: a ring's STATX, OPENAT and *XATTR operations would reach
the kernel without a syscall to trap (programs fall back to plain syscalls).
"""

from __future__ import annotations

import ctypes
import errno
import struct

from . import linux

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
X32_SYSCALL_BIT = 0x40000000

RET_KILL_PROCESS = 0x80000000
RET_TRACE = 0x7FF00000
RET_USER_NOTIF = 0x7FC00000
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000

_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_RET_K = 0x06
_OFF_NR = 0
_OFF_ARCH = 4
_OFF_ARGS = 16     # seccomp_data.args[6], 8 bytes each (the low half first on x86_64)

# i386 numbers of the calls emulated on x86_64 (asm/unistd_32.h).
I386_EMULATED = (
    14, 16, 18, 23, 24, 28, 46, 47, 49, 50, 70, 71, 80, 81, 84, 95, 106, 107, 108, 138, 139,
    164, 165, 170, 171, 172, 182, 185, 195, 196, 197, 198, 199, 200, 201, 202, 203, 204, 205, 206, 207,
    208, 209, 210, 211, 212, 213, 214, 215, 216, 226, 227, 228, 229, 230, 231, 232, 233, 234,
    235, 236, 237, 297, 298, 300, 383,
)


IO_URING_SETUP = 425   # the same number on x86_64 and i386


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> tuple[int, int, int, int]:
    return (code, jt, jf, k)


Conditions = tuple[tuple[int, int], ...]   # (argument index, value of its low 32 bits), all to hold


def _entry(nr: int, action: int, conditions: Conditions) -> list:
    """Return action for nr (when its arguments meet the conditions, ALLOW otherwise); else fall through."""
    m = len(conditions)
    out = [_insn(_JEQ_K, nr, jf=2 * m + 1 + (1 if m else 0))]
    for i, (arg, value) in enumerate(conditions):
        out += [_insn(_LD_W_ABS, _OFF_ARGS + 8 * arg), _insn(_JEQ_K, value, jf=2 * (m - i) - 1)]
    out.append(_insn(_RET_K, action))
    if m:
        out.append(_insn(_RET_K, RET_ALLOW))
    return out


def _section(actions: dict[int, int], x32_guard: bool, only_if: dict[int, Conditions] | None = None) -> list:
    """Load nr; return actions[nr] for a listed call (meeting only_if[nr], if any), ALLOW otherwise."""
    entries = [insn for nr, action in sorted(actions.items())
               for insn in _entry(nr, action, (only_if or {}).get(nr, ()))]
    out = [_insn(_LD_W_ABS, _OFF_NR)]
    if x32_guard:
        out.append(_insn(_JGE_K, X32_SYSCALL_BIT, jt=len(entries) + 1))
    out += entries
    out.append(_insn(_RET_K, RET_ALLOW))
    if x32_guard:
        out.append(_insn(_RET_K, RET_ERRNO | errno.ENOSYS))
    return out


def build(trapped: list[int], notified: list[int] = (),
          i386_refused: tuple[int, ...] = I386_EMULATED,
          only_if: dict[int, Conditions] | None = None) -> list[tuple[int, int, int, int]]:
    """trapped calls stop for the ptrace tracer, notified ones go to the user-notification listener.

    only_if narrows an x86_64 call to the argument values it is trapped for
    (getsockopt: SO_PEERCRED only); with others it runs.
    """
    nosys = RET_ERRNO | errno.ENOSYS
    actions = {IO_URING_SETUP: nosys}
    actions.update({nr: RET_TRACE for nr in trapped})
    actions.update({nr: RET_USER_NOTIF for nr in notified})
    x86 = _section(actions, x32_guard=True, only_if=only_if)
    i386 = _section(dict.fromkeys((*i386_refused, IO_URING_SETUP), nosys), x32_guard=False)
    prog = [_insn(_LD_W_ABS, _OFF_ARCH), _insn(_JEQ_K, AUDIT_ARCH_X86_64, jf=len(x86))]
    prog += x86
    prog += [_insn(_JEQ_K, AUDIT_ARCH_I386, jf=len(i386))]
    prog += i386
    prog += [_insn(_RET_K, RET_KILL_PROCESS)]
    if any(jt > 255 or jf > 255 for _, jt, jf, _ in prog):
        raise ValueError("seccomp program too long for 8-bit jumps")
    return prog


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def assemble(prog: list[tuple[int, int, int, int]]) -> bytes:
    """struct sock_filter[] bytes."""
    return b"".join(struct.pack("HBBI", *insn) for insn in prog)


def install(trapped: list[int], notified: list[int] = ()) -> int | None:
    """Install the filter on the calling thread (inherited by all descendants).

    With notified calls, the filter gets a user-notification listener and
    its fd (close-on-exec) is returned.
    """
    return install_program(assemble(build(trapped, notified)), listener=bool(notified))


def install_program(raw: bytes, listener: bool = False) -> int | None:
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = _SockFprog(len(raw) // 8, ctypes.cast(buf, ctypes.c_void_p))
    if not listener:
        linux.prctl(linux.PR_SET_SECCOMP, linux.SECCOMP_MODE_FILTER,
                    ctypes.cast(ctypes.byref(fprog), ctypes.c_void_p).value)
        return None
    return linux.seccomp(linux.SECCOMP_SET_MODE_FILTER, linux.SECCOMP_FILTER_FLAG_NEW_LISTENER,
                         ctypes.addressof(fprog))
