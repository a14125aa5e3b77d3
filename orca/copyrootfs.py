"""The fallback's working rootfs, where overlayfs cannot be mounted: one
tree per stage, and what a step changed turned into a layer by a stat-keyed
walk of it.

CopyRootfs makes the tree from the snapshot store the overlay path uses: the
chain's snapshots copied bottom-up (treecopy.apply_upper, file data by
reflink where the filesystem has it), each layer extracted into the store
once, ever, and each committed step added to it.  Snapshot makes it from the
layer blobs, for a store that cannot hold whiteouts and for trees that are
not an image's (a directory context).

The rootfs remembers which layers it holds, so a step never re-materializes
its parent: a stage moves forward by adding only the layers it lacks (after
cache hits) and by diffing after each step it runs.  The diff walks the
rootfs with a stat-based DigestCache, so unchanged files are not re-read.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import threading
from pathlib import Path

from umoci_py import mtree
from umoci_py.cas import Layout
from umoci_py.layer.extract import extract_layer
from umoci_py.layer.generate import generate_layer
from umoci_py.layer.overlay import layer_changes, upper_changes, with_parents
from umoci_py.unpack import InflateLimit, open_layer
from umoci_py.unpriv import remove_tree

from orca.snapshot import ROOTLESS, add_base_snapshot, write_layer
from orca.snapstore import Lease, SnapshotStore, chain_ids, next_chain_id
from orca.treecopy import Origins, apply_upper, upper_from_deltas


def _without_link_counts(deltas: list[mtree.Delta], old: mtree.Manifest, new: mtree.Manifest) -> list[mtree.Delta]:
    """deltas without the files whose link count is all that changed (another
    of their names was removed), unless a name of theirs is new or changed
    otherwise.  The overlay path never sees them (the kept names stay in the
    lower, untouched), and its layers and these must be the same bytes.  The
    walk's keywords hold the content digest, so equal keywords are equal files."""
    olds, news = old.by_path(), new.by_path()

    def count_only(d: mtree.Delta) -> bool:
        before, after = olds.get(d.path), news.get(d.path)
        if d.kind != "modified" or before is None or after is None:
            return False
        return ({k: v for k, v in before.keywords.items() if k != "nlink"}
                == {k: v for k, v in after.keywords.items() if k != "nlink"})

    groups: dict[object, list[mtree.Delta]] = {}
    for d in deltas:
        groups.setdefault(new.inodes.get(d.path, d.path), []).append(d)
    dropped = {d.path for group in groups.values() if all(count_only(d) for d in group) for d in group}
    return [d for d in deltas if d.path not in dropped or d.kind != "modified"]


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
        deltas = with_parents(mtree.simplify_filter(
            _without_link_counts(mtree.layer_deltas(self.baseline, current), self.baseline, current)))
        if not root:
            deltas = [d for d in deltas if d.path != "."]
        if not deltas:
            return None
        desc, diff_id = write_layer(self.store,
                                    lambda tar: generate_layer(self.rootfs, deltas, ROOTLESS, tar,
                                                               source_date_epoch=source_date_epoch))
        self._committed(diff_id, deltas, current)
        self.baseline = current
        self.layers.append(desc["digest"])
        return desc, diff_id

    def _committed(self, diff_id: str, deltas: list[mtree.Delta], current: mtree.Manifest) -> None:
        """A layer of these deltas was written (the baseline is still the tree before it)."""

    def close(self) -> None:
        remove_tree(self.workdir)


class StoreDigests:
    """sha256 of the snapshot store's files by the stat of each (as
    mtree.DigestCache: inode, size, mtime, ctime), kept in the cache dir
    between builds: a rootfs copied from the store is diffed without reading
    what it copied.  Keys are "<snapshot id>/<path in its upper>"."""

    FILE = "snapshot-digests.json"

    def __init__(self, snapshots: SnapshotStore):
        self.snapshots = snapshots
        self._cache: mtree.DigestCache | None = None
        self._lock = threading.Lock()
        self.changed = False

    @property
    def cache(self) -> mtree.DigestCache:
        with self._lock:
            if self._cache is None:
                self._cache = mtree.DigestCache.load(self.snapshots.cache_root / self.FILE)
            return self._cache

    def lookup(self, key: str, st: os.stat_result) -> str | None:
        return self.cache.lookup(key, st)

    def put(self, key: str, st: os.stat_result, digest: str) -> None:
        self.cache.put(key, st, digest)
        self.changed = True

    def save(self, workdir: Path) -> None:
        """Those of snapshots still there, written whole and renamed in."""
        if not self.changed:
            return
        cache = self.cache
        live = {sid for sid in {k.split("/", 1)[0] for k in cache.files} if self.snapshots.has(sid)}
        cache.files = {k: v for k, v in cache.files.items() if k.split("/", 1)[0] in live}
        try:
            cache.save(workdir / self.FILE)
            os.replace(workdir / self.FILE, self.snapshots.cache_root / self.FILE)
        except OSError:
            pass  # a cache of digests: the next build reads the files again


