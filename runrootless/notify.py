"""The stat family answered from a seccomp user-notification listener: no ptrace stop at all.

stat/fstat/lstat/newfstatat are nine in ten trapped calls under apt and
dpkg, and they need no per-thread state, so a helper process serves them
apart from the ptrace loop.  For a file without a recorded owner (nearly
all) the answer is CONTINUE and the kernel runs the call itself; otherwise
the helper stats the file, writes struct stat with the recorded owner into
the caller's memory and returns 0.  Either way the caller is woken once,
without the ptrace stop/wait/GETREGS/CONT round trip.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import struct

from . import linux
from .emulate.base import Call, TraceeFiles, TraceeMemory
from .emulate.stat import NOTIFIED, pack_stat

NOTIF = struct.Struct("QIIiIQ6Q")    # struct seccomp_notif: id, pid, flags, seccomp_data
RESP = struct.Struct("QqiI")         # struct seccomp_notif_resp: id, val, error, flags


def answer(call: Call) -> tuple[int, int, int]:
    """(val, error, flags) of the response for one notified call."""
    lookup, buf_arg = NOTIFIED[call.nr]
    try:
        found = lookup(call)
        if found is None:
            return 0, 0, linux.SECCOMP_USER_NOTIF_FLAG_CONTINUE
        call.mem.write(call.args[buf_arg], pack_stat(found[1], found[0]))
    except OSError as err:
        return 0, -(err.errno or errno.EIO), 0
    return 0, 0, 0


def serve(listener: int, host_uid: int, host_gid: int, served: memoryview) -> None:
    """Answer notifications until no process uses the filter any more.

    served[nr] counts the calls (shared memory: the runner reads it even if
    it had to kill the helper).
    """
    try:
        fcntl.ioctl(listener, linux.SECCOMP_IOCTL_NOTIF_SET_FLAGS,
                    struct.pack("Q", linux.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP))
    except OSError:
        pass  # before Linux 6.6: ordinary wake-ups
    vm = linux.VmBuffer()
    views: dict[int, tuple[TraceeMemory, TraceeFiles]] = {}
    request = bytearray(NOTIF.size)
    zero = bytes(NOTIF.size)
    while True:
        request[:] = zero   # the kernel insists on a zeroed request
        try:
            fcntl.ioctl(listener, linux.SECCOMP_IOCTL_NOTIF_RECV, request, True)
        except OSError as err:
            if err.errno == errno.EINTR:
                continue
            if err.errno == errno.ENOENT and not _hung_up(listener):
                continue    # the caller died before we got its notification
            return
        notif_id, pid, _, nr, _, _, *args = NOTIF.unpack(request)
        view = views.get(pid)
        if view is None:   # pids are reused, but the view is only /proc/PID paths
            view = views[pid] = (TraceeMemory(pid, vm), TraceeFiles.for_pid(pid, host_uid, host_gid))
        try:
            val, error, flags = answer(Call(nr, tuple(args), None, *view))
        except Exception:  # noqa: BLE001 - a bug here must not fail the caller's stat
            val, error, flags = 0, 0, linux.SECCOMP_USER_NOTIF_FLAG_CONTINUE
        served[nr] += 1
        try:
            fcntl.ioctl(listener, linux.SECCOMP_IOCTL_NOTIF_SEND, RESP.pack(notif_id, val, error, flags))
        except OSError:
            pass    # ENOENT: the caller was killed meanwhile


def _hung_up(listener: int) -> bool:
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    return any(ev & select.POLLHUP for _, ev in poller.poll(0))


def helper_main(sock: socket.socket, served: memoryview) -> None:
    """The forked helper: receive the listener from the container, serve, exit."""
    code = 0
    try:
        _, fds, _, _ = socket.recv_fds(sock, 1, 1)
        sock.close()
        if fds:
            serve(fds[0], os.getuid(), os.getgid(), served)
    except BaseException:  # noqa: BLE001 - a forked child must never return
        code = 1
    os._exit(code)


def send_listener(sock_fd: int, listener: int) -> None:
    """Container side: hand the listener to the helper and keep no copy."""
    with socket.socket(fileno=sock_fd) as sock:
        socket.send_fds(sock, [b"L"], [listener])
    os.close(listener)
