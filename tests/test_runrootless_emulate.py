"""Each emulation handler alone, with fake registers and memory and a temporary directory tree."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import socket
import stat
import struct

import pytest

from runrootless import notify, seccomp_filter
from runrootless import syscalls as nr
from runrootless.emulate import TABLE, ids, mknod, owner, user, xattr
from runrootless.emulate import stat as stat_h
from runrootless.emulate.base import AT_EMPTY_PATH, AT_FDCWD, AT_SYMLINK_NOFOLLOW, AtExit, Call, Creds, Return, TraceeFiles
from runrootless.tracer import needs_user_emulation, settled
from runrootless_helpers import BASE, FakeMemory, make_call
from umoci_py.rootless import (CAPS_RECORD_XATTR, XATTR_NAME, encode_caps_record, encode_owner, read_side,
                               side_owner, write_side)


@pytest.fixture
def env(tmp_path):
    """Tracee view: root '/', cwd tmp_path, fds 3.. as symlinks in a fake fd dir."""
    (tmp_path / "fd").mkdir()
    os.symlink(tmp_path, tmp_path / "cwd")
    files = TraceeFiles(root="/", cwd=str(tmp_path / "cwd"), fd_dir=str(tmp_path / "fd"))
    return tmp_path, files


def owner_of(path):
    try:
        payload = os.getxattr(path, XATTR_NAME)
    except OSError:
        return None
    from umoci_py.rootless import decode_owner
    return decode_owner(payload)


# ---- ids ------------------------------------------------------------------

def test_apt_privilege_drop_sequence_is_reported_back():
    creds, mem = Creds(), FakeMemory()
    groups = mem.put(struct.pack("I", 65534))
    assert TABLE[116](make_call(116, (1, groups), creds=creds, mem=mem)) == Return(0)   # setgroups
    assert TABLE[119](make_call(119, (65534, 65534, 65534), creds=creds)) == Return(0)  # setresgid
    assert TABLE[117](make_call(117, (42, 42, 42), creds=creds)) == Return(0)           # setresuid
    assert [TABLE[n](make_call(n, (), creds=creds)).value for n in (102, 107, 104, 108)] == [42, 42, 65534, 65534]
    out = mem.put(bytes(12))
    assert TABLE[118](make_call(118, (out, out + 4, out + 8), creds=creds, mem=mem)) == Return(0)
    assert struct.unpack("3I", mem.read(out, 12)) == (42, 42, 42)
    # Regaining root must fail now, as apt's Verify::Regain expects.
    assert TABLE[105](make_call(105, (0,), creds=creds)) == Return(-errno.EPERM)
    assert TABLE[116](make_call(116, (0, 0), creds=creds)) == Return(-errno.EPERM)


def test_getgroups_sizes():
    creds, mem = Creds(groups=(5, 6)), FakeMemory()
    assert ids.getgroups(make_call(115, (0, 0), creds=creds)) == Return(2)
    assert ids.getgroups(make_call(115, (1, BASE), creds=creds, mem=mem)) == Return(-errno.EINVAL)
    assert ids.getgroups(make_call(115, (2, BASE), creds=creds, mem=mem)) == Return(2)
    assert struct.unpack("2I", mem.read(BASE, 8)) == (5, 6)


def test_seteuid_keeps_saved_root_and_can_come_back():
    creds = Creds()
    assert ids.setreuid(make_call(113, (-1, 100), creds=creds)) == Return(0)
    assert (creds.ruid, creds.euid, creds.suid, creds.fsuid) == (0, 100, 100, 100)
    creds = Creds()
    assert ids.setresuid(make_call(117, (-1, 100, -1), creds=creds)) == Return(0)
    assert (creds.ruid, creds.euid, creds.suid) == (0, 100, 0)
    assert ids.setuid(make_call(105, (0,), creds=creds)) == Return(0)
    assert (creds.ruid, creds.euid, creds.suid) == (0, 0, 0)


def test_keepcaps_lets_a_dropped_uid_still_change_groups_after_capset():
    """setpriv --reuid=nobody --regid=nogroup: KEEPCAPS, setresuid, capset, setresgid."""
    mem = FakeMemory()
    header, caps = mem.put(struct.pack("Ii", 0x20080522, 0)), mem.put(struct.pack("6I", *([0xFFFFFFFF] * 2 + [0] * 4)))
    plain = Creds()
    assert ids.setresuid(make_call(117, (65534,) * 3, creds=plain)) == Return(0)
    assert ids.setresgid(make_call(119, (65534,) * 3, creds=plain)) == Return(-errno.EPERM)
    assert ids.capset(make_call(126, (header, caps), creds=plain, mem=mem)) == Return(-errno.EPERM)
    kept = Creds()
    assert ids.prctl(make_call(157, (8, 1), creds=kept)) == Return(0)            # PR_SET_KEEPCAPS
    assert ids.prctl(make_call(157, (7,), creds=kept)) == Return(1)
    assert ids.prctl(make_call(157, (15, 0), creds=kept)) is None                # PR_SET_NAME: the kernel's
    assert ids.setresuid(make_call(117, (65534,) * 3, creds=kept)) == Return(0)
    assert ids.setresgid(make_call(119, (65534,) * 3, creds=kept)) == Return(-errno.EPERM)   # effective lost
    assert ids.capset(make_call(126, (header, caps), creds=kept, mem=mem)) is None
    assert ids.setresgid(make_call(119, (65534,) * 3, creds=kept)) == Return(0)
    ids.on_exec(kept, 0o755, (0, 0), False)
    assert (kept.cap_effective, kept.cap_permitted, kept.keep_caps) == (False, False, False)


def test_seteuid_back_to_root_regains_privilege():
    creds = Creds()
    assert ids.setresuid(make_call(117, (-1, 100, -1), creds=creds)) == Return(0)
    assert ids.setgid(make_call(106, (5,), creds=creds)) == Return(-errno.EPERM)
    assert ids.setuid(make_call(105, (0,), creds=creds)) == Return(0)
    assert ids.setgid(make_call(106, (5,), creds=creds)) == Return(0)


def test_unprivileged_setuid_rules_and_invalid_id():
    creds = Creds.of(1000, 1000)
    assert ids.setuid(make_call(105, (0,), creds=creds)) == Return(-errno.EPERM)
    assert ids.setuid(make_call(105, (-1,), creds=creds)) == Return(-errno.EINVAL)
    assert ids.setfsuid(make_call(122, (5,), creds=creds)) == Return(1000)
    assert creds.fsuid == 1000
    assert ids.setgid(make_call(106, (1000,), creds=creds)) == Return(0)


def test_exec_of_setuid_file_raises_euid_unless_no_new_privs():
    creds = Creds.of(1000, 1000)
    ids.on_exec(creds, stat.S_IFREG | 0o4755, (0, 0), no_new_privs=False)
    assert (creds.ruid, creds.euid, creds.suid) == (1000, 0, 0)
    creds = Creds.of(1000, 1000)
    ids.on_exec(creds, stat.S_IFREG | 0o2755, (0, 42), no_new_privs=True)
    assert (creds.egid, creds.sgid) == (1000, 1000)
    ids.on_exec(creds, stat.S_IFREG | 0o2755, (0, 42), no_new_privs=False)
    assert (creds.rgid, creds.egid, creds.sgid) == (1000, 42, 42)


def test_perl_partial_drop_keeps_saved_root_until_exec():
    """pg_createcluster: $> = $< = uid is setreuid(uid, -1), then setresuid(-1, uid, -1)."""
    creds = Creds()
    assert ids.setreuid(make_call(nr.SETREUID, (1234, -1), creds=creds)) == Return(0)
    assert (creds.ruid, creds.euid, creds.suid) == (1234, 0, 0)
    assert ids.setresuid(make_call(nr.SETRESUID, (-1, 1234, -1), creds=creds)) == Return(0)
    assert (creds.ruid, creds.euid, creds.suid, creds.fsuid) == (1234, 1234, 0, 1234)
    assert needs_user_emulation(creds) and not settled(creds)    # may still go back: followed call by call
    assert (creds.cap_effective, creds.cap_permitted) == (False, True)
    ids.on_exec(creds, stat.S_IFREG | 0o755, (0, 0), False)
    assert (creds.ruid, creds.euid, creds.suid, creds.fsuid) == (1234, 1234, 1234, 1234)
    assert settled(creds)                                          # the user filter from here on
    assert ids.setuid(make_call(nr.SETUID, (0,), creds=creds)) == Return(-errno.EPERM)


def test_setfsuid_alone_needs_emulation_and_setreuid_moves_the_saved_uid():
    creds = Creds()
    assert ids.setfsuid(make_call(nr.SETFSUID, (1234,), creds=creds)) == Return(0)
    assert (creds.euid, creds.fsuid) == (0, 1234) and needs_user_emulation(creds) and not settled(creds)
    assert ids.setfsuid(make_call(nr.SETFSUID, (-1,), creds=creds)) == Return(1234)   # a query
    creds = Creds()
    assert ids.setreuid(make_call(nr.SETREUID, (1234, 1234), creds=creds)) == Return(0)
    assert (creds.ruid, creds.euid, creds.suid) == (1234, 1234, 1234) and settled(creds)
    kept = Creds(keep_caps=True)
    assert ids.setresuid(make_call(nr.SETRESUID, (5, 5, 5), creds=kept)) == Return(0)
    assert not settled(kept)          # PR_SET_KEEPCAPS: capset can still raise CAP_SETUID


def test_so_peercred_is_patched_with_the_peers_fake_effective_ids():
    mem = FakeMemory()
    ucred, size = mem.put(struct.pack("iII", 42, 0, 0)), mem.put(struct.pack("I", 12))
    peers = {42: Creds(ruid=5, euid=1234, egid=100)}
    call = Call(nr.GETSOCKOPT, (3, 1, 17, ucred, size, 0), Creds.of(70, 70), mem, None, peers.__getitem__)
    patch = ids.getsockopt(call)
    assert isinstance(patch, AtExit)
    assert patch.fn(call, 0) is None
    assert struct.unpack("iII", mem.read(ucred, 12)) == (42, 1234, 100)
    other = Call(nr.GETSOCKOPT, (3, 1, 4, ucred, size, 0), Creds.of(70, 70), mem, None, peers.__getitem__)
    assert ids.getsockopt(other) is None          # SO_ERROR: the kernel's answer


# ---- chown ----------------------------------------------------------------

def test_chown_merges_minus_one_with_the_recorded_owner(env):
    tmp, files = env
    (tmp / "f").write_bytes(b"x")
    mem = FakeMemory()
    path = mem.put(b"f\0")
    assert owner.chown(make_call(92, (path, 42, 43), files, mem=mem)) == Return(0)
    assert owner.chown(make_call(92, (path, 44, -1), files, mem=mem)) == Return(0)
    assert owner_of(tmp / "f") == (44, 43)
    assert owner.chown(make_call(92, (path, 0, 0), files, mem=mem)) == Return(0)
    assert owner_of(tmp / "f") is None   # 0:0 is stored as no xattr


def test_fchown_acts_on_the_tracees_fd_and_clears_setuid(env):
    tmp, files = env
    target = tmp / "prog"
    target.write_bytes(b"x")
    target.chmod(0o6755)
    os.symlink(target, tmp / "fd" / "7")
    assert owner.fchown(make_call(93, (7, 0, 101), files)) == Return(0)
    assert owner_of(target) == (0xFFFFFFFF, 101)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755     # setgid goes too: group-exec set


def test_fchownat_on_read_only_file_with_dirfd_and_empty_path(env):
    tmp, files = env
    (tmp / "d").mkdir()
    (tmp / "d" / "ro").write_bytes(b"x")
    (tmp / "d" / "ro").chmod(0o444)
    os.symlink(tmp / "d", tmp / "fd" / "5")
    mem = FakeMemory()
    name, empty = mem.put(b"ro\0"), mem.put(b"\0")
    assert owner.fchownat(make_call(260, (5, name, 7, 8, 0), files, mem=mem)) == Return(0)
    assert owner_of(tmp / "d" / "ro") == (7, 8)
    assert stat.S_IMODE((tmp / "d" / "ro").stat().st_mode) == 0o444
    assert owner.fchownat(make_call(260, (5, empty, 9, 9, AT_EMPTY_PATH), files, mem=mem)) == Return(0)
    assert owner_of(tmp / "d") == (9, 9)
    assert owner.fchownat(make_call(260, (5, empty, 9, 9, 0), files, mem=mem)) == Return(-errno.ENOENT)
    assert owner.fchownat(make_call(260, (5, name, 1, 1, 0x4), files, mem=mem)) == Return(-errno.EINVAL)


def test_lchown_of_symlink_is_accepted_without_touching_the_target(env):
    tmp, files = env
    (tmp / "target").write_bytes(b"x")
    os.symlink("target", tmp / "link")
    mem = FakeMemory()
    path = mem.put(b"link\0")
    assert owner.lchown(make_call(94, (path, 5, 5), files, mem=mem)) == Return(0)
    assert owner_of(tmp / "target") is None
    assert owner.chown(make_call(92, (path, 5, 6), files, mem=mem)) == Return(0)
    assert owner_of(tmp / "target") == (5, 6)


def test_chown_of_symlink_fifo_and_socket_is_recorded_in_the_parents_side_record(env):
    tmp, files = env
    os.symlink("target", tmp / "link")
    os.mkfifo(tmp / "fifo")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp / "sock"))
    mem = FakeMemory()
    link, fifo, sock_path = mem.put(b"link\0"), mem.put(b"fifo\0"), mem.put(b"sock\0")
    assert owner.lchown(make_call(nr.LCHOWN, (link, 5, 6), files, mem=mem)) == Return(0)
    assert owner.chown(make_call(nr.CHOWN, (fifo, 7, -1), files, mem=mem)) == Return(0)
    assert owner.fchownat(make_call(nr.FCHOWNAT, (AT_FDCWD, sock_path, 8, 9, AT_SYMLINK_NOFOLLOW), files,
                                    mem=mem)) == Return(0)
    records = read_side(tmp)
    assert [side_owner(records, name, os.lstat(tmp / name).st_ino) for name in ("link", "fifo", "sock")] == \
        [(5, 6), (7, 0), (8, 9)]
    # Their owner may change them further (group), and no one else.
    owner_creds = Creds.of(7, 7, (20,))
    assert owner.chown(make_call(nr.CHOWN, (fifo, -1, 20), files, owner_creds, mem)) == Return(0)
    assert side_owner(read_side(tmp), "fifo", os.lstat(tmp / "fifo").st_ino) == (7, 20)
    assert owner.chown(make_call(nr.CHOWN, (sock_path, -1, 20), files, owner_creds, mem)) == Return(-errno.EPERM)
    # Back to root: the record goes.
    assert owner.lchown(make_call(nr.LCHOWN, (link, 0, 0), files, mem=mem)) == Return(0)
    assert side_owner(read_side(tmp), "link", os.lstat(tmp / "link").st_ino) is None


def test_chmod_of_fifo_and_socket_by_their_recorded_owner(env):
    tmp, files = env
    os.mkfifo(tmp / "fifo")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp / "sock"))
    write_side(tmp, "fifo", os.lstat(tmp / "fifo").st_ino, (70, 70))
    write_side(tmp, "sock", os.lstat(tmp / "sock").st_ino, (70, 70))
    mem = FakeMemory()
    fifo, sock_path = mem.put(b"fifo\0"), mem.put(b"sock\0")
    for path in (fifo, sock_path):
        assert user.HANDLERS[nr.CHMOD](make_call(nr.CHMOD, (path, 0o600), files, Creds.of(70, 70), mem)) is None
        assert user.HANDLERS[nr.CHMOD](make_call(nr.CHMOD, (path, 0o600), files, Creds.of(71, 70), mem)) == \
            Return(-errno.EPERM)


def test_bind_of_a_unix_socket_is_a_recorded_creation(env):
    tmp, files = env
    os.chmod(tmp, 0o1777)
    mem = FakeMemory()
    address = mem.put(struct.pack("H", socket.AF_UNIX) + str(tmp / "sock").encode() + b"\0")
    creds = Creds.of(70, 71)
    done = user.bind(make_call(nr.BIND, (3, address, 110), files, creds, mem))
    assert isinstance(done, AtExit)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp / "sock"))
    done.fn(make_call(nr.BIND, (3, address, 110), files, creds, mem), 0)
    assert side_owner(read_side(tmp), "sock", os.lstat(tmp / "sock").st_ino) == (70, 71)
    # Abstract sockets and other families create no file; root creates as root.
    abstract = mem.put(struct.pack("H", socket.AF_UNIX) + b"\0name")
    inet = mem.put(struct.pack("H", socket.AF_INET) + bytes(14))
    assert user.bind(make_call(nr.BIND, (3, abstract, 7), files, creds, mem)) is None
    assert user.bind(make_call(nr.BIND, (3, inet, 16), files, creds, mem)) is None
    assert user.bind(make_call(nr.BIND, (3, address, 110), files, Creds(), mem)) is None
    # Not in a writable directory: refused as the kernel would.
    os.chmod(tmp, 0o755)
    elsewhere = mem.put(struct.pack("H", socket.AF_UNIX) + str(tmp / "other").encode() + b"\0")
    assert user.bind(make_call(nr.BIND, (3, elsewhere, 110), files, creds, mem)) == Return(-errno.EACCES)


def test_absolute_symlinks_resolve_inside_the_tracee_root(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "real").write_bytes(b"x")
    os.symlink("/etc/real", root / "etc" / "abs")
    files = TraceeFiles(root=str(root), cwd=str(root), fd_dir=str(tmp_path))
    mem = FakeMemory()
    path = mem.put(b"/etc/abs\0")
    assert owner.chown(make_call(92, (path, 3, 4), files, mem=mem)) == Return(0)
    assert owner_of(root / "etc" / "real") == (3, 4)


def test_unprivileged_chown_is_refused(env):
    tmp, files = env
    (tmp / "f").write_bytes(b"x")
    mem = FakeMemory()
    path = mem.put(b"f\0")
    creds = Creds.of(42, 42)
    assert owner.chown(make_call(92, (path, 42, -1), files, creds, mem)) == Return(-errno.EPERM)
    assert owner_of(tmp / "f") is None


def test_chown_missing_file_reports_enoent(env):
    _, files = env
    mem = FakeMemory()
    path = mem.put(b"nope\0")
    assert owner.chown(make_call(92, (path, 1, 1), files, mem=mem)) == Return(-errno.ENOENT)


# ---- stat -----------------------------------------------------------------

@pytest.fixture
def stat_env(env):
    """A file with no recorded owner, one owned 0:42, their names and a stat buffer in memory."""
    tmp, files = env
    (tmp / "plain").write_bytes(b"")
    (tmp / "owned").write_bytes(b"12345")
    os.setxattr(tmp / "owned", XATTR_NAME, encode_owner(0, 42))
    mem = FakeMemory()
    return tmp, files, mem, mem.put(b"plain\0"), mem.put(b"owned\0"), mem.put(bytes(144))


def test_stat_patches_owner_at_exit_only_when_recorded(stat_env):
    _, files, mem, plain, owned, buf = stat_env
    assert stat_h.newfstatat(make_call(262, (AT_FDCWD, plain, buf, 0), files, mem=mem)) is None
    call = make_call(262, (AT_FDCWD, owned, buf, 0), files, mem=mem)
    result = stat_h.newfstatat(call)
    assert isinstance(result, AtExit)
    assert result.fn(call, 0) is None
    assert struct.unpack("II", mem.read(buf + 28, 8)) == (0, 42)


def test_notified_stat_continues_for_plain_files_and_writes_the_whole_struct_otherwise(stat_env):
    tmp, files, mem, plain, owned, buf = stat_env
    continue_ = (0, 0, 1)   # SECCOMP_USER_NOTIF_FLAG_CONTINUE: the kernel runs the call
    assert notify.answer(stat_h.NOTIFY_HANDLERS[262], make_call(262, (AT_FDCWD, plain, buf, 0), files, mem=mem)) == continue_
    assert notify.answer(stat_h.NOTIFY_HANDLERS[262], make_call(262, (AT_FDCWD, owned, buf, 0x80000), files, mem=mem)) == continue_
    assert notify.answer(stat_h.NOTIFY_HANDLERS[262], make_call(262, (AT_FDCWD, owned, buf, 0), files, mem=mem)) == (0, 0, 0)
    # Exactly the kernel's struct stat, but for the owner.
    libc = ctypes.CDLL(None, use_errno=True)
    real = ctypes.create_string_buffer(144)
    assert libc.stat(str(tmp / "owned").encode(), real) == 0
    got = mem.read(buf, 144)
    assert struct.unpack_from("II", got, 28) == (0, 42)
    assert got[:28] + got[36:] == real.raw[:28] + real.raw[36:]
    os.symlink(tmp / "owned", tmp / "fd" / "5")
    mem.write(buf, bytes(144))
    assert notify.answer(stat_h.NOTIFY_HANDLERS[5], make_call(5, (5, buf), files, mem=mem)) == (0, 0, 0)       # fstat
    assert struct.unpack_from("IIq", mem.read(buf, 48), 28)[:2] == (0, 42)
    bad = make_call(262, (AT_FDCWD, owned, 0x10, 0), files, mem=mem)                # unwritable buffer
    assert notify.answer(stat_h.NOTIFY_HANDLERS[262], bad) == (0, -errno.EFAULT, 0)


def test_fstat_and_statx_patch_their_own_layouts(env):
    tmp, files = env
    (tmp / "f").write_bytes(b"")
    os.setxattr(tmp / "f", XATTR_NAME, encode_owner(7, 8))
    os.symlink(tmp / "f", tmp / "fd" / "3")
    mem = FakeMemory()
    buf = mem.put(bytes(256))
    call = make_call(5, (3, buf), files, mem=mem)
    stat_h.fstat(call).fn(call, 0)
    assert struct.unpack("II", mem.read(buf + 28, 8)) == (7, 8)
    mem.write(buf, struct.pack("I", 0x18) + bytes(252))   # stx_mask = UID|GID
    path = mem.put(b"f\0")
    call = make_call(332, (AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, 0xfff, buf), files, mem=mem)
    stat_h.statx(call).fn(call, 0)
    assert struct.unpack("II", mem.read(buf + 20, 8)) == (7, 8)


# ---- mknod ----------------------------------------------------------------

def test_mknod_char_device_leaves_marked_placeholder(env):
    tmp, files = env
    mem = FakeMemory()
    path = mem.put(b"null\0")
    call = make_call(133, (path, stat.S_IFCHR | 0o666, os.makedev(1, 3)), files, mem=mem)
    assert mknod.mknod(call) == Return(0)
    info = (tmp / "null").lstat()
    assert stat.S_ISREG(info.st_mode) and info.st_size == 0
    assert stat.S_IMODE(info.st_mode) == 0o644     # umask 022 applies
    assert os.getxattr(tmp / "null", "user.orca.device") == b"c 1 3"
    assert mknod.mknod(call) == Return(-errno.EEXIST)


def test_mknodat_block_device_and_fifo_passthrough(env):
    tmp, files = env
    os.symlink(tmp, tmp / "fd" / "4")
    mem = FakeMemory()
    path = mem.put(b"sda\0")
    call = make_call(259, (4, path, stat.S_IFBLK | 0o600, os.makedev(8, 0)), files, mem=mem)
    assert mknod.mknodat(call) == Return(0)
    assert os.getxattr(tmp / "sda", "user.orca.device") == b"b 8 0"
    assert mknod.mknodat(make_call(259, (4, path, stat.S_IFIFO | 0o600, 0), files, mem=mem)) is None
    unpriv = make_call(133, (path, stat.S_IFCHR | 0o600, 0), files, Creds.of(5, 5), mem)
    assert mknod.mknod(unpriv) == Return(-errno.EPERM)


# ---- xattr ----------------------------------------------------------------

def test_emulator_xattrs_are_hidden():
    mem = FakeMemory()
    hidden, other = mem.put(XATTR_NAME.encode() + b"\0"), mem.put(b"user.mime\0")
    assert xattr.getxattr(make_call(191, (0, hidden), mem=mem)) == Return(-errno.ENODATA)
    assert xattr.getxattr(make_call(191, (0, other), mem=mem)) is None
    assert xattr.setxattr(make_call(190, (3, hidden), mem=mem)) == Return(-errno.EPERM)
    names = b"user.a\0" + XATTR_NAME.encode() + b"\0user.orca.device\0security.selinux\0"
    buf = mem.put(names)
    call = make_call(194, (0, buf, len(names)), mem=mem)
    result = xattr.listxattr(call)
    assert result.fn(call, len(names)) == len(b"user.a\0security.selinux\0")
    expected = b"user.a\0security.selinux\0"
    assert mem.read(buf, len(expected)) == expected
    assert xattr.listxattr(make_call(194, (0, 0, 0), mem=mem)) is None


NET_RAW_V2 = bytes.fromhex("0100000200200000000000000000000000000000")
NET_RAW_V3 = bytes.fromhex("0100000300200000000000000000000000000000e9030000")


def _capfile(tmp, data=b"elf", caps=NET_RAW_V2):
    """A file carrying a capability the way unpack leaves one the kernel refused."""
    (tmp / "ping").write_bytes(data)
    os.setxattr(tmp / "ping", CAPS_RECORD_XATTR, encode_caps_record(caps, hashlib.sha256(data).digest()))
    return tmp / "ping"


def test_getxattr_of_a_capability_reads_our_record(env):
    tmp, files = env
    _capfile(tmp)
    mem = FakeMemory()
    path, name, buf = mem.put(b"ping\0"), mem.put(b"security.capability\0"), mem.put(bytes(24))
    assert xattr.getxattr(make_call(nr.GETXATTR, (path, name, 0, 0), files, mem=mem)) == Return(20)   # size query
    assert xattr.getxattr(make_call(nr.GETXATTR, (path, name, buf, 8), files, mem=mem)) == Return(-errno.ERANGE)
    assert xattr.getxattr(make_call(nr.GETXATTR, (path, name, buf, 24), files, mem=mem)) == Return(20)
    assert mem.read(buf, 20) == NET_RAW_V2
    os.symlink(tmp / "ping", tmp / "fd" / "5")
    assert xattr.getxattr(make_call(nr.FGETXATTR, (5, name, buf, 24), files, mem=mem)) == Return(20)
    # Without a record, or once the content changed, the kernel answers.
    with open(tmp / "ping", "ab") as f:
        f.write(b"!")
    assert xattr.getxattr(make_call(nr.GETXATTR, (path, name, buf, 24), files, mem=mem)) is None
    (tmp / "plain").write_bytes(b"x")
    assert xattr.getxattr(make_call(nr.GETXATTR, (mem.put(b"plain\0"), name, buf, 24), files, mem=mem)) is None


def test_setcap_and_removal_change_our_record(env):
    tmp, files = env
    (tmp / "ping").write_bytes(b"elf")
    (tmp / "ping").chmod(0o555)   # not even owner-writable: the record still goes on
    mem = FakeMemory()
    path, name = mem.put(b"ping\0"), mem.put(b"security.capability\0")
    v3 = mem.put(NET_RAW_V3)
    assert xattr.setxattr(make_call(nr.SETXATTR, (path, name, v3, 24, 2), files, mem=mem)) == Return(-errno.ENODATA)
    assert xattr.setxattr(make_call(nr.SETXATTR, (path, name, v3, 24, 0), files, mem=mem)) == Return(0)
    assert os.getxattr(tmp / "ping", CAPS_RECORD_XATTR)[:20] == NET_RAW_V2   # stored as revision 2
    assert stat.S_IMODE(os.stat(tmp / "ping").st_mode) == 0o555
    assert xattr.setxattr(make_call(nr.SETXATTR, (path, name, v3, 24, 1), files, mem=mem)) == Return(-errno.EEXIST)
    bad = mem.put(b"\x01\x00\x00\x01")
    assert xattr.setxattr(make_call(nr.SETXATTR, (path, name, bad, 4, 0), files, mem=mem)) == Return(-errno.EINVAL)
    user = Creds.of(1000, 1000)
    assert xattr.setxattr(make_call(nr.SETXATTR, (path, name, v3, 24, 0), files, user, mem)) == Return(-errno.EPERM)
    assert xattr.removexattr(make_call(nr.REMOVEXATTR, (path, name), files, user, mem)) == Return(-errno.EPERM)
    # listed under its real name, never under ours
    buf = mem.put(bytes(128))
    listed = xattr.list_notified(True)(make_call(nr.LISTXATTR, (path, buf, 128), files, mem=mem))
    assert mem.read(buf, listed.value) == b"security.capability\0"
    assert xattr.removexattr(make_call(nr.REMOVEXATTR, (path, name), files, mem=mem)) == Return(0)
    assert CAPS_RECORD_XATTR not in os.listxattr(tmp / "ping")
    assert xattr.removexattr(make_call(nr.REMOVEXATTR, (path, name), files, mem=mem)) is None   # the kernel's ENODATA


def test_chown_drops_a_capability_but_chown_minus_one_keeps_it(env):
    tmp, files = env
    _capfile(tmp)
    mem = FakeMemory()
    path = mem.put(b"ping\0")
    assert owner.chown(make_call(nr.CHOWN, (path, -1, -1), files, mem=mem)) == Return(0)
    assert CAPS_RECORD_XATTR in os.listxattr(tmp / "ping")
    assert owner.chown(make_call(nr.CHOWN, (path, 0, -1), files, mem=mem)) == Return(0)   # even to the same owner
    assert CAPS_RECORD_XATTR not in os.listxattr(tmp / "ping")


# ---- seccomp program ------------------------------------------------------

def run_bpf(prog, nr, arch, args=(0,) * 6):
    """A tiny classic-BPF interpreter for the instructions the filter uses."""
    data = struct.pack("iIQ6Q", nr, arch, 0, *args)
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = prog[pc]
        if code == 0x20:
            acc = struct.unpack_from("I", data, k)[0]
        elif code == 0x15:
            pc += jt if acc == k else jf
        elif code == 0x35:
            pc += jt if acc >= k else jf
        elif code == 0x06:
            return k
        pc += 1


def test_seccomp_program_traps_only_emulated_calls_per_abi():
    prog = seccomp_filter.build(list(TABLE))
    x86, i386 = seccomp_filter.AUDIT_ARCH_X86_64, seccomp_filter.AUDIT_ARCH_I386
    nosys = seccomp_filter.RET_ERRNO | errno.ENOSYS
    for nr in TABLE:
        assert run_bpf(prog, nr, x86) == seccomp_filter.RET_TRACE
    assert run_bpf(prog, 0, x86) == seccomp_filter.RET_ALLOW          # read
    assert run_bpf(prog, 0x40000000 | 102, x86) == nosys               # x32 getuid
    assert run_bpf(prog, 199, i386) == nosys                           # getuid32
    assert run_bpf(prog, 3, i386) == seccomp_filter.RET_ALLOW          # i386 read
    assert run_bpf(prog, 1, 0xC00000B7) == seccomp_filter.RET_KILL_PROCESS  # aarch64
    prog = seccomp_filter.build([102, 161], notified=[262, 5])
    assert [run_bpf(prog, nr, x86) for nr in (102, 161, 262, 5, 4)] == [
        seccomp_filter.RET_TRACE, seccomp_filter.RET_TRACE, seccomp_filter.RET_USER_NOTIF,
        seccomp_filter.RET_USER_NOTIF, seccomp_filter.RET_ALLOW]
    assert run_bpf(prog, 0x40000000 | 262, x86) == nosys



def test_user_filter_traps_getsockopt_for_so_peercred_only():
    prog = seccomp_filter.build([nr.GETSOCKOPT, nr.OPENAT, nr.BIND], only_if=ids.USER_FILTER_ONLY_IF)
    x86 = seccomp_filter.AUDIT_ARCH_X86_64
    trace, allow = seccomp_filter.RET_TRACE, seccomp_filter.RET_ALLOW
    assert run_bpf(prog, nr.GETSOCKOPT, x86, (3, 1, 17, 0, 0, 0)) == trace        # SOL_SOCKET, SO_PEERCRED
    assert run_bpf(prog, nr.GETSOCKOPT, x86, (3, 1, 4, 0, 0, 0)) == allow         # SO_ERROR
    assert run_bpf(prog, nr.GETSOCKOPT, x86, (3, 6, 17, 0, 0, 0)) == allow        # IPPROTO_TCP, 17
    assert run_bpf(prog, nr.GETSOCKOPT, x86, (3, 1 | 1 << 32, 17, 0, 0, 0)) == trace   # low halves only
    assert [run_bpf(prog, n, x86) for n in (nr.OPENAT, nr.BIND, nr.OPEN)] == [trace, trace, allow]
    assert run_bpf(prog, 0x40000000 | nr.OPENAT, x86) == seccomp_filter.RET_ERRNO | errno.ENOSYS
