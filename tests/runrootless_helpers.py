"""Helpers shared by the runrootless tests: run a shell script in a bundle, read recorded owners,
check no tracee outlived its run, and fake registers and memory for calling a handler alone."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from runrootless import api
from runrootless.emulate.base import Call, Creds
from umoci_py.rootless import XATTR_NAME, resolve_owner


def run_sh(bundle, script, notify=True, stats=None, **kw):
    """(exit status, merged output) of /bin/sh -c script in the bundle; kw sets RunSpec fields."""
    spec = api.spec_from_bundle(bundle)
    spec.args = ["/bin/sh", "-c", script]
    for key, value in kw.items():
        setattr(spec, key, value)
    chunks = []
    status = api.run(spec, output=chunks.append, notify=notify, stats=stats)
    return status, b"".join(chunks).decode()


def host_owner(path):
    """The owner recorded in a file's user.rootlesscontainers (an unset id is 0), None without one."""
    try:
        return resolve_owner(os.getxattr(path, XATTR_NAME))
    except OSError:
        return None


def private_copy(bundle: Path, tmp_path: Path) -> Path:
    """tmp_path/bundle, a copy of a shared bundle (cp -a keeps owner xattrs and hard links) for one test to change."""
    dest = tmp_path / "bundle"
    subprocess.run(["cp", "-a", str(bundle), str(dest)], check=True)
    return dest


def assert_no_children():
    """Nothing the run started is left for us to reap."""
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


BASE = 0x10000


class FakeMemory:
    """A flat address space starting at BASE."""

    def __init__(self, size=8192):
        self.data = bytearray(size)
        self.top = BASE

    def put(self, data: bytes) -> int:
        addr = self.top
        self.write(addr, data)
        self.top += len(data) + 8
        return addr

    def read(self, addr, size):
        off = addr - BASE
        if off < 0 or off >= len(self.data):
            return b""
        return bytes(self.data[off:off + size])

    def write(self, addr, data):
        off = addr - BASE
        if off < 0 or off + len(data) > len(self.data):
            raise OSError(errno.EFAULT, "bad address")
        self.data[off:off + len(data)] = data


def make_call(nr, args, files=None, creds=None, mem=None):
    """A Call of syscall nr with args (zero-padded to six), fresh root creds and memory unless given."""
    args = tuple(a & (2**64 - 1) for a in args) + (0,) * (6 - len(args))
    return Call(nr, args, creds or Creds(), mem or FakeMemory(), files)
