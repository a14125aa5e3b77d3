"""The C pre-filter in front of the listener: the same answers as the Python listener, most of them in C."""

from __future__ import annotations

import errno
import importlib.machinery
import os
import select
import subprocess
from collections import Counter

import pytest

from runrootless import api
from runrootless.prefilter import Prefilter
from runrootless.sandbox import SandboxError
from umoci_py.rootless import write_side

# Every branch of the pre-filter's decision, through the raw syscalls (glibc
# would turn stat, lstat and fstat into newfstatat): x86_64 numbers 4 stat,
# 5 fstat, 6 lstat, 262 newfstatat.
PROBE = r"""
use Fcntl;
my $b;
sub show {
    my ($what, $rc) = @_;
    if ($rc < 0) { print "$what errno ", $! + 0, "\n"; return }
    my ($u, $g) = unpack("x28 L L", $b);
    print "$what $u:$g\n";
}
sub path { my ($what, $nr, $path) = @_; my $p = "$path"; $b = "\0" x 256; show($what, syscall($nr, $p, $b)) }
sub fd { my ($what, $fd) = @_; $b = "\0" x 256; show($what, syscall(5, $fd + 0, $b)) }
sub at {
    my ($what, $dirfd, $path, $flags) = @_;
    my $p = "$path";
    $b = "\0" x 256;
    show($what, syscall(262, $dirfd + 0, $p, $b, $flags + 0));
}
path("stat owned", 4, "/etc/shadow");
path("stat plain", 4, "/etc/passwd");
path("stat in root", 4, "/tmp/etc-link/shadow");
path("stat missing", 4, "/nonexistent");
path("lstat side record", 6, "/tmp/sidelink");
path("stat through it", 4, "/tmp/sidelink");
open(my $owned, "<", "/etc/shadow") or die;
open(my $plain, "<", "/etc/passwd") or die;
fd("fstat owned", fileno($owned));
fd("fstat plain", fileno($plain));
fd("fstat bad fd", 999);
sysopen(my $etc, "/etc", O_RDONLY | O_DIRECTORY) or die;
at("at dirfd", fileno($etc), "shadow", 0);
chdir "/etc" or die;
at("at cwd", -100, "shadow", 0);
at("at cwd dots", -100, "../etc//shadow", 0);
at("at empty fd", fileno($owned), "", 0x1000);
chdir "/tmp/owned-dir" or die;
at("at empty cwd", -100, "", 0x1000);
at("at empty no flag", -100, "", 0);
at("at bad flags", -100, "/etc", 0x4);
at("at nofollow side", -100, "/tmp/sidelink", 0x100);
"""
SCRIPT = ("ln -s /etc /tmp/etc-link && mkdir /tmp/owned-dir && chown 5:6 /tmp/owned-dir && "
          "cp /usr/bin/id /tmp/sgid-id && chgrp 42 /tmp/sgid-id && chmod g+s /tmp/sgid-id && "
          f"perl -e '{PROBE}' && /tmp/sgid-id -g && id -g")
EXPECTED = [
    "stat owned 0:42", "stat plain 0:0", "stat in root 0:42", f"stat missing errno {errno.ENOENT}",
    "lstat side record 3:4", "stat through it 0:0",
    "fstat owned 0:42", "fstat plain 0:0", f"fstat bad fd errno {errno.EBADF}",
    "at dirfd 0:42", "at cwd 0:42", "at cwd dots 0:42", "at empty fd 0:42", "at empty cwd 5:6",
    f"at empty no flag errno {errno.ENOENT}", f"at bad flags errno {errno.EINVAL}", "at nofollow side 3:4",
    "42", "0",
]


def probe(bundle, prefilter: bool) -> tuple[list[str], api.Stats]:
    spec = api.spec_from_bundle(bundle)
    spec.args = ["/bin/sh", "-c", SCRIPT]
    chunks, stats = [], api.Stats()
    assert api.run(spec, output=chunks.append, stats=stats, prefilter=prefilter) == 0, b"".join(chunks)
    return b"".join(chunks).decode().splitlines(), stats


def with_side_link(bundle):
    """A symlink whose owner is in its parent's side record (as umoci-py unpack writes it)."""
    tmp = bundle / "rootfs/tmp"
    os.symlink("/etc/passwd", tmp / "sidelink")
    write_side(tmp, "sidelink", os.lstat(tmp / "sidelink").st_ino, (3, 4))
    return bundle


def test_prefilter_gives_the_python_listeners_answers(private_bundle, tmp_path):
    fresh = tmp_path / "again"
    subprocess.run(["cp", "-a", str(private_bundle), str(fresh)], check=True)   # the same start for both runs
    lines, stats = probe(with_side_link(private_bundle), prefilter=True)
    assert lines == EXPECTED
    # Answered in C: plain files, failures, execs of files without set-id bits...
    assert stats.prefiltered[262] > 0 and stats.prefiltered[4] >= 3 and stats.prefiltered[5] >= 2
    assert stats.prefiltered[59] >= 5
    # ...while owned files, side records and the set-id exec reached Python.
    assert stats.prefiltered[4] < stats.notified[4] and stats.prefiltered[6] < stats.notified[6]
    assert stats.prefiltered[59] < stats.notified[59]
    lines, stats = probe(with_side_link(fresh), prefilter=False)
    assert lines == EXPECTED
    assert stats.notified[262] > 0 and not stats.prefiltered


def test_a_failing_prefilter_thread_is_reported(tmp_path):
    # Not a listener: the thread's first RECV fails, it closes its pipe and stop() says why.
    r, w = os.pipe()
    os.write(w, b"x")
    prefilter = Prefilter(r)
    try:
        select.select([prefilter.fd], [], [])
        assert prefilter.take() is None
        assert prefilter.stop() == (Counter(), errno.ENOTTY)
    finally:
        os.close(r)
        os.close(w)


def test_an_unbuilt_prefilter_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(importlib.machinery, "EXTENSION_SUFFIXES", [".not-built.so"])
    with pytest.raises(SandboxError, match=r"_prefilter\.c is not built: install the package with pip"):
        Prefilter(0)
