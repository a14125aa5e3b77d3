"""stat family: report the owner recorded in user.rootlesscontainers.

The owner is looked up at the entry stop; files without the xattr (most of
a rootfs) cost that one stop only.  Otherwise the kernel fills the buffer
and the exit stop patches st_uid/st_gid.
"""

from __future__ import annotations

import os
import struct

from umoci_py.rootless import resolve_owner

from .base import (AT_EMPTY_PATH, AT_FDCWD, AT_SYMLINK_NOFOLLOW, AtExit, Call, can_hold_xattr,
                   stored_owner)

STAT_UID_OFFSET = 28          # struct stat on x86_64: st_uid, st_gid follow
STATX_UID_OFFSET = 20         # struct statx: stx_uid, stx_gid follow
STATX_UID = 0x8
STATX_GID = 0x10


def _owner(call: Call, open_file) -> tuple[int, int] | None:
    """The emulated owner if it differs from what the kernel will report."""
    try:
        fd = open_file()
    except OSError:
        return None  # the real call fails the same way (or we cannot do better)
    try:
        info = os.fstat(fd)
        if not can_hold_xattr(info.st_mode):
            return None
        payload = stored_owner(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    if payload is None:
        return None
    return resolve_owner(payload, *call.files.real_owner(info))


def _patch_stat(buf_arg: int, owner: tuple[int, int]) -> AtExit:
    def patch(call: Call, result: int) -> None:
        if result == 0:
            call.mem.write(call.args[buf_arg] + STAT_UID_OFFSET, struct.pack("II", *owner))
    return AtExit(patch)


def _path_stat(call: Call, dirfd: int, path_arg: int, flags: int, buf_arg: int, patcher):
    def open_file():
        return call.files.open(dirfd, call.path_arg(path_arg), follow=not flags & AT_SYMLINK_NOFOLLOW,
                               empty_path=bool(flags & AT_EMPTY_PATH))
    owner = _owner(call, open_file)
    return None if owner is None else patcher(buf_arg, owner)


def stat(call: Call):
    return _path_stat(call, AT_FDCWD, 0, 0, 1, _patch_stat)


def lstat(call: Call):
    return _path_stat(call, AT_FDCWD, 0, AT_SYMLINK_NOFOLLOW, 1, _patch_stat)


def fstat(call: Call):
    owner = _owner(call, lambda: call.files.open_fd(call.int_arg(0)))
    return None if owner is None else _patch_stat(1, owner)


def newfstatat(call: Call):
    return _path_stat(call, call.int_arg(0), 1, call.int_arg(3), 2, _patch_stat)


def _patch_statx(buf_arg: int, owner: tuple[int, int]) -> AtExit:
    def patch(call: Call, result: int) -> None:
        if result != 0:
            return
        addr = call.args[buf_arg]
        (mask,) = struct.unpack("I", call.mem.read(addr, 4) or b"\0\0\0\0")
        if mask & STATX_UID:
            call.mem.write(addr + STATX_UID_OFFSET, struct.pack("I", owner[0]))
        if mask & STATX_GID:
            call.mem.write(addr + STATX_UID_OFFSET + 4, struct.pack("I", owner[1]))
    return AtExit(patch)


def statx(call: Call):
    return _path_stat(call, call.int_arg(0), 1, call.int_arg(2), 4, _patch_statx)


HANDLERS = {4: stat, 5: fstat, 6: lstat, 262: newfstatat, 332: statx}
