"""Layer compression round trips and media-type dispatch."""

from __future__ import annotations

import gzip
import io
import os

import pytest
import zstandard

from umoci_py import compress, mediatypes
from umoci_py.errors import LayerError

DATA = os.urandom(300_000) + b"layer" * 400_000  # spans several 1 MiB chunks


def _compress(algorithm: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with compress.writer(out, algorithm) as w:
        for i in range(0, len(data), 70_000):
            w.write(data[i:i + 70_000])
    assert not out.closed
    return out.getvalue()


@pytest.mark.parametrize("algorithm", compress.ALGORITHMS)
def test_round_trip(algorithm):
    blob = _compress(algorithm, DATA)
    assert compress.reader(io.BytesIO(blob), compress.media_type_for(algorithm)).read() == DATA


def test_gzip_output_is_standard_gzip_and_smaller():
    blob = _compress("gzip", DATA)
    assert blob[:2] == b"\x1f\x8b"
    assert len(blob) < len(DATA) // 2
    assert gzip.decompress(blob) == DATA


def test_zstd_output_is_standard_zstd():
    blob = _compress("zstd", DATA)
    assert zstandard.ZstdDecompressor().decompressobj().decompress(blob) == DATA


def test_none_is_identity():
    assert _compress("none", DATA) == DATA


def test_reader_accepts_multi_member_gzip_and_docker_media_type():
    blob = gzip.compress(b"first ") + gzip.compress(b"second")
    stream = compress.reader(io.BytesIO(blob), mediatypes.DOCKER_LAYER_GZIP)
    assert stream.read() == b"first second"


def test_reader_reads_foreign_gzip_and_zstd_frames():
    assert compress.reader(io.BytesIO(gzip.compress(DATA)), mediatypes.LAYER_GZIP).read() == DATA
    two = zstandard.ZstdCompressor().compress(b"a" * 10) + zstandard.ZstdCompressor().compress(b"b" * 10)
    assert compress.reader(io.BytesIO(two), mediatypes.LAYER_ZSTD).read() == b"a" * 10 + b"b" * 10


def test_truncated_gzip_is_a_layer_error():
    blob = gzip.compress(DATA)[:-5000]
    with pytest.raises(LayerError, match="truncated"):
        compress.reader(io.BytesIO(blob), mediatypes.LAYER_GZIP).read()


def test_corrupt_gzip_and_zstd_are_layer_errors():
    bad_crc = bytearray(gzip.compress(DATA))
    bad_crc[-6] ^= 0xFF  # the trailer's CRC32: every byte inflates fine
    with pytest.raises(LayerError, match="gzip layer stream is corrupt"):
        compress.reader(io.BytesIO(bytes(bad_crc)), mediatypes.LAYER_GZIP).read()
    bad_frame = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(DATA))
    bad_frame[len(bad_frame) // 2] ^= 0xFF
    with pytest.raises(LayerError, match="zstd layer stream is corrupt"):
        compress.reader(io.BytesIO(bytes(bad_frame)), mediatypes.LAYER_ZSTD).read()


def test_media_types():
    assert compress.media_type_for("gzip") == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert compress.media_type_for("zstd") == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert compress.media_type_for("none") == "application/vnd.oci.image.layer.v1.tar"
    with pytest.raises(LayerError, match="bzip2"):
        compress.writer(io.BytesIO(), "bzip2")
    with pytest.raises(LayerError):
        compress.reader(io.BytesIO(b""), "application/json")
