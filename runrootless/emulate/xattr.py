"""Hide the emulator's own xattrs (user.rootlesscontainers, user.orca.device).

get* says ENODATA, set*/remove* say EPERM, list* leave them out.  A size
query (size 0) still counts them, which only over-allocates.
"""

from __future__ import annotations

import errno
import os

from .base import AT_FDCWD, HIDDEN_XATTRS, AtExit, Call, Return, can_hold_xattr, fd_path, read_cstr


def _is_hidden(call: Call) -> bool:
    try:
        return read_cstr(call.mem, call.args[1], 256).decode("latin-1") in HIDDEN_XATTRS
    except OSError:
        return False  # let the kernel report the bad pointer


def getxattr(call: Call):
    return Return(-errno.ENODATA) if _is_hidden(call) else None


def setxattr(call: Call):
    return Return(-errno.EPERM) if _is_hidden(call) else None


def filter_names(data: bytes) -> bytes:
    names = [n for n in data.split(b"\0") if n and n.decode("latin-1") not in HIDDEN_XATTRS]
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


NOTIFY_HANDLERS = {194: list_notified(True), 195: list_notified(False), 196: flist_notified}

HANDLERS = {
    188: setxattr, 189: setxattr, 190: setxattr,          # set, lset, fset
    191: getxattr, 192: getxattr, 193: getxattr,          # get, lget, fget
    194: listxattr, 195: listxattr, 196: listxattr,       # list, llist, flist
    197: setxattr, 198: setxattr, 199: setxattr,          # remove, lremove, fremove
}
