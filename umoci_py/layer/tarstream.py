"""A forward-only tar reader for layer extraction.

tarfile's stream mode copies every byte through three buffering layers and
builds a file object per member; extraction only needs each header (as a
tarfile.TarInfo, parsed by tarfile itself) and then the member's data once,
in order.  Here the data comes out as memoryviews of the chunks the source
stream returns, so it is written and hashed without copies.  Understands
ustar, pax (local and global) and GNU long names; sparse members are refused.
"""

from __future__ import annotations

import struct
import tarfile
from typing import BinaryIO, Iterator

from ..errors import LayerError

BLOCK = 512
CHUNK = 1 << 20
ENCODING = "utf-8"
ERRORS = "surrogateescape"
_EXTENSIONS = (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME,
               tarfile.GNUTYPE_LONGLINK)


# ustar header fields up to the prefix (the 8 bytes after linkname are
# magic and version, which change nothing here).
_USTAR = struct.Struct("100s8s8s8s12s12s8sc100s8x32s32s8s8s155s")


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode(ENCODING, ERRORS)


def _octal(field: bytes) -> int:
    return int(field.split(b"\0", 1)[0].strip() or b"0", 8)


def parse_header(block: bytes) -> tarfile.TarInfo:
    """tarfile.TarInfo.frombuf for the common case (octal numbers, unsigned
    checksum), which it is several times slower at; anything else goes to
    frombuf itself."""
    try:
        (name, mode, uid, gid, size, mtime, chksum, kind, link, uname, gname, major, minor,
         prefix) = _USTAR.unpack_from(block)
        if kind == tarfile.GNUTYPE_SPARSE or _octal(chksum) != 256 + sum(block) - sum(chksum):
            raise ValueError
        ti = tarfile.TarInfo(_text(name))
        ti.mode, ti.uid, ti.gid, ti.size, ti.mtime = _octal(mode), _octal(uid), _octal(gid), _octal(size), \
            _octal(mtime)
        ti.devmajor, ti.devminor = _octal(major), _octal(minor)
    except ValueError:
        return tarfile.TarInfo.frombuf(block, ENCODING, ERRORS)
    ti.chksum = _octal(chksum)
    ti.type, ti.linkname, ti.uname, ti.gname = kind, _text(link), _text(uname), _text(gname)
    if kind == tarfile.AREGTYPE and ti.name.endswith("/"):
        ti.type = tarfile.DIRTYPE
    if ti.isdir():
        ti.name = ti.name.rstrip("/")
    if prefix[0] and kind not in tarfile.GNU_TYPES:
        ti.name = _text(prefix) + "/" + ti.name
    return ti


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def parse_pax(data: bytes, member: str) -> dict[str, str]:
    """pax extended header records ("LEN key=value\\n") -> {key: value}."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise LayerError(f"bad layer tar: invalid pax header before {member!r}") from None
        record = data[space + 1:pos + length]
        key, sep, value = record.partition(b"=")
        if length <= 0 or space < 0 or not sep or not record.endswith(b"\n"):
            raise LayerError(f"bad layer tar: invalid pax header before {member!r}")
        out[key.decode(ENCODING, ERRORS)] = value[:-1].decode(ENCODING, ERRORS)
        pos += length
    return out


class TarStream:
    """Iterate to get each member's TarInfo; read its data with data() before
    moving on (unread data is skipped)."""

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self._chunk = memoryview(b"")
        self._pos = 0
        self._left = 0  # data bytes of the current member not yet read
        self._pad = 0  # padding after them
        self._global: dict[str, str] = {}

    def _take(self, n: int) -> memoryview:
        """Up to n bytes from the current chunk, refilling it when empty."""
        if self._pos == len(self._chunk):
            data = self._stream.read(CHUNK)
            if not data:
                return memoryview(b"")
            if not isinstance(data, bytes):
                data = bytes(data)  # views of it outlive this read
            self._chunk, self._pos = memoryview(data), 0
        end = min(len(self._chunk), self._pos + n)
        view = self._chunk[self._pos:end]
        self._pos = end
        return view

    def _read_exact(self, n: int, what: str) -> bytes:
        parts = []
        while n:
            view = self._take(n)
            if not view:
                raise LayerError(f"bad layer tar: unexpected end of data in {what}")
            parts.append(view)
            n -= len(view)
        return b"".join(parts)

    def _skip(self, n: int, what: str) -> None:
        while n:
            view = self._take(n)
            if not view:
                raise LayerError(f"bad layer tar: unexpected end of data in {what}")
            n -= len(view)

    def data(self, ti: tarfile.TarInfo) -> Iterator[memoryview]:
        """The current member's data, as views of immutable chunks (they
        stay valid after later reads)."""
        while self._left:
            view = self._take(min(self._left, CHUNK))
            if not view:
                raise LayerError(f"bad layer tar: unexpected end of data in {ti.name!r}")
            self._left -= len(view)
            yield view

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        return self

    def __next__(self) -> tarfile.TarInfo:
        if self._left or self._pad:
            self._skip(self._left + self._pad, "member data")
            self._left = self._pad = 0
        extensions: list[tuple[bytes, bytes]] = []
        while True:
            first = self._take(BLOCK)
            if not first and not extensions:
                raise StopIteration  # stream ends at a member boundary
            header = first.tobytes() if len(first) == BLOCK else \
                first.tobytes() + self._read_exact(BLOCK - len(first), "a header")
            if header.count(0) == BLOCK and not extensions:
                raise StopIteration  # end-of-archive marker
            try:
                ti = parse_header(header)
            except tarfile.HeaderError as e:
                raise LayerError(f"bad layer tar: {e}") from None
            if ti.type not in _EXTENSIONS:
                break
            payload = self._read_exact(ti.size, "an extended header")
            self._skip(_padded(ti.size) - ti.size, "an extended header")
            if ti.type == tarfile.XGLTYPE:
                self._global.update(parse_pax(payload, ti.name))
            else:
                extensions.append((ti.type, payload))
        pax = dict(self._global)
        # As in tarfile and Go's archive/tar, the extension that comes
        # first in the stream wins, so apply them last to first.
        longname = longlink = None
        for kind, payload in reversed(extensions):
            if kind == tarfile.GNUTYPE_LONGNAME:
                longname = tarfile.nts(payload, ENCODING, ERRORS)
            elif kind == tarfile.GNUTYPE_LONGLINK:
                longlink = tarfile.nts(payload, ENCODING, ERRORS)
            else:
                local = parse_pax(payload, ti.name)
                pax.update(local)
                longname = local.get("path", longname)
                longlink = local.get("linkpath", longlink)
        if pax:
            ti._apply_pax_info(pax, ENCODING, ERRORS)
        if longname is not None:
            ti.name = longname
        if longlink is not None:
            ti.linkname = longlink
        if ti.isdir():
            ti.name = ti.name.rstrip("/")
        if ti.type == tarfile.GNUTYPE_SPARSE or any(k.startswith("GNU.sparse.") for k in pax):
            raise LayerError(f"bad layer tar: {ti.name!r}: sparse files are not supported")
        if ti.isreg() or ti.type not in tarfile.SUPPORTED_TYPES:
            self._left, self._pad = ti.size, _padded(ti.size) - ti.size
        return ti
