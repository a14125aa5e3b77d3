"""The C pre-filter (_prefilter.c) in front of the listener: most stats and execs answered without Python.

It reads every notification first: it answers CONTINUE itself for a stat of
a file with no recorded owner and an exec of a file with no set-id bit,
and forwards every other notification here, as the kernel's struct, through
a pipe the supervisor polls.  The decisions are the ones the Python
handlers make, so turning it off (prefilter=False in api.run) changes
speed only.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import os
from collections import Counter
from pathlib import Path

from .sandbox import SandboxError
from .notify import NOTIF, unpack

_READ_BATCH = 64


def _library() -> ctypes.CDLL:
    here = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_prefilter{suffix}"
        if path.exists():
            lib = ctypes.CDLL(str(path), use_errno=True)
            lib.rr_prefilter_start.restype = ctypes.c_void_p
            lib.rr_prefilter_start.argtypes = [ctypes.c_int, ctypes.c_int]
            lib.rr_prefilter_stop.restype = ctypes.c_int
            lib.rr_prefilter_stop.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
            lib.rr_prefilter_counted.restype = ctypes.c_size_t
            return lib
    raise SandboxError(f"{here}/_prefilter.c is not built: install the package with pip "
                   "(or run `python setup.py build_ext --inplace` in a source tree)")


class Prefilter:
    """The C thread serving one listener; fd is the read end of what it forwards."""

    def __init__(self, listener: int):
        self._lib = _library()
        self.fd, forward = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        os.set_blocking(forward, True)
        handle = self._lib.rr_prefilter_start(listener, forward)
        if not handle:
            err = ctypes.get_errno()
            os.close(forward)
            os.close(self.fd)
            raise OSError(err, f"starting the listener thread: {os.strerror(err)}")
        self._handle = handle

    def take(self) -> list[tuple[int, int, int, tuple[int, ...]]] | None:
        """The forwarded notifications as (id, tid, nr, args); None once the thread has ended."""
        try:
            data = os.read(self.fd, NOTIF.size * _READ_BATCH)
        except BlockingIOError:
            return []
        if not data:
            return None
        # The thread writes whole structs (each an atomic pipe write), and the
        # batch is a whole number of them, so reads never split one.
        return unpack(data)

    def stop(self) -> tuple[Counter, int]:
        """End the thread: the calls it answered per syscall number, and the errno that ended it early (0: none)."""
        if self._handle is None:
            return Counter(), 0
        # Read end first: a thread blocked writing to a full pipe then fails with EPIPE instead of hanging the join.
        os.close(self.fd)
        size = self._lib.rr_prefilter_counted()
        counts = (ctypes.c_uint64 * size)()
        error = self._lib.rr_prefilter_stop(self._handle, counts, size)
        self._handle = None
        return Counter({nr: n for nr, n in enumerate(counts) if n}), error
