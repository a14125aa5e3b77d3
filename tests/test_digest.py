"""umoci_py.digest: the one home of sha256.  Documents are hashed by
CPython's own module, streams of unknown or large size by OpenSSL's; both
must give hashlib's digests, at every size either way is chosen for."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from umoci_py import digest

SIZES = [0, 1, 4096, digest.DOCUMENT_SIZE, digest.DOCUMENT_SIZE + 1, 3 << 20]


@pytest.mark.parametrize("size", SIZES)
def test_from_bytes_is_hashlibs_sha256_at_every_size(size):
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert digest.from_bytes(data) == "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("expected", [None, 0, 10, digest.DOCUMENT_SIZE + 1])
def test_a_stream_hashed_in_pieces_is_the_whole_documents_digest(expected):
    data = b"0123456789" * 1000
    hasher = digest.Hasher(expected)
    for i in range(0, len(data), 333):
        hasher.update(data[i:i + 333])
    assert (hasher.digest, hasher.size) == (digest.from_bytes(data), len(data))


def test_hashing_a_document_loads_no_openssl():
    # a fresh interpreter: OpenSSL's module is what costs a start ~2 ms
    script = ("import sys\nfrom umoci_py import digest\ndigest.from_bytes(b'{}')\n"
              "h = digest.Hasher(2); h.update(b'{}')\nprint('_hashlib' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
