"""What a syscall handler sees: the call, the caller's fake credentials, its memory and files.

A handler is ``handler(call) -> Return | AtExit | None``:
Return(value) skips the real syscall and makes it return ``value`` (one stop);
AtExit(fn) lets it run and calls ``fn(call, result)`` at the exit stop, whose
non-None return replaces the result; None lets it run untouched.
"""

from __future__ import annotations

import errno
import os
import stat as st
from dataclasses import dataclass, field, replace
from typing import Callable, NamedTuple, Protocol

from umoci_py.errors import LayerError
from umoci_py.rootless import (CAPS_RECORD_XATTR, CAPS_XATTR, OWNERS_XATTR, XATTR_NAME, caps_from_record,
                               content_sha256, put_xattr, read_side, resolve_owner, side_owner, write_side)

from .. import linux

DEVICE_XATTR = "user.orca.device"
HIDDEN_XATTRS = frozenset({XATTR_NAME, DEVICE_XATTR, OWNERS_XATTR, CAPS_RECORD_XATTR})
NOCHANGE = 0xFFFFFFFF
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
PATH_MAX = 4096


class Return(NamedTuple):
    value: int


class AtExit(NamedTuple):
    fn: Callable[["Call", int], int | None]


@dataclass
class Creds:
    """Fake credentials of one thread (the kernel's are always 0 in the namespace)."""

    ruid: int = 0
    euid: int = 0
    suid: int = 0
    fsuid: int = 0
    rgid: int = 0
    egid: int = 0
    sgid: int = 0
    fsgid: int = 0
    groups: tuple[int, ...] = ()
    # CAP_SETUID/CAP_SETGID/CAP_MKNOD, as one: effective, permitted, and PR_SET_KEEPCAPS.
    cap_effective: bool = True
    cap_permitted: bool = True
    keep_caps: bool = False

    @classmethod
    def of(cls, uid: int, gid: int, groups=()) -> "Creds":
        root = uid == 0
        return cls(uid, uid, uid, uid, gid, gid, gid, gid, tuple(groups), root, root)

    def copy(self) -> "Creds":
        return replace(self)


class Memory(Protocol):
    def read(self, addr: int, size: int) -> bytes: ...
    def write(self, addr: int, data: bytes) -> None: ...


def read_cstr(mem: Memory, addr: int, limit: int = PATH_MAX) -> bytes:
    """A NUL-terminated string from tracee memory, read page by page."""
    if addr == 0:
        raise OSError(errno.EFAULT, "NULL pointer")
    out = b""
    size = 256    # most paths are short: copy a little first, then whole pages
    while len(out) < limit:
        chunk = mem.read(addr, min(size, 4096 - addr % 4096))
        size = 4096
        if not chunk:
            raise OSError(errno.EFAULT, "bad address")
        end = chunk.find(b"\0")
        if end >= 0:
            return out + chunk[:end]
        out += chunk
        addr += len(chunk)
    raise OSError(errno.ENAMETOOLONG, "path too long")


class TraceeMemory:
    def __init__(self, pid: int, vm: linux.VmBuffer | None = None):
        self.pid = pid
        self.vm = vm if vm is not None else linux.VmBuffer()

    def read(self, addr: int, size: int) -> bytes:
        try:
            return self.vm.read(self.pid, addr, size)
        except OSError:
            return b""

    def write(self, addr: int, data: bytes) -> None:
        try:
            self.vm.write(self.pid, addr, data)
        except OSError as err:
            raise OSError(errno.EFAULT, "bad address") from err


