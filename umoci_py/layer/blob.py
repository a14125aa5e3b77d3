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
BACKLOG = 4  # chunks waiting for the compressor by default: a producer that gets that far ahead waits


@dataclass(frozen=True)
class LayerBlob:
    descriptor: dict        # mediaType, digest and size of the stored (compressed) blob
    diff_id: str            # "sha256:..." of the uncompressed tar
    uncompressed_size: int


class _Aborted(Exception):
    """The producer failed: the blob being written is thrown away."""


_ABORT = object()  # queued by LayerSink.abort


class LayerSink:
    """The write side of a layer being stored: a file object taking the
    uncompressed tar, compressed into a new blob of the layout as it comes.

    The tar is made once.  Its producer hashes it (the diff ID) as it hands
    each chunk to a thread of its own, which compresses it, hashes the
    compressed bytes and writes the blob (hashlib, isal and zlib release the
    GIL).  That splits the work about evenly on two cores: for a 62 MB layer
    the tar is ~60 ms, either hash ~55 ms, isal's gzip ~80 ms; with both
    hashes on the thread it was busy ~220 ms of ~240 while the tar's
    producer waited on it.

    written() returns the diff ID as soon as the whole tar is handed over,
    and stored() the LayerBlob once the blob is in the layout: between the
    two, a build's next step runs (orca.layerjobs).  Up to `backlog` chunks
    wait for the thread, so a producer can finish that far ahead of it.  A
    tar smaller than one chunk never starts the thread: it is compressed in
    written(), where a thread's start and hand-overs cost more than the work
    (~2 ms of a small step's commit)."""

    def __init__(self, layout: Layout, algorithm: str, backlog: int = BACKLOG):
        self._layout, self._algorithm = layout, algorithm
        self._diff = hashlib.sha256()
        self.size = 0
        self.diff_id: str | None = None  # once written()
        self._buf = bytearray()
        self._queue: queue.Queue = queue.Queue(backlog)
        self._thread: threading.Thread | None = None
        self._ended = False  # the thread took the last chunk (or the abort)
        self._outcome: LayerBlob | BaseException | None = None

    def write(self, data) -> int:
        if isinstance(self._outcome, BaseException):
            raise self._outcome
        self._buf += data
        self.size += len(data)
        if len(self._buf) >= _CHUNK:
            self._hand_over()
        return len(data)

    def _hand_over(self) -> None:
        chunk = bytes(self._buf)
        self._buf.clear()
        self._diff.update(chunk)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True, name="layer-sink")
            self._thread.start()
        self._queue.put(chunk)

    def written(self) -> str:
        """The diff ID, once the whole tar is written (the blob may still be on its way)."""
        if self.diff_id is None:
            if self._thread is None:
                chunk = bytes(self._buf)
                self._buf.clear()
                self._diff.update(chunk)
                self.diff_id = "sha256:" + self._diff.hexdigest()
                self._outcome = self._store(iter((chunk,) if chunk else ()))
            else:
                if self._buf:
                    self._hand_over()
                self.diff_id = "sha256:" + self._diff.hexdigest()
                self._queue.put(None)
        return self.diff_id

    def stored(self) -> LayerBlob:
        """The stored blob (waiting for it); its error if storing it failed."""
        self.written()
        if self._thread is not None:
            self._thread.join()
        if isinstance(self._outcome, BaseException):
            raise self._outcome
        return self._outcome

    def abort(self) -> None:
        """The tar will not be finished: nothing is stored."""
        if self._thread is not None and self.diff_id is None:
            self.diff_id = ""
            self._queue.put(_ABORT)
            self._thread.join()

    def _run(self) -> None:
        try:
            self._outcome = self._store(self._chunks())
        except BaseException as err:  # raised to the producer by write() or stored()
            self._outcome = err
            while not self._ended:  # the producer must never block on a full queue
                self._ended = self._queue.get() in (None, _ABORT)

    def _chunks(self):
        while True:
            chunk = self._queue.get()
            if chunk is None or chunk is _ABORT:
                self._ended = True
                if chunk is _ABORT:
                    raise _Aborted
                return
            yield chunk

    def _store(self, chunks) -> LayerBlob:
        with self._layout.blob_writer() as blob:
            with compress.writer(blob, self._algorithm) as out:
                for chunk in chunks:
                    out.write(chunk)
        descriptor = {"mediaType": compress.media_type_for(self._algorithm), "digest": blob.digest,
                      "size": blob.size}
        return LayerBlob(descriptor, self.diff_id, self.size)


@contextmanager
def layer_writer(layout: Layout, algorithm: str, backlog: int = BACKLOG):
    """A LayerSink whose tar is compressed with algorithm ("gzip", "zstd",
    "none") into a new blob of layout as it is written, never held whole.
    On leaving, the tar is written (sink.written()); sink.stored() waits for the blob."""
    sink = LayerSink(layout, algorithm, backlog)
    try:
        yield sink
        sink.written()
    except BaseException:
        sink.abort()
        raise


def write_layer(layout: Layout, tar_stream: BinaryIO, algorithm: str) -> LayerBlob:
    """Compress tar_stream (read to its end) with algorithm into a new blob of layout."""
    with layer_writer(layout, algorithm) as sink:
        while chunk := tar_stream.read(_CHUNK):
            sink.write(chunk)
    return sink.stored()
