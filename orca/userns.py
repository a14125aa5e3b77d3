"""The build process's own user and mount namespace, for overlayfs mounts.

Since Linux 5.11 the root of a user namespace may mount overlayfs (with the
`userxattr` option).  `orca-build` enters a namespace of its own before
anything else runs: our uid and gid mapped to themselves, so every file is
still ours and the RUN helpers (which start runrootless's namespace nested
in this one) see the same ids.  The capabilities the namespace gives are
kept out of the effective set, so the build reads and writes files with the
user's own permissions; they are raised only around a mount, which overlay
records as its mounter's credentials for copy-ups.

The mounts live and die with the process: a killed build leaves none.
"""

from __future__ import annotations

import ctypes
import errno
import os
from contextlib import contextmanager

from runrootless import linux

_LINUX_CAPABILITY_VERSION_3 = 0x20080522
# The new mount API (the same numbers on every architecture since 5.2)
_SYS_MOVE_MOUNT = 429
_SYS_FSOPEN = 430
_SYS_FSCONFIG = 431
_SYS_FSMOUNT = 432
_FSCONFIG_SET_FLAG = 0
_FSCONFIG_SET_STRING = 1
_FSCONFIG_CMD_CREATE = 6
_FSOPEN_CLOEXEC = 1
_FSMOUNT_CLOEXEC = 1
_MOVE_MOUNT_F_EMPTY_PATH = 4
_AT_FDCWD = -100
# mount(2) takes its options in one page
_PAGE = 4096
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


# Overlay syncs its upper file system on umount (50-250 ms per step on a
# busy disk: all the file system's dirty data) unless mounted `volatile`.
# Nothing here needs that: an upper becomes a snapshot of the cache and the
# layer blob is read from it through the page cache, so a crash can spoil
# cache entries made since the last writeback, never the layout a build
# wrote.  containerd's overlay snapshotter does not sync its uppers either,
# and a base layer's snapshot, extracted without a mount, never was synced.
_volatile = True
_entered = False
_own_userns = False  # capabilities to raise around mounts, dropped otherwise


def _caps() -> tuple[_CapHeader, ctypes.Array]:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.capget(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capget: {os.strerror(err)}")
    return header, data


def _set_effective(full: bool) -> None:
    header, data = _caps()
    for d in data:
        d.effective = d.permitted if full else 0
    if _libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def enter() -> str | None:
    """Enter a user+mount namespace mapping our ids to themselves (root: a
    mount namespace only, keeping its powers); None on success (or if
    already in it), else why not.  Must run while the process has a single
    thread."""
    global _entered, _own_userns
    if _entered:
        return None
    uid, gid = os.getuid(), os.getgid()
    if os.geteuid() == 0:
        try:
            linux.unshare(linux.CLONE_NEWNS)
            linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        except OSError as err:
            return f"cannot create a mount namespace: {err.strerror}"
        _entered = True
        return None
    try:
        linux.unshare(linux.CLONE_NEWUSER | linux.CLONE_NEWNS)
    except OSError as err:
        return f"cannot create a user namespace: {err.strerror}"
    _own_userns = True
    try:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    finally:
        _set_effective(False)
    _entered = True
    return None


def active() -> bool:
    return _entered


@contextmanager
def _privileged():
    if not _own_userns:
        yield
        return
    _set_effective(True)
    try:
        yield
    finally:
        _set_effective(False)


def mount_overlay(lowers: list[str], upper: str | None, work: str | None, target: str) -> None:
    """Mount overlayfs at target: lowers topmost first; without upper,
    read-only.  With an upper it is mounted `volatile` where the kernel
    allows (5.10+), which leaves work/incompat/volatile behind: the caller
    gives a fresh workdir every time."""
    global _volatile
    if upper is not None and _volatile:
        try:
            _mount(lowers, upper, work, target, True)
            return
        except OSError as err:
            if err.errno != errno.EINVAL:
                raise
            _volatile = False  # a kernel without it: mounts as before
    _mount(lowers, upper, work, target, False)


def _mount(lowers: list[str], upper: str | None, work: str | None, target: str, volatile: bool) -> None:
    options = ["lowerdir=" + ":".join(_escape(p) for p in lowers)]
    if upper is not None:
        options += [f"upperdir={_escape(upper)}", f"workdir={_escape(work)}"]
    options.append("userxattr")
    if volatile:
        options.append("volatile")
    data = ",".join(options)
    with _privileged():
        if len(data.encode()) < _PAGE:
            linux.mount("overlay", target, "overlay", 0, data)
        else:
            _mount_many(lowers, upper, work, target, volatile)


def _mount_many(lowers: list[str], upper: str | None, work: str | None, target: str,
                volatile: bool) -> None:
    """Past a page of options: fsconfig's lowerdir+ adds one lower at a time (Linux 6.8+)."""
    def call(*args) -> int:
        result = _libc.syscall(*args)
        if result == -1:
            err = ctypes.get_errno()
            raise OSError(err, f"mount {target}: {os.strerror(err)} ({len(lowers)} layers)")
        return result

    def string(key: str, value: str) -> None:
        call(ctypes.c_long(_SYS_FSCONFIG), ctypes.c_int(fs), ctypes.c_uint(_FSCONFIG_SET_STRING),
             key.encode(), value.encode(), ctypes.c_int(0))

    fs = call(ctypes.c_long(_SYS_FSOPEN), b"overlay", ctypes.c_uint(_FSOPEN_CLOEXEC))
    try:
        for lower in lowers:  # each lowerdir+ goes below the ones before: topmost first
            string("lowerdir+", lower)
        if upper is not None:
            string("upperdir", upper)
            string("workdir", work)
        for flag in (b"userxattr", b"volatile") if volatile else (b"userxattr",):
            call(ctypes.c_long(_SYS_FSCONFIG), ctypes.c_int(fs), ctypes.c_uint(_FSCONFIG_SET_FLAG),
                 flag, None, ctypes.c_int(0))
        call(ctypes.c_long(_SYS_FSCONFIG), ctypes.c_int(fs), ctypes.c_uint(_FSCONFIG_CMD_CREATE),
             None, None, ctypes.c_int(0))
        mnt = call(ctypes.c_long(_SYS_FSMOUNT), ctypes.c_int(fs), ctypes.c_uint(_FSMOUNT_CLOEXEC),
                   ctypes.c_uint(0))
        try:
            call(ctypes.c_long(_SYS_MOVE_MOUNT), ctypes.c_int(mnt), b"", ctypes.c_int(_AT_FDCWD),
                 target.encode(), ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH))
        finally:
            os.close(mnt)
    finally:
        os.close(fs)


def umount(target: str, lazy: bool = False) -> None:
    """Unmount target; lazy: detach it even while something still uses it."""
    with _privileged():
        linux.umount2(target, linux.MNT_DETACH if lazy else 0)


def _escape(path: str) -> str:
    """overlay splits its options at ',' and lowerdir at ':'; both are escaped with '\\'."""
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")
