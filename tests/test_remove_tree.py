"""Tree removal (unpriv.remove_tree, unpriv.rmtree) through directories that
deny their unprivileged owner, never following a symlink out of the tree."""

from __future__ import annotations

import os
import stat

import pytest

from umoci_py import unpriv


def test_mode_000_directories_and_files(tmp_path):
    d = tmp_path / "t"
    (d / "x/y/z").mkdir(parents=True)
    (d / "x/y/z/f").write_bytes(b"data")
    os.chmod(d / "x/y/z/f", 0)
    os.chmod(d / "x/y/z", 0)
    os.chmod(d / "x/y", 0)
    os.chmod(d / "x", 0)
    os.chmod(d, 0)
    unpriv.remove_tree(d)
    assert os.listdir(tmp_path) == []


def test_read_only_directories(tmp_path):
    d = tmp_path / "t"
    (d / "ro/sub").mkdir(parents=True)
    (d / "ro/sub/f").write_bytes(b"x")
    (d / "ro/g").write_bytes(b"y")
    os.chmod(d / "ro/sub", 0o555)
    os.chmod(d / "ro", 0o555)
    os.chmod(d, 0o500)
    unpriv.remove_tree(d)
    assert os.listdir(tmp_path) == []


def test_symlinks_are_removed_not_followed(tmp_path):
    outside = tmp_path / "outside"
    (outside / "locked").mkdir(parents=True)
    (outside / "keep").write_bytes(b"k")
    os.chmod(outside / "locked", 0o500)
    d = tmp_path / "t"
    d.mkdir()
    os.symlink(outside, d / "dirlink")
    os.symlink(outside / "keep", d / "filelink")
    os.symlink(outside, tmp_path / "toplink")
    unpriv.remove_tree(d)
    unpriv.remove_tree(tmp_path / "toplink")
    assert sorted(os.listdir(tmp_path)) == ["outside"]
    assert sorted(os.listdir(outside)) == ["keep", "locked"]
    assert stat.S_IMODE(os.lstat(outside / "locked").st_mode) == 0o500


def test_missing_path_and_plain_file(tmp_path):
    unpriv.remove_tree(tmp_path / "nothing")
    (tmp_path / "f").write_bytes(b"")
    os.chmod(tmp_path / "f", 0)
    unpriv.remove_tree(tmp_path / "f")
    assert os.listdir(tmp_path) == []


def test_a_parent_that_denies_is_left_alone(tmp_path):
    """Only the tree is ours to open: a parent without search permission is
    an error, not silently 'already gone', and its mode stays."""
    (tmp_path / "p/t").mkdir(parents=True)
    os.chmod(tmp_path / "p", 0o600)
    try:
        with pytest.raises(PermissionError):
            unpriv.remove_tree(tmp_path / "p/t")
        assert stat.S_IMODE(os.lstat(tmp_path / "p").st_mode) == 0o600
    finally:
        os.chmod(tmp_path / "p", 0o700)
    assert (tmp_path / "p/t").is_dir()


def test_rmtree_in_an_access_opens_ancestors_and_restores_them(tmp_path):
    (tmp_path / "a/b/c").mkdir(parents=True)
    (tmp_path / "a/b/c/f").write_bytes(b"")
    os.chmod(tmp_path / "a/b/c", 0)
    os.chmod(tmp_path / "a/b", 0o500)
    os.chmod(tmp_path / "a", 0)
    os.utime(tmp_path / "a", (3, 3))
    with unpriv.Access(str(tmp_path)) as access:
        access.set_final("a/b/c", 0o755, 0, 0)  # what extract does for a layer's directory
        unpriv.rmtree(access, "a/b/c")
        assert "a/b/c" not in access.saved
    assert stat.S_IMODE(os.lstat(tmp_path / "a").st_mode) == 0
    assert os.lstat(tmp_path / "a").st_mtime == 3
    os.chmod(tmp_path / "a", 0o700)
    assert stat.S_IMODE(os.lstat(tmp_path / "a/b").st_mode) == 0o500
    assert os.listdir(tmp_path / "a/b") == []
