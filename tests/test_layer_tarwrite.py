"""tarwrite writes the very bytes tarfile (PAX_FORMAT) writes: headers of
awkward members, the data and padding of each, the end of the stream, and
whole layers as generate_layer writes them."""

from __future__ import annotations

import io
import os
import tarfile

import pytest
from layer_tars import apply, entry

from umoci_py import mtree, rootless
from umoci_py.errors import LayerError
from umoci_py.layer.idmap import MapOptions
from umoci_py.layer.generate import generate_layer
from umoci_py.layer.overlay import layer_changes
from umoci_py.layer.tarwrite import FLUSH, TarWriter, header

BAD = os.fsdecode(b"bad-\xff\xfe-name")  # not UTF-8: a pax header with hdrcharset=BINARY
CAPS = bytes(range(256)).decode("utf-8", "surrogateescape")


def _pax_value(length: int) -> dict[str, str]:
    """An xattr record of a given value length (the record's length counts its own digits)."""
    return {"SCHILY.xattr.user.v": "v" * length}


# (name as written, type, other TarInfo fields)
CORPUS = [
    ("etc/passwd", tarfile.REGTYPE, dict(mode=0o644, size=5, mtime=1_700_000_000)),
    ("usr/lib/", tarfile.DIRTYPE, dict(mode=0o755, mtime=1)),
    ("usr/bin/su", tarfile.REGTYPE, dict(mode=0o104755, size=1, uid=0, gid=0)),
    ("a" * 100, tarfile.REGTYPE, {}),
    ("a" * 101, tarfile.REGTYPE, {}),
    ("d" * 99 + "/", tarfile.DIRTYPE, {}),
    ("d" * 100 + "/", tarfile.DIRTYPE, {}),
    ("café/naïve.txt", tarfile.REGTYPE, dict(size=3)),
    (BAD, tarfile.REGTYPE, {}),
    (BAD + "/", tarfile.DIRTYPE, dict(pax={"SCHILY.xattr.user.a": "1"})),
    ("link", tarfile.SYMTYPE, dict(linkname="target")),
    ("longlink", tarfile.SYMTYPE, dict(linkname="t/" * 60)),
    ("badlink", tarfile.SYMTYPE, dict(linkname=BAD)),
    ("ünicode-link", tarfile.SYMTYPE, dict(linkname="ünicode")),
    ("hard", tarfile.LNKTYPE, dict(linkname="etc/passwd")),
    ("dev/null", tarfile.CHRTYPE, dict(mode=0o666, devmajor=1, devminor=3)),
    ("dev/sda", tarfile.BLKTYPE, dict(mode=0o660, gid=6, devmajor=8, devminor=0)),
    ("dev/big", tarfile.CHRTYPE, dict(devmajor=4095, devminor=8 ** 7 - 1)),
    ("fifo", tarfile.FIFOTYPE, dict(mode=0o600)),
    ("uid-max", tarfile.REGTYPE, dict(uid=8 ** 7 - 1, gid=8 ** 7 - 1)),
    ("uid-big", tarfile.REGTYPE, dict(uid=8 ** 7, gid=100_000)),
    ("gid-big", tarfile.REGTYPE, dict(uid=1000, gid=4_294_967_294)),
    ("old", tarfile.REGTYPE, dict(mtime=-1)),
    ("future", tarfile.REGTYPE, dict(mtime=8 ** 11)),
    ("huge", tarfile.REGTYPE, dict(size=8 ** 11)),
    (".wh..wh..opq", tarfile.REGTYPE, dict(mode=0)),
    ("x/.wh.gone", tarfile.REGTYPE, dict(mode=0)),
    ("caps", tarfile.REGTYPE, dict(mode=0o755, pax={"SCHILY.xattr.security.capability": CAPS})),
    ("xattrs", tarfile.REGTYPE, dict(pax={"SCHILY.xattr.user.a": "", "SCHILY.xattr.user.b": "x=y\nz",
                                          "SCHILY.xattr.user.ü": "ü", "SCHILY.xattr.trusted.t": "t"})),
    ("all" * 40, tarfile.SYMTYPE, dict(linkname=BAD * 10, uid=8 ** 8, mtime=-5,
                                       pax={"SCHILY.xattr.user.a": BAD})),
] + [(f"pax-{n}", tarfile.REGTYPE, dict(pax=_pax_value(n))) for n in (73, 74, 75, 76, 968, 969, 970, 9_000)]


def _tarinfo(name: str, kind: bytes, fields: dict) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.uname = ti.gname = ""
    for key, value in fields.items():
        if key == "pax":
            ti.pax_headers = dict(value)
        else:
            setattr(ti, key, value)
    return ti


@pytest.mark.parametrize("name,kind,fields", CORPUS, ids=[f"{i}-{c[0][:20]!r}" for i, c in enumerate(CORPUS)])
def test_header_is_tarfiles(name, kind, fields):
    expected = _tarinfo(name, kind, fields).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    assert header(name, kind, **{"mode": 0o644, **fields}) == expected


def test_device_number_beyond_a_header_is_a_value_error_as_in_tarfile():
    with pytest.raises(ValueError):
        _tarinfo("dev/x", tarfile.CHRTYPE, dict(devmajor=8 ** 7)).tobuf(tarfile.PAX_FORMAT)
    with pytest.raises(ValueError, match="does not fit"):
        header("dev/x", tarfile.CHRTYPE, devmajor=8 ** 7)
    with pytest.raises(ValueError, match="does not fit"):
        header("dev/x", tarfile.BLKTYPE, devminor=-1)


