"""What an unprivileged unpack cannot store for real: owners and file capabilities.

Owners go into the ``user.rootlesscontainers`` xattr.  Its value is the protobuf message ``Resource { uint32 uid = 1; uint32 gid = 2; }``
(rootless-containers/proto).  We encode it exactly as umoci does: a field equal
to 0 is written as NOOP (0xFFFFFFFF) because proto3 cannot tell 0 from unset,
and a 0:0 owner is not stored at all.

File capabilities (``security.capability``) the kernel refuses go into a record
of our own, CAPS_RECORD_XATTR; a layer always carries their revision 2 form.
"""

from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass

from .errors import LayerError

TYPE_CHECKING = False  # typing's, without importing typing: ~2 ms of every orca-build start
if TYPE_CHECKING:
    from typing import BinaryIO

XATTR_NAME = "user.rootlesscontainers"
NOOP = 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_owner(uid: int, gid: int) -> bytes | None:
    """Payload for an in-container owner, or None when it is 0:0 (no xattr)."""
    if uid == 0 and gid == 0:
        return None
    fuid = uid if uid != 0 else NOOP
    fgid = gid if gid != 0 else NOOP
    return b"\x08" + _varint(fuid) + b"\x10" + _varint(fgid)


def decode_owner(payload: bytes) -> tuple[int, int]:
    """(uid, gid) stored in a payload; NOOP fields are returned as NOOP.

    Absent fields mean literally 0, as the proto's comment demands.
    """
    uid = gid = 0
    pos = 0
    while pos < len(payload):
        key, pos = _read_varint(payload, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(payload, pos)
            if field == 1:
                uid = value & 0xFFFFFFFF
            elif field == 2:
                gid = value & 0xFFFFFFFF
        elif wire == 2:  # length-delimited field of a future schema: skip it
            length, pos = _read_varint(payload, pos)
            pos += length
        elif wire == 5:
            pos += 4
        elif wire == 1:
            pos += 8
        else:
            raise LayerError(f"bad {XATTR_NAME} payload: wire type {wire}")
    if pos != len(payload):
        raise LayerError(f"bad {XATTR_NAME} payload: truncated")
    return uid, gid


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise LayerError(f"bad {XATTR_NAME} payload: truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise LayerError(f"bad {XATTR_NAME} payload: varint too long")


def resolve_owner(payload: bytes | None, base_uid: int = 0, base_gid: int = 0) -> tuple[int, int]:
    """The owner a payload gives a file whose owner is otherwise base_uid:base_gid."""
    if payload is None:
        return base_uid, base_gid
    uid, gid = decode_owner(payload)
    return (base_uid if uid == NOOP else uid), (base_gid if gid == NOOP else gid)


# Symlinks, FIFOs and sockets cannot carry user.* xattrs (the kernel refuses),
# so a non-root owner of one is recorded on its parent directory instead:
# OWNERS_XATTR maps entry names to (uid, gid, inode).  The inode number makes
# a stale entry (the name since replaced by something else) harmless: readers
# use an entry only when it matches the lstat of the name.  Our own format,
# hidden like the other emulator xattrs; umoci ignores it (such owners are
# then 0:0 under umoci).
OWNERS_XATTR = "user.orca.owners"


def decode_side(payload: bytes | None) -> dict[bytes, tuple[int, int, int]]:
    """{name: (uid, gid, ino)} of a directory's OWNERS_XATTR value."""
    out = {}
    if not payload:
        return out
    parts = payload.split(b"\0")
    for name, record in zip(parts[0::2], parts[1::2]):
        try:
            uid, gid, ino = (int(v) for v in record.split(b":"))
        except ValueError:
            raise LayerError(f"bad {OWNERS_XATTR} record for {name!r}") from None
        out[name] = (uid, gid, ino)
    return out


def encode_side(records: dict[bytes, tuple[int, int, int]]) -> bytes | None:
    """The OWNERS_XATTR value, None when nothing is left to record."""
    if not records:
        return None
    return b"".join(name + b"\0" + b"%d:%d:%d" % rec + b"\0" for name, rec in sorted(records.items()))


def side_owner(records: dict[bytes, tuple[int, int, int]], name: bytes | str, ino: int) -> tuple[int, int] | None:
    """The recorded owner of entry `name` with inode `ino`, if any."""
    rec = records.get(name if isinstance(name, bytes) else name.encode("utf-8", "surrogateescape"))
    if rec is None or rec[2] != ino:
        return None
    return rec[0], rec[1]


def read_side(dir_path) -> dict[bytes, tuple[int, int, int]]:
    """The records of a directory (by path or fd); empty without any."""
    try:
        return decode_side(os.getxattr(dir_path, OWNERS_XATTR))
    except OSError:
        return {}


def write_side(dir_path, name: bytes | str, ino: int, owner: tuple[int, int] | None) -> None:
    """Record (or forget, owner None or 0:0) the owner of entry `name` of a directory."""
    key = name if isinstance(name, bytes) else name.encode("utf-8", "surrogateescape")
    records = read_side(dir_path)
    # Entries whose inode no longer matches are dropped as we go.
    records = {n: r for n, r in records.items() if n != key and _still_there(dir_path, n, r[2])}
    if owner is not None and owner != (0, 0):
        records[key] = (owner[0], owner[1], ino)
    put_xattr(dir_path, OWNERS_XATTR, encode_side(records))


def _still_there(dir_path, name: bytes, ino: int) -> bool:
    try:
        if isinstance(dir_path, int):
            return os.stat(name, dir_fd=dir_path, follow_symlinks=False).st_ino == ino
        return os.lstat(os.path.join(os.fsencode(dir_path), name)).st_ino == ino
    except OSError:
        return False


def put_xattr(path, name: str, value: bytes | None) -> None:
    """Set an xattr, or remove it when value is None (an absent one is fine)."""
    if value is not None:
        os.setxattr(path, name, value)
        return
    try:
        os.removexattr(path, name)
    except OSError as err:
        if err.errno != errno.ENODATA:
            raise


# -- file capabilities --------------------------------------------------------
# capabilities(7), "File capability extended attribute versioning": a 32-bit
# magic_etc (revision and the effective flag), then (permitted, inheritable)
# for capabilities 0-31 and 32-63; revision 3 adds the host uid of the root
# of the user namespace it was set in, and counts only in namespaces whose
# root is that uid.  Revision 2 counts everywhere, as in root's own images.
CAPS_XATTR = "security.capability"
VFS_CAP_REVISION_MASK = 0xFF000000
VFS_CAP_REVISION_2 = 0x02000000
VFS_CAP_REVISION_3 = 0x03000000
VFS_CAP_FLAGS_EFFECTIVE = 0x000001
_CAPS_V2 = struct.Struct("<5I")
SHA256_SIZE = 32  # bytes of a sha256 digest, the content half of a capability record
_CAPS_V3 = struct.Struct("<6I")

# A capability the kernel refused to set (an unprivileged user outside a user
# namespace may not) is kept here, hidden like the other emulator xattrs: its
# revision 2 value, then the sha256 of the file's content when it was set.
# Writing a file's content drops its capability (the kernel's rule; chmod and
# utimes keep it): a record whose digest no longer matches is void.  Content
# rewritten with the very same bytes keeps it, where the kernel would not.
CAPS_RECORD_XATTR = "user.orca.capability"


@dataclass(frozen=True)
class FileCaps:
    magic_etc: int        # revision and flags (VFS_CAP_FLAGS_EFFECTIVE)
    permitted: int        # 64-bit masks
    inheritable: int
    rootid: int | None    # revision 3 only

    @property
    def effective(self) -> bool:
        return bool(self.magic_etc & VFS_CAP_FLAGS_EFFECTIVE)

    def v2(self) -> bytes:
        """The namespace-independent revision 2 value (a rootid is dropped)."""
        magic = VFS_CAP_REVISION_2 | (self.magic_etc & ~VFS_CAP_REVISION_MASK)
        return _CAPS_V2.pack(magic, self.permitted & 0xFFFFFFFF, self.inheritable & 0xFFFFFFFF,
                             self.permitted >> 32, self.inheritable >> 32)


def decode_caps(value: bytes) -> FileCaps:
    """A revision 2 or 3 security.capability value (what the kernel accepts)."""
    if len(value) == _CAPS_V2.size:
        magic, p0, i0, p1, i1 = _CAPS_V2.unpack(value)
        rootid = None
        want = VFS_CAP_REVISION_2
    elif len(value) == _CAPS_V3.size:
        magic, p0, i0, p1, i1, rootid = _CAPS_V3.unpack(value)
        want = VFS_CAP_REVISION_3
    else:
        raise LayerError(f"bad {CAPS_XATTR} value: {len(value)} bytes (revision 2 has 20, revision 3 has 24)")
    if magic & VFS_CAP_REVISION_MASK != want:
        raise LayerError(f"bad {CAPS_XATTR} value: revision {magic >> 24} in {len(value)} bytes")
    return FileCaps(magic, p0 | p1 << 32, i0 | i1 << 32, rootid)


def caps_v2(value: bytes) -> bytes:
    """Any accepted security.capability value in its revision 2 form."""
    return decode_caps(value).v2()


def content_sha256(stream: BinaryIO) -> bytes:
    import hashlib  # ~2 ms (OpenSSL): only files with capabilities need it, not every RUN helper's start

    h = hashlib.sha256()
    while chunk := stream.read(1 << 20):
        h.update(chunk)
    return h.digest()


def encode_caps_record(value: bytes, digest: bytes) -> bytes:
    """The record of capability `value` on a file whose content has sha256 `digest`."""
    return caps_v2(value) + digest


def caps_from_record(record: bytes, digest: bytes) -> bytes | None:
    """The revision 2 capability a record gives a file whose content has sha256
    `digest`; None when the content changed since (the capability was dropped)."""
    if len(record) != _CAPS_V2.size + SHA256_SIZE:
        raise LayerError(f"bad {CAPS_RECORD_XATTR} record: {len(record)} bytes")
    value, recorded = record[:_CAPS_V2.size], record[_CAPS_V2.size:]
    return caps_v2(value) if recorded == digest else None