class CopyRootfs(Snapshot):
    """A stage's rootfs copied from the snapshot store (see the module doc).
    Same interface as Snapshot and snapshot.OverlayRootfs."""

    def __init__(self, workdir: Path, blobs: Layout, snapshots: SnapshotStore, lease: Lease,
                 digests: StoreDigests, inflate: InflateLimit = InflateLimit()):
        super().__init__(workdir, blobs, inflate)
        self.snapshots, self.lease, self.digests = snapshots, lease, digests
        self.chain: list[str] | None = None  # snapshot ids the rootfs holds, bottom first
        self.origins = Origins()
        self._unknown: dict[str, tuple[str, os.stat_result]] = {}  # rel -> store key, stat: digest unknown

    def _copied_from(self, sid: str):
        """on_file for apply_upper: a copied file's digest is its source's, if known."""
        def seed(src_rel: str, dst_rel: str, st: os.stat_result, fd: int) -> None:
            key = f"{sid}/{src_rel}"
            digest = self.digests.lookup(key, st)
            if digest is None:
                self._unknown[dst_rel] = (key, st)
            else:
                self.cache.put(dst_rel, os.fstat(fd), digest)
        return seed

    def _copied_to(self, sid: str):
        """on_file for upper_from_deltas: the upper's file has the rootfs file's digest."""
        def seed(src_rel: str, dst_rel: str, st: os.stat_result, fd: int) -> None:
            digest = self.cache.lookup(src_rel, st)
            if digest is not None:
                self.digests.put(f"{sid}/{dst_rel}", os.fstat(fd), digest)
        return seed

    def _walk(self):
        walked = super()._walk()
        for rel, (key, st) in self._unknown.items():  # the walk hashed them: the store's copies too
            entry = self.cache.files.get(rel)
            if entry is not None:
                self.digests.put(key, st, entry[4])
        self._unknown.clear()
        return walked

    def materialize(self, layers: list[dict], diff_ids: list[str] | None = None) -> Path:
        if diff_ids is None:  # a config without them: the blobs name the layers as well
            diff_ids = [d["digest"] for d in layers]
        ids = chain_ids(diff_ids)
        if self.chain is not None and ids[:len(self.chain)] == self.chain:
            start = len(self.chain)
        else:
            remove_tree(self.rootfs)
            self.rootfs.mkdir(parents=True)
            self.cache, self.origins, self.baseline = mtree.DigestCache(), Origins(), None
            start = 0
        missing = set(self.snapshots.use(ids, self.lease))
        for i in range(start, len(ids)):
            if ids[i] in missing:
                with self.snapshots.making(ids[i]):  # stages of one build on one base make it once
                    if not self.snapshots.has(ids[i]):
                        self._make(ids, i, layers[i], diff_ids[i])
                        continue
            apply_upper(self.snapshots.diff(ids[i]), self.rootfs, self.origins, self._copied_from(ids[i]))
            self.baseline = None
        if self.baseline is None:
            self.baseline = self._walk()
        self.chain = ids
        self.layers = [d["digest"] for d in layers]
        return self.rootfs

    def _make(self, ids: list[str], i: int, desc: dict, diff_id: str) -> None:
        """Snapshot ids[i] made from its layer blob, with the rootfs (at
        ids[:i]) brought to it.  A base layer is unpacked as an upper, as the
        overlay path does; a layer over others is extracted into the rootfs,
        which stands for the overlay mount the other path extracts through,
        and the upper is what the walk finds changed."""
        if i == 0:
            upper = Path(tempfile.mkdtemp(dir=self.workdir, prefix="layer-")) / "upper"
            upper.mkdir()
            add_base_snapshot(self.snapshots, ids[0], self.store, desc, diff_id, upper, self.workdir, self.lease,
                              self.inflate)
            remove_tree(upper.parent)
            apply_upper(self.snapshots.diff(ids[0]), self.rootfs, self.origins, self._copied_from(ids[0]))
            self.baseline = None
            return
        if self.baseline is None:
            self.baseline = self._walk()
        with open_layer(self.store, desc, self.inflate) as stream:
            extract_layer(stream, self.rootfs, ROOTLESS, cache=self.cache)
            stream.finish()
        current = self._walk()
        self._add(ids[:i + 1], diff_id, layer_changes(self.baseline, current))
        self.baseline = current

    def _add(self, ids: list[str], diff_id: str, deltas: list[mtree.Delta]) -> None:
        """The deltas over the rootfs's last baseline (at ids[:-1]), as
        snapshot ids[-1]: an upper, with what it changes in the tree's
        manifest found as the overlay path finds it."""
        sid, parent = ids[-1], (ids[-2] if len(ids) > 1 else None)
        upper = Path(tempfile.mkdtemp(dir=self.workdir, prefix="layer-")) / "upper"
        upper_from_deltas(self.rootfs, deltas, upper, self.origins, self._copied_to(sid))
        lowers = [str(self.snapshots.diff(s)) for s in reversed(ids[:-1])]
        changes = upper_changes(upper, self.snapshots.manifest(parent), lowers)
        self.snapshots.add(sid, parent, diff_id, upper, changes, self.workdir, self.lease)
        remove_tree(upper.parent)

    def _committed(self, diff_id: str, deltas: list[mtree.Delta], current: mtree.Manifest) -> None:
        """The layer becomes the next snapshot (unless made before, by this build or another)."""
        parent = self.chain[-1] if self.chain else None
        sid = next_chain_id(parent, diff_id)
        if self.snapshots.use([sid], self.lease):
            with self.snapshots.making(sid):
                if not self.snapshots.has(sid):
                    self._add(self.chain + [sid], diff_id, deltas)
        self.chain.append(sid)


def whiteouts_refused(workdir: Path) -> str | None:
    """Why the snapshot store (on workdir's filesystem) cannot hold overlay
    uppers, or None if it can: a whiteout is a 0:0 character device, which
    Linux before 5.8 and some filesystems refuse to an unprivileged user."""
    probe = Path(tempfile.mkdtemp(dir=workdir, prefix="probe-"))
    try:
        os.mknod(probe / "whiteout", stat.S_IFCHR, os.makedev(0, 0))
        return None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.EACCES, errno.EINVAL, errno.EOPNOTSUPP):
            raise
        return f"cannot make a whiteout (a 0:0 character device): {err.strerror}"
    finally:
        remove_tree(probe)
