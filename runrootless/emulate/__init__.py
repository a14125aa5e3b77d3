"""Syscall handlers of the emulation, one table keyed by x86_64 syscall number."""

from __future__ import annotations

from . import ids, mknod, owner, stat, xattr

TABLE = {**ids.HANDLERS, **owner.HANDLERS, **stat.HANDLERS, **mknod.HANDLERS, **xattr.HANDLERS}

# x86_64 names of the trapped syscalls (for statistics).
NAMES = {
    4: "stat", 5: "fstat", 6: "lstat", 262: "newfstatat", 332: "statx",
    92: "chown", 93: "fchown", 94: "lchown", 260: "fchownat", 133: "mknod", 259: "mknodat",
    102: "getuid", 104: "getgid", 107: "geteuid", 108: "getegid", 105: "setuid", 106: "setgid",
    113: "setreuid", 114: "setregid", 115: "getgroups", 116: "setgroups", 117: "setresuid",
    118: "getresuid", 119: "setresgid", 120: "getresgid", 122: "setfsuid", 123: "setfsgid",
    188: "setxattr", 189: "lsetxattr", 190: "fsetxattr", 191: "getxattr", 192: "lgetxattr",
    193: "fgetxattr", 194: "listxattr", 195: "llistxattr", 196: "flistxattr", 197: "removexattr",
    198: "lremovexattr", 199: "fremovexattr",
}
