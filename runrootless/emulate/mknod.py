"""mknod of char/block devices: an empty placeholder marked user.orca.device.

The value is b"c MAJOR MINOR" or b"b MAJOR MINOR"; umoci-py's repack turns
the placeholder back into a device node.  FIFOs, sockets and regular files
go to the kernel, which creates them for real (owned as user.py says when
the caller is not root).
"""

from __future__ import annotations

import errno
import os
import stat as st

from umoci_py.rootless import XATTR_NAME, encode_owner

from . import user
from .base import AT_FDCWD, DEVICE_XATTR, AtExit, Call, Return, errno_of, fd_path, split_parent


def device_marker(mode: int, dev: int) -> bytes | None:
    if st.S_ISCHR(mode):
        kind = "c"
    elif st.S_ISBLK(mode):
        kind = "b"
    else:
        return None
    return f"{kind} {os.major(dev)} {os.minor(dev)}".encode()


def _mknod(call: Call, dirfd: int, path_arg: int, mode: int, dev: int) -> Return | None:
    marker = device_marker(mode, dev)
    if marker is None:
        return user.create_fifo(call, dirfd, path_arg)
    if not call.creds.cap_effective:
        return Return(-errno.EPERM)
    try:
        parent, name = split_parent(call.path_arg(path_arg))
        if name in (b"", b".", b".."):
            return Return(-errno.EEXIST)
        parent_fd = call.files.open(dirfd, parent, empty_path=not parent)
        try:
            # Owner-writable while the xattrs go on; the requested mode last.
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=parent_fd)
        finally:
            os.close(parent_fd)
        try:
            os.setxattr(fd_path(fd), DEVICE_XATTR, marker)
            owner = encode_owner(call.creds.fsuid, call.creds.fsgid)
            if owner is not None:
                os.setxattr(fd_path(fd), XATTR_NAME, owner)
            os.fchmod(fd, st.S_IMODE(mode) & ~call.files.umask())
        finally:
            os.close(fd)
    except OSError as err:
        return errno_of(err)
    return Return(0)


def mknod(call: Call):
    return _mknod(call, AT_FDCWD, 0, call.id_arg(1), call.args[2])


def mknodat(call: Call):
    return _mknod(call, call.int_arg(0), 1, call.id_arg(2), call.args[3])


def _mknod_notified(call: Call, dirfd: int, path_arg: int, mode: int, dev: int) -> Return | None:
    """Under user notification there is no exit stop: a non-root FIFO is made here, then recorded."""
    result = _mknod(call, dirfd, path_arg, mode, dev)
    if not isinstance(result, AtExit):
        return result
    try:
        parent_fd, name = call.files.open_parent(dirfd, call.path_arg(path_arg))
        try:
            os.mknod(name, mode & ~call.files.umask(), dev, dir_fd=parent_fd)
        finally:
            os.close(parent_fd)
        value = 0
    except OSError as err:
        value = -(err.errno or errno.EIO)
    replaced = result.fn(call, value)
    return Return(value if replaced is None else replaced)


NOTIFY_HANDLERS = {
    133: lambda call: _mknod_notified(call, AT_FDCWD, 0, call.id_arg(1), call.args[2]),
    259: lambda call: _mknod_notified(call, call.int_arg(0), 1, call.id_arg(2), call.args[3]),
}
HANDLERS = {133: mknod, 259: mknodat}
