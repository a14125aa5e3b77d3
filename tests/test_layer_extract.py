"""Extraction of layer tars into a rootfs, rootless, as umoci 0.4.7 does it."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile

import pytest
from layer_tars import ROOTLESS, apply, entry, extract_image, umoci_mtree, xattr

from umoci_py import mtree
from umoci_py.errors import LayerError
from umoci_py.layer.extract import extract_layer
from umoci_py.layer.names import DEVICE_XATTR
from umoci_py_helpers import umoci_unpack

OWNER = "user.rootlesscontainers"


def test_every_entry_type_and_owner_xattrs(tmp_path):
    root = tmp_path / "rootfs"
    apply(root,
          entry("etc", tarfile.DIRTYPE, mode=0o755),
          entry("etc/shadow", data=b"root:*:\n", mode=0o640, gid=42),
          entry("etc/owned", data=b"x", uid=992, gid=123),
          entry("bin/su", data=b"ELF", mode=0o4755),
          entry("var/mail", tarfile.DIRTYPE, mode=0o2775, gid=8),
          entry("link", tarfile.SYMTYPE, link="etc/shadow"),
          entry("hard", tarfile.LNKTYPE, link="etc/owned"),
          entry("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
          entry("dev/sda", tarfile.BLKTYPE, mode=0o660, dev=(8, 0), gid=6),
          entry("fifo", tarfile.FIFOTYPE, mode=0o600),
          entry("cap", data=b"c", xattrs={"user.note": b"\x00\xffbin", "security.selinux": b"ctx"}))
    assert (root / "etc/shadow").read_bytes() == b"root:*:\n"
    assert xattr(root / "etc/shadow", OWNER) == bytes.fromhex("08ffffffff0f102a")
    assert xattr(root / "etc/owned", OWNER) == bytes.fromhex("08e007107b")
    assert xattr(root / "etc", OWNER) is None
    assert stat.S_IMODE(os.lstat(root / "etc/shadow").st_mode) == 0o640
    assert stat.S_IMODE(os.lstat(root / "bin/su").st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(root / "var/mail").st_mode) == 0o2775
    assert os.readlink(root / "link") == "etc/shadow"
    assert os.lstat(root / "hard").st_ino == os.lstat(root / "etc/owned").st_ino
    null = os.lstat(root / "dev/null")
    assert stat.S_ISREG(null.st_mode) and null.st_size == 0 and stat.S_IMODE(null.st_mode) == 0o666
    assert xattr(root / "dev/null", DEVICE_XATTR) == b"c 1 3"
    assert xattr(root / "dev/sda", DEVICE_XATTR) == b"b 8 0"
    assert stat.S_ISFIFO(os.lstat(root / "fifo").st_mode)
    assert xattr(root / "cap", "user.note") == b"\x00\xffbin"
    assert xattr(root / "cap", "security.selinux") in (None, b"")  # never from the layer
    for p in ("etc/shadow", "bin/su", "var/mail", "link", "dev/null"):
        assert os.lstat(root / p).st_uid == os.getuid()
    assert os.lstat(root / "etc/shadow").st_mtime == 1_600_000_000
    assert os.lstat(root / "link").st_mtime == 1_600_000_000
    assert os.lstat(root / "var/mail").st_mtime == 1_600_000_000


def test_layer_owner_xattr_is_not_trusted_and_reextract_clears_xattrs(tmp_path):
    root = tmp_path / "rootfs"
    apply(root, entry("d", tarfile.DIRTYPE, uid=5, xattrs={"user.a": b"1"}),
          entry("f", xattrs={OWNER: bytes.fromhex("087b10c803")}))
    assert xattr(root / "f", OWNER) is None
    apply(root, entry("d", tarfile.DIRTYPE))
    assert os.listxattr(root / "d") == []


def test_whiteouts_regardless_of_order(tmp_path):
    root = tmp_path / "rootfs"
    apply(root, entry("a/x", data=b"1"), entry("a/y", data=b"2"), entry("b/z", data=b"3"),
          entry("c/keep", data=b"4"), entry("c/old", data=b"5"))
    apply(root,
          entry("a/.wh.x"),                 # whiteout of a lower file
          entry("b/new", data=b"n"),        # entry before the opaque whiteout of its dir
          entry("b/.wh..wh..opq"),
          entry("c/.wh.keep"),
          entry("c/keep", data=b"again"),   # recreated in the same layer: stays
          entry("nothere/.wh.gone"))
    assert not (root / "a/x").exists() and (root / "a/y").read_bytes() == b"2"
    assert sorted(os.listdir(root / "b")) == ["new"]
    assert (root / "c/keep").read_bytes() == b"again" and (root / "c/old").exists()
    assert not (root / "nothere").exists()


def test_whiteout_of_a_tree_with_mode_000_parts(tmp_path):
    root = tmp_path / "rootfs"
    apply(root, entry("t", tarfile.DIRTYPE, mode=0o000), entry("t/s", tarfile.DIRTYPE, mode=0o000),
          entry("t/s/f", data=b"x", mode=0o000))
    apply(root, entry(".wh.t"))
    assert not os.path.lexists(root / "t")


def test_mode_000_trees_extract_and_keep_their_modes(tmp_path):
    root = tmp_path / "rootfs"
    apply(root, entry("locked", tarfile.DIRTYPE, mode=0o000, mtime=1000),
          entry("locked/inner", tarfile.DIRTYPE, mode=0o500, mtime=2000),
          entry("locked/inner/secret", data=b"s", mode=0o000),
          entry("etc/gshadow", data=b"g", mode=0o000))
    # a later layer writes below the locked directories
    apply(root, entry("locked/inner/more", data=b"m", mode=0o400))
    assert stat.S_IMODE(os.lstat(root / "locked").st_mode) == 0
    assert os.lstat(root / "locked").st_mtime == 1000
    os.chmod(root / "locked", 0o700)
    assert stat.S_IMODE(os.lstat(root / "locked/inner").st_mode) == 0o500
    assert os.lstat(root / "locked/inner").st_mtime == 2000
    os.chmod(root / "locked/inner", 0o700)
    assert sorted(os.listdir(root / "locked/inner")) == ["more", "secret"]
    assert stat.S_IMODE(os.lstat(root / "locked/inner/secret").st_mode) == 0
    os.chmod(root / "locked/inner/secret", 0o600)
    assert (root / "locked/inner/secret").read_bytes() == b"s"
    assert stat.S_IMODE(os.lstat(root / "etc/gshadow").st_mode) == 0


def test_parent_directory_times_survive_later_entries(tmp_path):
    root = tmp_path / "rootfs"
    apply(root, entry("d", tarfile.DIRTYPE, mtime=1234), entry("d/f", data=b"x"))
    apply(root, entry("d/g", data=b"y"))
    assert os.lstat(root / "d").st_mtime == 1234


@pytest.mark.parametrize("evil", [
    [entry("../escape", data=b"x")],
    [entry("/abs/../../escape", data=b"x")],
    [entry("a", tarfile.SYMTYPE, link="/.."), entry("a/escape", data=b"x")],
    [entry("a", tarfile.SYMTYPE, link="../../canary"), entry("a/escape", data=b"x")],
    [entry("a", tarfile.SYMTYPE, link="../canary/victim"), entry("a", data=b"x")],
    [entry("a", tarfile.SYMTYPE, link="/../canary"), entry("a/victim", tarfile.SYMTYPE, link="x")],
    [entry("a", tarfile.SYMTYPE, link="../canary"), entry("a/.wh.victim")],
    [entry("a", tarfile.SYMTYPE, link="../canary"), entry("a/.wh..wh..opq")],
])
def test_malicious_entries_stay_inside_the_rootfs(tmp_path, evil):
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "victim").write_bytes(b"safe")
    root = tmp_path / "rootfs"
    try:
        apply(root, *evil)
    except LayerError:
        pass
    assert sorted(os.listdir(tmp_path)) == ["canary", "rootfs"]
    assert os.listdir(canary) == ["victim"] and (canary / "victim").read_bytes() == b"safe"


def test_symlinked_directory_is_resolved_inside_the_root(tmp_path):
    (tmp_path / "canary").mkdir()
    root = tmp_path / "rootfs"
    apply(root, entry("etc", tarfile.DIRTYPE, mode=0o755), entry("a", tarfile.SYMTYPE, link="/etc"),
          entry("b", tarfile.SYMTYPE, link="../../../etc"), entry("a/passwd", data=b"p"),
          entry("b/group", data=b"g"))
    assert (root / "etc/passwd").read_bytes() == b"p" and (root / "etc/group").read_bytes() == b"g"
    assert os.listdir(tmp_path / "canary") == []


def test_hard_link_target_is_scoped_to_the_root(tmp_path):
    (tmp_path / "canary").mkdir()
    (tmp_path / "canary/secret").write_bytes(b"s")
    root = tmp_path / "rootfs"
    with pytest.raises(LayerError, match="hard link"):
        apply(root, entry("x", tarfile.LNKTYPE, link="../canary/secret"))
    apply(root, entry("secret", data=b"inside"), entry("x", tarfile.LNKTYPE, link="../../secret"))
    assert os.lstat(root / "x").st_ino == os.lstat(root / "secret").st_ino
    assert os.lstat(tmp_path / "canary/secret").st_nlink == 1


def test_keep_dirlinks(tmp_path):
    root = tmp_path / "rootfs"
    apply(root, entry("usr/lib", tarfile.DIRTYPE), entry("lib", tarfile.SYMTYPE, link="usr/lib"))
    apply(root, entry("lib", tarfile.DIRTYPE), entry("lib/x", data=b"x"), keep_dirlinks=True)
    assert os.path.islink(root / "lib") and (root / "usr/lib/x").read_bytes() == b"x"
    apply(root, entry("lib", tarfile.DIRTYPE), entry("lib/y", data=b"y"))
    assert not os.path.islink(root / "lib") and (root / "lib/y").exists()


def test_bad_input_is_a_layer_error(tmp_path):
    root = tmp_path / "rootfs"
    root.mkdir()
    with pytest.raises(LayerError):
        extract_layer(io.BytesIO(b"not a tar" * 100), root, ROOTLESS)
    with pytest.raises(LayerError, match=r"\.wh\."):
        apply(root, entry("dir/.wh."))
    with pytest.raises(LayerError, match="'f/g'.*not a directory"):
        apply(root, entry("f", data=b""), entry("f/g", data=b""))


def test_cache_records_digests_of_extracted_files(tmp_path):
    root = tmp_path / "rootfs"
    cache = mtree.DigestCache()
    root.mkdir()
    extract_layer(io.BytesIO(_tar_bytes(entry("a/f", data=b"hello"))), root, ROOTLESS, cache=cache)
    assert cache.lookup("a/f", os.lstat(root / "a/f")) == hashlib.sha256(b"hello").hexdigest()


def test_cache_digests_of_big_files_hard_links_and_replaced_files(tmp_path):
    root = tmp_path / "rootfs"
    root.mkdir()
    big = [bytes([i]) * (3 << 20 | i) for i in range(4)]  # 3 MiB+: hashed off the main thread
    cache = mtree.DigestCache()
    extract_layer(io.BytesIO(_tar_bytes(
        *(entry(f"big{i}", data=data) for i, data in enumerate(big)),
        entry("link", tarfile.LNKTYPE, link="big1"),
        entry("big2", data=b"replaced"),
        entry("big3", tarfile.SYMTYPE, link="big0"))), root, ROOTLESS, cache=cache)
    expect = {"big0": big[0], "big1": big[1], "link": big[1], "big2": b"replaced"}
    for name, data in expect.items():
        assert (root / name).read_bytes() == data
        assert cache.lookup(name, os.lstat(root / name)) == hashlib.sha256(data).hexdigest(), name
    assert set(cache.files) == set(expect)


def _tar_bytes(*entries):
    from layer_tars import make_tar
    return make_tar(*entries)


@pytest.mark.parametrize("name,tag", [("busybox", "latest"), ("debian", "bookworm")])
def test_matches_umoci_extraction_of_fixture_images(tmp_path, name, tag, request):
    layout = request.getfixturevalue("debian_layout_ro") if name == "debian" else \
        request.getfixturevalue("busybox_layout")
    bundle = tmp_path / "bundle"
    umoci_unpack(layout, tag, bundle)
    cache = mtree.DigestCache()
    extract_image(layout, tag, tmp_path / "ours", cache)
    theirs = mtree.parse(umoci_mtree(bundle))
    ours = mtree.walk(tmp_path / "ours", rootless=True, cache=cache)
    # the digests recorded while extracting are the files' real digests
    assert mtree.compare(mtree.walk(tmp_path / "ours", rootless=True), ours) == []
    for e in ours.entries:  # our only addition: the device placeholder marker
        e.keywords.pop("xattr." + DEVICE_XATTR, None)
    assert mtree.compare(theirs, ours) == []
    assert len(ours.entries) == len(theirs.entries) > 10


def test_modes_created_exactly_or_fixed_after_and_owner_xattr_on_read_only_files(tmp_path):
    root = tmp_path / "rootfs"
    modes = {"plain": 0o644, "exec": 0o755, "groupw": 0o664, "ro": 0o444, "none": 0o000, "suid": 0o4755,
             "sgid": 0o2711, "sticky": 0o1644}
    apply(root, *(entry(name, data=b"data", mode=mode, uid=7, gid=8) for name, mode in modes.items()))
    for name, mode in modes.items():
        st = os.lstat(root / name)
        assert stat.S_IMODE(st.st_mode) == mode, name
        assert st.st_size == 4 and st.st_mtime == 1_600_000_000, name
        os.chmod(root / name, 0o600)  # so we can read the xattr of the mode-000 one
        assert xattr(root / name, OWNER) == bytes.fromhex("08071008"), name


def test_replacing_a_symlinked_directory_redirects_later_entries(tmp_path):
    root = tmp_path / "rootfs"
    apply(root,
          entry("real", tarfile.DIRTYPE), entry("other", tarfile.DIRTYPE),
          entry("lib", tarfile.SYMTYPE, link="real"),
          entry("lib/a", data=b"a"),
          entry("lib", tarfile.SYMTYPE, link="other"),
          entry("lib/b", data=b"b"),
          entry("lib", tarfile.DIRTYPE),
          entry("lib/c", data=b"c"))
    assert sorted(os.listdir(root / "real")) == ["a"]
    assert sorted(os.listdir(root / "other")) == ["b"]
    assert not os.path.islink(root / "lib") and sorted(os.listdir(root / "lib")) == ["c"]


def test_entries_replace_whatever_the_path_held(tmp_path):
    root = tmp_path / "rootfs"
    apply(root, entry("d", tarfile.DIRTYPE), entry("d/x", data=b"x"), entry("f", data=b"old"),
          entry("s", tarfile.SYMTYPE, link="f"), entry("p", tarfile.FIFOTYPE))
    apply(root, entry("d", data=b"now a file"), entry("f", tarfile.SYMTYPE, link="d"),
          entry("s", tarfile.DIRTYPE, mode=0o750), entry("p", tarfile.LNKTYPE, link="d"))
    assert (root / "d").read_bytes() == b"now a file"
    assert os.readlink(root / "f") == "d"
    assert stat.S_ISDIR(os.lstat(root / "s").st_mode) and stat.S_IMODE(os.lstat(root / "s").st_mode) == 0o750
    assert os.lstat(root / "p").st_ino == os.lstat(root / "d").st_ino
