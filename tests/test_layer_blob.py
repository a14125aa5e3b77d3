"""layer.blob: the one way a layer tar becomes a layout blob, made and hashed once."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from umoci_py import compress, mediatypes
from umoci_py.cas import Layout
from umoci_py.errors import LayoutError
from umoci_py.layer.blob import layer_writer, write_layer

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


def _write_unevenly(sink, data: bytes) -> None:
    for i in range(0, len(data), 12345):  # uneven writes, as a tar writer's
        sink.write(data[i:i + 12345])


def _blobs_and_temp_dirs(layout_dir):
    return [p for p in layout_dir.rglob("*") if p.is_file() and p.parent.name == "sha256"] + \
        list(layout_dir.glob(".umoci-*"))


@pytest.mark.parametrize("data", [TAR, SMALL], ids=["4MB", "5kB"])
def test_written_gives_the_diff_id_and_stored_the_blob_of_the_same_tar(tmp_path, data):
    layout = Layout.init(tmp_path / "oci")
    with layer_writer(layout, "gzip", backlog=8) as sink:
        _write_unevenly(sink, data)
    assert sink.written() == sink.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    layer = sink.stored()
    assert layer.diff_id == sink.diff_id and layer.uncompressed_size == len(data)
    stored = blob_path(tmp_path / "oci", layer.descriptor["digest"]).read_bytes()
    assert compress.reader(io.BytesIO(stored), mediatypes.LAYER_GZIP).read() == data


@pytest.mark.parametrize("data", [TAR, SMALL], ids=["4MB", "5kB"])
def test_a_tar_that_fails_halfway_stores_nothing(tmp_path, data):
    layout = Layout.init(tmp_path / "oci")
    with pytest.raises(RuntimeError, match="tar writer failed"):
        with layer_writer(layout, "gzip") as sink:
            _write_unevenly(sink, data[: len(data) // 2])
            raise RuntimeError("tar writer failed")
    assert _blobs_and_temp_dirs(tmp_path / "oci") == []


def test_a_blob_that_cannot_be_written_fails_the_producer_and_never_blocks_it(tmp_path):
    layout = Layout.init(tmp_path / "oci")
    os.chmod(tmp_path / "oci", 0o555)  # neither lock nor temp dir for the blob (the suite is not root)
    try:
        with pytest.raises(LayoutError, match="Permission denied"):
            with layer_writer(layout, "gzip", backlog=1) as sink:
                _write_unevenly(sink, TAR * 4)  # many more chunks than the backlog
            sink.stored()
    finally:
        os.chmod(tmp_path / "oci", 0o755)
    assert _blobs_and_temp_dirs(tmp_path / "oci") == []
