"""Storing a layer: an uncompressed tar stream compressed into a layout blob.

The tar is read once: its sha256 (the diff ID) and size are taken on the way
into the compressor, so nothing is hashed or compressed twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import BinaryIO

from .. import compress
from ..cas import Layout

_CHUNK = 1 << 20


@dataclass(frozen=True)
class LayerBlob:
    descriptor: dict        # mediaType, digest and size of the stored (compressed) blob
    diff_id: str            # "sha256:..." of the uncompressed tar
    uncompressed_size: int


def write_layer(layout: Layout, tar_stream: BinaryIO, algorithm: str) -> LayerBlob:
    """Compress tar_stream (read to its end) with algorithm ("gzip", "zstd",
    "none") into a new blob of layout."""
    diff = hashlib.sha256()
    size = 0
    with layout.blob_writer() as blob:
        with compress.writer(blob, algorithm) as out:
            while chunk := tar_stream.read(_CHUNK):
                diff.update(chunk)
                size += len(chunk)
                out.write(chunk)
    descriptor = {"mediaType": compress.media_type_for(algorithm), "digest": blob.digest, "size": blob.size}
    return LayerBlob(descriptor, "sha256:" + diff.hexdigest(), size)
