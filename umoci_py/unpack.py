"""Unpack an image into a rootfs, or into a full runtime bundle.

Each layer's uncompressed bytes are hashed while they are extracted and must
match config.rootfs.diff_ids; on any error the rootfs (and every bundle file
this call created) is removed so nothing half-extracted stays behind.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from umoci_py import bundle as bundle_files
from umoci_py import compress, mediatypes, mtree, refs
from umoci_py.cas import Layout
from umoci_py.errors import BundleError, LayerError
from umoci_py.layer.extract import extract_layer
from umoci_py.layer.idmap import MapOptions
from umoci_py.unpriv import remove_tree

_CHUNK = 1 << 20


@dataclass(frozen=True)
class InflateLimit:
    """A layer may inflate to at most max(floor, ratio x its compressed size)
    bytes; beyond that it is refused as a decompression bomb before it fills
    the disk.  Text and binaries compress 2-10x; a layer of zeros reaches
    ~1000x with gzip and far more with zstd, hence the floor."""

    ratio: int = 100
    floor: int = 1 << 30
    hint: str = ""  # how the user may raise the bound, added to the refusal

    def bound(self, compressed_size: int) -> int:
        return max(self.floor, self.ratio * compressed_size)

    def refusal(self, compressed_size: int) -> LayerError:
        return LayerError(f"inflates to more than {self.bound(compressed_size)} bytes: refused as a"
                          f" decompression bomb{f' ({self.hint})' if self.hint else ''}")


class _LayerStream:
    """A layer's uncompressed bytes, produced by a background thread.

    Inflating the blob, checking its digest and hashing the diff_id all
    release the GIL, so on a second core they overlap the extraction, which
    is mostly file-creation syscalls.  The queue bounds the memory held.
    """

    _DEPTH = 8

    def __init__(self, blob: BinaryIO, media_type: str, size: int, inflate: InflateLimit):
        self._queue: queue.Queue = queue.Queue(self._DEPTH)
        self._stop = threading.Event()
        self._chunk = b""
        self._pos = 0
        self._eof = False
        self._diff_id: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._produce, args=(blob, media_type, size, inflate),
                                        daemon=True)
        self._thread.start()

    def _produce(self, blob: BinaryIO, media_type: str, size: int, inflate: InflateLimit) -> None:
        try:
            stream = compress.reader(blob, media_type)
            sha = hashlib.sha256()
            inflated, limit = 0, inflate.bound(size)
            while not self._stop.is_set():
                data = stream.read(_CHUNK)
                if not data:
                    break
                sha.update(data)
                inflated += len(data)
                if inflated > limit:
                    raise inflate.refusal(size)
                self._put(data)
            if self._stop.is_set():
                return  # the reader gave up: no need to verify the rest
            while blob.read(_CHUNK):  # the verified reader checks the digest at EOF
                pass
            self._diff_id = "sha256:" + sha.hexdigest()
        except BaseException as err:  # re-raised in the reading thread
            self._error = err
        finally:
            self._put(b"")

    def _put(self, data: bytes) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(data, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, n: int = -1) -> bytes:
        if self._pos == len(self._chunk):
            if self._eof:
                return b""
            self._chunk, self._pos = self._queue.get(), 0
            if not self._chunk:
                self._eof = True
                if self._error is not None:
                    raise self._error
                return b""
        end = len(self._chunk) if n is None or n < 0 else min(len(self._chunk), self._pos + n)
        data = self._chunk[self._pos:end] if self._pos or end < len(self._chunk) else self._chunk
        self._pos = end
        return data

    def finish(self) -> str:
        """Read to the end (trailing bytes after the tar end-of-archive count
        towards the diff_id) and return the diff_id."""
        while self.read(_CHUNK):
            pass
        self._thread.join()
        return self._diff_id

    def __enter__(self) -> "_LayerStream":
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _load_image(layout: Layout, tag: str, platform) -> tuple[list[dict], dict, dict]:
    path = refs.resolve(layout, tag, platform)
    target = path[-1]
    if target.get("mediaType") not in mediatypes.MANIFEST_TYPES:
        raise LayerError(f"{layout.path}: {tag} resolves to {target.get('mediaType')!r}, not an image manifest")
    manifest = layout.read_json(target, "manifest")
    if manifest["config"].get("mediaType") not in mediatypes.CONFIG_TYPES:
        raise LayerError(f"{layout.path}: manifest {target['digest']}: config media type"
                         f" {manifest['config'].get('mediaType')!r} is not an image config")
    config = layout.read_json(manifest["config"], "config")
    rootfs = config.get("rootfs") or {}
    if rootfs.get("type") != "layers":
        raise LayerError(f"{layout.path}: config {manifest['config']['digest']}: rootfs.type"
                         f" {rootfs.get('type')!r} is not 'layers'")
    if len(rootfs.get("diff_ids") or []) != len(manifest.get("layers") or []):
        raise LayerError(f"{layout.path}: config {manifest['config']['digest']} has"
                         f" {len(rootfs.get('diff_ids') or [])} diff_ids for"
                         f" {len(manifest.get('layers') or [])} layers")
    return path, manifest, config


@contextmanager
def open_layer(layout: Layout, desc: dict, inflate: InflateLimit) -> Iterator[_LayerStream]:
    """The uncompressed stream of the layer blob desc, refused past inflate's
    bound; its finish() reads to the end (so the blob's digest is checked)
    and returns the diff ID.  A LayerError while it is open names the layer."""
    media_type = desc.get("mediaType", "")
    if not mediatypes.is_layer(media_type):
        raise LayerError(f"{layout.path}: blob {desc['digest']} has media type {media_type!r}, not a layer")
    with layout.open_blob(desc["digest"], desc["size"]) as blob, \
            _LayerStream(blob, media_type, desc["size"], inflate) as stream:
        try:
            yield stream
        except LayerError as err:
            # A corrupt blob usually shows up as a bad tar before its digest is checked.
            raise LayerError(f"{layout.path}: layer {desc['digest']}: {err}") from None


def _extract_layers(layout: Layout, manifest: dict, config: dict, rootfs: Path,
                    opts: MapOptions, keep_dirlinks: bool, cache, inflate: InflateLimit) -> None:
    for layer, diff_id in zip(manifest.get("layers") or [], config["rootfs"]["diff_ids"]):
        with open_layer(layout, layer, inflate) as stream:
            extract_layer(stream, rootfs, opts, keep_dirlinks=keep_dirlinks, cache=cache)
            got = stream.finish()
        if got != diff_id:
            raise LayerError(f"{layout.path}: layer {layer['digest']}: uncompressed digest"
                             f" {got} does not match diff_id {diff_id}")


def _unpack_into(layout: Layout, tag: str, rootfs: Path, opts: MapOptions,
                 keep_dirlinks: bool, platform, cache, inflate: InflateLimit) -> tuple[list[dict], dict, dict]:
    path, manifest, config = _load_image(layout, tag, platform)
    if os.path.lexists(rootfs) and (not rootfs.is_dir() or any(rootfs.iterdir())):
        raise BundleError(f"{rootfs}: already exists and is not an empty directory")
    rootfs.mkdir(mode=0o755, exist_ok=True)
    try:
        os.utime(rootfs, (0, 0))
        _extract_layers(layout, manifest, config, rootfs, opts, keep_dirlinks, cache, inflate)
    except BaseException:
        remove_tree(rootfs)
        raise
    return path, manifest, config


def unpack_rootfs(layout: Layout, tag: str, rootfs: Path, opts: MapOptions,
                  keep_dirlinks: bool = False, platform=None, inflate: InflateLimit = InflateLimit()) -> list[dict]:
    """`raw unpack`: only the rootfs; returns the descriptor path unpacked."""
    path, _, _ = _unpack_into(layout, tag, Path(rootfs), opts, keep_dirlinks, platform, None, inflate)
    return path


def unpack_manifest(layout: Layout, desc: dict, rootfs: Path, opts: MapOptions,
                    inflate: InflateLimit = InflateLimit()) -> None:
    """The rootfs of the image manifest `desc` (no tag needed) into the empty directory `rootfs`."""
    if desc.get("mediaType") not in mediatypes.MANIFEST_TYPES:
        raise LayerError(f"{layout.path}: {desc.get('digest')} is {desc.get('mediaType')!r}, not an image manifest")
    manifest = layout.read_json(desc, "manifest")
    config = layout.read_json(manifest["config"], "config")
    rootfs = Path(rootfs)
    rootfs.mkdir(mode=0o755, exist_ok=True)
    _extract_layers(layout, manifest, config, rootfs, opts, False, None, inflate)


def digest_cache_path(bundle: Path, manifest_digest: str) -> Path:
    """Our own extra state beside umoci's mtree: hashes keyed by inode and times."""
    return bundle / (bundle_files.mtree_name(manifest_digest)[: -len(".mtree")] + ".digests")


def write_bundle_state(bundle: Path, rootfs: Path, manifest_digest: str,
                       opts: MapOptions, cache, manifest: mtree.Manifest | None = None) -> None:
    """Write the mtree (walking rootfs unless given) and our digest cache."""
    if manifest is None:
        manifest = mtree.walk(rootfs, mtree.KEYWORDS, opts.rootless, cache=cache)
    target = bundle / bundle_files.mtree_name(manifest_digest)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(manifest.dump())
    os.replace(tmp, target)
    cache.save(digest_cache_path(bundle, manifest_digest))


def unpack_bundle(layout: Layout, tag: str, bundle: Path, opts: MapOptions,
                  keep_dirlinks: bool = False, platform=None, inflate: InflateLimit = InflateLimit()) -> list[dict]:
    """`unpack`: rootfs, config.json, the mtree and umoci.json in `bundle`."""
    bundle = Path(bundle)
    created_dir = not os.path.lexists(bundle)
    bundle.mkdir(mode=0o700, parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        bundle_files.check_bundle_free(bundle)
        os.chmod(bundle, 0o700)
        cache = mtree.DigestCache()
        rootfs = bundle / bundle_files.ROOTFS
        path, manifest, config = _unpack_into(layout, tag, rootfs, opts, keep_dirlinks,
                                              platform, cache, inflate)
        digest = path[-1]["digest"]
        written += [bundle / bundle_files.mtree_name(digest), digest_cache_path(bundle, digest),
                    bundle / bundle_files.CONFIG_JSON, bundle / bundle_files.UMOCI_JSON]
        write_bundle_state(bundle, rootfs, digest, opts, cache)
        spec = bundle_files.runtime_config(config, rootfs, opts)
        bundle_files.write_runtime_config(bundle / bundle_files.CONFIG_JSON, spec)
        bundle_files.write_umoci_json(bundle, path, opts)
    except BaseException:
        if created_dir:
            remove_tree(bundle)
        elif written:
            remove_tree(bundle / bundle_files.ROOTFS)
            for p in written:
                if os.path.lexists(p):
                    p.unlink()
        raise
    return path
