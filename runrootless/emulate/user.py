"""What a process with fake non-root credentials may do, and who owns what it creates.

These handlers are trapped only by the second seccomp filter (USER_FILTER),
which a process gets when it starts as a non-root user or drops to one with
set*id; root processes never stop for them.

Emulated, judged from the emulated owner (user.rootlesscontainers) and the
real mode bits, for the caller's fsuid/fsgid and supplementary groups:
  - open/openat/openat2/creat of an existing file: read/write permission on it;
  - creating anything (O_CREAT, creat, mkdir, mknod, symlink, link, bind of
    a Unix socket to a path): write and search permission on the parent
    directory;
  - unlink/rmdir/rename: the same on the parent(s), plus the sticky-bit rule;
  - access/faccessat/faccessat2: the requested bits, for the real ids unless
    AT_EACCESS;
  - chmod/fchmod/fchmodat(2) by someone other than the owner (a FIFO's or
    socket's as recorded in its parent's side record): EPERM (chown rules
    are in owner.py).
What a fake non-root process creates is recorded as owned by its fsuid and
by its fsgid, or the parent's group when the parent is setgid; symlinks,
FIFOs and sockets, which cannot carry the xattr, get their parent's side record
(umoci_py.rootless.OWNERS_XATTR), moved along by rename.
Not emulated: search permission on the directories above the last one, ACLs,
capabilities other than "fsuid 0 may do anything", O_PATH opens, exec
permission, protected_hardlinks/symlinks, the i386 socketcall(2) form of
bind (i386 bind(2) is refused), renames and unlinks of side-record
entries done by root (the stale record is ignored by its inode number).
"""

from __future__ import annotations

import errno
import os
import stat as st

from umoci_py.rootless import XATTR_NAME, encode_owner

from .. import syscalls as nr
from .base import (AT_FDCWD, AT_SYMLINK_NOFOLLOW, AtExit, Call, Creds, Return, emulated_owner, entry_owner,
                   keeps_side_record, record_side, set_xattr_forced, side_entry_owner)

O_ACCMODE = 3
O_CREAT = 0o100
O_EXCL = 0o200
O_TRUNC = 0o1000
O_NOFOLLOW = 0o400000
O_PATH = 0o10000000
AT_EACCESS = 0x200
AT_REMOVEDIR = 0x200
RENAME_EXCHANGE = 2
AF_UNIX = 1
SOCKADDR_UN_SIZE = 110   # sa_family_t and sun_path[108]
R, W, X = 4, 2, 1


def _quiet(creds: Creds) -> bool:
    """Root with group 0: nothing to check or record."""
    return creds.fsuid == 0 and creds.fsgid == 0


def may(uid: int, groups: tuple[int, ...], owner: tuple[int, int], mode: int, want: int) -> bool:
    if uid == 0:
        return True
    if uid == owner[0]:
        bits = mode >> 6
    elif owner[1] in groups:
        bits = mode >> 3
    else:
        bits = mode
    return bits & want == want


def _fs_groups(c: Creds) -> tuple[int, ...]:
    return (c.fsgid, *c.groups)


