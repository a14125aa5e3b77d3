"""sha256 digests in the OCI ``algorithm:hex`` form (the only algorithm umoci stores)."""

from __future__ import annotations

import re

from .errors import BlobError

# Documents (manifests, configs, cache keys: a few kB) are hashed by CPython's
# own sha256 module, streams of unknown or large size by hashlib's OpenSSL.
# OpenSSL's is ~4x faster per byte (SHA-NI), but loading it costs a process
# ~2 ms, and a fully cached build hashes nothing but documents.
try:
    from _sha256 import sha256 as _document_sha256  # Python 3.11
except ImportError:
    try:
        from _sha2 import sha256 as _document_sha256  # 3.12 and later
    except ImportError:
        from hashlib import sha256 as _document_sha256

ALGORITHM = "sha256"
DIGEST_RE = re.compile(r"^sha256:([a-f0-9]{64})$")
DOCUMENT_SIZE = 1 << 20  # at most this many bytes: hashed as a document


def from_bytes(data: bytes) -> str:
    """The ``sha256:<hex>`` digest of ``data``."""
    return f"{ALGORITHM}:{_sha256(len(data))(data).hexdigest()}"


def _sha256(size: int | None):
    """The sha256 constructor for size bytes (None: not known)."""
    if size is not None and size <= DOCUMENT_SIZE:
        return _document_sha256
    import hashlib

    return hashlib.sha256


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
    """Running sha256 plus byte count, for streams; expected_size, if
    known, picks the implementation."""

    def __init__(self, expected_size: int | None = None) -> None:
        self._hash = _sha256(expected_size)()
        self.size = 0

    def update(self, data: bytes) -> None:
        self._hash.update(data)
        self.size += len(data)

    @property
    def digest(self) -> str:
        return from_hex(self._hash.hexdigest())
