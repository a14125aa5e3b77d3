"""stat family: report the owner recorded in user.rootlesscontainers.

The owner is looked up before the call runs; files without the xattr (most
of a rootfs) need nothing more.  Answered from a user notification
(NOTIFY_HANDLERS), the whole struct is written here (pack_stat, or the
kernel's statx of the file); under ptrace the kernel fills the buffer and
the exit stop patches the owner.
"""

from __future__ import annotations

import os
import struct

from umoci_py.rootless import XATTR_NAME

from ..linux import statx as statx_raw
from .base import (AT_EMPTY_PATH, AT_FDCWD, AT_SYMLINK_NOFOLLOW, AtExit, Call, Return, can_hold_xattr, fd_path,
                   keeps_side_record, owner_from, side_entry_owner)

STAT_UID_OFFSET = 28          # struct stat on x86_64: st_uid, st_gid follow
STATX_UID_OFFSET = 20         # struct statx: stx_uid, stx_gid follow
STATX_UID = 0x8
STATX_GID = 0x10
# dev, ino, nlink, mode, uid, gid, pad, rdev, size, blksize, blocks, [a,m,c]time sec/nsec, reserved
STAT_LAYOUT = struct.Struct("QQQIIIIQqqqqqqqqq24x")


Found = tuple[tuple[int, int], os.stat_result]


def _lookup_at(call: Call, link: str) -> Found | None:
    """The emulated owner and stat of what link names, if the owner differs from the kernel's.

    The xattr is read first: most files have none, and then that one call is
    the whole lookup.  Any failure leaves the kernel's answer standing.
    """
    try:
        payload = os.getxattr(link, XATTR_NAME)
        info = os.stat(link)
    except OSError:
        return None
    if not can_hold_xattr(info.st_mode):
        return None
    return owner_from(payload, call.files.real_owner(info)), info


def lookup(call: Call, dirfd: int, path_arg: int, flags: int) -> Found | None:
    """For a path-based stat: (emulated owner, stat) when a recorded owner applies, else None."""
    try:
        path = call.path_arg(path_arg)
        if not path and flags & AT_EMPTY_PATH:
            # fstat through fstatat (glibc's fstat): no open, the fd's magic link is enough
            return _lookup_at(call, call.files.cwd if dirfd == AT_FDCWD else call.files.fd_link(dirfd))
        fd = call.files.open(dirfd, path, follow=not flags & AT_SYMLINK_NOFOLLOW)
    except OSError:
        return None  # the real call fails the same way (or we cannot do better)
    try:
        return _lookup_at(call, fd_path(fd)) or _side_lookup(call, dirfd, path, fd)
    finally:
        os.close(fd)


def _side_lookup(call: Call, dirfd: int, path: bytes, fd: int) -> Found | None:
    """A symlink's, FIFO's or socket's owner from its parent's side record (OWNERS_XATTR)."""
    try:
        info = os.fstat(fd)
        if not keeps_side_record(info.st_mode):
            return None
        parent_fd, name = call.files.open_parent(dirfd, path)
        try:
            found = side_entry_owner(parent_fd, name, info)
        finally:
            os.close(parent_fd)
    except OSError:
        return None
    return None if found is None else (found, info)


def lookup_fd(call: Call, fd_arg: int) -> Found | None:
    try:
        link = call.files.fd_link(call.int_arg(fd_arg))
    except OSError:
        return None
    return _lookup_at(call, link)


def pack_stat(info: os.stat_result, owner: tuple[int, int]) -> bytes:
    """struct stat (x86_64) as the kernel would fill it, with the emulated owner."""
    return STAT_LAYOUT.pack(
        info.st_dev, info.st_ino, info.st_nlink, info.st_mode, owner[0], owner[1], 0, info.st_rdev,
        info.st_size, info.st_blksize, info.st_blocks,
        *divmod(info.st_atime_ns, 10**9), *divmod(info.st_mtime_ns, 10**9), *divmod(info.st_ctime_ns, 10**9))


def _patch_stat(buf_arg: int, owner: tuple[int, int]) -> AtExit:
    def patch(call: Call, result: int) -> None:
        if result == 0:
            call.mem.write(call.args[buf_arg] + STAT_UID_OFFSET, struct.pack("II", *owner))
    return AtExit(patch)


def _path_stat(call: Call, dirfd: int, path_arg: int, flags: int, buf_arg: int, patcher):
    found = lookup(call, dirfd, path_arg, flags)
    return None if found is None else patcher(buf_arg, found[0])


def stat(call: Call):
    return _path_stat(call, AT_FDCWD, 0, 0, 1, _patch_stat)


def lstat(call: Call):
    return _path_stat(call, AT_FDCWD, 0, AT_SYMLINK_NOFOLLOW, 1, _patch_stat)


def fstat(call: Call):
    found = lookup_fd(call, 0)
    return None if found is None else _patch_stat(1, found[0])


def newfstatat(call: Call):
    return _path_stat(call, call.int_arg(0), 1, call.int_arg(3), 2, _patch_stat)


AT_FLAGS = AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | 0x800   # | AT_NO_AUTOMOUNT
AT_STATX_SYNC_TYPE = 0x6000


def _answer(call: Call, found: Found | None, buf_arg: int) -> Return | None:
    """A notified stat: the whole struct written here when a recorded owner applies."""
    if found is None:
        return None
    call.mem.write(call.args[buf_arg], pack_stat(found[1], found[0]))
    return Return(0)


def statx_notified(call: Call) -> Return | None:
    """statx under user notification: the kernel's statx of the file, with the emulated owner."""
    dirfd, flags, mask = call.int_arg(0), call.int_arg(2), call.id_arg(3)
    try:
        path = call.path_arg(1)
        fd = call.files.open(dirfd, path, follow=not flags & AT_SYMLINK_NOFOLLOW,
                             empty_path=bool(flags & AT_EMPTY_PATH))
    except OSError:
        return None
    try:
        found = _lookup_at(call, fd_path(fd)) or _side_lookup(call, dirfd, path, fd)
        if found is None:
            return None
        buf = bytearray(statx_raw(fd, flags & AT_STATX_SYNC_TYPE, mask))
    finally:
        os.close(fd)
    got = int.from_bytes(buf[:4], "little")
    if got & STATX_UID:
        buf[STATX_UID_OFFSET:STATX_UID_OFFSET + 4] = struct.pack("I", found[0][0])
    if got & STATX_GID:
        buf[STATX_UID_OFFSET + 4:STATX_UID_OFFSET + 8] = struct.pack("I", found[0][1])
    call.mem.write(call.args[4], bytes(buf))
    return Return(0)


# The stat family as a user-notification listener answers it: alone, in one wake-up.
NOTIFY_HANDLERS = {
    4: lambda call: _answer(call, lookup(call, AT_FDCWD, 0, 0), 1),                          # stat
    5: lambda call: _answer(call, lookup_fd(call, 0), 1),                                    # fstat
    6: lambda call: _answer(call, lookup(call, AT_FDCWD, 0, AT_SYMLINK_NOFOLLOW), 1),        # lstat
    262: lambda call: (None if call.int_arg(3) & ~AT_FLAGS                                   # newfstatat
                       else _answer(call, lookup(call, call.int_arg(0), 1, call.int_arg(3)), 2)),
    332: statx_notified,
}


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
