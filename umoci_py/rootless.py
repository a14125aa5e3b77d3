"""The ``user.rootlesscontainers`` ownership xattr.

The value is the protobuf message ``Resource { uint32 uid = 1; uint32 gid = 2; }``
(rootless-containers/proto).  We encode it exactly as umoci does: a field equal
to 0 is written as NOOP (0xFFFFFFFF) because proto3 cannot tell 0 from unset,
and a 0:0 owner is not stored at all.
"""

from __future__ import annotations

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
            raise ValueError(f"bad {XATTR_NAME} payload: wire type {wire}")
    if pos != len(payload):
        raise ValueError(f"bad {XATTR_NAME} payload: truncated")
    return uid, gid


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError(f"bad {XATTR_NAME} payload: truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError(f"bad {XATTR_NAME} payload: varint too long")


def resolve_owner(payload: bytes | None, base_uid: int = 0, base_gid: int = 0) -> tuple[int, int]:
    """The owner a payload gives a file whose owner is otherwise base_uid:base_gid."""
    if payload is None:
        return base_uid, base_gid
    uid, gid = decode_owner(payload)
    return (base_uid if uid == NOOP else uid), (base_gid if gid == NOOP else gid)
