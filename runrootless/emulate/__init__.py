"""Syscall handlers of the emulation, one table keyed by x86_64 syscall number."""

from __future__ import annotations

from .. import seccomp_filter
from . import ids, mknod, owner, stat, user, xattr

TABLE = {**ids.HANDLERS, **owner.HANDLERS, **stat.HANDLERS, **mknod.HANDLERS, **xattr.HANDLERS,
         **user.HANDLERS}
# Trapped only by the user filter, in processes with fake non-root credentials.
USER_ONLY = frozenset(user.HANDLERS)
# set*id calls after which a process may need the user filter.
SETID = frozenset({105, 106, 113, 114, 117, 119, 122, 123})
# Calls that change the caller's credentials.
MUTATING = SETID | {116, 126, 157}
# execve, execveat: notified so that a set-id executable's new ids can be followed.
EXEC = frozenset({59, 322})
# What the user-notification listener answers: every call of the first filter,
# with the handlers that would need an exit stop replaced by ones that do the work.
NOTIFY_TABLE = {**{nr: fn for nr, fn in TABLE.items() if nr not in USER_ONLY},
                **stat.NOTIFY_HANDLERS, **xattr.NOTIFY_HANDLERS, **mknod.NOTIFY_HANDLERS}

# x86_64 names of the trapped syscalls (for statistics).
NAMES = {
    4: "stat", 5: "fstat", 6: "lstat", 262: "newfstatat", 332: "statx",
    92: "chown", 93: "fchown", 94: "lchown", 260: "fchownat", 133: "mknod", 259: "mknodat",
    102: "getuid", 104: "getgid", 107: "geteuid", 108: "getegid", 105: "setuid", 106: "setgid",
    113: "setreuid", 114: "setregid", 115: "getgroups", 116: "setgroups", 117: "setresuid",
    118: "getresuid", 119: "setresgid", 120: "getresgid", 122: "setfsuid", 123: "setfsgid", 126: "capset", 157: "prctl",
    188: "setxattr", 189: "lsetxattr", 190: "fsetxattr", 191: "getxattr", 192: "lgetxattr",
    193: "fgetxattr", 194: "listxattr", 195: "llistxattr", 196: "flistxattr", 197: "removexattr",
    198: "lremovexattr", 199: "fremovexattr",
    2: "open", 257: "openat", 437: "openat2", 85: "creat", 83: "mkdir", 258: "mkdirat", 88: "symlink",
    266: "symlinkat", 86: "link", 265: "linkat", 82: "rename", 264: "renameat", 316: "renameat2",
    87: "unlink", 84: "rmdir", 263: "unlinkat", 21: "access", 269: "faccessat", 439: "faccessat2",
    59: "execve", 322: "execveat", 90: "chmod", 91: "fchmod", 268: "fchmodat", 452: "fchmodat2",
}


def user_filter() -> bytes:
    """The second seccomp program, for processes with fake non-root credentials."""
    return seccomp_filter.assemble(seccomp_filter.build(sorted(USER_ONLY), (), user.I386))
