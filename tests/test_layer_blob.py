"""layer.blob.write_layer: the one way a layer tar becomes a layout blob."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from umoci_py import compress, mediatypes
from umoci_py.cas import Layout
from umoci_py.layer.blob import tar_digest, write_layer

from umoci_py_helpers import blob_path

TAR = os.urandom(3 << 20) + bytes(1 << 20)  # more than one read chunk; stream contents are opaque here
# under one chunk: hashed and compressed at close, no thread
SMALL = os.urandom(5000)
EMPTY = b""


@pytest.mark.parametrize("algorithm,media_type", [("gzip", mediatypes.LAYER_GZIP),
                                                  ("zstd", mediatypes.LAYER_ZSTD),
                                                  ("none", mediatypes.LAYER)])
@pytest.mark.parametrize("data", [TAR, SMALL, EMPTY], ids=["4MB", "5kB", "empty"])
def test_blob_digest_diff_id_and_sizes(tmp_path, algorithm, media_type, data):
    layout = Layout.init(tmp_path / "oci")
    layer = write_layer(layout, io.BytesIO(data), algorithm)
    stored = blob_path(tmp_path / "oci", layer.descriptor["digest"]).read_bytes()
    assert layer.descriptor == {"mediaType": media_type, "size": len(stored),
                                "digest": "sha256:" + hashlib.sha256(stored).hexdigest()}
    assert layer.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert layer.uncompressed_size == len(data)
    assert compress.reader(io.BytesIO(stored), media_type).read() == data
    if algorithm == "none":
        assert layer.descriptor["digest"] == layer.diff_id


@pytest.mark.parametrize("data", [TAR, SMALL], ids=["4MB", "5kB"])
def test_tar_digest_is_the_diff_id_write_layer_gives_and_stores_nothing(tmp_path, data):
    layout = Layout.init(tmp_path / "oci")
    before = sorted((tmp_path / "oci").rglob("*"))

    def write_tar(f):
        for i in range(0, len(data), 12345):  # uneven writes, as a tar writer's
            f.write(data[i:i + 12345])

    assert tar_digest(write_tar) == "sha256:" + hashlib.sha256(data).hexdigest()
    assert sorted((tmp_path / "oci").rglob("*")) == before