class _Parent:
    """The directory an entry goes into: an O_PATH fd, its stat and emulated owner."""

    def __init__(self, call: Call, dirfd: int, path: bytes):
        self.fd, self.name = call.files.open_parent(dirfd, path)
        self.info = os.fstat(self.fd)
        self.owner = emulated_owner(call.files, self.fd, self.info)

    def close(self) -> None:
        os.close(self.fd)

    def writable(self, c: Creds) -> bool:
        return may(c.fsuid, _fs_groups(c), self.owner, self.info.st_mode, W | X)

    def sticky_denies(self, c: Creds, entry_owner: int) -> bool:
        return bool(self.info.st_mode & st.S_ISVTX) and c.fsuid not in (0, entry_owner, self.owner[0])

    def new_owner(self, c: Creds) -> tuple[int, int]:
        return c.fsuid, self.owner[1] if self.info.st_mode & st.S_ISGID else c.fsgid

    def entry(self, call: Call) -> tuple[os.stat_result, tuple[int, int]] | None:
        try:
            info = os.stat(self.name, dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            return None
        if keeps_side_record(info.st_mode):
            return info, side_entry_owner(self.fd, self.name, info) or call.files.real_owner(info)
        fd = os.open(self.name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd)
        try:
            return info, emulated_owner(call.files, fd, info)
        finally:
            os.close(fd)


def _record_new(call: Call, dirfd: int, path: bytes, owner: tuple[int, int]) -> None:
    """Give the entry just created at path its owner (xattr or parent's side record)."""
    parent = _Parent(call, dirfd, path)
    try:
        info = os.stat(parent.name, dir_fd=parent.fd, follow_symlinks=False)
        if st.S_ISREG(info.st_mode) or st.S_ISDIR(info.st_mode):
            fd = os.open(parent.name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent.fd)
            try:
                set_xattr_forced(fd, info, XATTR_NAME, encode_owner(*owner))
            finally:
                os.close(fd)
        else:
            record_side(parent.fd, parent.name, info, owner)
    finally:
        parent.close()


def _new_owner(call: Call, dirfd: int, path: bytes) -> tuple[int, int] | Return | None:
    """Who owns an entry created at path, EACCES if the parent is not writable, None if unknown."""
    c = call.creds
    try:
        parent = _Parent(call, dirfd, path)
    except OSError:
        return None   # the kernel reports the same failure
    try:
        return parent.new_owner(c) if parent.writable(c) else Return(-errno.EACCES)
    finally:
        parent.close()


def _create(call: Call, dirfd: int, path_arg: int) -> Return | AtExit | None:
    """A call creating the entry named by argument path_arg (mkdir, symlink, mknod, link)."""
    c = call.creds
    if _quiet(c):
        return None
    try:
        path = call.path_arg(path_arg)
    except OSError:
        return None   # the kernel reports the same failure
    owner = _new_owner(call, dirfd, path)
    if owner is None or isinstance(owner, Return) or call.nr in (nr.LINK, nr.LINKAT):   # link: the inode keeps its owner
        return owner

    def done(call: Call, result: int) -> None:
        if result == 0:
            _record_new(call, dirfd, path, owner)
    return AtExit(done)


def _open(call: Call, dirfd: int, path_arg: int, flags: int) -> Return | AtExit | None:
    c = call.creds
    if _quiet(c) or flags & O_PATH:
        return None
    try:
        path = call.path_arg(path_arg)
        follow = not flags & O_NOFOLLOW and not (flags & O_CREAT and flags & O_EXCL)
        fd = call.files.open(dirfd, path, follow=follow)
    except FileNotFoundError:
        if not flags & O_CREAT:
            return None
        return _open_create(call, dirfd, path)
    except OSError:
        return None
    try:
        if c.fsuid == 0:
            return None
        info = os.fstat(fd)
        acc = flags & O_ACCMODE
        want = (R if acc in (os.O_RDONLY, os.O_RDWR) else 0) | \
            (W if acc in (os.O_WRONLY, os.O_RDWR) or flags & O_TRUNC else 0)
        if st.S_ISLNK(info.st_mode) or may(c.fsuid, _fs_groups(c), emulated_owner(call.files, fd, info),
                                            info.st_mode, want):
            return None
        return Return(-errno.EACCES)
    finally:
        os.close(fd)


def _open_create(call: Call, dirfd: int, path: bytes) -> Return | AtExit | None:
    owner = _new_owner(call, dirfd, path)
    if owner is None or isinstance(owner, Return):
        return owner

    def done(call: Call, result: int) -> None:
        if result >= 0:
            fd = call.files.open_fd(result)
            try:
                set_xattr_forced(fd, os.fstat(fd), XATTR_NAME, encode_owner(*owner))
            finally:
                os.close(fd)
    return AtExit(done)


def _remove(call: Call, dirfd: int, path_arg: int) -> Return | None:
    c = call.creds
    if c.fsuid == 0:
        return None
    try:
        parent = _Parent(call, dirfd, call.path_arg(path_arg))
    except OSError:
        return None
    try:
        found = parent.entry(call)
        if not parent.writable(c):
            return Return(-errno.EACCES)
        if found is not None and parent.sticky_denies(c, found[1][0]):
            return Return(-errno.EPERM)
        return None
    finally:
        parent.close()


def _rename(call: Call, old_dirfd: int, old_arg: int, new_dirfd: int, new_arg: int, flags: int = 0):
    c = call.creds
    if _quiet(c):
        return None
    try:
        old_path, new_path = call.path_arg(old_arg), call.path_arg(new_arg)
        old, new = _Parent(call, old_dirfd, old_path), _Parent(call, new_dirfd, new_path)
    except OSError:
        return None
    try:
        moved, replaced = old.entry(call), new.entry(call)
        if c.fsuid != 0:
            if not old.writable(c) or not new.writable(c):
                return Return(-errno.EACCES)
            if (moved is not None and old.sticky_denies(c, moved[1][0])) or \
                    (replaced is not None and new.sticky_denies(c, replaced[1][0])):
                return Return(-errno.EPERM)
        if moved is None or flags & RENAME_EXCHANGE or not keeps_side_record(moved[0].st_mode):
            return None
        owner = moved[1]
    finally:
        old.close()
        new.close()

    def done(call: Call, result: int) -> None:
        if result == 0:
            _record_new(call, new_dirfd, new_path, owner)
    return AtExit(done)


def _access(call: Call, dirfd: int, path_arg: int, mode: int, flags: int) -> Return | None:
    c = call.creds
    uid, groups = (c.euid, (c.egid, *c.groups)) if flags & AT_EACCESS else (c.ruid, (c.rgid, *c.groups))
    if uid == 0 or mode & 7 == 0:
        return None
    try:
        fd = call.files.open(dirfd, call.path_arg(path_arg), follow=not flags & AT_SYMLINK_NOFOLLOW)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        ok = may(uid, groups, emulated_owner(call.files, fd, info), info.st_mode, mode & 7)
    finally:
        os.close(fd)
    return None if ok else Return(-errno.EACCES)


def _chmod_fd(call: Call, fd: int, dirfd: int = AT_FDCWD, path: bytes = b"") -> Return | None:
    """chmod by someone other than the owner (a FIFO's or socket's from its parent's side record) is refused."""
    try:
        owner = entry_owner(call.files, dirfd, path, fd, os.fstat(fd))
    finally:
        os.close(fd)
    return None if owner[0] == call.creds.fsuid else Return(-errno.EPERM)


def _chmod(call: Call, dirfd: int, path_arg: int, flags: int = 0) -> Return | None:
    if call.creds.fsuid == 0:
        return None
    try:
        path = call.path_arg(path_arg)
        fd = call.files.open(dirfd, path, follow=not flags & AT_SYMLINK_NOFOLLOW)
    except OSError:
        return None
    return _chmod_fd(call, fd, dirfd, path)


def fchmod(call: Call) -> Return | None:
    if call.creds.fsuid == 0:
        return None
    try:
        fd = call.files.open_fd(call.int_arg(0))
    except OSError:
        return None
    return _chmod_fd(call, fd)


def bind(call: Call) -> Return | AtExit | None:
    """bind of a Unix socket to a path creates the socket file: checked and recorded as a creation."""
    if _quiet(call.creds):
        return None
    size = call.int_arg(2)
    address = call.mem.read(call.args[1], min(max(size, 0), SOCKADDR_UN_SIZE))
    if len(address) <= 2 or int.from_bytes(address[:2], "little") != AF_UNIX or address[2] == 0:
        return None   # another family, an unnamed or abstract socket (no file), or bad: the kernel's answer
    path = address[2:].split(b"\0", 1)[0]
    owner = _new_owner(call, AT_FDCWD, path)
    if owner is None or isinstance(owner, Return):
        return owner

    def done(call: Call, result: int) -> None:
        if result == 0:
            _record_new(call, AT_FDCWD, path, owner)
    return AtExit(done)


def create_fifo(call: Call, dirfd: int, path_arg: int) -> Return | AtExit | None:
    """mknod of a FIFO, socket or regular file (devices are mknod.py's)."""
    return _create(call, dirfd, path_arg)


HANDLERS = {
    nr.OPEN: lambda call: _open(call, AT_FDCWD, 0, call.int_arg(1)),
    nr.OPENAT: lambda call: _open(call, call.int_arg(0), 1, call.int_arg(2)),
    nr.OPENAT2: lambda call: _open(call, call.int_arg(0), 1,
                                   int.from_bytes(call.mem.read(call.args[2], 8).ljust(8, b"\0"), "little")),
    nr.CREAT: lambda call: _open(call, AT_FDCWD, 0, O_CREAT | os.O_WRONLY | O_TRUNC),
    nr.MKDIR: lambda call: _create(call, AT_FDCWD, 0),
    nr.MKDIRAT: lambda call: _create(call, call.int_arg(0), 1),
    nr.SYMLINK: lambda call: _create(call, AT_FDCWD, 1),
    nr.SYMLINKAT: lambda call: _create(call, call.int_arg(1), 2),
    nr.LINK: lambda call: _create(call, AT_FDCWD, 1),
    nr.LINKAT: lambda call: _create(call, call.int_arg(2), 3),
    nr.RENAME: lambda call: _rename(call, AT_FDCWD, 0, AT_FDCWD, 1),
    nr.RENAMEAT: lambda call: _rename(call, call.int_arg(0), 1, call.int_arg(2), 3),
    nr.RENAMEAT2: lambda call: _rename(call, call.int_arg(0), 1, call.int_arg(2), 3, call.int_arg(4)),
    nr.UNLINK: lambda call: _remove(call, AT_FDCWD, 0),
    nr.RMDIR: lambda call: _remove(call, AT_FDCWD, 0),
    nr.UNLINKAT: lambda call: _remove(call, call.int_arg(0), 1),
    nr.ACCESS: lambda call: _access(call, AT_FDCWD, 0, call.int_arg(1), 0),
    nr.FACCESSAT: lambda call: _access(call, call.int_arg(0), 1, call.int_arg(2), 0),
    nr.FACCESSAT2: lambda call: _access(call, call.int_arg(0), 1, call.int_arg(2), call.int_arg(3)),
    nr.CHMOD: lambda call: _chmod(call, AT_FDCWD, 0),
    nr.FCHMOD: fchmod,
    nr.FCHMODAT: lambda call: _chmod(call, call.int_arg(0), 1),
    nr.FCHMODAT2: lambda call: _chmod(call, call.int_arg(0), 1, call.int_arg(3)),
    nr.BIND: bind,
}

# i386 numbers of the same calls: refused (ENOSYS) in the user filter, never run unchecked.
I386 = (5, 8, 9, 10, 15, 33, 38, 39, 40, 83, 94, 295, 296, 301, 302, 303, 304, 306, 307, 353, 361, 437, 439, 452)
