"""Forward an ssh-agent socket into a RUN through a socket of the build's own.

A RUN --mount=type=ssh never sees the agent's own socket: the build listens
on a fresh socket in its scratch directory and relays each connection to the
agent, as BuildKit relays it over its session.  The step's mode applies to
that socket, the user's agent socket is never changed, and nothing of it is
in the rootfs or the cache key.
"""

from __future__ import annotations

import os
import selectors
import socket
import stat
import threading
from contextlib import contextmanager
from pathlib import Path

from orca.errors import BuildError

CHUNK = 65536


def check_agent_socket(path: str, what: str) -> Path:
    """An agent socket named on the command line, or a one-line error."""
    try:
        info = os.stat(path)
    except OSError as err:
        raise BuildError(f"{what}: {path}: {err.strerror}") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise BuildError(f"{what}: {path}: not a socket (give an ssh-agent socket; key files "
                         "are not loaded, add them to an agent with ssh-add)")
    return Path(path)


@contextmanager
def _short(path: Path):
    """A name for path that fits a socket address (108 bytes): through an
    O_PATH descriptor of its directory, as the scratch directory of a
    build can be deep."""
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class AgentForward:
    """Listens at ``path`` and relays every connection to ``upstream``
    until closed."""

    def __init__(self, path: Path, upstream: Path, mode: int):
        self.path = path
        self.upstream = upstream
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with _short(path) as short:
            self._listener.bind(short)
        os.chmod(path, mode)
        self._listener.listen(16)
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="ssh-forward")
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._relay, args=(conn,), daemon=True, name="ssh-relay").start()

    def _relay(self, conn: socket.socket) -> None:
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with self._lock:
            self._conns |= {conn, up}
        try:
            with _short(self.upstream) as short:
                up.connect(short)
            peers = {conn: up, up: conn}
            with selectors.DefaultSelector() as sel:
                for s in peers:
                    sel.register(s, selectors.EVENT_READ)
                while True:
                    for key, _ in sel.select():
                        data = key.fileobj.recv(CHUNK)
                        if not data:
                            return
                        peers[key.fileobj].sendall(data)
        except OSError:
            return  # the agent went away, or the step ended: the client sees EOF
        finally:
            with self._lock:
                self._conns -= {conn, up}
            conn.close()
            up.close()

    def close(self) -> None:
        # shutdown wakes the accept() blocked in the other thread; close alone does not
        with self._lock:
            socks = [self._listener, *self._conns]
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join()
        self._listener.close()
