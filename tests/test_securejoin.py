"""securejoin: paths resolved inside a root as a chroot would see them
(filepath-securejoin's semantics), for an unprivileged user."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from umoci_py import securejoin, unpriv
from umoci_py.errors import LayerError


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (tmp_path / "outside").mkdir()
    return r


def test_plain_and_dotdot_stay_in_root(root):
    assert securejoin.resolve(root, "etc/passwd") == "etc/passwd"
    assert securejoin.resolve(root, "/./etc//passwd") == "etc/passwd"
    assert securejoin.resolve(root, "../../../etc/passwd") == "etc/passwd"
    assert securejoin.resolve(root, "etc/../../..") == ""
    assert securejoin.resolve(root, "/") == ""
    assert securejoin.join(root, "..") == root
    assert securejoin.join(root, "etc/../etc/passwd") == root / "etc/passwd"


def test_relative_link_escaping_root_is_clamped(root):
    os.symlink("../../../outside", root / "up")
    assert securejoin.resolve(root, "up/x") == "outside/x"
    assert securejoin.join(root, "up") == root / "outside"


def test_absolute_link_is_read_from_the_root(root):
    os.symlink("/etc", root / "abs")
    os.symlink("/etc/passwd", root / "etc/alias")
    assert securejoin.resolve(root, "abs/passwd") == "etc/passwd"
    assert securejoin.resolve(root, "abs/alias") == "etc/passwd"
    os.symlink(str(root.parent / "outside"), root / "host")
    # a host path is a path in the root like any other
    assert securejoin.resolve(root, "host/f") == f"{str(root.parent / 'outside').lstrip('/')}/f"


def test_dotdot_after_a_link_applies_to_its_target(root):
    (root / "a/b").mkdir(parents=True)
    os.symlink("a/b", root / "l")
    assert securejoin.resolve(root, "l/../x") == "a/x"


def test_missing_components_and_files_are_kept_as_names(root):
    assert securejoin.resolve(root, "nope/x/../y") == "nope/y"
    assert securejoin.resolve(root, "etc/passwd/x") == "etc/passwd/x"
    os.symlink("/gone/away", root / "dangling")
    assert securejoin.resolve(root, "dangling") == "gone/away"


@pytest.mark.parametrize("links", [("a", "a"), ("a", "b", "a")])
def test_loops_are_refused(root, links):
    for name, target in zip(links, links[1:]):
        os.symlink(target, root / name)
    with pytest.raises(LayerError, match="a/x: too many levels of symbolic links"):
        securejoin.resolve(root, "a/x")


def test_link_limit_is_securejoins(root):
    """255 links are followed; the 256th is a loop (filepath-securejoin)."""
    for i in range(256):
        os.symlink(f"l{i + 1}", root / f"l{i}")
    (root / "l256").mkdir()
    assert securejoin.resolve(root, "l1") == "l256"
    with pytest.raises(LayerError, match="too many levels"):
        securejoin.resolve(root, "l0")


def test_mode_000_directory_denies_without_access(root):
    (root / "locked/inner").mkdir(parents=True)
    os.symlink("/etc", root / "locked/inner/link")
    os.chmod(root / "locked", 0)
    try:
        with pytest.raises(PermissionError):
            securejoin.resolve(root, "locked/inner/link/passwd")
    finally:
        os.chmod(root / "locked", 0o755)


def test_mode_000_directory_is_opened_with_access_and_restored(root):
    (root / "locked/inner").mkdir(parents=True)
    os.symlink("/etc", root / "locked/inner/link")
    os.chmod(root / "locked/inner", 0)
    os.chmod(root / "locked", 0)
    os.utime(root / "locked", (7, 7))
    with unpriv.Access(str(root)) as access:
        assert securejoin.resolve(root, "locked/inner/link/passwd", access) == "etc/passwd"
    assert stat.S_IMODE(os.lstat(root / "locked").st_mode) == 0
    assert os.lstat(root / "locked").st_mtime == 7
    os.chmod(root / "locked", 0o700)
    assert stat.S_IMODE(os.lstat(root / "locked/inner").st_mode) == 0
    os.chmod(root / "locked/inner", 0o700)


def test_join_returns_a_path_under_root(root):
    assert isinstance(securejoin.join(str(root), "etc"), Path)
    assert securejoin.join(str(root), "") == root
