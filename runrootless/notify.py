"""The seccomp user-notification listener: receive a trapped call, answer it, no ptrace stop.

A notified caller is woken once with our answer (a value or an errno) or
with CONTINUE, after which the kernel runs the call itself.  Unlike a
ptrace stop there is no exit stop, so every handler used here either
answers alone or lets the call run untouched (NOTIFY_HANDLERS in emulate/).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct

from . import linux
from .emulate.base import AtExit, Call, Return

NOTIF = struct.Struct("QIIiIQ6Q")    # struct seccomp_notif: id, pid, flags, seccomp_data
RESP = struct.Struct("QqiI")         # struct seccomp_notif_resp: id, val, error, flags
CONTINUE = (0, 0, linux.SECCOMP_USER_NOTIF_FLAG_CONTINUE)


def response(result: Return | None) -> tuple[int, int, int]:
    """(val, error, flags) for a handler's result."""
    if result is None:
        return CONTINUE
    value = result.value
    return (0, value, 0) if value < 0 else (value, 0, 0)


def run_handler(handler, call: Call) -> Return | None:
    """A handler's result, failures as errno results."""
    try:
        result = handler(call)
    except OSError as err:
        return Return(-(err.errno or errno.EIO))
    if isinstance(result, AtExit):
        raise TypeError(f"syscall {call.nr}: a notified call has no exit stop")
    return result


def answer(handler, call: Call) -> tuple[int, int, int]:
    return response(run_handler(handler, call))


def unpack(data: bytes) -> list[tuple[int, int, int, tuple[int, ...]]]:
    """(id, tid, nr, args) of each struct seccomp_notif in data."""
    return [(notif_id, tid, nr, tuple(args)) for notif_id, tid, _, nr, _, _, *args in NOTIF.iter_unpack(data)]


class Listener:
    """One listener fd: RECV and SEND with a preallocated request buffer."""

    def __init__(self, fd: int):
        self.fd = fd
        try:   # Linux 6.6: the caller and we hand the CPU to each other directly (flags by value)
            fcntl.ioctl(fd, linux.SECCOMP_IOCTL_NOTIF_SET_FLAGS, linux.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
        except OSError:
            pass
        self._request = bytearray(NOTIF.size)
        self._zero = bytes(NOTIF.size)

    def recv(self) -> tuple[int, int, int, tuple[int, ...]] | None:
        """(id, tid, nr, args) of the next notification; None if its caller died meanwhile."""
        self._request[:] = self._zero   # the kernel insists on a zeroed request
        try:
            fcntl.ioctl(self.fd, linux.SECCOMP_IOCTL_NOTIF_RECV, self._request, True)
        except OSError as err:
            if err.errno in (errno.ENOENT, errno.EINTR):
                return None
            raise
        return unpack(self._request)[0]

    def send(self, notif_id: int, answer: tuple[int, int, int]) -> None:
        try:
            fcntl.ioctl(self.fd, linux.SECCOMP_IOCTL_NOTIF_SEND, RESP.pack(notif_id, *answer))
        except OSError as err:
            if err.errno != errno.ENOENT:   # ENOENT: the caller was killed or interrupted meanwhile
                raise


def receive_listener(sock: socket.socket) -> int | None:
    """Runner side: the listener fd the workload sent, None if it sent none."""
    _, fds, _, _ = socket.recv_fds(sock, 1, 1)
    return fds[0] if fds else None


def send_listener(sock_fd: int, listener: int) -> None:
    """Container side: hand the listener to the runner and keep no copy."""
    with socket.socket(fileno=sock_fd) as sock:
        socket.send_fds(sock, [b"L"], [listener])
    os.close(listener)
