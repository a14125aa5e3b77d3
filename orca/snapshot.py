"""One working rootfs per stage, and turning what a step changed into a layer.

The rootfs remembers which layers it holds, so a step never re-extracts its
parent: a stage moves forward by extracting only the layers it lacks (after
cache hits) and by diffing after each step it runs.  The diff walks the
rootfs with a stat-based DigestCache, so unchanged files are not re-read.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from umoci_py import compress, mtree
from umoci_py.cas import Layout
from umoci_py.errors import LayerError
from umoci_py.layer.extract import MapOptions, extract_layer
from umoci_py.layer.generate import generate_layer
from umoci_py.unpack import InflateLimit

from orca.copy import remove_tree

ROOTLESS = MapOptions(rootless=True, uid_map=[], gid_map=[])


def with_parents(deltas: list) -> list:
    """The deltas plus every directory above a changed path.  A directory
    changed within the clock tick of the previous diff keeps its mtime and
    would be seen as unchanged or not depending on timing; always carrying
    the parents (as containerd's differ does) makes the layer reproducible."""
    seen = {d.path for d in deltas}
    out = list(deltas)
    for d in deltas:
        path = d.path
        while path not in (".", ""):
            path = os.path.dirname(path) or "."
            if path in seen:
                break
            seen.add(path)
            out.append(mtree.Delta(path, "modified"))
    return out


class _Bounded:
    """A layer's uncompressed stream, refused past its InflateLimit bound (a decompression bomb)."""

    def __init__(self, stream, limit: int, what: str):
        self.stream, self.limit, self.what = stream, limit, what
        self.total = 0

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.total += len(data)
        if self.total > self.limit:
            raise LayerError(f"{self.what}: inflates to more than {self.limit} bytes: refused as a "
                             "decompression bomb")
        return data


class Snapshot:
    def __init__(self, workdir: Path, store: Layout, inflate: InflateLimit = InflateLimit()):
        self.workdir = Path(workdir)
        self.inflate = inflate
        self.rootfs = self.workdir / "rootfs"
        self.store = store
        self.layers: list[str] | None = None  # digests held; None: nothing extracted
        self.cache = mtree.DigestCache()
        self.baseline = None

    def materialize(self, layers: list[dict]) -> Path:
        """Bring the rootfs to exactly these layers, extracting as little as possible."""
        digests = [d["digest"] for d in layers]
        if self.layers is not None and digests[:len(self.layers)] == self.layers:
            todo = layers[len(self.layers):]
        else:
            remove_tree(self.rootfs)
            self.rootfs.mkdir(parents=True)
            self.cache = mtree.DigestCache()
            todo = layers
        for desc in todo:
            with self.store.open_blob(desc["digest"], desc["size"]) as blob:
                stream = _Bounded(compress.reader(blob, desc["mediaType"]), self.inflate.bound(desc["size"]),
                                  f"{self.store.path}: layer {desc['digest']}")
                extract_layer(stream, self.rootfs, ROOTLESS, cache=self.cache)
                while stream.read(1 << 20):
                    pass
        if todo or self.baseline is None:
            self.baseline = self._walk()
        self.layers = digests
        return self.rootfs

    def _walk(self):
        return mtree.walk(self.rootfs, mtree.KEYWORDS, True, cache=self.cache)

    def commit(self, source_date_epoch: int | None, root: bool = True) -> tuple[dict, str] | None:
        """The changes since the last materialize/commit as a gzip layer blob in
        the store: (descriptor, diff_id), or None when nothing changed.
        root=False leaves the root directory itself out of the layer."""
        current = self._walk()
        deltas = with_parents(mtree.simplify_filter(mtree.layer_deltas(self.baseline, current)))
        if not root:
            deltas = [d for d in deltas if d.path != "."]
        if not deltas:
            return None
        with tempfile.TemporaryFile(dir=self.workdir) as tar:
            generate_layer(self.rootfs, deltas, ROOTLESS, tar, source_date_epoch=source_date_epoch)
            tar.seek(0)
            diff = hashlib.sha256()
            with self.store.blob_writer() as blob:
                with compress.writer(blob, "gzip") as out:
                    while chunk := tar.read(1 << 20):
                        diff.update(chunk)
                        out.write(chunk)
        desc = {"mediaType": compress.media_type_for("gzip"), "digest": blob.digest, "size": blob.size}
        self.baseline = current
        self.layers.append(desc["digest"])
        return desc, "sha256:" + diff.hexdigest()

    def close(self) -> None:
        remove_tree(self.workdir)
