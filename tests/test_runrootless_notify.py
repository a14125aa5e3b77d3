"""runrootless under seccomp user notification: the notified handlers alone, then whole runs."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
import subprocess

import pytest

from runrootless import api, notify
from runrootless.emulate import NOTIFY_TABLE
from runrootless.emulate.base import AT_EMPTY_PATH, AT_FDCWD, AT_SYMLINK_NOFOLLOW, Creds, TraceeFiles
from runrootless_helpers import FakeMemory, host_owner, make_call, run_sh
from umoci_py.rootless import OWNERS_XATTR, XATTR_NAME, encode_owner, read_side, side_owner, write_side

CONTINUE = notify.CONTINUE
HIDDEN = (XATTR_NAME, "user.orca.device", OWNERS_XATTR)
_libc = ctypes.CDLL(None, use_errno=True)


def kernel_statx(path, flags=0, mask=0xFFF) -> bytes:
    """struct statx of path as the kernel fills it for us."""
    buf = ctypes.create_string_buffer(256)
    rc = _libc.syscall(ctypes.c_long(332), ctypes.c_int(AT_FDCWD), os.fsencode(path), ctypes.c_int(flags),
                       ctypes.c_uint(mask), buf)
    assert rc == 0, os.strerror(ctypes.get_errno())
    return buf.raw


@pytest.fixture
def tree(tmp_path):
    """Tracee view rooted at '/', cwd tmp_path/w, fds in tmp_path/fd; a plain and an owned file."""
    work, fds = tmp_path / "w", tmp_path / "fd"
    work.mkdir()
    fds.mkdir()
    os.symlink(work, tmp_path / "cwd")   # like /proc/PID/cwd, a link to the directory
    files = TraceeFiles(root="/", cwd=str(tmp_path / "cwd"), fd_dir=str(fds))
    (work / "plain").write_bytes(b"abc")
    (work / "owned").write_bytes(b"12345")
    os.setxattr(work / "owned", XATTR_NAME, encode_owner(7, 42))
    return work, fds, files


# ---- statx ----------------------------------------------------------------

def test_statx_continues_for_a_file_without_recorded_owner(tree):
    # No xattr: the kernel's own answer is right, so the call must run untouched.
    work, _, files = tree
    mem = FakeMemory()
    path, buf = mem.put(b"plain\0"), mem.put(bytes(256))
    call = make_call(332, (AT_FDCWD, path, 0, 0xFFF, buf), files, mem=mem)
    assert notify.answer(NOTIFY_TABLE[332], call) == CONTINUE
    assert mem.read(buf, 256) == bytes(256)


def test_statx_writes_the_kernels_struct_with_the_recorded_owner(tree):
    # The notified statx must be the kernel's statx of the file but for uid/gid (no exit stop to patch).
    work, fds, files = tree
    mem = FakeMemory()
    path, buf = mem.put(b"owned\0"), mem.put(bytes(256))
    call = make_call(332, (AT_FDCWD, path, 0, 0xFFF, buf), files, mem=mem)
    assert notify.answer(NOTIFY_TABLE[332], call) == (0, 0, 0)
    got, real = mem.read(buf, 256), kernel_statx(work / "owned")
    assert struct.unpack_from("II", got, 20) == (7, 42)
    assert got[:20] + got[28:] == real[:20] + real[28:]
    assert struct.unpack_from("Q", got, 40)[0] == 5          # stx_size
    # Through a dirfd with an empty path (fstat by statx), the same answer.
    os.symlink(work / "owned", fds / "5")
    mem.write(buf, bytes(256))
    empty = mem.put(b"\0")
    call = make_call(332, (5, empty, AT_EMPTY_PATH, 0xFFF, buf), files, mem=mem)
    assert notify.answer(NOTIFY_TABLE[332], call) == (0, 0, 0)
    assert struct.unpack_from("II", mem.read(buf, 28), 20) == (7, 42)
    # An unwritable result buffer fails the call rather than the run.
    call = make_call(332, (AT_FDCWD, path, 0, 0xFFF, 0x10), files, mem=mem)
    assert notify.answer(NOTIFY_TABLE[332], call) == (0, -errno.EFAULT, 0)


def test_statx_of_a_symlink_reports_its_side_record_owner(tree):
    # Symlinks cannot carry the xattr: lstat-like statx must read the parent's side record.
    work, _, files = tree
    os.symlink("plain", work / "lnk")
    write_side(work, "lnk", os.lstat(work / "lnk").st_ino, (1000, 1001))
    mem = FakeMemory()
    path, buf = mem.put(b"lnk\0"), mem.put(bytes(256))
    call = make_call(332, (AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, 0xFFF, buf), files, mem=mem)
    assert notify.answer(NOTIFY_TABLE[332], call) == (0, 0, 0)
    got = mem.read(buf, 256)
    assert struct.unpack_from("IIH", got, 20) == (1000, 1001, stat.S_IFLNK | 0o777)
    # Following the link reaches "plain", which has no recorded owner.
    call = make_call(332, (AT_FDCWD, path, 0, 0xFFF, buf), files, mem=mem)
    assert notify.answer(NOTIFY_TABLE[332], call) == CONTINUE


# ---- listxattr family -----------------------------------------------------

def set_names(path, *names):
    for name in names:
        os.setxattr(path, name, b"1")


def names_of(data: bytes) -> list[bytes]:
    return sorted(data.split(b"\0")[:-1])


@pytest.mark.parametrize("nr", [194, 195])
def test_listxattr_hides_the_internal_names(tree, nr):
    # listxattr/llistxattr answered by the listener: our three names left out, sizes as for the kept list.
    work, _, files = tree
    target = work / "plain"
    set_names(target, "user.a", *HIDDEN, "user.bb")
    kept = b"user.a\0user.bb\0"
    mem = FakeMemory()
    path, buf = mem.put(b"plain\0"), mem.put(bytes(256))
    call = make_call(nr, (path, buf, 256), files, mem=mem)
    assert notify.answer(NOTIFY_TABLE[nr], call) == (len(kept), 0, 0)
    assert names_of(mem.read(buf, len(kept))) == names_of(kept)
    # Exactly big enough for the kept names is enough; one byte less is ERANGE.
    call = make_call(nr, (path, buf, len(kept)), files, mem=mem)
    assert notify.answer(NOTIFY_TABLE[nr], call) == (len(kept), 0, 0)
    call = make_call(nr, (path, buf, len(kept) - 1), files, mem=mem)
    assert notify.answer(NOTIFY_TABLE[nr], call) == (0, -errno.ERANGE, 0)
    # A size query (size 0) goes to the kernel.
    assert notify.answer(NOTIFY_TABLE[nr], make_call(nr, (path, 0, 0), files, mem=mem)) == CONTINUE


def test_listxattr_continues_when_nothing_is_hidden_and_for_symlinks(tree):
    # Nothing of ours on the file: the kernel's list is already right.
    work, _, files = tree
    set_names(work / "plain", "user.a")
    os.symlink("owned", work / "lnk")
    mem = FakeMemory()
    plain, lnk, buf = mem.put(b"plain\0"), mem.put(b"lnk\0"), mem.put(bytes(256))
    assert notify.answer(NOTIFY_TABLE[194], make_call(194, (plain, buf, 256), files, mem=mem)) == CONTINUE
    # llistxattr of a symlink: no user.* names can be there.
    assert notify.answer(NOTIFY_TABLE[195], make_call(195, (lnk, buf, 256), files, mem=mem)) == CONTINUE
    # listxattr follows it to "owned", whose only name is hidden: an empty list.
    assert notify.answer(NOTIFY_TABLE[194], make_call(194, (lnk, buf, 256), files, mem=mem)) == (0, 0, 0)
    missing = mem.put(b"missing\0")
    assert notify.answer(NOTIFY_TABLE[194], make_call(194, (missing, buf, 256), files, mem=mem)) == CONTINUE


def test_flistxattr_through_the_tracees_fd(tree):
    # flistxattr resolves the tracee's fd, not one of ours.
    work, fds, files = tree
    set_names(work / "owned", "user.z")
    os.symlink(work / "owned", fds / "9")
    os.symlink(work / "plain", fds / "4")
    mem = FakeMemory()
    buf = mem.put(bytes(64))
    assert notify.answer(NOTIFY_TABLE[196], make_call(196, (9, buf, 64), files, mem=mem)) == (7, 0, 0)
    assert mem.read(buf, 8) == b"user.z\0\0"
    assert notify.answer(NOTIFY_TABLE[196], make_call(196, (9, buf, 6), files, mem=mem)) == (0, -errno.ERANGE, 0)
    assert notify.answer(NOTIFY_TABLE[196], make_call(196, (4, buf, 64), files, mem=mem)) == CONTINUE
    assert notify.answer(NOTIFY_TABLE[196], make_call(196, (8, buf, 64), files, mem=mem)) == CONTINUE  # bad fd


# ---- mknod of a FIFO ------------------------------------------------------

def test_fifo_of_a_non_root_caller_is_made_and_recorded(tree):
    # No exit stop under notification: the listener makes the FIFO itself, then records its owner.
    work, _, files = tree
    (work / "pub").mkdir()
    os.setxattr(work / "pub", XATTR_NAME, encode_owner(1000, 1000))
    mem = FakeMemory()
    path = mem.put(b"pub/p\0")
    user = Creds.of(1000, 1000)
    call = make_call(259, (AT_FDCWD, path, stat.S_IFIFO | 0o666, 0), files, user, mem)
    assert notify.answer(NOTIFY_TABLE[259], call) == (0, 0, 0)
    info = os.lstat(work / "pub/p")
    assert stat.S_ISFIFO(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o644
    assert side_owner(read_side(work / "pub"), "p", info.st_ino) == (1000, 1000)
    assert notify.answer(NOTIFY_TABLE[259], call) == (0, -errno.EEXIST, 0)
    # A directory the caller may not write to: EACCES, nothing made.
    closed = mem.put(b"q\0")
    call = make_call(133, (closed, stat.S_IFIFO | 0o666, 0), files, user, mem)
    assert notify.answer(NOTIFY_TABLE[133], call) == (0, -errno.EACCES, 0)
    assert not os.path.lexists(work / "q")
    # Root's FIFO is the kernel's business.
    call = make_call(133, (closed, stat.S_IFIFO | 0o666, 0), files, Creds(), mem)
    assert notify.answer(NOTIFY_TABLE[133], call) == CONTINUE


# ---- whole runs -----------------------------------------------------------

def run(bundle, script, notify=True, **kw):
    """run_sh's (exit status, output), then the run's stats."""
    stats = api.Stats()
    return (*run_sh(bundle, script, notify=notify, stats=stats, **kw), stats)


ROOT_LOOP = "for i in 1 2 3 4 5 6 7 8 9 10; do id -u >/dev/null; done; stat -c %U:%G /etc/shadow"


def test_root_tasks_are_not_traced_under_notification(debian_bundle):
    # A fake root never changes ids, so its forks, execs and calls cost no ptrace stop.
    status, out, stats = run(debian_bundle, ROOT_LOOP)
    assert (status, out) == (0, "root:shadow\n")
    assert stats.stops < 10 and not stats.by_nr
    assert stats.notified[107] >= 10 and stats.notified[59] >= 11 and stats.notified[332] >= 1
    status, out, stats = run(debian_bundle, ROOT_LOOP, notify=False)
    assert (status, out) == (0, "root:shadow\n")
    assert stats.stops > 40 and not stats.notified


LIST_C = r"""
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/xattr.h>

