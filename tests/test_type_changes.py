"""Paths that change type (file, directory, symlink, hard link, FIFO, device placeholder,
each into each other) through repack and insert: the new image unpacks, with umoci-py and
with umoci 0.4.7, to exactly the tree that was repacked or inserted."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile

import pytest

from umoci_py.rootless import encode_owner

from layer_tars import entry, make_tar
from umoci_py_helpers import top_layer, tree_snapshot, umoci, umoci_py

DEVICE_XATTR = "user.orca.device"
TYPES = ("file", "dir", "symlink", "hardlink", "fifo", "device")
PAIRS = [(a, b) for a in TYPES for b in TYPES if a != b]
# At the top level, and in a directory whose lower contents an upper layer made opaque.
PLACES = ("", "opq/")
PATHS = [f"{place}{a}2{b}" for place in PLACES for a, b in PAIRS]


def _lower_entries(place: str, name: str, kind: str) -> list:
    """Tar entries putting a `kind` at place+name in the base image."""
    path = place + name
    up = "../" if place else ""
    if kind == "file":
        return [entry(path, data=b"old " + path.encode(), mode=0o640, uid=1001, gid=1002)]
    if kind == "dir":
        return [entry(path + "/", tarfile.DIRTYPE, mode=0o750, uid=1003, gid=1003),
                entry(path + "/child", data=b"child"),
                entry(path + "/sub/", tarfile.DIRTYPE),
                entry(path + "/sub/deep", data=b"deep", uid=5)]
    if kind == "symlink":  # to a directory: the hardest one to replace
        return [entry(path, tarfile.SYMTYPE, link=up + "lowerdir")]
    if kind == "hardlink":
        return [entry(path, tarfile.LNKTYPE, link="anchor")]
    if kind == "fifo":
        return [entry(path, tarfile.FIFOTYPE, mode=0o600, uid=1004, gid=1004)]
    return [entry(path, tarfile.CHRTYPE, mode=0o600, dev=(1, 3), uid=1005)]


def _base_image(tmp_path):
    """Two real layer tars: the second makes opq/ opaque and puts each path's old type."""
    lower = [entry("anchor", data=b"anchor", uid=7, gid=8),
             entry("lowerdir/", tarfile.DIRTYPE), entry("lowerdir/keep", data=b"keep"),
             entry("opq/", tarfile.DIRTYPE), entry("opq/stale", data=b"hidden")]
    lower += [entry(f"opq/{a}2{b}/", tarfile.DIRTYPE) for a, b in PAIRS]
    lower += [entry(f"opq/{a}2{b}/hidden", data=b"hidden") for a, b in PAIRS]
    upper = [entry("opq/", tarfile.DIRTYPE, mode=0o755), entry("opq/.wh..wh..opq")]
    for place in PLACES:
        for a, b in PAIRS:
            upper += _lower_entries(place, f"{a}2{b}", a)
    layout = tmp_path / "layout"
    umoci_py("init", "--layout", layout)
    umoci_py("new", "--image", f"{layout}:base")
    for i, entries in enumerate((lower, upper)):
        (tmp_path / f"l{i}.tar").write_bytes(make_tar(*entries))
        umoci_py("raw", "add-layer", "--image", f"{layout}:base", tmp_path / f"l{i}.tar")
    return layout


def _make(root, rel: str, kind: str) -> None:
    """Put a new `kind` at root/rel, as a user (or runrootless' mknod) would."""
    path = root / rel
    up = "../" if "/" in rel else ""
    if kind == "file":
        path.write_bytes(b"new " + rel.encode())
        os.chmod(path, 0o604)
        os.setxattr(path, "user.rootlesscontainers", encode_owner(2001, 2002))
    elif kind == "dir":
        path.mkdir(mode=0o700)
        (path / "new-child").write_bytes(b"new child")
        os.setxattr(path, "user.rootlesscontainers", encode_owner(2003, 0))
    elif kind == "symlink":
        os.symlink(up + "anchor", path)
    elif kind == "hardlink":
        os.link(root / "anchor", path)
    elif kind == "fifo":
        os.mkfifo(path, 0o640)
    else:
        path.write_bytes(b"")
        os.setxattr(path, DEVICE_XATTR, b"b 8 1")
        os.chmod(path, 0o660)


