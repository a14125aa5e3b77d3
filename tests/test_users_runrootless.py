"""Non-root users under runrootless (issue 7): fake ids, owners of what they create, permission checks."""

from __future__ import annotations

import os

import pytest

from runrootless import api
from runrootless_helpers import host_owner, private_copy, run_sh
from umoci_py_helpers import top_layer, umoci, umoci_unpack
from umoci_py.rootless import XATTR_NAME, read_side, resolve_owner, side_owner

ADD_APP = "useradd -m -u 1234 app"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, debian_layout_ro):
    path = tmp_path_factory.mktemp("users") / "bundle"
    umoci_unpack(debian_layout_ro, "bookworm", path)
    status, out = run_sh(path, ADD_APP)
    assert status == 0, out
    return path


@pytest.fixture
def private(bundle, tmp_path):
    return private_copy(bundle, tmp_path)


def test_useradd_records_home_and_keeps_shadow(bundle):
    rootfs = bundle / "rootfs"
    assert host_owner(rootfs / "home/app") == (1234, 1234)
    assert resolve_owner(os.getxattr(rootfs / "etc/shadow", XATTR_NAME)) == (0, 42)
    assert b"app:x:1234:1234" in (rootfs / "etc/passwd").read_bytes()


def test_started_as_user_creates_files_as_that_user(private):
    script = "id -u; id -gn; echo $HOME; cd /home/app && mkdir d && touch d/f && ln -s d l && mkfifo p && stat -c %u:%g l p"
    env = [e for e in api.spec_from_bundle(private).env if not e.startswith("HOME=")]
    status, out = run_sh(private, script, uid=1234, gid=1234, cwd="/home/app", env=env)
    assert status == 0, out
    assert out.split() == ["1234", "app", "/home/app", "1234:1234", "1234:1234"]
    home = private / "rootfs/home/app"
    assert host_owner(home / "d") == (1234, 1234) and host_owner(home / "d/f") == (1234, 1234)
    records = read_side(home)
    assert side_owner(records, "l", os.lstat(home / "l").st_ino) == (1234, 1234)
    assert side_owner(records, "p", os.lstat(home / "p").st_ino) == (1234, 1234)


def test_permission_checks_as_user(private):
    script = ("touch /etc/forbidden; cat /etc/shadow >/dev/null; chown root /home/app; "
              "chmod 777 /etc/passwd; test -w /etc/passwd || echo notw; test -r /etc/shadow || echo notr; "
              "touch /tmp/ok && echo ok; rm /etc/hostname")
    status, out = run_sh(private, script, uid=1234, gid=1234)
    assert "touch: cannot touch '/etc/forbidden': Permission denied" in out
    assert "/etc/shadow: Permission denied" in out
    assert "changing ownership of '/home/app': Operation not permitted" in out
    assert "changing permissions of '/etc/passwd': Operation not permitted" in out
    assert "notw" in out and "notr" in out and "\nok\n" in out
    assert "cannot remove '/etc/hostname': Permission denied" in out
    assert not (private / "rootfs/etc/forbidden").exists()
    assert (private / "rootfs/etc/hostname").exists()


def test_runuser_drop_creates_as_user_and_repacks(debian_layout, tmp_path):
    bundle = tmp_path / "b"
    umoci_unpack(debian_layout, "bookworm", bundle)
    script = (f"{ADD_APP} && runuser -u app -- sh -c 'id -u; touch /tmp/by-app; mkdir /tmp/dir-app; "
              "ln -s by-app /tmp/ln-app'; touch /tmp/by-root")
    status, out = run_sh(bundle, script)
    assert (status, out.split()) == (0, ["1234"]), out
    tmp = bundle / "rootfs/tmp"
    assert host_owner(tmp / "by-app") == (1234, 1234) and host_owner(tmp / "dir-app") == (1234, 1234)
    assert host_owner(tmp / "by-root") is None
    umoci("repack", "--image", f"{debian_layout}:bookworm", bundle)
    members = {name.lstrip("./"): m for name, m in top_layer(debian_layout, "bookworm").items()}
    assert (members["tmp/by-app"].uid, members["tmp/by-app"].gid) == (1234, 1234)
    assert (members["tmp/dir-app"].uid, members["tmp/dir-app"].gid) == (1234, 1234)
    assert (members["tmp/by-root"].uid, members["tmp/by-root"].gid) == (0, 0)
    assert (members["home/app"].uid, members["home/app"].gid) == (1234, 1234)
    assert (members["etc/shadow"].uid, members["etc/shadow"].gid) == (0, 42)


def test_user_reads_the_mounted_hosts_file_and_resolves_localhost(private):
    # The hosts file the sandbox mounts is readable by everyone, as the host's is.
    status, out = run_sh(private, "getent hosts localhost >/dev/null && cat /etc/hosts /etc/resolv.conf >/dev/null && echo ok",
                         uid=1234, gid=1234)
    assert (status, out) == (0, "ok\n")
