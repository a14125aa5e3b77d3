"""xattr family: hide the emulator's own xattrs; file capabilities from our record.

The emulator's xattrs (user.rootlesscontainers, user.orca.*): get* says
ENODATA, set*/remove* say EPERM, list* leave them out.  A size query (size 0)
still counts them, which only over-allocates.

security.capability of a regular file lives in our record
(umoci_py.rootless.CAPS_RECORD_XATTR), as unpack leaves a capability the
kernel refused: get* reads it, set* (fake root only) writes it, remove*
removes it, list* shows it.  A file without a live record gets the kernel's
answer.
"""

from __future__ import annotations

import errno
import os
import stat as st

from umoci_py.errors import LayerError
from umoci_py.rootless import CAPS_RECORD_XATTR, CAPS_XATTR, caps_v2, encode_caps_record

from .. import syscalls as nr
from .base import (AT_FDCWD, HIDDEN_XATTRS, AtExit, Call, Return, can_hold_xattr, content_digest, drop_caps,
                   errno_of, fd_path, read_cstr, recorded_caps, set_xattr_forced)

XATTR_CREATE = 1
XATTR_REPLACE = 2
# The calls naming their file by fd, and those not following a final symlink.
BY_FD = frozenset({nr.FSETXATTR, nr.FGETXATTR, nr.FLISTXATTR, nr.FREMOVEXATTR})
NOFOLLOW = frozenset({nr.LSETXATTR, nr.LGETXATTR, nr.LLISTXATTR, nr.LREMOVEXATTR})


def _name(call: Call) -> str | None:
    try:
        return read_cstr(call.mem, call.args[1], 256).decode("latin-1")
    except OSError:
        return None   # let the kernel report the bad pointer


def _on_file(call: Call, fn) -> Return | None:
    """fn(call, fd, info) on an O_PATH fd of the file the call names."""
    try:
        if call.nr in BY_FD:
            fd = call.files.open_fd(call.int_arg(0))
        else:
            fd = call.files.open(AT_FDCWD, call.path_arg(0), follow=call.nr not in NOFOLLOW)
    except OSError:
        return None   # the kernel fails it the same way
    try:
        return fn(call, fd, os.fstat(fd))
    except OSError as err:
        return errno_of(err)
    finally:
        os.close(fd)


def _get_caps(call: Call, fd: int, info: os.stat_result) -> Return | None:
    value = recorded_caps(fd, info)
    if value is None:
        return None
    size = call.args[3]
    if size and size < len(value):
        return Return(-errno.ERANGE)
    if size:
        call.mem.write(call.args[2], value)
    return Return(len(value))


def _set_caps(call: Call, fd: int, info: os.stat_result) -> Return | None:
    if not st.S_ISREG(info.st_mode):
        return None
    if not call.creds.cap_effective:     # CAP_SETFCAP
        return Return(-errno.EPERM)
    size = call.args[3]
    value = call.mem.read(call.args[2], size)
    if len(value) != size:
        return Return(-errno.EFAULT)
    try:
        value = caps_v2(value)
    except LayerError:
        return Return(-errno.EINVAL)
    flags = call.int_arg(4)
    if flags & ~(XATTR_CREATE | XATTR_REPLACE):
        return Return(-errno.EINVAL)
    present = recorded_caps(fd, info) is not None or CAPS_XATTR in os.listxattr(fd_path(fd))
    if flags & XATTR_CREATE and present:
        return Return(-errno.EEXIST)
    if flags & XATTR_REPLACE and not present:
        return Return(-errno.ENODATA)
    drop_caps(fd, info)
    set_xattr_forced(fd, info, CAPS_RECORD_XATTR, encode_caps_record(value, content_digest(fd, info)))
    return Return(0)


def _remove_caps(call: Call, fd: int, info: os.stat_result) -> Return | None:
    if recorded_caps(fd, info) is None:
        return None
    if not call.creds.cap_effective:
        return Return(-errno.EPERM)
    drop_caps(fd, info)
    return Return(0)


def getxattr(call: Call):
    name = _name(call)
    if name in HIDDEN_XATTRS:
        return Return(-errno.ENODATA)
    return _on_file(call, _get_caps) if name == CAPS_XATTR else None


def setxattr(call: Call):
    name = _name(call)
    if name in HIDDEN_XATTRS:
        return Return(-errno.EPERM)
    return _on_file(call, _set_caps) if name == CAPS_XATTR else None


def removexattr(call: Call):
    name = _name(call)
    if name in HIDDEN_XATTRS:
        return Return(-errno.EPERM)
    return _on_file(call, _remove_caps) if name == CAPS_XATTR else None


def filter_names(data: bytes) -> bytes:
    """A name list without ours; a capability record shows as security.capability."""
    listed = [n for n in data.split(b"\0") if n]
    names = [n for n in listed if n.decode("latin-1") not in HIDDEN_XATTRS]
    if CAPS_RECORD_XATTR.encode() in listed and CAPS_XATTR.encode() not in names:
        names.append(CAPS_XATTR.encode())
    return b"".join(n + b"\0" for n in names)


def _filter_list(call: Call, result: int) -> int | None:
    if result <= 0:
        return None
    addr = call.args[1]
    kept = filter_names(call.mem.read(addr, result))
    if len(kept) == result:
        return None
    call.mem.write(addr, kept)
    return len(kept)


def listxattr(call: Call):
    return AtExit(_filter_list) if call.args[2] else None


def _list_here(call: Call, target: str) -> Return | None:
    info = os.stat(target)
    if not can_hold_xattr(info.st_mode):
        return None   # symlinks, FIFOs, sockets: none of ours can be there
    data = b"".join(os.fsencode(name) + b"\0" for name in os.listxattr(target))
    kept = filter_names(data)
    if len(kept) == len(data):
        return None
    if call.args[2] < len(kept):
        return Return(-errno.ERANGE)
    call.mem.write(call.args[1], kept)
    return Return(len(kept))


def list_notified(follow: bool):
    """(l)listxattr answered here: the list without our names (None: nothing to hide)."""
    def handler(call: Call) -> Return | None:
        if not call.args[2]:
            return None
        try:
            fd = call.files.open(AT_FDCWD, call.path_arg(0), follow=follow)
        except OSError:
            return None   # the kernel fails it the same way
        try:
            return _list_here(call, fd_path(fd))
        finally:
            os.close(fd)
    return handler


def flist_notified(call: Call) -> Return | None:
    if not call.args[2]:
        return None
    try:
        return _list_here(call, call.files.fd_link(call.int_arg(0)))
    except OSError:
        return None


NOTIFY_HANDLERS = {nr.LISTXATTR: list_notified(True), nr.LLISTXATTR: list_notified(False),
                   nr.FLISTXATTR: flist_notified}

HANDLERS = {
    nr.SETXATTR: setxattr, nr.LSETXATTR: setxattr, nr.FSETXATTR: setxattr,
    nr.GETXATTR: getxattr, nr.LGETXATTR: getxattr, nr.FGETXATTR: getxattr,
    nr.LISTXATTR: listxattr, nr.LLISTXATTR: listxattr, nr.FLISTXATTR: listxattr,
    nr.REMOVEXATTR: removexattr, nr.LREMOVEXATTR: removexattr, nr.FREMOVEXATTR: removexattr,
}
