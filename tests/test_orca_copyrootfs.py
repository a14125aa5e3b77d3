"""The copy fallback's rootfs, made from the snapshot store (orca.copyrootfs).

Real tar layers with whiteouts, opaque directories, type changes, hard links,
owners, xattrs and denying modes: the tree copied from the store's snapshots
is the tree umoci_py's extraction of the same layers gives, path by path,
whether the snapshots were made by the fallback itself or are overlay uppers
(opaque xattrs, whiteout devices) as the overlay path makes them; and a
rootfs made from existing snapshots reads no layer blob.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from layer_tars import ROOTLESS, entry, make_tar
from umoci_py import mtree, rootless
from umoci_py.cas import Layout
from umoci_py.layer.extract import extract_layer
from umoci_py.layer.overlay import TreeChanges, UpperChanges
from umoci_py.layer.overlayunpack import unpack_layer_as_upper
from umoci_py_helpers import tree_snapshot

from orca.copyrootfs import CopyRootfs, StoreDigests
from orca.snapshot import copy_dir_metadata, write_layer
from orca.snapstore import Lease, SnapshotStore, chain_ids
from orca.filedata import copy_data

D, F, L, H, P = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE

LAYERS = [
    [entry("etc", D), entry("etc/passwd", F, b"root\n"), entry("etc/shadow", F, b"secret\n", mode=0),
     entry("etc/group", F, b"g\n"),
     entry("d", D), entry("d/a", F, b"a\n"), entry("d/sub", D), entry("d/sub/b", F, b"b\n"),
     entry("keep", D, uid=3, gid=4), entry("keep/x", F, b"x\n", xattrs={"user.color": b"red"}),
     entry("keep/x2", H, link="keep/x"), entry("keep/y", F, b"y\n", uid=1000, gid=1000),
     entry("links", D), entry("links/lnk", L, link="../etc/passwd", uid=5, gid=6), entry("pipe", P, uid=9, gid=9),
     entry("ro", D, mode=0o555), entry("ro/f", F, b"f\n"),
     entry("shut", D, mode=0), entry("shut/in", F, b"in\n"),
     entry("opq", D), entry("opq/old1", F, b"1\n"), entry("opq/old2", F, b"2\n"),
     entry("f2d", F, b"file\n"), entry("d2f", D), entry("d2f/c", F, b"c\n")],
    [entry("etc", D, mtime=1_600_000_100), entry("etc/passwd", F, b"root\nuser\n", mode=0o600),
     entry("etc/group", F, b"g2\n", uid=1234, gid=5678),
     entry(".wh.d"), entry("keep", D, uid=3, gid=4), entry("keep/.wh.x"),
     entry("opq", D, mode=0o750), entry("opq/.wh..wh..opq"), entry("opq/new", F, b"new\n"),
     entry(".wh.f2d"), entry("f2d", D, mode=0o700), entry("f2d/inside", F, b"inside\n"),
     entry(".wh.d2f"), entry("d2f", F, b"now a file\n"),
     entry("ro", D, mode=0o555), entry("ro/g", F, b"g\n", xattrs={"user.k": b"v"}),
     entry("two", F, b"two\n"), entry("two-too", H, link="two")],
    [entry("d", D, mode=0o711), entry("d/again", F, b"again\n"),
     entry("opq", D, mode=0o750), entry("opq/.wh.new"), entry("opq/newer", L, link="../two", uid=7, gid=8),
     entry("links", D), entry("links/.wh.lnk"), entry("links/lnk", L, link="../keep/y", uid=11, gid=12),
     entry("f2d", D, mode=0o700), entry("f2d/.wh..wh..opq"),
     entry("shut", D, mode=0), entry("shut/more", F, b"more\n")],
]


def _blobs(tmp_path: Path) -> tuple[Layout, list[dict], list[str]]:
    blobs = Layout.init(tmp_path / "blobs")
    descs, diff_ids = [], []
    for layer in LAYERS:
        raw = make_tar(*layer)
        desc, diff_id = write_layer(blobs, lambda sink, raw=raw: sink.write(raw))
        descs.append(desc)
        diff_ids.append(diff_id)
    return blobs, descs, diff_ids


def _extracted(tmp_path: Path) -> Path:
    rootfs = tmp_path / "extracted"
    rootfs.mkdir()
    for layer in LAYERS:
        extract_layer(io.BytesIO(make_tar(*layer)), rootfs, ROOTLESS)
    return rootfs


def _tree(root: Path) -> tuple[dict, dict, list]:
    """Every path's mtree keywords (owners, modes, xattrs, link targets, nlink,
    times, content), the plain view of the same, and the hard-link groups."""
    walked = mtree.walk(root, mtree.KEYWORDS, True)
    groups: dict[tuple, list[str]] = {}
    for path, key in walked.inodes.items():
        groups.setdefault(key, []).append(path)
    # the owners of symlinks and FIFOs are compared as their uid and gid: the
    # side record holding them names inode numbers, which differ from tree to tree
    side = "xattr." + rootless.OWNERS_XATTR
    entries = {e.path: {k: v for k, v in e.keywords.items() if k != side} for e in walked.entries if e.path != "."}
    return entries, tree_snapshot(root), sorted(sorted(g) for g in groups.values())


def _materialized(tmp_path: Path, name: str, blobs: Layout, descs, diff_ids, store: SnapshotStore) -> Path:
    lease = Lease(store.cache_root)
    view = CopyRootfs(tmp_path / name, blobs, store, lease, StoreDigests(store))
    rootfs = view.materialize(descs, diff_ids)
    lease.release()
    return rootfs


def test_snapshots_copied_bottom_up_are_the_extracted_tree(tmp_path):
    blobs, descs, diff_ids = _blobs(tmp_path)
    want = _tree(_extracted(tmp_path))
    entries = want[0]
    assert "keep/x2" in entries and "d/sub" not in entries and "opq/old1" not in entries  # the layers did act
    assert (entries["links/lnk"]["uid"], entries["opq/newer"]["gid"]) == ("11", "8")
    assert entries["pipe"]["uid"] == "9" and "xattr.user.rootlesscontainers" in entries["etc/group"]
    store = SnapshotStore(tmp_path / "cache")
    # made from the blobs: the base unpacked as an upper, the others by the walk
    assert _tree(_materialized(tmp_path, "first", blobs, descs, diff_ids, store)) == want
    assert {p.name for p in store.root.iterdir() if len(p.name) == 64} == set(chain_ids(diff_ids))
    # then from the snapshots alone: no blob is read again
    for desc in descs:
        os.unlink(tmp_path / "blobs/blobs/sha256" / desc["digest"].split(":")[1])
    assert _tree(_materialized(tmp_path, "second", blobs, descs, diff_ids, store)) == want


def test_overlay_uppers_copied_bottom_up_are_the_extracted_tree(tmp_path):
    """Snapshots as the overlay path keeps them: opaque directories by xattr,
    deleted paths as whiteout devices, each layer in an upper of its own.
    (Unpacked without the overlay mount the overlay path extracts through:
    so no layer here changes a side record of a directory a lower one has.)"""
    blobs, descs, diff_ids = _blobs(tmp_path)
    want = _tree(_extracted(tmp_path))
    store = SnapshotStore(tmp_path / "cache")
    lease = Lease(store.cache_root)
    ids = chain_ids(diff_ids)
    for i, layer in enumerate(LAYERS):
        upper = tmp_path / f"upper{i}"
        upper.mkdir()
        if i:  # as the overlay path starts an upper: the root of the tree below
            copy_dir_metadata(store.diff(ids[i - 1]), upper)
        unpack_layer_as_upper(io.BytesIO(make_tar(*layer)), upper, ROOTLESS, bottom=i == 0)
        store.add(ids[i], ids[i - 1] if i else None, diff_ids[i], upper, UpperChanges([], TreeChanges({}, [])), lease.dir, lease)
    lease.release()
    assert os.getxattr(store.diff(ids[1]) / "opq", "user.overlay.opaque") == b"y"
    assert os.lstat(store.diff(ids[1]) / "d").st_rdev == 0  # a whiteout device
    for desc in descs:
        os.unlink(tmp_path / "blobs/blobs/sha256" / desc["digest"].split(":")[1])
    assert _tree(_materialized(tmp_path, "view", blobs, descs, diff_ids, store)) == want


def test_file_data_copied_within_and_across_filesystems(tmp_path):
    """copy_data on one filesystem (a reflink or copy_file_range) and onto
    tmpfs (Linux 5.19+ refuses copy_file_range across filesystem types:
    sendfile then), from an offset of zero whatever the source fd's."""
    data = os.urandom(3 << 20) + b"tail"
    src = tmp_path / "src"
    src.write_bytes(data)
    shm = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        for dst in (tmp_path / "dst", shm / "dst"):
            fin = os.open(src, os.O_RDONLY)
            fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                copy_data(fin, fout, len(data), (os.fstat(fin).st_dev, os.fstat(fout).st_dev))
            finally:
                os.close(fin)
                os.close(fout)
            assert dst.read_bytes() == data
    finally:
        shutil.rmtree(shm)
