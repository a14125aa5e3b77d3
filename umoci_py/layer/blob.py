"""Storing a layer: an uncompressed tar stream compressed into a layout blob.

The tar is read once: its sha256 (the diff ID) and size are taken on the way
into the compressor, so nothing is hashed or compressed twice.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from contextlib import contextmanager
from dataclasses import dataclass

from .. import compress
from ..cas import Layout

TYPE_CHECKING = False  # typing's, without importing typing: ~2 ms of every build that runs a step
if TYPE_CHECKING:
    from typing import BinaryIO

_CHUNK = 1 << 20


@dataclass(frozen=True)
class LayerBlob:
    descriptor: dict        # mediaType, digest and size of the stored (compressed) blob
    diff_id: str            # "sha256:..." of the uncompressed tar
    uncompressed_size: int


class LayerSink:
    """The write side of a layer being stored: a file object taking the
    uncompressed tar; .layer is the LayerBlob once layer_writer is done.
    Compression, with the compressed blob's hash and write, runs on a thread
    of its own (hashlib, isal and zlib release the GIL), beside whatever
    produces the tar, which hashes the tar (the diff ID) as it hands each
    chunk over.  That splits the work about evenly on two cores: for a 62 MB
    layer the tar is ~60 ms, either hash ~55 ms, isal's gzip ~80 ms; with
    both hashes on the thread it was busy ~220 ms of ~240 while the tar's
    producer waited on it.  With nothing to compress (tar_digest) the
    thread takes the hash instead.  A tar smaller than one chunk never
    starts the thread: it is hashed and compressed at close(), where a
    thread's start and hand-overs cost more than the work (~2 ms of a
    small step's commit)."""

    def __init__(self, out, diff_on_thread: bool = False):
        self._out = out
        self._diff_on_thread = diff_on_thread
        self._diff = hashlib.sha256()
        self.size = 0
        self.layer: LayerBlob | None = None
        self._buf = bytearray()
        self._queue: queue.Queue = queue.Queue(4)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:
                try:
                    if self._diff_on_thread:
                        self._diff.update(chunk)
                    self._out.write(chunk)
                except BaseException as err:  # raised in the writer's thread
                    self._error = err

    def write(self, data) -> int:
        if self._error is not None:
            raise self._error
        self._buf += data
        self.size += len(data)
        if len(self._buf) >= _CHUNK:
            self._hand_over()
        return len(data)

    def _hand_over(self) -> None:
        chunk = bytes(self._buf)
        self._buf.clear()
        if not self._diff_on_thread:
            self._diff.update(chunk)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        self._queue.put(chunk)

    def close(self) -> None:
        """Wait for what was written to be compressed (idempotent)."""
        if self._thread is None:
            chunk = bytes(self._buf)
            self._buf.clear()
            if chunk:
                self._diff.update(chunk)
                self._out.write(chunk)
        elif self._thread.is_alive():
            if self._buf:
                self._hand_over()
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error


@contextmanager
def layer_writer(layout: Layout, algorithm: str):
    """A LayerSink whose tar is compressed with algorithm ("gzip", "zstd",
    "none") into a new blob of layout as it is written, never held whole."""
    with layout.blob_writer() as blob:
        with compress.writer(blob, algorithm) as out:
            sink = LayerSink(out)
            try:
                yield sink
            finally:
                sink.close()
    descriptor = {"mediaType": compress.media_type_for(algorithm), "digest": blob.digest, "size": blob.size}
    sink.layer = LayerBlob(descriptor, "sha256:" + sink._diff.hexdigest(), sink.size)


def write_layer(layout: Layout, tar_stream: BinaryIO, algorithm: str) -> LayerBlob:
    """Compress tar_stream (read to its end) with algorithm into a new blob of layout."""
    with layer_writer(layout, algorithm) as sink:
        while chunk := tar_stream.read(_CHUNK):
            sink.write(chunk)
    return sink.layer


class _Discard:
    def write(self, data) -> int:
        return len(data)


def tar_digest(write_tar) -> str:
    """The diff ID ("sha256:...") of the tar write_tar(file) writes, hashed
    beside the writer and not kept: a layer named before it is stored."""
    sink = LayerSink(_Discard(), diff_on_thread=True)
    try:
        write_tar(sink)
    finally:
        sink.close()
    return "sha256:" + sink._diff.hexdigest()

