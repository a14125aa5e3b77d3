"""get*id/set*id/getgroups/setgroups on fake credentials, by the rules of the man pages.

Privilege is the capability the kernel checks (CAP_SETUID/CAP_SETGID, kept as
one flag with CAP_MKNOD): effective while euid is 0, lost with euid, and kept
as permitted across a change to all non-zero uids only with PR_SET_KEEPCAPS,
from where capset raises it again (setpriv does that).  All handled in one
answer.
"""

from __future__ import annotations

import errno
import stat as st
import struct

from .. import syscalls as nr
from .base import NOCHANGE, AtExit, Call, Creds, Return

NGROUPS_MAX = 65536


def _ok_unpriv(value: int, *allowed: int) -> bool:
    return value == NOCHANGE or value in allowed


def _set(call: Call, kind: str) -> Return:
    c, value = call.creds, call.id_arg(0)
    if value == NOCHANGE:
        return Return(-errno.EINVAL)
    if c.cap_effective:
        _store(c, kind, value, value, value)
    elif value in (getattr(c, f"r{kind}"), getattr(c, f"s{kind}")):
        before = (c.ruid, c.euid, c.suid)
        setattr(c, f"e{kind}", value)
        setattr(c, f"fs{kind}", value)
        if kind == "uid":
            _caps_after_uid_change(c, before)
    else:
        return Return(-errno.EPERM)
    return Return(0)


def setuid(call: Call) -> Return:
    return _set(call, "uid")


def setgid(call: Call) -> Return:
    return _set(call, "gid")


def _setre(creds: Creds, kind: str, r: int, e: int) -> Return:
    ids = [getattr(creds, f"r{kind}"), getattr(creds, f"e{kind}"), getattr(creds, f"s{kind}")]
    old_r, old_e, old_s = ids
    if not creds.cap_effective and not (_ok_unpriv(r, old_r, old_e) and _ok_unpriv(e, old_r, old_e, old_s)):
        return Return(-errno.EPERM)
    new_r = old_r if r == NOCHANGE else r
    new_e = old_e if e == NOCHANGE else e
    # The saved id follows the new effective one when the real id is set or
    # the effective one becomes something other than the old real id.
    new_s = new_e if (r != NOCHANGE or (e != NOCHANGE and e != old_r)) else old_s
    _store(creds, kind, new_r, new_e, new_s)
    return Return(0)


def _setres(creds: Creds, kind: str, r: int, e: int, s: int) -> Return:
    cur = (getattr(creds, f"r{kind}"), getattr(creds, f"e{kind}"), getattr(creds, f"s{kind}"))
    if not creds.cap_effective and not all(_ok_unpriv(v, *cur) for v in (r, e, s)):
        return Return(-errno.EPERM)
    new = [old if v == NOCHANGE else v for v, old in zip((r, e, s), cur)]
    _store(creds, kind, *new)
    return Return(0)


def _store(creds: Creds, kind: str, r: int, e: int, s: int) -> None:
    before = (creds.ruid, creds.euid, creds.suid)
    setattr(creds, f"r{kind}", r)
    setattr(creds, f"e{kind}", e)
    setattr(creds, f"s{kind}", s)
    setattr(creds, f"fs{kind}", e)
    if kind == "uid":
        _caps_after_uid_change(creds, before)


def _caps_after_uid_change(c: Creds, before: tuple[int, int, int]) -> None:
    """capabilities(7), "Effect of user ID changes on capabilities"."""
    if 0 in before and 0 not in (c.ruid, c.euid, c.suid) and not c.keep_caps:
        c.cap_permitted = False
    if before[1] == 0 and c.euid != 0:
        c.cap_effective = False
    elif before[1] != 0 and c.euid == 0:
        c.cap_effective = c.cap_permitted


def setreuid(call: Call) -> Return:
    return _setre(call.creds, "uid", call.id_arg(0), call.id_arg(1))


def setregid(call: Call) -> Return:
    return _setre(call.creds, "gid", call.id_arg(0), call.id_arg(1))


def setresuid(call: Call) -> Return:
    return _setres(call.creds, "uid", call.id_arg(0), call.id_arg(1), call.id_arg(2))


def setresgid(call: Call) -> Return:
    return _setres(call.creds, "gid", call.id_arg(0), call.id_arg(1), call.id_arg(2))


def _setfs(call: Call, kind: str) -> Return:
    c, value = call.creds, call.id_arg(0)
    old = getattr(c, f"fs{kind}")
    allowed = (getattr(c, f"r{kind}"), getattr(c, f"e{kind}"), getattr(c, f"s{kind}"), old)
    if value != NOCHANGE and (c.cap_effective or value in allowed):
        setattr(c, f"fs{kind}", value)
    return Return(old)


def setfsuid(call: Call) -> Return:
    return _setfs(call, "uid")


def setfsgid(call: Call) -> Return:
    return _setfs(call, "gid")


def setgroups(call: Call) -> Return:
    size = call.int_arg(0)
    if size < 0 or size > NGROUPS_MAX:
        return Return(-errno.EINVAL)
    if not call.creds.cap_effective:
        return Return(-errno.EPERM)
    data = call.mem.read(call.args[1], 4 * size) if size else b""
    if len(data) != 4 * size:
        return Return(-errno.EFAULT)
    call.creds.groups = struct.unpack(f"{size}I", data)
    return Return(0)


def getgroups(call: Call) -> Return:
    groups = call.creds.groups
    size = call.int_arg(0)
    if size < 0:
        return Return(-errno.EINVAL)
    if size == 0:
        return Return(len(groups))
    if size < len(groups):
        return Return(-errno.EINVAL)
    try:
        call.mem.write(call.args[1], struct.pack(f"{len(groups)}I", *groups))
    except OSError:
        return Return(-errno.EFAULT)
    return Return(len(groups))