def _remove(path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _device_markers(root) -> dict[str, bytes]:
    out = {}
    for rel in PATHS + ["anchor"]:
        try:
            out[rel] = os.getxattr(root / rel, DEVICE_XATTR, follow_symlinks=False)
        except OSError:
            pass
    return out


def _assert_unpacks_to(layout, tag: str, expected: dict, markers: dict, tmp_path, keep_dirlinks=True,
                       umoci_raw=False) -> None:
    """umoci 0.4.7 and umoci-py (also with --keep-dirlinks) all unpack tag to expected.
    umoci_raw: umoci only unpacks the rootfs (it cannot write that config.json)."""
    runs = [("theirs", umoci, []), ("ours", umoci_py, [])]
    if keep_dirlinks:
        runs.append(("ours-kd", umoci_py, ["--keep-dirlinks"]))
    for name, run, flags in runs:
        bundle = tmp_path / f"{tag}-{name}"
        if run is umoci and umoci_raw:
            bundle.mkdir()
            run("raw", "unpack", "--rootless", "--image", f"{layout}:{tag}", bundle / "rootfs")
        else:
            run("unpack", "--rootless", *flags, "--image", f"{layout}:{tag}", bundle)
        got = tree_snapshot(bundle / "rootfs")
        assert sorted(set(got) ^ set(expected)) == [], name
        assert {p: (expected[p], got[p]) for p in got if got[p] != expected[p]} == {}, name
        if run is umoci_py:
            assert _device_markers(bundle / "rootfs") == markers


def test_repack_of_every_type_change_unpacks_to_the_repacked_tree(tmp_path):
    layout = _base_image(tmp_path)
    umoci_py("unpack", "--rootless", "--image", f"{layout}:base", tmp_path / "b")
    root = tmp_path / "b/rootfs"
    assert not (root / "opq/stale").exists() and (root / "lowerdir/keep").exists()
    for rel in PATHS:
        _remove(root / rel)
        _make(root, rel, rel.split("/")[-1].split("2")[1])
    expected = tree_snapshot(root)
    markers = _device_markers(root)
    umoci_py("repack", "--image", f"{layout}:new", tmp_path / "b")
    _assert_unpacks_to(layout, "new", expected, markers, tmp_path)


def test_umoci_repack_of_every_type_change_unpacks_like_umoci(tmp_path):
    """The other way round: umoci 0.4.7 repacks the same changes (no whiteout before a
    new type, whiteouts below a path that is now a file, hard-link groups split) and
    umoci-py unpacks its layer to the tree umoci does."""
    layout = _base_image(tmp_path)
    umoci("unpack", "--rootless", "--image", f"{layout}:base", tmp_path / "b")
    root = tmp_path / "b/rootfs"
    for rel in PATHS:
        _remove(root / rel)
        _make(root, rel, rel.split("/")[-1].split("2")[1])
    umoci("repack", "--image", f"{layout}:new", tmp_path / "b")
    umoci("unpack", "--rootless", "--image", f"{layout}:new", tmp_path / "theirs")
    umoci_py("unpack", "--rootless", "--image", f"{layout}:new", tmp_path / "ours")
    theirs, ours = tree_snapshot(tmp_path / "theirs/rootfs"), tree_snapshot(tmp_path / "ours/rootfs")
    assert sorted(set(theirs) ^ set(ours)) == []
    assert {p: (theirs[p], ours[p]) for p in ours if ours[p] != theirs[p]} == {}


@pytest.mark.slow  # 60 to 120 insert commands each
@pytest.mark.parametrize("mode", ["insert", "opaque", "whiteout"])
def test_insert_of_every_type_change_unpacks_to_the_inserted_tree(tmp_path, mode):
    layout = _base_image(tmp_path)
    image = f"{layout}:base"
    # The expected tree: the base with each path replaced by a copy of its source.
    umoci_py("unpack", "--rootless", "--image", image, tmp_path / "b")
    root = tmp_path / "b/rootfs"
    src = tmp_path / "src"
    (src / "opq").mkdir(parents=True)
    (src / "anchor").write_bytes(b"source anchor")
    for rel in PATHS:
        _make(src, rel, rel.split("/")[-1].split("2")[1])
        _remove(root / rel)
        subprocess.run(["cp", "-a", src / rel, root / rel], check=True)
    expected = tree_snapshot(root)
    markers = _device_markers(root)
    for rel in PATHS:
        if mode == "whiteout":
            umoci_py("insert", "--image", image, "--whiteout", "/" + rel)
        flags = ["--opaque"] if mode == "opaque" else []
        umoci_py("insert", "--rootless", "--image", image, "--compress", "none", *flags, src / rel, "/" + rel)
    # A plain insert of a directory over a lower symlink to one goes through
    # the link under --keep-dirlinks, as umoci's does: not a type change there.
    _assert_unpacks_to(layout, "base", expected, markers, tmp_path, keep_dirlinks=mode != "insert")


@pytest.mark.parametrize("change", ["passwd-to-dir", "etc-to-file"])
def test_etc_passwd_changing_type_still_unpacks(busybox_layout, tmp_path, change):
    """config.json reads the rootfs's passwd: a directory there, or a file in place of /etc,
    is no passwd at all (was `[Errno 20] Not a directory`).  umoci 0.4.7 refuses to
    write config.json over a passwd directory ("is a directory"), so it is checked with
    raw unpack there."""
    umoci_py("unpack", "--rootless", "--image", f"{busybox_layout}:latest", tmp_path / "b")
    root = tmp_path / "b/rootfs"
    victim = root / ("etc/passwd" if change == "passwd-to-dir" else "etc")
    _remove(victim)
    _make(root, str(victim.relative_to(root)), "dir" if change == "passwd-to-dir" else "file")
    expected = tree_snapshot(root)
    umoci_py("repack", "--image", f"{busybox_layout}:new", tmp_path / "b")
    _assert_unpacks_to(busybox_layout, "new", expected, {}, tmp_path, umoci_raw=change == "passwd-to-dir")


ORCA_RUN = """\
FROM oci:{base}:latest
RUN ln -s /tmp /opt
RUN rm -r /var/spool && echo now-a-file > /var/spool && rm /etc/shadow && mkdir /etc/shadow \\
 && echo inside > /etc/shadow/f && rm -r /home && ln -s /tmp /home && rm /opt && mkdir /opt && echo o > /opt/f
"""


def test_orca_build_run_changing_types_unpacks_to_the_built_tree(busybox_layout, tmp_path):
    """An orca-build RUN layer is a diff too: a symlink turned into a directory is not
    written through the old link by unpack --keep-dirlinks; a directory turned into a
    file leaves no whiteouts below the file.  umoci 0.4.7 agrees."""
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx/Dockerfile").write_text(ORCA_RUN.format(base=busybox_layout))
    proc = subprocess.run(["orca-build", "--layout", tmp_path / "out", "--cache-dir", tmp_path / "cache",
                           "--progress", "plain", "-t", "t", tmp_path / "ctx"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    layer = top_layer(tmp_path / "out", "t")
    assert "var/spool/.wh.mail" not in layer and "var/.wh.spool" in layer
    for run, name in ((umoci, "theirs"), (umoci_py, "ours")):
        run("unpack", "--rootless", "--keep-dirlinks", "--image", f"{tmp_path / 'out'}:t", tmp_path / name)
        root = tmp_path / name / "rootfs"
        assert (root / "var/spool").read_text() == "now-a-file\n"
        assert (root / "etc/shadow/f").read_text() == "inside\n"
        assert os.readlink(root / "home") == "/tmp"
        assert not (root / "opt").is_symlink() and (root / "opt/f").read_text() == "o\n"
        assert not (root / "tmp/f").exists()
