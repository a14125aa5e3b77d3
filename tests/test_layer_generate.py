"""Delta and insert layers: the tar headers umoci would write."""

from __future__ import annotations

import io
import os
import tarfile

import pytest
from layer_tars import apply, contents, entry, headers, raw_names

from umoci_py import mtree, rootless
from umoci_py.errors import LayerError
from umoci_py.layer.idmap import MapOptions
from umoci_py.layer.generate import generate_insert_layer, generate_layer

ROOTLESS = MapOptions(rootless=True)


def _base(root):
    apply(root, entry("etc", tarfile.DIRTYPE, mode=0o755), entry("etc/passwd", data=b"root\n"),
          entry("etc/shadow", data=b"s", mode=0o640, gid=42),
          entry("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
          entry("gone/a/b", data=b"x"), entry("keep", data=b"k"))
    os.utime(root, (1000, 1000))  # so that any change below the root shows
    return mtree.walk(root, rootless=True)


def _delta_tar(root, before, **kw):
    deltas = mtree.simplify_filter(mtree.compare(before, mtree.walk(root, rootless=True)))
    out = io.BytesIO()
    generate_layer(root, deltas, ROOTLESS, out, **kw)
    return out.getvalue()


def test_round_trip_delta_headers(tmp_path):
    root = tmp_path / "rootfs"
    before = _base(root)
    (root / "etc/passwd").write_bytes(b"root\nuser\n")
    os.setxattr(root / "etc/passwd", rootless.XATTR_NAME, rootless.encode_owner(1000, 0))
    os.setxattr(root / "etc/passwd", "user.note", b"n")
    (root / "bin").mkdir()
    (root / "bin/tool").write_bytes(b"t")
    os.chmod(root / "bin/tool", 0o4755)
    os.link(root / "bin/tool", root / "bin/tool2")
    os.symlink("tool", root / "bin/sym")
    os.mkfifo(root / "bin/pipe")
    for p in ("gone/a/b", "gone/a", "gone"):
        (root / p).unlink() if p.endswith("b") else (root / p).rmdir()
    tar = _delta_tar(root, before, source_date_epoch=1_700_000_000)
    hs = headers(tar)
    assert raw_names(tar) == [".", "bin/", "bin/pipe", "bin/sym", "bin/tool", "bin/tool2", "etc/passwd", ".wh.gone"]
    passwd = hs["etc/passwd"]
    assert (passwd.uid, passwd.gid, passwd.uname, passwd.gname) == (1000, 0, "", "")
    assert passwd.pax_headers.get("SCHILY.xattr.user.note") == "n"
    assert not any("rootlesscontainers" in k for k in passwd.pax_headers)
    assert contents(tar)["etc/passwd"] == b"root\nuser\n"
    tool = hs["bin/tool"]
    assert tool.mode == 0o4755 and (tool.uid, tool.gid) == (0, 0) and tool.mtime <= 1_700_000_000
    assert hs["bin/tool2"].type == tarfile.LNKTYPE and hs["bin/tool2"].linkname == "bin/tool"
    assert hs["bin/sym"].issym() and hs["bin/sym"].linkname == "tool"
    assert hs["bin/pipe"].isfifo()
    wh = hs[".wh.gone"]
    assert wh.type == tarfile.REGTYPE and wh.size == 0 and wh.mode == 0 and (wh.uid, wh.gid) == (0, 0)
    assert hs["bin"].isdir()


def test_sorted_output_and_whiteouts_among_entries(tmp_path):
    root = tmp_path / "rootfs"
    before = _base(root)
    (root / "keep").unlink()
    (root / "etc/zz").write_bytes(b"z")
    # sorted by the changed path, so the whiteout of "keep" comes after "etc"
    assert raw_names(_delta_tar(root, before)) == [".", "etc/", "etc/zz", ".wh.keep"]


def test_unmodified_device_placeholder_becomes_a_device_again(tmp_path):
    root = tmp_path / "rootfs"
    apply(root, entry("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3), uid=0))
    hs = headers(_delta_tar(root, mtree.Manifest([mtree.Entry(".", {})])))
    null = hs["dev/null"]
    assert null.ischr() and (null.devmajor, null.devminor) == (1, 3) and null.mode == 0o666
    assert not any("orca" in k for k in null.pax_headers)
    (root / "dev/null").write_bytes(b"now a file")
    hs = headers(_delta_tar(root, mtree.Manifest([mtree.Entry(".", {})])))
    assert hs["dev/null"].isreg() and hs["dev/null"].size == 10


def test_owner_from_extract_round_trips(tmp_path):
    root = tmp_path / "rootfs"
    apply(root, entry("f", data=b"x", uid=3195, gid=2318), entry("d", tarfile.DIRTYPE, gid=5))
    hs = headers(_delta_tar(root, mtree.Manifest([mtree.Entry(".", {})])))
    assert (hs["f"].uid, hs["f"].gid) == (3195, 2318)
    assert (hs["d"].uid, hs["d"].gid) == (0, 5)


def test_mode_000_files_are_packed_with_their_modes(tmp_path):
    root = tmp_path / "rootfs"
    apply(root, entry("locked", tarfile.DIRTYPE, mode=0), entry("locked/secret", data=b"s", mode=0))
    tar = _delta_tar(root, mtree.Manifest([mtree.Entry(".", {})]))
    hs = headers(tar)
    assert hs["locked"].mode == 0 and hs["locked/secret"].mode == 0
    assert contents(tar)["locked/secret"] == b"s"
    assert os.lstat(root / "locked").st_mode & 0o777 == 0


def test_whiteout_named_file_in_rootfs_is_an_error(tmp_path):
    root = tmp_path / "rootfs"
    before = _base(root)
    (root / ".wh.sneaky").write_bytes(b"")
    with pytest.raises(LayerError, match=r"\.wh\.sneaky"):
        _delta_tar(root, before)


def test_mask_filter():
    deltas = [mtree.Delta(p, "modified") for p in ("a", "a/b", "ab", "c/d")]
    assert [d.path for d in mtree.mask_filter(deltas, ["/a", "c"])] == ["ab"]


def test_insert_tree_opaque_and_whiteout(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub/f").write_bytes(b"f")
    os.setxattr(src / "sub/f", rootless.XATTR_NAME, rootless.encode_owner(7, 8))
    out = io.BytesIO()
    generate_insert_layer(src, "/opt/../srv/app", ROOTLESS, out, opaque=True)
    tar = out.getvalue()
    assert tar[-1024:] == b"\0" * 1024  # properly terminated, unlike umoci 0.4.7
    # The target's whiteout first (a lower symlink there must not be followed),
    # the opaque marker after the directory's own entry.
    assert raw_names(tar) == ["srv/.wh.app", "srv/app/", "srv/app/.wh..wh..opq", "srv/app/sub/", "srv/app/sub/f"]
    assert (headers(tar)["srv/app/sub/f"].uid, headers(tar)["srv/app/sub/f"].gid) == (7, 8)
    out = io.BytesIO()
    generate_insert_layer(src / "sub/f", "etc/file", ROOTLESS, out)
    assert contents(out.getvalue()) == {"etc/file": b"f"}
    out = io.BytesIO()
    generate_insert_layer(None, "etc/file", ROOTLESS, out, whiteout=True)
    assert raw_names(out.getvalue()) == ["etc/.wh.file"]


NET_RAW_V2 = bytes.fromhex("0100000200200000000000000000000000000000")
NET_RAW_V3 = bytes.fromhex("0100000300200000000000000000000000000000e9030000")


def _caps(tar: bytes, name: str) -> str | None:
    return headers(tar)[name].pax_headers.get("SCHILY.xattr.security.capability")


def test_capability_refused_to_us_is_recorded_and_packed_as_revision_2(tmp_path):
    root = tmp_path / "rootfs"
    apply(root, entry("ping", data=b"elf", mode=0o755, xattrs={"security.capability": NET_RAW_V3}),
          entry("plain", data=b"elf"))
    # The kernel refuses security.* to an unprivileged user: our record holds it.
    with pytest.raises(OSError):
        os.getxattr(root / "ping", "security.capability")
    record = os.getxattr(root / "ping", rootless.CAPS_RECORD_XATTR)
    assert record == NET_RAW_V2 + rootless.content_sha256(io.BytesIO(b"elf"))
    everything = mtree.Manifest([mtree.Entry(".", {})])
    tar = _delta_tar(root, everything)
    assert _caps(tar, "ping") == NET_RAW_V2.decode("utf-8", "surrogateescape")
    assert _caps(tar, "plain") is None
    assert not any(rootless.CAPS_RECORD_XATTR in k for ti in headers(tar).values() for k in ti.pax_headers)


def test_capability_survives_chmod_and_utimes_but_not_a_content_write(tmp_path):
    root = tmp_path / "rootfs"
    caps = {"security.capability": NET_RAW_V2}
    apply(root, entry("chmodded", data=b"a", xattrs=caps), entry("touched", data=b"b", xattrs=caps),
          entry("written", data=b"c", xattrs=caps))
    before = mtree.walk(root, rootless=True)
    os.chmod(root / "chmodded", 0o711)
    os.utime(root / "touched", (2_000_000_000, 2_000_000_000))
    with open(root / "written", "ab") as f:
        f.write(b"more")
    tar = _delta_tar(root, before)
    assert set(headers(tar)) >= {"chmodded", "touched", "written"}
    assert _caps(tar, "chmodded") == _caps(tar, "touched") == NET_RAW_V2.decode("utf-8", "surrogateescape")
    assert _caps(tar, "written") is None


def test_bad_capability_in_a_layer_is_a_layer_error(tmp_path):
    with pytest.raises(LayerError, match="'ping'.*bad security.capability value: 3 bytes"):
        apply(tmp_path / "rootfs", entry("ping", data=b"x", xattrs={"security.capability": b"\x01\x00\x00"}))