@dataclass
class TraceeFiles:
    """Resolves a tracee's paths and fds the way the tracee's kernel view would.

    root/cwd/fd_dir are /proc/PID/{root,cwd,fd} for a real tracee; tests pass
    plain directories.  Paths resolve inside root (RESOLVE_IN_ROOT), never
    against the tracer's own root; root is opened anew for every path, so a
    tracee's chroot or new mount namespace is always seen.
    """

    root: str
    cwd: str
    fd_dir: str
    status: str | None = None
    host_uid: int = field(default_factory=os.getuid)
    host_gid: int = field(default_factory=os.getgid)

    @classmethod
    def for_pid(cls, pid: int, host_uid: int, host_gid: int) -> "TraceeFiles":
        return cls(f"/proc/{pid}/root", f"/proc/{pid}/cwd", f"/proc/{pid}/fd", f"/proc/{pid}/status",
                   host_uid, host_gid)

    def fd_link(self, fd: int) -> str:
        """A path naming the tracee's open file (a magic link: it reaches the file itself)."""
        if fd < 0:
            raise OSError(errno.EBADF, "bad fd")
        return f"{self.fd_dir}/{fd}"

    def open_fd(self, fd: int) -> int:
        return os.open(self.fd_link(fd), linux.O_PATH | os.O_CLOEXEC)

    def open(self, dirfd: int, path: bytes, follow: bool = True, empty_path: bool = False) -> int:
        """An O_PATH fd (in the tracer) for what the tracee's path names."""
        if not path:
            if not empty_path:
                raise OSError(errno.ENOENT, "empty path")
            return os.open(self.cwd, linux.O_PATH | os.O_CLOEXEC) if dirfd == AT_FDCWD else self.open_fd(dirfd)
        if path[0] != 0x2F:   # relative: prefix the tracee's cwd or dirfd
            base = os.readlink(self.cwd if dirfd == AT_FDCWD else self.fd_link(dirfd))
            if not base.startswith("/"):
                raise OSError(errno.ENOTDIR, "dirfd is not a directory")
            path = os.fsencode(base.rstrip("/")) + b"/" + path
        root_fd = os.open(self.root, linux.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return linux.openat2(root_fd, path.lstrip(b"/") or b".",
                                 linux.O_PATH if follow else linux.O_PATH | os.O_NOFOLLOW,
                                 linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS)
        finally:
            os.close(root_fd)

    def open_parent(self, dirfd: int, path: bytes) -> tuple[int, bytes]:
        """An O_PATH fd of the directory path's last component is in, and that component."""
        parent, name = split_parent(path)
        return self.open(dirfd, parent, empty_path=not parent), name

    def status_field(self, key: bytes) -> list[bytes] | None:
        """The values of one /proc/PID/status line ("Umask:", "NSpid:"); None without one."""
        if self.status is None:
            return None
        with open(self.status, "rb") as fh:
            for line in fh:
                if line.startswith(key):
                    return line.split()[1:]
        return None

    def umask(self) -> int:
        values = self.status_field(b"Umask:")
        return int(values[0], 8) if values else 0o022

    def own_pid(self) -> int:
        """The process's pid in its own pid namespace (0 if unknown)."""
        values = self.status_field(b"NSpid:")
        return int(values[-1]) if values else 0

    def real_owner(self, info: os.stat_result) -> tuple[int, int]:
        """The owner the kernel shows inside the namespace (only our uid is mapped)."""
        uid = 0 if info.st_uid == self.host_uid else 65534
        gid = 0 if info.st_gid == self.host_gid else 65534
        return uid, gid


def split_parent(path: bytes) -> tuple[bytes, bytes]:
    """(directory, last component) of a path; the directory is b"" for a bare name."""
    trimmed = path.rstrip(b"/")
    parent, _, name = trimmed.rpartition(b"/")
    if trimmed.startswith(b"/") and not parent:
        parent = b"/"
    return parent, name


def fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def can_hold_xattr(mode: int) -> bool:
    """The kernel allows user.* xattrs only on regular files and directories."""
    return st.S_ISREG(mode) or st.S_ISDIR(mode)


def stored_owner(fd: int) -> bytes | None:
    try:
        return os.getxattr(fd_path(fd), XATTR_NAME)
    except OSError as err:
        if err.errno in (errno.ENODATA, errno.EPERM, errno.ENOTSUP, errno.EACCES):
            return None
        raise


def owner_from(payload: bytes | None, base: tuple[int, int]) -> tuple[int, int]:
    """resolve_owner, a corrupt record counting as none (a chown replaces it)."""
    try:
        return resolve_owner(payload, *base)
    except LayerError:
        return base


def emulated_owner(files: TraceeFiles, fd: int, info: os.stat_result) -> tuple[int, int]:
    base = files.real_owner(info)
    if not can_hold_xattr(info.st_mode):
        return base
    return owner_from(stored_owner(fd), base)


def keeps_side_record(mode: int) -> bool:
    """Symlinks, FIFOs and sockets: no xattr of their own, their owner is in the parent's OWNERS_XATTR."""
    return st.S_ISLNK(mode) or st.S_ISFIFO(mode) or st.S_ISSOCK(mode)


def _names(parent_fd: int, name: bytes, info: os.stat_result) -> bool:
    """Is info the entry name of the directory parent_fd (not a file a symlink there leads to)?"""
    try:
        return os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_ino == info.st_ino
    except OSError:
        return False


def side_entry_owner(parent_fd: int, name: bytes, info: os.stat_result) -> tuple[int, int] | None:
    """The owner recorded in the parent's side record for entry name (info: its lstat), if any."""
    if not _names(parent_fd, name, info):
        return None
    try:
        return side_owner(read_side(fd_path(parent_fd)), name, info.st_ino)
    except LayerError:
        return None   # a corrupt record counts as none (a chown replaces it)


def record_side(parent_fd: int, name: bytes, info: os.stat_result, owner: tuple[int, int]) -> None:
    """Record entry name's owner in its parent's side record (0:0 drops the record)."""
    if _names(parent_fd, name, info):
        with_owner_write(parent_fd, os.fstat(parent_fd),
                         lambda: write_side(fd_path(parent_fd), name, info.st_ino, owner))


def entry_owner(files: "TraceeFiles", dirfd: int, path: bytes, fd: int, info: os.stat_result) -> tuple[int, int]:
    """The emulated owner of fd, opened from path: its own record, or its parent's side record."""
    if keeps_side_record(info.st_mode) and path:
        parent_fd, name = files.open_parent(dirfd, path)
        try:
            return side_entry_owner(parent_fd, name, info) or files.real_owner(info)
        finally:
            os.close(parent_fd)
    return emulated_owner(files, fd, info)


def with_owner_write(fd: int, info: os.stat_result, apply: Callable[[], object], bits: int = st.S_IWUSR):
    """Run apply (an xattr change on fd's file) even if the owner lacks write permission.

    user.* xattrs need write permission; the tracer owns the file, so it may
    add u+w (or other owner bits) for the duration and restore the mode.
    """
    try:
        return apply()
    except PermissionError:
        path = fd_path(fd)
        mode = st.S_IMODE(info.st_mode)
        os.chmod(path, mode | bits)
        try:
            return apply()
        finally:
            os.chmod(path, mode)


def set_xattr_forced(fd: int, info: os.stat_result, name: str, value: bytes | None) -> None:
    """Set (or remove, value None) an xattr even if the owner lacks write permission."""
    path = fd_path(fd)

    with_owner_write(fd, info, lambda: put_xattr(path, name, value))


def recorded_caps(fd: int, info: os.stat_result) -> bytes | None:
    """The capability our record gives fd's regular file (revision 2), None
    without a record or when the content changed since (see CAPS_RECORD_XATTR)."""
    if not st.S_ISREG(info.st_mode):
        return None
    try:
        record = os.getxattr(fd_path(fd), CAPS_RECORD_XATTR)
    except OSError:
        return None
    try:
        return caps_from_record(record, content_digest(fd, info))
    except LayerError:
        return None   # a corrupt record counts as none (a setcap replaces it)


def content_digest(fd: int, info: os.stat_result) -> bytes:
    """sha256 of the content of fd's file, readable or not."""
    def digest() -> bytes:
        with open(fd_path(fd), "rb") as fh:
            return content_sha256(fh)
    return with_owner_write(fd, info, digest, st.S_IRUSR)


def drop_caps(fd: int, info: os.stat_result) -> None:
    """Remove fd's file capability, as the kernel does on chown: our record and the real one."""
    if not st.S_ISREG(info.st_mode):
        return
    names = os.listxattr(fd_path(fd))
    if CAPS_RECORD_XATTR in names:
        set_xattr_forced(fd, info, CAPS_RECORD_XATTR, None)
    if CAPS_XATTR in names:
        try:
            os.removexattr(fd_path(fd), CAPS_XATTR)
        except OSError:
            pass   # outside the user namespace: not ours to remove


def errno_of(err: OSError) -> Return:
    return Return(-(err.errno or errno.EIO))


class Call:
    """One trapped syscall: number, six raw argument registers and the caller's state."""

    __slots__ = ("nr", "args", "creds", "mem", "files", "peers")

    def __init__(self, nr: int, args: tuple[int, ...], creds: Creds, mem: Memory, files: TraceeFiles,
                 peers: Callable[[int], Creds] | None = None):
        self.nr = nr
        self.args = args
        self.creds = creds
        self.mem = mem
        self.files = files
        # The fake credentials of another process of the container, by its pid there.
        self.peers = peers

    def int_arg(self, i: int) -> int:
        """Argument i as a signed C int."""
        v = self.args[i] & 0xFFFFFFFF
        return v - (1 << 32) if v >= 1 << 31 else v

    def id_arg(self, i: int) -> int:
        """Argument i as a 32-bit unsigned (uid_t, gid_t, mode_t; NOCHANGE for -1)."""
        return self.args[i] & 0xFFFFFFFF

    def path_arg(self, i: int) -> bytes:
        return read_cstr(self.mem, self.args[i])
