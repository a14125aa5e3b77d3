"""sha256 digests in the OCI ``algorithm:hex`` form (the only algorithm umoci stores)."""

from __future__ import annotations

import hashlib
import re

from .errors import BlobError

ALGORITHM = "sha256"
DIGEST_RE = re.compile(r"^sha256:([a-f0-9]{64})$")


def from_bytes(data: bytes) -> str:
    """The ``sha256:<hex>`` digest of ``data``."""
    return f"{ALGORITHM}:{hashlib.sha256(data).hexdigest()}"


def from_hex(hexdigest: str) -> str:
    return f"{ALGORITHM}:{hexdigest}"


def hex_of(digest: str) -> str:
    """The hex part of a valid sha256 digest; BlobError naming it otherwise."""
    if not isinstance(digest, str):
        raise BlobError(f"invalid digest {digest!r}: not a string")
    match = DIGEST_RE.match(digest)
    if match is None:
        if not digest.startswith(ALGORITHM + ":") and ":" in digest:
            raise BlobError(f"unsupported digest {digest!r}: only sha256 is supported")
        raise BlobError(f"invalid digest {digest!r}: want sha256:<64 lowercase hex>")
    return match.group(1)


def is_valid(digest: str) -> bool:
    return isinstance(digest, str) and DIGEST_RE.match(digest) is not None


class Hasher:
    """Running sha256 plus byte count, for streams."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes) -> None:
        self._hash.update(data)
        self.size += len(data)

    @property
    def digest(self) -> str:
        return from_hex(self._hash.hexdigest())
