"""The copy fallback's working rootfs: one extracted tree per stage, and
turning what a step changed into a layer by a stat-keyed walk.

The rootfs remembers which layers it holds, so a step never re-extracts its
parent: a stage moves forward by extracting only the layers it lacks (after
cache hits) and by diffing after each step it runs.  The diff walks the
rootfs with a stat-based DigestCache, so unchanged files are not re-read.
"""

from __future__ import annotations

from pathlib import Path

from umoci_py import mtree
from umoci_py.cas import Layout
from umoci_py.layer.extract import extract_layer
from umoci_py.layer.generate import generate_layer
from umoci_py.layer.overlay import layer_changes
from umoci_py.unpack import InflateLimit, open_layer
from umoci_py.unpriv import remove_tree

from orca.snapshot import ROOTLESS, write_layer


class Snapshot:
    def __init__(self, workdir: Path, store: Layout, inflate: InflateLimit = InflateLimit()):
        self.workdir = Path(workdir)
        self.inflate = inflate
        self.rootfs = self.workdir / "rootfs"
        self.store = store
        self.layers: list[str] | None = None  # digests held; None: nothing extracted
        self.cache = mtree.DigestCache()
        self.baseline = None

    def materialize(self, layers: list[dict], diff_ids: list[str] | None = None) -> Path:
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
            with open_layer(self.store, desc, self.inflate) as stream:
                extract_layer(stream, self.rootfs, ROOTLESS, cache=self.cache)
                stream.finish()
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
        deltas = layer_changes(self.baseline, current)
        if not root:
            deltas = [d for d in deltas if d.path != "."]
        if not deltas:
            return None
        desc, diff_id = write_layer(self.store,
                                    lambda tar: generate_layer(self.rootfs, deltas, ROOTLESS, tar,
                                                               source_date_epoch=source_date_epoch))
        self.baseline = current
        self.layers.append(desc["digest"])
        return desc, diff_id

    def close(self) -> None:
        remove_tree(self.workdir)
