"""Whether the container can have a procfs of its own.

The kernel mounts a new procfs in a user namespace only when the /proc
already mounted is fully visible.  Container runtimes cover parts of it
(/proc/kcore, /proc/keys, a read-only /proc/sys...), and then every form of
new procfs is refused with EPERM.  A recursive bind of the existing /proc,
its masks included, still works; that /proc shows the pid namespace it was
mounted in, so the container then shares that namespace (sandbox.py) and
reaper.py ends what it started.
"""

from __future__ import annotations

import errno
import os

from . import linux

# What a systemd host mounts below /proc, on permanently empty directories:
# hiding nothing, they leave /proc fully visible.
_HIDES_NOTHING = frozenset({b"autofs", b"binfmt_misc"})
PROC_FLAGS = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
_UNKNOWN = 255


def masked() -> bool:
    """Whether something is mounted over part of /proc (one read of mountinfo, no probe)."""
    with open("/proc/self/mountinfo", "rb") as fh:
        for line in fh:
            fields = line.split()
            fstype = fields[fields.index(b"-") + 1]
            if fields[4].startswith(b"/proc/") and fstype not in _HIDES_NOTHING:
                return True
    return False


def refusal() -> linux.CallError | None:
    """Why a new procfs is refused here, None if it is not.

    Called in the container's new user namespace, before its pid namespace
    exists: a throwaway child unshares pid and mount namespaces, and its
    first child (pid 1 there) tries the mount.
    """
    pid = os.fork()
    if pid == 0:
        code = _UNKNOWN
        try:
            linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWPID)
            child = os.fork()
            if child == 0:
                try:
                    linux.mount("proc", "/proc", "proc", PROC_FLAGS)
                    code = 0
                except OSError as err:
                    code = err.errno if 0 < err.errno < _UNKNOWN else _UNKNOWN
                finally:
                    os._exit(code)
            _, status = os.waitpid(child, 0)
            code = os.waitstatus_to_exitcode(status)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return None
    return linux.CallError(code if 0 < code < _UNKNOWN else errno.EPERM, "mount(proc on /proc)")