@pytest.mark.parametrize("sizes", [[], [0], [1, 511, 512, 513], [FLUSH - 1, FLUSH, FLUSH + 1, 3 * FLUSH + 7, 10]])
def test_stream_is_tarfiles(tmp_path, sizes):
    expected, out = io.BytesIO(), io.BytesIO()
    writer = TarWriter(out)
    with tarfile.open(fileobj=expected, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tar:
        for i, size in enumerate(sizes):
            path = tmp_path / f"f{i}"
            path.write_bytes(os.urandom(size))
            ti = _tarinfo(f"f{i}", tarfile.REGTYPE, dict(size=size, mode=0o644))
            with open(path, "rb") as f:
                tar.addfile(ti, f)
            fd = os.open(path, os.O_RDONLY)
            try:
                writer.add(header(f"f{i}", tarfile.REGTYPE, 0o644, size=size), fd, size)
            finally:
                os.close(fd)
    writer.close()
    assert out.getvalue() == expected.getvalue()
    assert writer.offset == len(expected.getvalue())


@pytest.mark.parametrize("size", [10, 2 * FLUSH])
def test_file_shorter_than_its_header_is_an_error(tmp_path, size):
    path = tmp_path / "f"
    path.write_bytes(b"x" * (size - 1))
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(OSError, match="unexpected end of data"):
            TarWriter(io.BytesIO()).add(header("f", tarfile.REGTYPE, size=size), fd, size)
    finally:
        os.close(fd)


class _Root(tarfile.TarInfo):
    """tarfile names the root "./"; layers (and umoci) name it "."."""

    def get_info(self):
        info = super().get_info()
        if info["name"] == "./":
            info["name"] = "."
        return info


def _rewritten_by_tarfile(layer: bytes) -> bytes:
    """The layer as tarfile writes the same members (fields and xattr records)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(layer), mode="r:", encoding="utf-8", errors="surrogateescape") as src, \
            tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8",
                         errors="surrogateescape") as dst:
        for member in src:
            ti = _Root(member.name)
            for key in ("type", "mode", "uid", "gid", "size", "linkname", "devmajor", "devminor"):
                setattr(ti, key, getattr(member, key))
            ti.mtime = int(member.mtime)
            ti.uname = ti.gname = ""
            ti.pax_headers = {k: v for k, v in member.pax_headers.items() if k.startswith("SCHILY.xattr.")}
            dst.addfile(ti, src.extractfile(member) if member.isreg() else None)
    return out.getvalue()


def test_layer_is_what_tarfile_writes_for_its_members(tmp_path):
    root = tmp_path / "rootfs"
    apply(root, entry("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
          entry("home/u", tarfile.DIRTYPE, uid=8 ** 7 + 5, gid=1000),
          entry("usr/bin/ping", data=b"\x7fELF" * 300, mode=0o4755, xattrs={"user.z": b"1", "user.a": b"\xff"}),
          entry("gone/deep/file", data=b"g"))
    before = mtree.walk(root, rootless=True)
    os.unlink(root / "gone/deep/file")
    os.rmdir(root / "gone/deep")
    os.rmdir(root / "gone")
    long_dir = root / ("l" * 90) / ("m" * 30)
    long_dir.mkdir(parents=True)
    (long_dir / "file").write_bytes(b"long\n" * 1000)
    (root / os.fsdecode(b"bad-\xff")).write_bytes(b"b")
    os.symlink("n" * 120, root / "longlink")
    os.symlink("usr/bin/ping", root / "link")
    os.link(root / "usr/bin/ping", root / "usr/bin/ping6")
    os.mkfifo(root / "fifo")
    (root / "big").write_bytes(os.urandom(FLUSH + 1000))
    (root / "owned").write_bytes(b"o")
    os.setxattr(root / "owned", rootless.XATTR_NAME, rootless.encode_owner(70_000, 3_000_000))
    os.utime(root / "owned", (-100, -100))
    deltas = layer_changes(before, mtree.walk(root, rootless=True))  # as orca's, with the root
    out = io.BytesIO()
    generate_layer(root, deltas, MapOptions(rootless=True), out, source_date_epoch=2_000_000_000)
    layer = out.getvalue()
    assert len(layer) % tarfile.RECORDSIZE == 0
    assert _rewritten_by_tarfile(layer) == layer
    members = {m.name: m for m in tarfile.open(fileobj=io.BytesIO(layer))}
    gone = members[".wh.gone"]
    assert (gone.type, gone.mode, gone.mtime, gone.uid, gone.gid, gone.size) == (tarfile.REGTYPE, 0, 0, 0, 0, 0)
    assert (members["owned"].uid, members["owned"].gid, members["owned"].mtime) == (70_000, 3_000_000, -100)
    assert {".", ".wh.gone", "longlink", os.fsdecode(b"bad-\xff"), "usr/bin/ping6", "owned"} <= set(members)


def test_xattr_name_that_is_not_utf8_is_a_layer_error(tmp_path):
    root = tmp_path / "rootfs"
    root.mkdir()
    (root / "f").write_bytes(b"")
    os.setxattr(root / "f", os.fsdecode(b"user.\xff"), b"1")
    with pytest.raises(LayerError, match="not UTF-8"):
        generate_layer(root, [mtree.Delta("f", "extra")], MapOptions(rootless=True), io.BytesIO())