static void show(const char *what, ssize_t n, const char *buf) {
    printf("%s", what);
    if (n < 0) { printf(" errno %d\n", errno); return; }
    for (ssize_t i = 0; i < n; i += strlen(buf + i) + 1) printf(" %s", buf + i);
    printf("\n");
}

int main(int argc, char **argv) {
    char buf[256];
    show("list", listxattr(argv[1], buf, sizeof buf), buf);
    show("llist", llistxattr(argv[1], buf, sizeof buf), buf);
    show("small", listxattr(argv[1], buf, 8), buf);
    show("flist", flistxattr(open(argv[1], O_RDONLY), buf, sizeof buf), buf);
    return 0;
}
"""


def test_stat_ls_and_listxattr_in_the_container(private_bundle, tmp_path):
    # statx (coreutils stat, ls) and the listxattr family, answered by the listener in a real run.
    rootfs = private_bundle / "rootfs"
    set_names(rootfs / "etc/shadow", "user.mine", "user.orca.device")
    src = tmp_path / "list.c"
    src.write_text(LIST_C)
    subprocess.run(["gcc", "-static", "-o", str(rootfs / "usr/local/bin/lst"), str(src)], check=True)
    status, out, stats = run(private_bundle, "stat -c '%U:%G %s' /etc/shadow; ls -ln /etc/shadow | cut -d' ' -f3,4; "
                                             "lst /etc/shadow")
    size = (rootfs / "etc/shadow").stat().st_size
    assert status == 0, out
    assert out.splitlines() == [f"root:shadow {size}", "0 42", "list user.mine", "llist user.mine",
                                f"small errno {errno.ERANGE}", "flist user.mine"]
    assert stats.notified[332] >= 2 and stats.notified[194] and stats.notified[195] and stats.notified[196]
    assert not stats.by_nr


def test_dropping_root_for_good_gets_the_user_filter(private_bundle):
    # runuser to nobody: the task is seized and its user filter injected; what it creates is recorded.
    script = ("runuser -u nobody -- sh -c "
              "'id -u; touch /tmp/f && mkfifo /tmp/p && stat -c %U:%G /tmp/f /tmp/p; touch /etc/no'")
    status, out, stats = run(private_bundle, script)
    assert out.splitlines() == ["65534", "nobody:nogroup", "nobody:nogroup",
                                "touch: cannot touch '/etc/no': Permission denied"]
    assert status == 1
    tmp = private_bundle / "rootfs/tmp"
    assert host_owner(tmp / "f") == (65534, 65534)
    assert side_owner(read_side(tmp), "p", os.lstat(tmp / "p").st_ino) == (65534, 65534)
    assert stats.by_nr[257] >= 2              # the user filter's openat, through ptrace
    assert stats.notified[259] == 1            # mkfifo's mknodat, by the listener
    assert not (private_bundle / "rootfs/etc/no").exists()


# Not through sh: Debian's dash resets its euid to the real uid.
PERL = ('$> = 65534; print "$> $<\\n"; system("id -u"); {away} '
        '$> = 0; print "$> $<\\n"; system("id -u"); {back}')
LOOP = "qx(id -u) for 1..10;"


def test_temporary_seteuid_and_back_is_untraced_again(debian_bundle):
    # seteuid(nobody) seizes the task (children inherit euid); seteuid(0) lets it go again.
    status, out, back = run(debian_bundle, f"perl -e '{PERL.format(away='', back=LOOP)}'")
    assert (status, out.split()) == (0, ["65534", "0", "65534", "0", "0", "0"])
    # The same loop while euid is nobody: it stops (every call is followed while the ids may
    # go back to root), unlike after coming back, where it costs nothing.
    status, out, away = run(debian_bundle, f"perl -e '{PERL.format(away=LOOP, back='')}'")
    assert (status, out.split()) == (0, ["65534", "0", "65534", "0", "0", "0"])
    status, out, neither = run(debian_bundle, f"perl -e '{PERL.format(away='', back='')}'")
    assert (status, out.split()) == (0, ["65534", "0", "65534", "0", "0", "0"])
    assert back.stops < neither.stops + 15 and away.stops > neither.stops + 30


def test_a_supervisor_failure_ends_the_container_instead_of_hanging(debian_bundle, monkeypatch):
    # A bug surfacing in the run loop while the container runs (here: answering a call)
    # must end the container, not leave the runner joined to its waiter forever.
    def broken(self, notif_id, answer):
        raise RuntimeError("listener bug")

    monkeypatch.setattr(notify.Listener, "send", broken)
    spec = api.spec_from_bundle(debian_bundle)
    spec.args = ["/bin/sh", "-c", "id -u; sleep 1000"]
    with pytest.raises(RuntimeError, match="listener bug"):
        api.run(spec, output=lambda _chunk: None)
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)
