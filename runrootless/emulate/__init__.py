"""Syscall handlers of the emulation, one table keyed by x86_64 syscall number."""

from __future__ import annotations

from .. import seccomp_filter
from .. import syscalls as nr
from . import ids, mknod, owner, stat, user, xattr

TABLE = {**ids.HANDLERS, **owner.HANDLERS, **stat.HANDLERS, **mknod.HANDLERS, **xattr.HANDLERS,
         **user.HANDLERS, **ids.USER_HANDLERS}
# Trapped only by the user filter, in processes with fake non-root credentials.
USER_ONLY = frozenset(user.HANDLERS) | frozenset(ids.USER_HANDLERS)
# set*id calls after which a process may need the user filter.
SETID = frozenset({nr.SETUID, nr.SETGID, nr.SETREUID, nr.SETREGID, nr.SETRESUID, nr.SETRESGID,
                   nr.SETFSUID, nr.SETFSGID})
# Calls that change the caller's credentials.
MUTATING = SETID | {nr.SETGROUPS, nr.CAPSET, nr.PRCTL}
# execve, execveat: notified so that a set-id executable's new ids can be followed.
EXEC = frozenset({nr.EXECVE, nr.EXECVEAT})
# What the user-notification listener answers: every call of the first filter,
# with the handlers that would need an exit stop replaced by ones that do the work.
NOTIFY_TABLE = {**{n: fn for n, fn in TABLE.items() if n not in USER_ONLY},
                **stat.NOTIFY_HANDLERS, **xattr.NOTIFY_HANDLERS, **mknod.NOTIFY_HANDLERS}

# x86_64 names of syscalls (for statistics).
NAMES = nr.NAMES


def user_filter() -> bytes:
    """The second seccomp program, for processes with fake non-root credentials."""
    return seccomp_filter.assemble(seccomp_filter.build(sorted(USER_ONLY), (), user.I386,
                                                        only_if=ids.USER_FILTER_ONLY_IF))
