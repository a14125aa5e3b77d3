"""The forward-only layer tar reader agrees with tarfile on every format."""

from __future__ import annotations

import io
import tarfile

import pytest

from umoci_py.errors import LayerError
from umoci_py.layer.tarstream import TarStream

LONG = "usr/share/" + "d" * 120 + "/" + "f" * 110 + ".txt"


class Trickle:
    """A stream returning at most `step` bytes per read, like a pipe."""

    def __init__(self, data: bytes, step: int):
        self.buf, self.step = io.BytesIO(data), step

    def read(self, n: int = -1) -> bytes:
        return self.buf.read(min(n, self.step) if n and n > 0 else self.step)


def members(fmt: int) -> list[tuple[tarfile.TarInfo, bytes]]:
    out = []
    for name, kind, data, link in [
        ("etc", tarfile.DIRTYPE, b"", ""),
        ("etc/passwd", tarfile.REGTYPE, b"root:x:0:0\n" * 70, ""),
        ("empty", tarfile.REGTYPE, b"", ""),
        ("exactly-a-block", tarfile.REGTYPE, b"b" * 512, ""),
        (LONG, tarfile.REGTYPE, b"long", ""),
        ("link-to-long", tarfile.SYMTYPE, b"", "../" + LONG),
        ("hard-to-long", tarfile.LNKTYPE, b"", LONG),
        ("big", tarfile.REGTYPE, bytes(range(256)) * 9000, ""),
        ("dev/null", tarfile.CHRTYPE, b"", ""),
        ("fifo", tarfile.FIFOTYPE, b"", ""),
        ("caf\u00e9/ünïcode", tarfile.REGTYPE, b"u", ""),
    ]:
        ti = tarfile.TarInfo(name)
        ti.type, ti.linkname, ti.size = kind, link, len(data)
        ti.mode, ti.uid, ti.gid, ti.mtime = 0o640, 1000, 42, 1_600_000_000
        if kind == tarfile.CHRTYPE:
            ti.devmajor, ti.devminor = 1, 3
        if fmt == tarfile.PAX_FORMAT and name == "etc/passwd":
            ti.pax_headers = {"SCHILY.xattr.user.a": "v", "mtime": "1600000000.123456789"}
        out.append((ti, data))
    return out


def write(fmt: int, entries, **kw) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, **kw) as tar:
        for ti, data in entries:
            tar.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    return buf.getvalue()


def ours(stream) -> list[tuple]:
    tar = TarStream(stream)
    return [(ti.name, ti.type, ti.size, ti.linkname, ti.mode, ti.uid, ti.gid, ti.mtime, ti.devmajor, ti.devminor,
             ti.pax_headers, b"".join(bytes(v) for v in tar.data(ti))) for ti in tar]


def theirs(data: bytes) -> list[tuple]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:", errors="surrogateescape") as tar:
        return [(ti.name, ti.type, ti.size, ti.linkname, ti.mode, ti.uid, ti.gid, ti.mtime, ti.devmajor,
                 ti.devminor, ti.pax_headers, tar.extractfile(ti).read() if ti.isreg() else b"") for ti in tar]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
@pytest.mark.parametrize("step", [1 << 20, 700, 1])
def test_same_members_as_tarfile(fmt, step):
    data = write(fmt, members(fmt))
    expected = theirs(data)
    assert [e[0] for e in expected][4:7] == [LONG, "link-to-long", "hard-to-long"]
    assert ours(Trickle(data, step)) == expected


def test_global_pax_headers_apply_to_later_members_and_local_ones_win():
    entries = members(tarfile.PAX_FORMAT)[:3]
    entries[2][0].pax_headers = {"uid": "7"}
    data = write(tarfile.PAX_FORMAT, entries, pax_headers={"uid": "5", "comment": "global"})
    got = ours(io.BytesIO(data))
    assert [m[5] for m in got] == [5, 5, 7]
    assert got == theirs(data)


def test_unread_data_is_skipped_and_a_missing_end_marker_is_fine():
    data = write(tarfile.USTAR_FORMAT, members(tarfile.USTAR_FORMAT)[:4])
    end = data.rindex(b"b" * 512) + 512  # cut the two zero blocks (and tarfile's record padding)
    names = [ti.name for ti in TarStream(io.BytesIO(data[:end]))]
    assert names == ["etc", "etc/passwd", "empty", "exactly-a-block"]


def test_bad_tars_are_layer_errors():
    data = write(tarfile.PAX_FORMAT, members(tarfile.PAX_FORMAT)[:2])
    with pytest.raises(LayerError, match="bad layer tar: unexpected end of data in 'etc/passwd'"):
        ours(io.BytesIO(data[:1536 + 600]))
    with pytest.raises(LayerError, match="bad layer tar: invalid header"):
        list(TarStream(io.BytesIO(b"not a tar" * 100)))
    corrupt = bytearray(data)
    corrupt[1024 + 600] ^= 0xFF  # inside the second header
    with pytest.raises(LayerError, match="bad layer tar"):
        list(TarStream(io.BytesIO(bytes(corrupt))))
    sparse = tarfile.TarInfo("s")
    sparse.pax_headers = {"GNU.sparse.size": "10"}
    with pytest.raises(LayerError, match="'s': sparse files are not supported"):
        list(TarStream(io.BytesIO(write(tarfile.PAX_FORMAT, [(sparse, b"")]))))


def test_ustar_prefix_base256_numbers_and_old_style_directories():
    entries = []
    for name, kind, uid in [("a" * 90 + "/" + "b" * 90, tarfile.REGTYPE, 0), ("huge-uid", tarfile.REGTYPE, 8 ** 8 + 5),
                            ("v7dir/", tarfile.AREGTYPE, 0)]:
        ti = tarfile.TarInfo(name)
        ti.type, ti.uid, ti.mtime = kind, uid, 1_600_000_000
        entries.append((ti, b""))
    ustar = write(tarfile.USTAR_FORMAT, entries[:1])
    assert ustar[345:346] == b"a"  # the name really went into the prefix field
    gnu = write(tarfile.GNU_FORMAT, entries[1:])
    assert gnu[108] & 0x80  # base-256 uid
    for data in (ustar, gnu):
        assert ours(io.BytesIO(data)) == theirs(data)
    assert [(ti.name, ti.isdir(), ti.uid) for ti in TarStream(io.BytesIO(gnu))] == [
        ("huge-uid", False, 8 ** 8 + 5), ("v7dir", True, 0)]
