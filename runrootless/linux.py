"""Thin ctypes wrappers for the Linux calls the standard library lacks.

Every wrapper raises OSError with the C errno, like the os module does.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import struct

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MNT_DETACH = 2

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
SECCOMP_MODE_FILTER = 2
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100        # _IOWR('!', 0, struct seccomp_notif)
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101        # _IOWR('!', 1, struct seccomp_notif_resp)
SECCOMP_IOCTL_NOTIF_SET_FLAGS = 0x40082104   # _IOW('!', 4, __u64)
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP = 1

WALL = 0x40000000

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
O_PATH = 0o10000000

_SYS_PIVOT_ROOT = 155
_SYS_SECCOMP = 317
_SYS_OPENAT2 = 437
_NR_OPENAT2 = ctypes.c_long(_SYS_OPENAT2)
_HOW_SIZE = ctypes.c_size_t(24)


def _check(result: int) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


class CallError(OSError):
    """A refused call of the container's setup, named with its arguments.

    str() is one line, "unshare(CLONE_NEWUSER): EPERM (Operation not permitted)",
    for errors that must say which call the kernel (or a seccomp or LSM
    profile) refused."""

    def __init__(self, err: int, call: str):
        super().__init__(err, os.strerror(err))
        self.call = call

    def __str__(self) -> str:
        return f"{self.call}: {errno.errorcode.get(self.errno, self.errno)} ({self.strerror})"


def _check_call(result: int, call) -> None:
    """call: the text naming the call, or a function making it (built only on failure)."""
    if result == -1:
        raise CallError(ctypes.get_errno(), call() if callable(call) else call)


_CLONE_NAMES = {CLONE_NEWUSER: "CLONE_NEWUSER", CLONE_NEWNS: "CLONE_NEWNS", CLONE_NEWUTS: "CLONE_NEWUTS",
                CLONE_NEWIPC: "CLONE_NEWIPC", CLONE_NEWPID: "CLONE_NEWPID", CLONE_NEWNET: "CLONE_NEWNET"}


def unshare(flags: int) -> None:
    _check_call(_libc.unshare(ctypes.c_int(flags)),
                lambda: f"unshare({'|'.join(n for f, n in _CLONE_NAMES.items() if flags & f)})")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    enc = (lambda s: None if s is None else s.encode())
    _check_call(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
                lambda: f"mount({_mount_kind(fstype, flags)} {source + ' on ' if source else ''}{target})")


def _mount_kind(fstype: str | None, flags: int) -> str:
    if fstype:
        return fstype
    if flags & MS_REMOUNT:
        return "remount"
    if flags & MS_BIND:
        return "rbind" if flags & MS_REC else "bind"
    return "propagation"


def umount2(target: str, flags: int) -> None:
    _check_call(_libc.umount2(target.encode(), ctypes.c_int(flags)), f"umount2({target})")


def pivot_root(new_root: str, put_old: str) -> None:
    _check_call(_libc.syscall(ctypes.c_long(_SYS_PIVOT_ROOT), new_root.encode(), put_old.encode()),
                f"pivot_root({new_root}, {put_old})")


def seccomp(operation: int, flags: int, args: int) -> int:
    return _check(_libc.syscall(ctypes.c_long(_SYS_SECCOMP), ctypes.c_uint(operation), ctypes.c_uint(flags),
                                ctypes.c_void_p(args)))


def sethostname(name: str) -> None:
    data = name.encode()
    _check_call(_libc.sethostname(data, ctypes.c_size_t(len(data))), f"sethostname({name})")


def prctl(option: int, arg2: int | ctypes.c_void_p = 0, arg3: int = 0) -> None:
    _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2) if isinstance(arg2, int) else arg2,
                       ctypes.c_ulong(arg3), ctypes.c_ulong(0), ctypes.c_ulong(0)))


@functools.lru_cache(maxsize=None)
def _open_how(flags: int, resolve: int) -> ctypes.Array:
    how = struct.pack("QQQ", flags | os.O_CLOEXEC, 0, resolve)
    return ctypes.create_string_buffer(how, len(how))


def openat2(dirfd: int, path: str | bytes, flags: int, resolve: int) -> int:
    how = _open_how(flags, resolve)
    return _check(_libc.syscall(_NR_OPENAT2, ctypes.c_int(dirfd),
                                path if isinstance(path, bytes) else path.encode(), how, _HOW_SIZE))


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_libc.process_vm_readv.restype = ctypes.c_ssize_t
_libc.process_vm_writev.restype = ctypes.c_ssize_t
for _fn in (_libc.process_vm_readv, _libc.process_vm_writev):
    _fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong,
                    ctypes.c_ulong]


class VmBuffer:
    """process_vm_readv/writev with one reusable buffer: the tracer reads a path on most stops."""

    def __init__(self, size: int = 4096):
        self.size = size
        self.buf = ctypes.create_string_buffer(size)
        self.local = _IoVec(ctypes.addressof(self.buf), size)
        self.remote = _IoVec(0, size)
        self.local_p = ctypes.addressof(self.local)
        self.remote_p = ctypes.addressof(self.remote)

    def read(self, pid: int, addr: int, size: int) -> bytes:
        """Up to size bytes of the process's memory (short at an unmapped page)."""
        if size > self.size:
            return VmBuffer(size).read(pid, addr, size)
        self.local.len = self.remote.len = size
        self.remote.base = addr
        got = _libc.process_vm_readv(pid, self.local_p, 1, self.remote_p, 1, 0)
        if got < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return ctypes.string_at(self.local.base, got)

    def write(self, pid: int, addr: int, data: bytes) -> None:
        if len(data) > self.size:
            VmBuffer(len(data)).write(pid, addr, data)
            return
        ctypes.memmove(self.buf, data, len(data))
        self.local.len = self.remote.len = len(data)
        self.remote.base = addr
        done = _libc.process_vm_writev(pid, self.local_p, 1, self.remote_p, 1, 0)
        if done < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        if done != len(data):
            raise OSError(14, "short write to tracee memory")


_SYS_STATX = ctypes.c_long(332)
STATX_SIZE = 256


def statx(fd: int, flags: int, mask: int) -> bytes:
    """struct statx of what fd names (AT_EMPTY_PATH is added)."""
    buf = ctypes.create_string_buffer(STATX_SIZE)
    _check(_libc.syscall(_SYS_STATX, ctypes.c_int(fd), b"", ctypes.c_int(flags | 0x1000),
                         ctypes.c_uint(mask), buf))
    return buf.raw