def _getres(call: Call, values: tuple[int, int, int]) -> Return:
    try:
        for addr, value in zip(call.args[:3], values):
            call.mem.write(addr, struct.pack("I", value))
    except OSError:
        return Return(-errno.EFAULT)
    return Return(0)


def getresuid(call: Call) -> Return:
    c = call.creds
    return _getres(call, (c.ruid, c.euid, c.suid))


def getresgid(call: Call) -> Return:
    c = call.creds
    return _getres(call, (c.rgid, c.egid, c.sgid))


def on_exec(creds: Creds, mode: int, owner: tuple[int, int], no_new_privs: bool) -> None:
    """What execve does to the ids: set-id bits raise euid/egid, then saved = effective."""
    if not no_new_privs:
        if mode & st.S_ISUID:
            creds.euid = owner[0]
        if mode & st.S_ISGID and mode & st.S_IXGRP:
            creds.egid = owner[1]
    creds.suid = creds.fsuid = creds.euid
    creds.sgid = creds.fsgid = creds.egid
    # A root-run program gets every capability, anyone else's none (no file capabilities).
    creds.cap_permitted = creds.ruid == 0 or creds.euid == 0
    creds.cap_effective = creds.euid == 0
    creds.keep_caps = False


PR_GET_KEEPCAPS = 7
PR_SET_KEEPCAPS = 8
CAP_SETID_BITS = 1 << 6 | 1 << 7     # CAP_SETGID, CAP_SETUID


def prctl(call: Call) -> Return | None:
    """PR_SET_KEEPCAPS/PR_GET_KEEPCAPS on the fake credentials; any other option runs."""
    option = call.int_arg(0)
    if option == PR_GET_KEEPCAPS:
        return Return(int(call.creds.keep_caps))
    if option == PR_SET_KEEPCAPS:
        if call.args[1] not in (0, 1):
            return Return(-errno.EINVAL)
        call.creds.keep_caps = bool(call.args[1])
        return Return(0)
    return None


def capset(call: Call) -> Return | None:
    """Follow what capset does to CAP_SETUID/CAP_SETGID; the kernel's own call then runs.

    (The real process is root in the namespace with every capability, so the
    kernel accepts what the fake credentials may not: that is refused here.)
    """
    header = call.mem.read(call.args[0], 8)
    data = call.mem.read(call.args[1], 12) if call.args[1] else b""
    if len(header) != 8 or len(data) != 12:
        return None   # a bad pointer: the kernel's answer
    pid = struct.unpack("Ii", header)[1]
    if pid != 0 and (call.files is None or pid != call.files.own_pid()):
        return None   # another process (capset names itself by its own namespace's pid): the kernel's answer
    effective, permitted, _ = struct.unpack("III", data)
    c = call.creds
    if permitted & CAP_SETID_BITS and not c.cap_permitted:
        return Return(-errno.EPERM)
    c.cap_permitted = bool(permitted & CAP_SETID_BITS)
    c.cap_effective = bool(effective & CAP_SETID_BITS) and c.cap_permitted
    return None


SOL_SOCKET = 1
SO_PEERCRED = 17
UCRED = struct.Struct("iII")   # struct ucred: pid, uid, gid


def getsockopt(call: Call) -> AtExit | None:
    """SO_PEERCRED reports the peer's fake effective ids (the kernel's are all 0).

    A server such as postgres checks a Unix socket's peer this way (peer
    authentication).  The peer's ids are its current ones, not those it had
    when it connected.
    """
    if call.int_arg(1) != SOL_SOCKET or call.int_arg(2) != SO_PEERCRED or call.peers is None:
        return None

    def patch(call: Call, result: int) -> None:
        if result != 0:
            return
        size = call.mem.read(call.args[4], 4)
        data = call.mem.read(call.args[3], UCRED.size)
        if len(size) != 4 or struct.unpack("I", size)[0] < UCRED.size or len(data) != UCRED.size:
            return
        pid = UCRED.unpack(data)[0]
        peer = call.peers(pid)
        call.mem.write(call.args[3], UCRED.pack(pid, peer.euid, peer.egid))
    return AtExit(patch)


# Trapped only by the user filter (see emulate.user): root's processes see the kernel's answer.
USER_HANDLERS = {nr.GETSOCKOPT: getsockopt}
# The filter traps getsockopt(fd, SOL_SOCKET, SO_PEERCRED, ...) only (apt's methods ask SO_ERROR often).
USER_FILTER_ONLY_IF = {nr.GETSOCKOPT: ((1, SOL_SOCKET), (2, SO_PEERCRED))}

HANDLERS = {
    nr.GETUID: lambda call: Return(call.creds.ruid),
    nr.GETGID: lambda call: Return(call.creds.rgid),
    nr.GETEUID: lambda call: Return(call.creds.euid),
    nr.GETEGID: lambda call: Return(call.creds.egid),
    nr.SETUID: setuid,
    nr.SETGID: setgid,
    nr.SETREUID: setreuid,
    nr.SETREGID: setregid,
    nr.GETGROUPS: getgroups,
    nr.SETGROUPS: setgroups,
    nr.SETRESUID: setresuid,
    nr.GETRESUID: getresuid,
    nr.SETRESGID: setresgid,
    nr.GETRESGID: getresgid,
    nr.SETFSUID: setfsuid,
    nr.SETFSGID: setfsgid,
    nr.CAPSET: capset,
    nr.PRCTL: prctl,
}
