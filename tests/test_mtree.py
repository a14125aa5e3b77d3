"""go-mtree manifests: our text against umoci 0.4.7's, both directions."""

from __future__ import annotations

import os
import subprocess

from layer_tars import manifest_layers, umoci_mtree
from umoci_py_helpers import umoci, umoci_unpack

from umoci_py import mtree, rootless

WEIRD = ["sp ace", "tab\tname", "back\\slash", "star*q?[b]#h", "caf\u00e9", "new\nline"]


def _body(text):
    return [line for line in text.splitlines() if not line.startswith("#")]


def _layers(layout, tag="latest"):
    return manifest_layers(layout, tag)


def test_dump_matches_umoci_text_and_names_round_trip(busybox_layout, tmp_path):
    bundle = tmp_path / "bundle"
    umoci_unpack(busybox_layout, "latest", bundle)
    rootfs = bundle / "rootfs"
    (rootfs / "etc/odd").mkdir()
    for name in WEIRD:
        (rootfs / "etc/odd" / name).write_bytes(name.encode())
    os.symlink("tar get", rootfs / "etc/odd/ln")
    os.setxattr(rootfs / "etc/odd/sp ace", "user.x", b"\x00\x01v")
    umoci("repack", "--refresh-bundle", "--image", f"{busybox_layout}:latest", str(bundle))
    theirs = umoci_mtree(bundle)
    ours = mtree.walk(rootfs, rootless=True)
    assert _body(ours.dump()) == _body(theirs)
    parsed = mtree.parse(theirs)
    assert {e.path for e in parsed.entries} >= {f"etc/odd/{n}" for n in WEIRD}
    assert mtree.unvis(parsed.by_path()["etc/odd/ln"].keywords["link"]) == "tar get"
    assert mtree.compare(parsed, ours) == []
    assert mtree.compare(mtree.parse(ours.dump()), ours) == []


def test_umoci_repacks_our_manifest_without_spurious_changes(busybox_layout, tmp_path):
    bundle = tmp_path / "bundle"
    umoci_unpack(busybox_layout, "latest", bundle)
    manifest_file = next(bundle.glob("sha256_*.mtree"))
    manifest_file.write_text(mtree.walk(bundle / "rootfs", rootless=True).dump())
    layers_before = len(_layers(busybox_layout))
    umoci("repack", "--image", f"{busybox_layout}:same", str(bundle))
    assert len(_layers(busybox_layout, "same")) == layers_before  # empty diff: no layer
    (bundle / "rootfs/etc/hostname").write_text("changed\n")
    umoci("repack", "--image", f"{busybox_layout}:changed", str(bundle))
    layers = _layers(busybox_layout, "changed")
    assert len(layers) == layers_before + 1
    listing = subprocess.run(["tar", "-tzf", str(busybox_layout / "blobs/sha256" / layers[-1]["digest"][7:])],
                             check=True, capture_output=True, text=True).stdout.split()
    assert sorted(listing) == ["etc/", "etc/hostname"]


def test_compare_kinds_and_simplify():
    old = mtree.parse("/set type=file uid=0\n. type=dir\n    a size=1\n    b size=2\nd type=dir\n    x size=1\n..\n..\n")
    new = mtree.parse("/set type=file uid=0\n. type=dir\n    a size=5\n    c size=2\n..\n")
    deltas = {(d.path, d.kind) for d in mtree.compare(old, new)}
    assert deltas == {("a", "modified"), ("c", "extra"), ("b", "missing"), ("d", "missing"), ("d/x", "missing")}
    simple = {(d.path, d.kind) for d in mtree.simplify_filter(mtree.compare(old, new))}
    assert simple == deltas - {("d/x", "missing")}


def test_digest_cache_save_load_and_invalidation(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"one")
    cache = mtree.DigestCache()
    cache.put("f", os.lstat(f), "cafe")
    cache.put("d/x", os.lstat(f), "beef")
    cache.save(tmp_path / "cache.json")
    loaded = mtree.DigestCache.load(tmp_path / "cache.json")
    assert loaded.lookup("f", os.lstat(f)) == "cafe"
    f.write_bytes(b"two")
    assert loaded.lookup("f", os.lstat(f)) is None
    loaded.discard_tree("d")
    assert "d/x" not in loaded.files
    (tmp_path / "bad.json").write_text("{not json")
    assert mtree.DigestCache.load(tmp_path / "bad.json").files == {}


def test_usual_keyword_sets_give_what_the_general_walk_gives(tmp_path):
    """walk() has a fast path for KEYWORDS (with and without sha256digest);
    a list of the same keywords goes the general way and must agree."""
    root = tmp_path / "rootfs"
    (root / "d/locked").mkdir(parents=True)
    (root / "d/f").write_bytes(b"data")
    os.setxattr(root / "d/f", "user.b", b"\xff\n")
    os.setxattr(root / "d/f", "user.a", b"1")
    os.link(root / "d/f", root / "d/hard")
    os.symlink("sp ace\ttarget", root / "d/ln")
    os.mkfifo(root / "d/fifo")
    rootless.write_side(str(root / "d"), "ln", os.lstat(root / "d/ln").st_ino, (5, 6))
    (root / "d/locked/secret").write_bytes(b"s")
    os.chmod(root / "d/locked/secret", 0)
    os.chmod(root / "d/locked", 0)
    without_digest = tuple(k for k in mtree.KEYWORDS if k != "sha256digest")
    for keywords in (mtree.KEYWORDS, without_digest):
        fast, general = mtree.walk(root, keywords, True), mtree.walk(root, list(keywords), True)
        assert [(e.path, e.keywords) for e in fast.entries] == [(e.path, e.keywords) for e in general.entries]
        assert [list(e.keywords) for e in fast.entries] == [list(e.keywords) for e in general.entries]
        by_path = fast.by_path()
        assert by_path["d/ln"].keywords["uid"] == "5" and by_path["d/locked"].keywords["mode"] == "0"
        assert ("sha256digest" in by_path["d/f"].keywords) == (keywords is mtree.KEYWORDS)


def test_a_walk_counts_what_du_counts(tmp_path):
    tree = tmp_path / "tree"
    (tree / "d/e").mkdir(parents=True)
    (tree / "d/big").write_bytes(os.urandom(300_000))
    (tree / "small").write_bytes(b"x")
    (tree / "empty").touch()
    os.symlink("d/big", tree / "link")
    du = subprocess.run(["du", "-s", "-B1", str(tree)], capture_output=True, text=True, check=True)
    assert mtree.walk(tree).disk_usage == int(du.stdout.split()[0])
