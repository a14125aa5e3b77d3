"""unpack --keep-dirlinks over a lower layer's directory symlinks (link -> dir, link2 -> link)
and a symlink loop (loop1 -> loop2 -> loop3 -> link2/loop4 -> ../loop1), all inside a
mode-000 directory: like umoci (0.4.7 is the oracle) and tar --keep-directory-symlink,
existing directory symlinks are followed, and a loop is an ordinary path that a
directory entry replaces."""

from __future__ import annotations

import os
import stat
import tarfile

import pytest

from layer_tars import entry, make_tar
from umoci_py_helpers import assert_one_line_error, tree_snapshot, umoci, umoci_py

D, S = tarfile.DIRTYPE, tarfile.SYMTYPE


def _lower(top: str, locked: str) -> list:
    """locked (top itself or top/dir, where loop4 and the link targets live) has mode 000."""
    mode = {top: 0o755, f"{top}dir/": 0o755, locked: 0o000}
    return [entry(top, D, mode=mode[top]), entry(f"{top}dir/", D, mode=mode[f"{top}dir/"]),
            entry(f"{top}dir/a", data=b"a"),
            entry(f"{top}link", S, link="dir"), entry(f"{top}link2", S, link="link"),
            entry(f"{top}loop1", S, link="loop2"), entry(f"{top}loop2", S, link="loop3"),
            entry(f"{top}loop3", S, link="link2/loop4"), entry(f"{top}dir/loop4", S, link="../loop1")]


def _upper(top: str) -> list:
    # The loop first: resolving it meets a mode-000 dir before any entry opened it.
    return [entry(f"{top}loop1/", D), entry(f"{top}loop1/x", data=b"x"),
            entry(f"{top}link/b", data=b"b"),
            entry(f"{top}link2/", D, mode=0o711),  # kept as a link; dir keeps its own mode
            entry(f"{top}link2/c/", D), entry(f"{top}link2/c/d", data=b"d")]


def _image(tmp_path, *layers) -> str:
    layout = tmp_path / "layout"
    umoci_py("init", "--layout", layout)
    umoci_py("new", "--image", f"{layout}:t")
    for i, entries in enumerate(layers):
        (tmp_path / f"l{i}.tar").write_bytes(make_tar(*entries))
        umoci_py("raw", "add-layer", "--image", f"{layout}:t", tmp_path / f"l{i}.tar")
    return f"{layout}:t"


def _unpacked(run, image, bundle, flags, locked) -> dict:
    run("unpack", "--rootless", *flags, "--image", image, bundle)
    root = bundle / "rootfs"
    assert stat.S_IMODE(os.lstat(root / locked).st_mode) == 0
    if not locked:
        os.chmod(root, 0o700)  # to walk it (tree_snapshot opens only what is below)
    return tree_snapshot(root)


@pytest.mark.parametrize("top, locked", [("./locked/", "./locked/"), ("./", "./"), ("./", "./dir/")],
                         ids=["mode-000-dir", "mode-000-root", "mode-000-link-target"])
def test_keep_dirlinks_follows_dir_symlinks_and_replaces_a_loop(tmp_path, top, locked):
    image = _image(tmp_path, _lower(top, locked), _upper(top))
    locked, top = locked[2:], top[2:]
    ours = _unpacked(umoci_py, image, tmp_path / "ours", ["--keep-dirlinks"], locked)
    theirs = _unpacked(umoci, image, tmp_path / "theirs", ["--keep-dirlinks"], locked)
    assert ours == theirs
    kinds = {p[len(top):]: (v[0], v[3]) for p, v in ours.items() if p.startswith(top)}
    link, dirent, reg = stat.S_IFLNK, stat.S_IFDIR, stat.S_IFREG
    assert {p: k for p, (k, _) in kinds.items()} == {
        "dir": dirent, "dir/a": reg, "dir/b": reg, "dir/c": dirent, "dir/c/d": reg, "dir/loop4": link,
        "link": link, "link2": link, "loop1": dirent, "loop1/x": reg, "loop2": link, "loop3": link}
    assert kinds["link2"][1] == "link" and ours[f"{top}dir"][1] == (0 if locked.endswith("dir/") else 0o755)

    # Without the flag a directory entry replaces the symlink; entries below an
    # existing one still go through it.
    ours = _unpacked(umoci_py, image, tmp_path / "ours-plain", [], locked)
    assert ours == _unpacked(umoci, image, tmp_path / "theirs-plain", [], locked)
    assert ours[f"{top}link2"][0] == dirent and f"{top}link2/c/d" in ours
    assert f"{top}dir/b" in ours


def test_an_entry_below_a_symlink_loop_is_refused_like_umoci(tmp_path):
    image = _image(tmp_path, _lower("./locked/", "./locked/"), [entry("./locked/loop2/y", data=b"y")])
    assert umoci("unpack", "--rootless", "--keep-dirlinks", "--image", image, tmp_path / "theirs",
                 check=False).returncode != 0
    proc = umoci_py("unpack", "--rootless", "--keep-dirlinks", "--image", image, tmp_path / "ours", check=False)
    assert_one_line_error(proc, "loop2", "too many levels of symbolic links")
    assert not (tmp_path / "ours").exists()
