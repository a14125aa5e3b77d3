"""Writing a tar stream: the bytes tarfile writes in PAX_FORMAT, faster.

Layer writing puts thousands of small members in a tar, and tarfile spends
tens of microseconds on each (a TarInfo copied and turned into a dict,
every field through its own encoder, the stream cut into 10 KB records),
more than reading the file itself.  Here a member's header is one
struct.pack, the data is read in one go (large files in large chunks) and
the stream reaches the output in chunks of about a megabyte.  The bytes are
tarfile's, as TarFile.addfile writes them with format=PAX_FORMAT,
encoding="utf-8" and errors="surrogateescape" (uname and gname empty):
test_layer_tarwrite compares the two on awkward members.
"""

from __future__ import annotations

import os
import struct
import tarfile

TYPE_CHECKING = False  # typing's, without importing typing: ~2 ms of every build that runs a step
if TYPE_CHECKING:
    from typing import BinaryIO

BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE
FLUSH = 1 << 20  # output chunk; files up to this size are read in one go
MAGIC = tarfile.POSIX_MAGIC
PAX_NAME = b"././@PaxHeader"  # tarfile's (and star's) name for a pax header

_USTAR = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12x")
_CHKSUM = slice(148, 156)
_SPACES = b"        "
_DEVICES = (tarfile.CHRTYPE, tarfile.BLKTYPE)
_MAX7 = 8 ** 7    # largest octal number of an 8-byte field, plus one
_MAX11 = 8 ** 11  # of a 12-byte field


def _ustar(name: bytes, kind: bytes, mode: int, uid: int, gid: int, size: int, mtime: int,
           linkname: bytes, devmajor: int, devminor: int) -> bytes:
    """One header block, numbers already in range (as tarfile's _create_header)."""
    if kind in _DEVICES:
        if not (0 <= devmajor < _MAX7 and 0 <= devminor < _MAX7):
            raise ValueError(f"device number {devmajor}:{devminor} does not fit a tar header")
        major, minor = b"%07o\0" % devmajor, b"%07o\0" % devminor
    else:
        major = minor = b""
    block = _USTAR.pack(name, b"%07o\0" % (mode & 0o7777), b"%07o\0" % uid, b"%07o\0" % gid,
                        b"%011o\0" % size, b"%011o\0" % mtime, _SPACES, kind, linkname, MAGIC,
                        b"", b"", major, minor, b"")
    return b"%s%06o\0 %s" % (block[:148], sum(block), block[156:])


def _pax(records: dict[str, str]) -> bytes:
    """A pax extended header and its records (tarfile's _create_pax_generic_header):
    values that are not valid UTF-8 make the whole header hdrcharset=BINARY."""
    binary = not all(value.isascii() or _is_utf8(value) for value in records.values())
    out = [b"21 hdrcharset=BINARY\n"] if binary else []
    for keyword, value in records.items():
        key = keyword.encode("utf-8")
        raw = value.encode("utf-8", "surrogateescape") if binary else value.encode("utf-8")
        length = len(key) + len(raw) + 3  # " ", "=" and "\n"
        n = p = 0
        while True:  # the length counts its own digits
            n = length + len(str(p))
            if n == p:
                break
            p = n
        out.append(b"%d %s=%s\n" % (p, key, raw))
    payload = b"".join(out)
    return _ustar(PAX_NAME, tarfile.XHDTYPE, 0, 0, 0, len(payload), 0, b"", 0, 0) + payload + \
        bytes(-len(payload) % BLOCK)


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def header(name: str, kind: bytes, mode: int = 0, uid: int = 0, gid: int = 0, size: int = 0, mtime: int = 0,
           linkname: str = "", devmajor: int = 0, devminor: int = 0, pax: dict[str, str] | None = None) -> bytes:
    """The header blocks of a member, as tarfile's TarInfo.tobuf(PAX_FORMAT,
    "utf-8", "surrogateescape") with empty uname and gname: a pax header
    first when pax has records or a name or number does not fit ustar.  name
    is written as given (tarfile adds "/" to a directory's).  ValueError for
    a device number no tar header can hold."""
    records = None
    if not name.isascii() or len(name) > 100:
        records = dict(pax or ())
        records.setdefault("path", name)
    if not linkname.isascii() or len(linkname) > 100:
        records = records if records is not None else dict(pax or ())
        records.setdefault("linkpath", linkname)
    if not (0 <= uid < _MAX7 and 0 <= gid < _MAX7 and 0 <= size < _MAX11 and 0 <= mtime < _MAX11):
        records = records if records is not None else dict(pax or ())
        uid, gid, size, mtime = (_pax_number(records, key, value, limit) for key, value, limit in
                                 (("uid", uid, _MAX7), ("gid", gid, _MAX7), ("size", size, _MAX11),
                                  ("mtime", mtime, _MAX11)))
    block = _ustar(name.encode("ascii", "replace"), kind, mode, uid, gid, size, mtime,
                   linkname.encode("ascii", "replace"), devmajor, devminor)
    if records is None:
        records = pax
    return _pax(records) + block if records else block


def _pax_number(records: dict[str, str], key: str, value: int, limit: int) -> int:
    """value for the ustar field, put in records instead (a 0 in the field) if it does not fit."""
    if 0 <= value < limit:
        return value
    records.setdefault(key, str(value))
    return 0


class TarWriter:
    """A tar stream written to out in large chunks; close() ends it as tarfile
    does (two zero blocks, then zeros to a whole 10 KB record)."""

    def __init__(self, out: BinaryIO):
        self.out = out
        self.offset = 0  # bytes of the stream so far
        self._buf = bytearray()

    def _put(self, data) -> None:
        self._buf += data
        self.offset += len(data)
        if len(self._buf) >= FLUSH:
            self._flush()

    def _flush(self) -> None:
        if self._buf:
            # A fresh buffer each time: out may hold on to what it was given.
            self.out.write(self._buf)
            self._buf = bytearray()

    def add(self, block: bytes, fd: int | None = None, size: int = 0) -> None:
        """A member: its header blocks and, from fd, its size bytes of data
        (OSError "unexpected end of data" if fd has fewer, as tarfile)."""
        self._put(block)
        if fd is None or not size:
            return
        if size <= FLUSH:
            data = os.read(fd, size)
            while len(data) < size:
                more = os.read(fd, size - len(data))
                if not more:
                    raise OSError("unexpected end of data")
                data += more
            self._put(data)
        else:
            self._flush()
            left = size
            while left:
                chunk = os.read(fd, min(left, FLUSH))
                if not chunk:
                    raise OSError("unexpected end of data")
                self.out.write(chunk)
                self.offset += len(chunk)
                left -= len(chunk)
        if size % BLOCK:
            self._put(bytes(BLOCK - size % BLOCK))

    def close(self) -> None:
        self._put(bytes(2 * BLOCK))
        self._put(bytes(-self.offset % RECORD))
        self._flush()
