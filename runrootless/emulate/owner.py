"""chown family: the tracer records the owner and skips the call.

Regular files and directories carry it in user.rootlesscontainers;
symlinks, FIFOs and sockets, which cannot carry user.* xattrs, in their
parent directory's side record (umoci_py.rootless.OWNERS_XATTR), when named
by a path (fchown of one is accepted and not recorded).  -1 keeps the
current emulated id (merged, unlike the PRoot fork).  The real owner never
changes.  A file capability goes, real or recorded, as the kernel's chown
drops it.
"""

from __future__ import annotations

import errno
import os
import stat as st

from umoci_py.rootless import XATTR_NAME, encode_owner

from .. import syscalls as nr
from .base import (AT_EMPTY_PATH, AT_FDCWD, AT_SYMLINK_NOFOLLOW, NOCHANGE, Call, Return, can_hold_xattr,
                   drop_caps, entry_owner, errno_of, fd_path, keeps_side_record, record_side, set_xattr_forced)


def chown_fd(call: Call, fd: int, uid: int, gid: int, dirfd: int = AT_FDCWD, path: bytes = b"") -> Return:
    """chown of what fd is; path (from dirfd) names it, b"" for an fd alone."""
    info = os.fstat(fd)
    cur_uid, cur_gid = entry_owner(call.files, dirfd, path, fd, info)
    new_uid = cur_uid if uid == NOCHANGE else uid
    new_gid = cur_gid if gid == NOCHANGE else gid
    c = call.creds
    if c.fsuid != 0:
        # Unprivileged chown: owner only, uid unchanged, gid one of our groups.
        groups = (c.fsgid, *c.groups)
        if cur_uid != c.fsuid or new_uid != cur_uid or (new_gid != cur_gid and new_gid not in groups):
            return Return(-errno.EPERM)
    if (new_uid, new_gid) != (cur_uid, cur_gid):
        if can_hold_xattr(info.st_mode):
            set_xattr_forced(fd, info, XATTR_NAME, encode_owner(new_uid, new_gid))
        elif keeps_side_record(info.st_mode) and path:
            parent_fd, name = call.files.open_parent(dirfd, path)
            try:
                record_side(parent_fd, name, info, (new_uid, new_gid))
            finally:
                os.close(parent_fd)
    if (uid, gid) != (NOCHANGE, NOCHANGE):
        drop_caps(fd, info)   # the kernel drops a file capability on any chown but chown(-1, -1)
    if st.S_ISREG(info.st_mode) and info.st_mode & (st.S_ISUID | st.S_ISGID):
        # The kernel drops set-id bits on chown, setgid only with group-exec.
        mode = st.S_IMODE(info.st_mode) & ~st.S_ISUID
        if info.st_mode & st.S_IXGRP:
            mode &= ~st.S_ISGID
        os.chmod(fd_path(fd), mode)
    return Return(0)


def _chown_path(call: Call, dirfd: int, path_arg: int, uid_arg: int, flags: int) -> Return:
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
        return Return(-errno.EINVAL)
    try:
        path = call.path_arg(path_arg)
        fd = call.files.open(dirfd, path, follow=not flags & AT_SYMLINK_NOFOLLOW,
                             empty_path=bool(flags & AT_EMPTY_PATH))
        try:
            return chown_fd(call, fd, call.id_arg(uid_arg), call.id_arg(uid_arg + 1), dirfd, path)
        finally:
            os.close(fd)
    except OSError as err:
        return errno_of(err)


def chown(call: Call) -> Return:
    return _chown_path(call, AT_FDCWD, 0, 1, 0)


def lchown(call: Call) -> Return:
    return _chown_path(call, AT_FDCWD, 0, 1, AT_SYMLINK_NOFOLLOW)


def fchownat(call: Call) -> Return:
    return _chown_path(call, call.int_arg(0), 1, 2, call.int_arg(4))


def fchown(call: Call) -> Return:
    try:
        fd = call.files.open_fd(call.int_arg(0))
        try:
            return chown_fd(call, fd, call.id_arg(1), call.id_arg(2))
        finally:
            os.close(fd)
    except OSError as err:
        return errno_of(err)


HANDLERS = {nr.CHOWN: chown, nr.FCHOWN: fchown, nr.LCHOWN: lchown, nr.FCHOWNAT: fchownat}
