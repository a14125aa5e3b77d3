"""One working rootfs per stage as an overlay mount over the snapshot store,
and turning what a step changed into a layer (read from the upper).  When
overlayfs cannot be mounted, orca.copyrootfs is the fallback.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from umoci_py.cas import Layout
from umoci_py.layer import blob as layer_blob
from umoci_py.layer.idmap import MapOptions
from umoci_py.layer.overlay import PRIVATE_XATTR, generate_upper_layer, upper_changes
from umoci_py.unpriv import remove_tree

from orca import userns
from orca.layerjobs import LayerJobs
from orca.snapstore import Lease, SnapshotStore, chain_ids, next_chain_id

TYPE_CHECKING = False  # typing's, without importing typing: ~2 ms of every orca-build start
if TYPE_CHECKING:
    from umoci_py.unpack import InflateLimit

# Extraction (umoci_py.layer.extract, .overlayunpack, umoci_py.unpack) is
# imported where a layer is extracted: a build whose snapshots exist, as a
# rebuild's, commits without it (~3 ms of its first step).

ROOTLESS = MapOptions(rootless=True, uid_map=[], gid_map=[])

# A layer smaller than this is stored before its commit returns: it is
# compressed at once, with no thread (umoci_py.layer.blob.LayerSink), and a
# placeholder would only add the jobs' thread and hand-overs, which the next
# step waits for.  A bigger one is still being compressed when the commit
# returns.
INLINE_LAYER = 1 << 20
# How many 1 MB chunks of its tar may wait for the compressor: a producer
# that gets that far ahead blocks, bounding the memory held to 32 MB.
LATER_BACKLOG = 32


def write_layer(store: Layout, write_tar) -> tuple[dict, str]:
    """A gzip layer blob in store of the tar write_tar(file) writes, compressed
    and hashed as it is written: (descriptor, diff_id)."""
    with layer_blob.layer_writer(store, "gzip") as sink:
        write_tar(sink)
    layer = sink.stored()
    return layer.descriptor, layer.diff_id


class OverlayRootfs:
    """A stage's rootfs as an overlay mount: the chain's snapshots from the
    store as lowers (each layer extracted once, ever) and a fresh upper that
    a commit turns into the next snapshot.  Same interface as copyrootfs.Snapshot."""

    def __init__(self, workdir: Path, blobs: Layout, store: SnapshotStore, lease: Lease,
                 inflate: InflateLimit | None = None, jobs: LayerJobs | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.rootfs = self.workdir / "merged"
        self.rootfs.mkdir(exist_ok=True)
        self.blobs, self.store, self.lease = blobs, store, lease
        self.inflate = inflate  # None: umoci_py.unpack's default bound, once a layer is extracted
        self.jobs = jobs  # None: a commit compresses its layer before it returns
        self.chain: list[str] = []           # snapshot ids, bottom first
        self.upper: Path | None = None       # mounted with an upper when not None

    def _lowers(self, chain: list[str]) -> list[str]:
        return [str(self.store.diff(sid)) for sid in reversed(chain)] + [str(self.store.empty)]

    def _fresh_upper(self, top: str | None) -> tuple[Path, Path]:
        """An upper and a workdir; the upper's root carries the merged root's
        metadata (overlay shows the upper's root as the tree's root)."""
        base = Path(tempfile.mkdtemp(dir=self.workdir, prefix="step-"))
        upper, work = base / "upper", base / "work"
        upper.mkdir()
        work.mkdir()
        if top is not None:
            copy_dir_metadata(self.store.diff(top), upper)
        return upper, work

    def _unmount(self) -> None:
        if self.upper is not None:
            # lazily: a failed step's leftovers must not keep the build from ending
            userns.umount(str(self.rootfs), lazy=True)
            remove_tree(self.upper.parent)
            self.upper = None

    def materialize(self, layers: list[dict], diff_ids: list[str] | None = None) -> Path:
        if diff_ids is None:  # a config without them: the blobs name the layers as well
            diff_ids = [d["digest"] for d in layers]
        ids = chain_ids(diff_ids)
        if self.upper is not None and ids == self.chain:
            return self.rootfs
        self._unmount()
        missing = set(self.store.use(ids, self.lease))
        for i, sid in enumerate(ids):
            if sid in missing:
                with self.store.making(sid):  # stages of one build on one base extract it once
                    if not self.store.has(sid):
                        self._extract(ids, i, layers[i], diff_ids[i])
        self.chain = ids
        self.upper, work = self._fresh_upper(ids[-1] if ids else None)
        userns.mount_overlay(self._lowers(ids), str(self.upper), str(work), str(self.rootfs))
        return self.rootfs

    def _extract(self, ids: list[str], i: int, desc: dict, diff_id: str) -> None:
        """Snapshot ids[i]: the layer extracted through an overlay on its
        parents (a base layer, with nothing below, straight into its upper)."""
        from umoci_py.layer.extract import extract_layer
        from umoci_py.unpack import InflateLimit, open_layer

        inflate = self.inflate or InflateLimit()
        parent = ids[i - 1] if i else None
        upper, work = self._fresh_upper(parent)
        if parent is None:
            add_base_snapshot(self.store, ids[i], self.blobs, desc, diff_id, upper, self.workdir, self.lease,
                              inflate)
            remove_tree(upper.parent)
            return
        lowers = self._lowers(ids[:i])
        target = upper.parent / "merged"
        target.mkdir()
        userns.mount_overlay(lowers, str(upper), str(work), str(target))
        try:
            with open_layer(self.blobs, desc, inflate) as stream:
                extract_layer(stream, target, ROOTLESS)
                stream.finish()
        finally:
            userns.umount(str(target))
        changes = upper_changes(upper, self.store.manifest(parent), lowers[:-1])
        self.store.add(ids[i], parent, diff_id, upper, changes, self.workdir, self.lease)
        remove_tree(upper.parent)

    def commit(self, source_date_epoch: int | None, root: bool = True) -> tuple[dict, str] | None:
        """The step's changes, read from the upper: as copyrootfs.Snapshot.commit,
        but with jobs, a layer of INLINE_LAYER or more is compressed on their
        thread and its descriptor is a placeholder until it is stored."""
        upper = self.upper
        userns.umount(str(self.rootfs))
        self.upper = None
        try:
            top = self.chain[-1] if self.chain else None
            changes = upper_changes(upper, self.store.manifest(top), self._lowers(self.chain)[:-1])
            deltas = changes.deltas
            if not root:
                deltas = [d for d in deltas if d.path != "."]
            if not deltas:
                return None
            # with jobs, a big layer is still being compressed when the commit
            # returns: the next step needs only the diff ID
            later = self.jobs is not None and changes.data_size >= INLINE_LAYER
            with layer_blob.layer_writer(self.blobs, "gzip", LATER_BACKLOG if later else layer_blob.BACKLOG) as sink:
                generate_upper_layer(upper, deltas, ROOTLESS, sink, source_date_epoch)
            diff_id = sink.diff_id
            if later:
                desc = self.jobs.submit(diff_id, lambda: sink.stored().descriptor)
            else:
                desc = sink.stored().descriptor
            sid = next_chain_id(top, diff_id)
            self.store.add(sid, top, diff_id, upper, changes, self.workdir, self.lease)
            self.chain = self.chain + [sid]
            return desc, diff_id
        finally:
            remove_tree(upper.parent)

    def close(self) -> None:
        try:
            self._unmount()
        finally:
            remove_tree(self.workdir)


def add_base_snapshot(store: SnapshotStore, sid: str, blobs: Layout, desc: dict, diff_id: str, upper: Path,
                      workdir: Path, lease: Lease, inflate: InflateLimit) -> None:
    """Snapshot sid of a layer with nothing below: the layer unpacked
    straight into the empty directory upper, which moves into the store."""
    from umoci_py.layer.overlayunpack import unpack_layer_as_upper
    from umoci_py.unpack import open_layer

    with open_layer(blobs, desc, inflate) as stream:
        unpack_layer_as_upper(stream, upper, ROOTLESS, bottom=True)  # overlay's own xattrs never reach it
        stream.finish()
    store.add(sid, None, diff_id, upper, upper_changes(upper, {}, []), workdir, lease)


def copy_dir_metadata(src: Path, dst: Path) -> None:
    """dst gets src's mode, times and xattrs (overlay's own left out)."""
    st = os.lstat(src)
    for name in os.listxattr(src, follow_symlinks=False):
        if not name.startswith(PRIVATE_XATTR):
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def overlay_unusable(store: SnapshotStore, workroot: Path) -> str | None:
    """Why working rootfs cannot be overlay mounts here, or None if they can.
    ORCA_SNAPSHOTTER=copy forces the fallback."""
    if os.environ.get("ORCA_SNAPSHOTTER", "auto") == "copy":
        return "ORCA_SNAPSHOTTER=copy"
    if not userns.active():
        return "not in a user namespace of its own"
    probe = Path(tempfile.mkdtemp(dir=workroot, prefix="probe-"))
    try:
        for d in ("upper", "work", "merged"):
            (probe / d).mkdir()
        try:
            userns.mount_overlay([str(store.empty)], str(probe / "upper"), str(probe / "work"),
                                 str(probe / "merged"))
        except OSError as err:
            return f"cannot mount overlayfs: {err.strerror}"
        try:
            os.mkdir(probe / "merged" / "d")
            os.rmdir(probe / "merged" / "d")
        finally:
            userns.umount(str(probe / "merged"))
        return None
    finally:
        remove_tree(probe)
