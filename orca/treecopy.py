"""Copying trees of a rootfs in and out of overlay uppers, for the fallback
that cannot mount overlayfs (orca.copyrootfs).

apply_upper does what an overlay mount shows, by copy: an upper's entries
replace the tree's, a whiteout device removes the path, an opaque directory
drops what the tree held below it, and a directory in the upper gives the
tree's directory its metadata.  upper_from_deltas goes the other way: the
deltas a walk found, as an upper over the tree before them.

Everything of an entry is kept but overlay's own xattrs: modes, times, the
owner xattr, other xattrs, and hard links within one copy.  The owners of
symlinks and FIFOs live in their directory's side record, keyed by inode
number, so that record is rewritten for the inodes of the copy.  File data
are shared (reflink) where the filesystem can, else copied in the kernel.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from dataclasses import dataclass, field
from typing import Callable

from umoci_py import rootless, unpriv
from umoci_py.layer.overlay import OPAQUE_XATTR, PRIVATE_XATTR, is_whiteout
from umoci_py.mtree import Delta

from orca.filedata import copy_data


@dataclass
class Origins:
    """For each non-directory of a tree: the inode of the entry it was copied
    from, so that side records naming that inode can be carried over."""
    inodes: dict[str, int] = field(default_factory=dict)  # rel -> source st_ino


def _xattrs(path: str) -> dict[str, bytes]:
    """path's xattrs but overlay's own (none on a symlink: user.* is refused there)."""
    out = {}
    for name in os.listxattr(path, follow_symlinks=False):
        if not name.startswith(PRIVATE_XATTR):
            out[name] = os.getxattr(path, name, follow_symlinks=False)
    return out


def _set_xattrs(target: str | int, values: dict[str, bytes], old: dict[str, bytes] | None = None) -> None:
    """target gets exactly these xattrs (old: what it had)."""
    follow = {} if isinstance(target, int) else {"follow_symlinks": False}
    for name in old or ():
        if name not in values:
            os.removexattr(target, name, **follow)
    for name, value in values.items():
        if name != rootless.OWNERS_XATTR:  # rewritten for the copy's inodes once the directory is filled
            os.setxattr(target, name, value, **follow)


# Told of each regular file copied, once it is complete: (source rel, target
# rel, the source's lstat, the target's fd).  For digests kept by stat.
OnFile = Callable[[str, str, os.stat_result, int], None]


class _Copier:
    """Entries from a source tree into a target tree (both ours); the target's
    directories get their final modes and times when finish() runs."""

    def __init__(self, src_root: str, dst_root: str, origins: Origins, on_file: OnFile | None = None):
        self.on_file = on_file
        self.src = unpriv.Access(src_root)
        self.dst = unpriv.Access(dst_root)
        self.origins = origins
        self.links: dict[tuple[int, int], str] = {}  # source (dev, ino) -> its first copy
        self.sides: dict[str, dict[bytes, tuple[int, int, int]]] = {}  # dst dir -> source records
        # dst rel -> st_ino, of the entries a side record can name (not regular files)
        self.made: dict[str, int] = {}
        self.dst_dev = os.lstat(dst_root).st_dev

    def entry(self, src_rel: str, dst_rel: str, st: os.stat_result) -> None:
        """A copy of the non-directory at src_rel as dst_rel (which is free)."""
        src, dst = self.src.host(src_rel), self.dst.host(dst_rel)
        if st.st_nlink > 1:
            first = self.links.get((st.st_dev, st.st_ino))
            if first is not None:
                self.link(first, dst_rel, st.st_ino)
                return
            self.links[(st.st_dev, st.st_ino)] = dst_rel
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISREG(st.st_mode):
            self.file(src_rel, dst_rel, st)
            return  # a regular file's owner is in its own xattr, never in a side record: no origin to keep
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), dst)
            self.made[dst_rel] = os.lstat(dst).st_ino
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        elif stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) \
                or stat.S_ISSOCK(st.st_mode):
            os.mknod(dst, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev)
            self.made[dst_rel] = os.lstat(dst).st_ino
            _set_xattrs(dst, _xattrs(src))
            os.chmod(dst, mode)
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
        else:
            raise OSError(errno.EINVAL, f"{src}: unsupported file type")
        self.origins.inodes[dst_rel] = st.st_ino

    def file(self, src_rel: str, dst_rel: str, st: os.stat_result) -> None:
        src, dst = self.src.host(src_rel), self.dst.host(dst_rel)
        fin = self.src.call(src_rel, lambda: os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), bits=0o400)
        try:
            fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                if st.st_size:
                    copy_data(fin, fout, st.st_size, (st.st_dev, self.dst_dev))
                _set_xattrs(fout, _xattrs(src))
                os.fchmod(fout, self.src.original_mode(src_rel, st) & 0o7777)
                os.utime(fout, ns=(st.st_atime_ns, st.st_mtime_ns))
                if self.on_file is not None:
                    self.on_file(src_rel, dst_rel, st, fout)
            finally:
                os.close(fout)
        finally:
            os.close(fin)

    def link(self, first: str, dst_rel: str, ino: int) -> None:
        """dst_rel as another name of the copy first (of source inode ino)."""
        os.link(self.dst.host(first), self.dst.host(dst_rel), follow_symlinks=False)
        if first in self.made:
            self.origins.inodes[dst_rel], self.made[dst_rel] = ino, self.made[first]

    def directory(self, src_rel: str, dst_rel: str, st: os.stat_result, existing: bool) -> None:
        """dst_rel (made if not existing) gets src_rel's metadata; its mode
        and times wait for finish(), it must stay writable meanwhile."""
        src, dst = self.src.host(src_rel), self.dst.host(dst_rel)
        if existing:
            old = _xattrs(dst)
            if os.lstat(dst).st_mode & 0o700 != 0o700:
                os.chmod(dst, 0o700)
        else:
            os.mkdir(dst, 0o700)
            old = {}
        values = _xattrs(src)
        _set_xattrs(dst, values, old)
        self.sides[dst_rel] = rootless.decode_side(values.get(rootless.OWNERS_XATTR))
        self.dst.set_final(dst_rel, self.src.original_mode(src_rel, st) & 0o7777, st.st_atime_ns, st.st_mtime_ns)

    def remove(self, dst_rel: str) -> None:
        unpriv.rmtree(self.dst, dst_rel)
        below = dst_rel + "/"
        for rel in [r for r in self.origins.inodes if r == dst_rel or r.startswith(below)]:
            del self.origins.inodes[rel]

    def listdir(self, src_rel: str) -> list[str]:
        return unpriv.listdir(self.src, src_rel)

    def finish(self, lower=None) -> None:
        """Side records for the copy's inodes, then modes and times, deepest
        first.  A record is kept for an entry copied from the inode it
        names; lower(rel, ino): the inode to record for an entry the target
        does not hold (None: drop it)."""
        try:
            for dst_rel, records in self.sides.items():
                out = {}
                for name, (uid, gid, ino) in records.items():
                    rel = posixpath.join(dst_rel, os.fsdecode(name)) if dst_rel else os.fsdecode(name)
                    try:
                        new = os.lstat(self.dst.host(rel)).st_ino if self.origins.inodes.get(rel) == ino else None
                    except FileNotFoundError:
                        new = None
                    if new is None and lower is not None and not os.path.lexists(self.dst.host(rel)):
                        new = lower(rel, ino)
                    if new is not None:
                        out[name] = (uid, gid, new)
                rootless.put_xattr(self.dst.host(dst_rel), rootless.OWNERS_XATTR, rootless.encode_side(out))
        finally:
            self.src.restore()
            self.dst.restore()


def apply_upper(upper: str | os.PathLike, rootfs: str | os.PathLike, origins: Origins,
                on_file: OnFile | None = None) -> None:
    """rootfs becomes what an overlay of upper over rootfs shows."""
    copier = _Copier(os.fspath(upper), os.fspath(rootfs), origins, on_file)
    try:
        _apply_dir(copier, "", os.lstat(upper), existing=True)
    finally:
        copier.finish()


def _apply_dir(copier: _Copier, rel: str, st: os.stat_result, existing: bool) -> None:
    copier.directory(rel, rel, st, existing)
    if existing and OPAQUE_XATTR in os.listxattr(copier.src.host(rel), follow_symlinks=False):
        for name in unpriv.listdir(copier.dst, rel):  # the lower entries it hides
            copier.remove(f"{rel}/{name}" if rel else name)
    for name in copier.listdir(rel):
        child = f"{rel}/{name}" if rel else name
        cst = os.lstat(copier.src.host(child))
        old = None
        if existing:  # a fresh directory holds nothing yet
            try:
                old = os.lstat(copier.dst.host(child))
            except FileNotFoundError:
                pass
        if stat.S_ISDIR(cst.st_mode) and old is not None and stat.S_ISDIR(old.st_mode):
            _apply_dir(copier, child, cst, existing=True)
            continue
        if old is not None:
            copier.remove(child)
        if is_whiteout(cst):
            continue
        if stat.S_ISDIR(cst.st_mode):
            _apply_dir(copier, child, cst, existing=False)
        else:
            copier.entry(child, child, cst)


def upper_from_deltas(rootfs: str | os.PathLike, deltas: list[Delta], upper: str | os.PathLike,
                      origins: Origins, on_file: OnFile | None = None) -> None:
    """A fresh upper holding deltas (as layer_changes gives them: every
    changed path with its parent directories) read from rootfs, removed
    paths as whiteout devices.  origins (of rootfs) tells the inodes that
    side records of the entries left below must name, and learns that the
    copied entries now come from the upper."""
    upper = os.fspath(upper)
    os.mkdir(upper, 0o700)
    copier = _Copier(os.fspath(rootfs), upper, Origins(), on_file)
    present = {d.path for d in deltas if d.kind != "missing"}

    def lower(rel: str, ino: int) -> int | None:
        try:
            same = os.lstat(copier.src.host(rel)).st_ino == ino
        except FileNotFoundError:
            return None
        return origins.inodes.get(rel) if same else None

    try:
        if "." in present:  # the upper's root is the tree's (an overlay shows the topmost root)
            copier.directory("", "", os.lstat(rootfs), existing=True)
        # a directory before its entries, a path's whiteout before its new entry
        for d in sorted(deltas, key=lambda d: (d.path.encode(), d.kind != "missing")):
            if d.path == ".":
                continue
            rel = d.path
            if d.kind == "missing":
                if d.path not in present:
                    os.mknod(copier.dst.host(rel), stat.S_IFCHR, os.makedev(0, 0))
                continue
            st = copier.src.call(rel, lambda: os.lstat(copier.src.host(rel)))
            if stat.S_ISDIR(st.st_mode):
                copier.directory(rel, rel, st, existing=False)
            else:
                copier.entry(rel, rel, st)
    finally:
        copier.finish(lower)
    origins.inodes.update(copier.made)
