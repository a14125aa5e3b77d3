"""Layer (de)compression: gzip, zstd or none, as streams.

Layers run to hundreds of megabytes, so everything here streams in large
chunks and never holds a whole blob.  gzip goes through the fastest
zlib-compatible module that is installed (python-isal and zlib-ng are 2-4x
faster than stdlib zlib and expose the same compressobj/decompressobj API).
"""

from __future__ import annotations

import functools
import importlib
import io

from . import mediatypes
from .errors import LayerError

TYPE_CHECKING = False  # typing's, without importing typing: ~2 ms of every build that runs a step
if TYPE_CHECKING:
    from typing import BinaryIO

ALGORITHMS = ("gzip", "zstd", "none")

CHUNK = 1 << 20

# zlib-compatible (module, deflate level), best first.  Measured on the 165 MB
# tar of an mmdebstrap bookworm rootfs (bench/gzip_choice.py, also printed by
# bench/umoci_bench.py; medians of 3 on the 2-core test host):
#   zlib L6     decompress 0.87 s  compress 7.98 s  ratio 0.356
#   zlib-ng L6  decompress 0.41 s  compress 3.46 s  ratio 0.363
#   zlib-ng L1  decompress 0.50 s  compress 1.17 s  ratio 0.465
#   isal L3     decompress 0.39 s  compress 0.78 s  ratio 0.387
#   isal L1     decompress 0.39 s  compress 0.50 s  ratio 0.400
# isal at level 1 compresses 16x faster than zlib's default for 12% more
# bytes and inflates as fast as anything; isal only has levels 0-3, the
# fallbacks keep umoci's level 6.
_ZLIB_CHOICES = (("isal.isal_zlib", 1), ("zlib_ng.zlib_ng", 6), ("zlib", 6))


# The codecs are imported by the first stream that needs one, not with this
# module: zstandard's import alone takes ~4 ms (it loads typing and
# platform), and most layer code that imports this module on a build's
# critical path (a commit that only hashes its tar) compresses on a
# thread later, or never.

@functools.cache
def _gzip_module():
    """(zlib-compatible module, deflate level): the first of _ZLIB_CHOICES installed."""
    for name, level in _ZLIB_CHOICES:
        try:
            return importlib.import_module(name), level
        except ImportError:
            continue
    raise ImportError("no zlib module")


def _zstandard():
    import zstandard
    return zstandard


class _GzipReader(io.RawIOBase):
    """Decompresses a (possibly multi-member) gzip stream."""

    def __init__(self, fileobj: BinaryIO):
        self._src = fileobj
        self._zlib = _gzip_module()[0]
        self._dec = self._zlib.decompressobj(16 + self._zlib.MAX_WBITS)
        self._buf = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf and not self._eof:
            self._fill()
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def _fill(self) -> None:
        try:
            self._inflate()
        except self._zlib.error as e:
            raise LayerError(f"gzip layer stream is corrupt: {e}") from None

    def _inflate(self) -> None:
        if self._dec.eof:
            rest = self._dec.unused_data
            if not rest:
                rest = self._src.read(CHUNK)
                if not rest:
                    self._eof = True
                    return
            # Another gzip member follows (pigz/pgzip may write several).
            self._dec = self._zlib.decompressobj(16 + self._zlib.MAX_WBITS)
            self._buf = self._dec.decompress(rest, CHUNK)
            return
        if self._dec.unconsumed_tail:
            self._buf = self._dec.decompress(self._dec.unconsumed_tail, CHUNK)
            return
        data = self._src.read(CHUNK)
        if not data:
            raise LayerError("gzip layer stream is truncated")
        self._buf = self._dec.decompress(data, CHUNK)


class _ZstdReader(io.RawIOBase):
    def __init__(self, fileobj: BinaryIO):
        self._zstd = _zstandard()
        self._inner = self._zstd.ZstdDecompressor().stream_reader(
            fileobj, read_size=CHUNK, read_across_frames=True, closefd=False
        )

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        try:
            return self._inner.readinto(b)
        except self._zstd.ZstdError as e:
            raise LayerError(f"zstd layer stream is corrupt: {e}") from None


class _GzipWriter:
    def __init__(self, fileobj: BinaryIO):
        self._dst = fileobj
        zlib, level = _gzip_module()
        self._comp = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def write(self, data) -> int:
        out = self._comp.compress(data)
        if out:
            self._dst.write(out)
        return len(data)

    def close(self) -> None:
        if self._comp is not None:
            self._dst.write(self._comp.flush())
            self._comp = None


class _PlainWriter:
    def __init__(self, fileobj: BinaryIO):
        self._dst = fileobj

    def write(self, data) -> int:
        return self._dst.write(data)

    def close(self) -> None:
        pass


class _Writer:
    """Context manager wrapper; closing flushes but leaves fileobj open."""

    def __init__(self, inner):
        self._inner = inner

    def write(self, data) -> int:
        return self._inner.write(data)

    def close(self) -> None:
        self._inner.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False


def reader(fileobj: BinaryIO, media_type: str) -> BinaryIO:
    """An uncompressed stream over a layer blob of the given media type."""
    algorithm = mediatypes.layer_compression(media_type)
    if algorithm == "gzip":
        return io.BufferedReader(_GzipReader(fileobj), CHUNK)
    if algorithm == "zstd":
        return io.BufferedReader(_ZstdReader(fileobj), CHUNK)
    return fileobj


def writer(fileobj: BinaryIO, algorithm: str) -> _Writer:
    """A context-managed writer compressing into fileobj (left open)."""
    if algorithm == "gzip":
        return _Writer(_GzipWriter(fileobj))
    if algorithm == "zstd":
        return _Writer(_zstandard().ZstdCompressor(level=3).stream_writer(fileobj, closefd=False))
    if algorithm == "none":
        return _Writer(_PlainWriter(fileobj))
    raise LayerError(f"unknown compression {algorithm!r} (expected one of {', '.join(ALGORITHMS)})")


def media_type_for(algorithm: str) -> str:
    """The OCI layer media type for a compression algorithm."""
    if algorithm not in ALGORITHMS:
        raise LayerError(f"unknown compression {algorithm!r} (expected one of {', '.join(ALGORITHMS)})")
    return {"gzip": mediatypes.LAYER_GZIP, "zstd": mediatypes.LAYER_ZSTD, "none": mediatypes.LAYER}[algorithm]
