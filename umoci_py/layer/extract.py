"""Apply one uncompressed layer tar to a rootfs, as umoci unpack does.

Every entry path, and every hard-link target, is resolved component by
component inside the rootfs (symlinks followed but clamped to the root, see
securejoin), so no entry can write outside it.  In rootless mode the
tar owner goes into the ``user.rootlesscontainers`` xattr instead of lchown,
device nodes become placeholder files, and denied paths are opened up
temporarily (see unpriv).
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import queue
import stat
import tarfile
import threading
from typing import BinaryIO

from .. import logs, rootless, securejoin, unpriv
from ..errors import LayerError
from ..mtree import DigestCache
from .idmap import MapOptions, map_id
from .names import DEVICE_XATTR, FORBIDDEN_XATTRS, OPAQUE, PAX_XATTR, WHITEOUT, clean
from .tarstream import TarStream


def in_user_namespace() -> bool:
    try:
        with open("/proc/self/uid_map") as f:
            fields = f.read().split()
    except FileNotFoundError:
        return False
    return fields != ["0", "0", "4294967295"]


def _ns(ti: tarfile.TarInfo, key: str) -> int:
    raw = ti.pax_headers.get(key)
    if raw is not None:
        from decimal import Decimal  # ~1 ms to import: only for entries with pax times

        return int(Decimal(raw) * 1_000_000_000)
    return int(ti.mtime) * 1_000_000_000


def header_xattrs(ti: tarfile.TarInfo) -> dict[str, bytes]:
    return {
        k[len(PAX_XATTR):]: v.encode("utf-8", "surrogateescape")
        for k, v in ti.pax_headers.items()
        if k.startswith(PAX_XATTR)
    }


class _Digest:
    """A file's sha256, filled in by the hashing thread."""

    __slots__ = ("hexdigest",)


class _Hasher:
    """sha256 of big files on a second thread: hashlib releases the GIL, so
    it overlaps the syscalls creating the next files (small files are
    hashed at once, the hand-over would cost more).  Data go over chunk by
    chunk as views of the tar stream's immutable chunks; the bounded queue
    bounds the memory they pin."""

    INLINE = 256 << 10

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue(8)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def update(self, h, view: memoryview) -> None:
        self._queue.put((h, view))

    def finish(self, h) -> _Digest:
        pending = _Digest()
        self._queue.put((h, pending))
        return pending

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            h, arg = item
            if isinstance(arg, _Digest):
                arg.hexdigest = h.hexdigest()
            else:
                h.update(arg)

    def close(self) -> None:
        """Wait until every digest is in (idempotent)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


class _Extractor:
    def __init__(self, rootfs: str, opts: MapOptions, keep_dirlinks: bool, cache: DigestCache | None):
        self.root = rootfs
        self.opts = opts
        self.keep_dirlinks = keep_dirlinks
        self.cache = cache
        self.placeholders = opts.rootless or in_user_namespace()
        self.umask = unpriv.current_umask()
        self.access = unpriv.Access(rootfs)
        self.upper: set[str] = {""}
        # Digests only feed the cache: without one, nothing is hashed.
        self.hasher = _Hasher() if cache is not None else None
        self.hashes: dict[str, str | _Digest] = {}
        # unsafe dir -> resolved real directory, until a directory or symlink is removed
        self.dirs: dict[str, str] = {}
        self.warned: set[str] = set()
        self.started: set[str] = set()  # regular files whose data we began to read

    def host(self, rel: str) -> str:
        return self.access.host(rel)

    def run(self, tar: TarStream) -> None:
        try:
            for ti in tar:
                self.entry(tar, ti)
            if self.hasher is not None:
                self.hasher.close()
            self.finish_cache()
        finally:
            if self.hasher is not None:
                self.hasher.close()
            self.access.restore()

    def entry(self, tar: TarStream, ti: tarfile.TarInfo) -> None:
        name = clean(ti.name)
        dirname, base = posixpath.split(name)
        try:
            if base.startswith(WHITEOUT):
                self.access.call(name, lambda: self.whiteout(ti.name, dirname, base))
                return
            # A denied path is retried after opening its ancestors, first as
            # written in the tar, then as resolved through symlinks.  A file
            # whose data was already read from the stream cannot be retried.
            for retry in range(3):
                if retry == 1:
                    self.access.open_ancestors(name)
                elif retry == 2:
                    self.access.open_ancestors(self.resolved_name(dirname, base))
                try:
                    self.create(tar, ti, name, dirname, base)
                    return
                except PermissionError:
                    if retry == 2 or (ti.isreg() and ti.size and ti.name in self.started):
                        raise
        except LayerError:
            raise
        except OSError as e:
            raise LayerError(f"layer entry {ti.name!r}: {e.strerror or e}") from None

    def resolved_name(self, dirname: str, base: str) -> str:
        parent = securejoin.resolve(self.root, dirname, self.access)
        return f"{parent}/{base}" if parent else base

    def resolve_dir(self, dirname: str, create: bool) -> str:
        """Resolve an entry's directory inside the root, creating missing
        components (mode 0755, as MkdirAll under umask 022) if asked."""
        cached = self.dirs.get(dirname)
        if cached is not None:
            return cached
        rel = securejoin.resolve(self.root, dirname, self.access)
        if create:
            self.makedirs(rel)
            self.dirs[dirname] = rel
        return rel

    def makedirs(self, rel: str) -> None:
        if not rel:
            return
        path = self.host(rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            parent = posixpath.dirname(rel)
            self.makedirs(parent)
            self.touch_dir(parent)
            os.mkdir(path, 0o755)
            return
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, f"{rel} is not a directory but the layer has entries below it")

    def touch_dir(self, rel: str) -> None:
        """rel's entries are about to change: keep its times as they are."""
        self.access.keep_times(rel)

    def mark_upper(self, rel: str) -> None:
        while rel not in self.upper:
            self.upper.add(rel)
            rel = posixpath.dirname(rel)

    def create(self, tar: TarStream, ti: tarfile.TarInfo, name: str, dirname: str, base: str) -> None:
        if not name:
            if not ti.isdir():
                raise LayerError(f"layer entry {ti.name!r}: the root must be a directory")
            self.directory(ti, "", existing=True)
            return
        parent = self.resolve_dir(dirname, create=True)
        rel = f"{parent}/{base}" if parent else base
        path = self.host(rel)
        if ti.isdir():
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                st = None
            if st is not None and stat.S_ISDIR(st.st_mode):
                self.mark_upper(rel)
                self.directory(ti, rel, existing=True)
                self.dirs[name] = rel
                return
            if st is not None and self.keep_dirlinks and stat.S_ISLNK(st.st_mode):
                target = self.dirlink_target(rel)
                if target is not None:
                    # The directory keeps its own metadata, as with umoci.
                    self.mark_upper(target)
                    self.dirs[name] = target
                    return
        self.touch_dir(parent)
        self.mark_upper(rel)
        # Creating exclusively and replacing only on a clash saves an lstat
        # per entry: layers mostly add paths.
        try:
            self.make(tar, ti, rel, path)
        except FileExistsError:
            self.remove(rel, os.lstat(path))
            self.make(tar, ti, rel, path)
        if ti.isdir():
            # Its entries need not resolve it component by component.
            self.dirs[name] = rel

    def dirlink_target(self, rel: str) -> str | None:
        """Where symlink rel leads if that is a directory (--keep-dirlinks
        writes through it, as tar --keep-directory-symlink); None for a
        link to anything else, a dangling one or a loop (then it is an
        ordinary path, replaced like umoci's)."""
        try:
            target = securejoin.resolve(self.root, rel, self.access)
            tst = os.lstat(self.host(target))
        except (LayerError, FileNotFoundError, NotADirectoryError):
            return None
        return target if stat.S_ISDIR(tst.st_mode) else None

    def make(self, tar: TarStream, ti: tarfile.TarInfo, rel: str, path: str) -> None:
        """Create the entry at rel, failing with FileExistsError if taken."""
        if ti.isreg():
            self.regular(tar, ti, rel)
        elif ti.isdir():
            os.mkdir(path, 0o700)
            self.directory(ti, rel, existing=False)
        elif ti.issym():
            os.symlink(ti.linkname, path)
            self.metadata_path(ti, rel)
        elif ti.islnk():
            self.hardlink(ti, rel)
        elif ti.ischr() or ti.isblk():
            self.device(ti, rel)
        elif ti.isfifo():
            os.mkfifo(path, 0o600)
            self.metadata_path(ti, rel)
        else:
            raise LayerError(f"layer entry {ti.name!r}: unsupported tar type {ti.type!r}")

    def remove(self, rel: str, st: os.stat_result) -> None:
        # Resolved directories stay valid until a directory or symlink they
        # went through goes; fresh entries never change them.
        if stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode):
            self.dirs.clear()
        if stat.S_ISDIR(st.st_mode):
            unpriv.rmtree(self.access, rel)
        else:
            os.unlink(self.host(rel))
        if self.cache is not None:
            self.cache.discard_tree(rel)
        self.hashes.pop(rel, None)

    # -- entry types -------------------------------------------------------

    def regular(self, tar: TarStream, ti: tarfile.TarInfo, rel: str) -> None:
        mode = ti.mode & 0o7777
        # Created with its final mode when the umask leaves it intact, which
        # saves an fchmod per file.  The fd is writable whatever the mode, but
        # setting user.* xattrs needs the owner's write bit.
        exact = not mode & (0o7000 | self.umask) and mode & 0o200
        fd = os.open(self.host(rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode if exact else 0o600)
        # A capability record holds the content's digest: hashed here, inline.
        caps = self.opts.rootless and PAX_XATTR + rootless.CAPS_XATTR in ti.pax_headers
        try:
            self.started.add(ti.name)
            h = hashlib.sha256() if self.hasher is not None or caps else None
            offload = self.hasher is not None and ti.size >= _Hasher.INLINE and not caps
            for view in tar.data(ti):
                if offload:
                    self.hasher.update(h, view)
                elif h is not None:
                    h.update(view)
                while view:
                    view = view[os.write(fd, view):]
            if h is not None:
                self.hashes[rel] = self.hasher.finish(h) if offload else h.hexdigest()
            self.metadata_fd(ti, rel, fd, chmod=not exact, digest=h.digest() if caps else None)
        finally:
            os.close(fd)

    def directory(self, ti: tarfile.TarInfo, rel: str, existing: bool) -> None:
        path = self.host(rel)
        if existing:
            st = os.lstat(path)
            if st.st_mode & 0o700 != 0o700:
                os.chmod(path, stat.S_IMODE(st.st_mode) | 0o700)
            for name in os.listxattr(path, follow_symlinks=False):
                self.try_xattr(rel, name, lambda n=name: os.removexattr(path, n, follow_symlinks=False))
        for name, value in self.xattrs(ti, rel).items():
            self.try_xattr(rel, name, lambda n=name, v=value: os.setxattr(path, n, v, follow_symlinks=False))
        self.chown(ti, rel, lambda u, g: os.lchown(path, u, g))
        # The mode and times are applied when the layer is done: a 0500 or
        # 000 directory must stay writable while its entries arrive.
        self.access.set_final(rel, ti.mode & 0o7777, _ns(ti, "atime"), _ns(ti, "mtime"))

    def hardlink(self, ti: tarfile.TarInfo, rel: str) -> None:
        ldir, lbase = posixpath.split(clean(ti.linkname))
        source = securejoin.resolve(self.root, ldir, self.access)
        source = f"{source}/{lbase}" if source else lbase
        if not lbase or not os.path.lexists(self.host(source)):
            raise LayerError(f"layer entry {ti.name!r}: hard link to missing {ti.linkname!r}")
        digest = self.hashes.get(source)
        if digest is None and self.cache is not None:
            digest = self.cache.lookup(source, os.lstat(self.host(source)))
        os.link(self.host(source), self.host(rel), follow_symlinks=False)
        if digest is not None:
            self.hashes[source] = self.hashes[rel] = digest

    def device(self, ti: tarfile.TarInfo, rel: str) -> None:
        path = self.host(rel)
        if not self.placeholders:
            kind = stat.S_IFCHR if ti.ischr() else stat.S_IFBLK
            os.mknod(path, kind | 0o600, os.makedev(ti.devmajor, ti.devminor))
            self.metadata_path(ti, rel)
            return
        logs.warning(__name__, "rootless{%s} creating empty file in place of device %d:%d",
                     rel, ti.devmajor, ti.devminor)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            marker = f"{'c' if ti.ischr() else 'b'} {ti.devmajor} {ti.devminor}".encode()
            os.setxattr(fd, DEVICE_XATTR, marker)
            self.metadata_fd(ti, rel, fd)
        finally:
            os.close(fd)

    # -- metadata ------------------------------------------------------------

    def xattrs(self, ti: tarfile.TarInfo, rel: str) -> dict[str, bytes]:
        """The xattrs an entry gets: the header's (filtered) plus the owner."""
        out = {}
        for name, value in header_xattrs(ti).items():
            if name in FORBIDDEN_XATTRS:
                logs.warning(__name__, "xattr{%s} ignoring forbidden xattr %s", rel, name)
            elif name == rootless.XATTR_NAME and self.opts.rootless:
                logs.warning(__name__, "rootless{%s} ignoring special xattr %s stored in layer", rel, name)
            elif name in (DEVICE_XATTR, rootless.OWNERS_XATTR, rootless.CAPS_RECORD_XATTR):
                logs.warning(__name__, "xattr{%s} ignoring %s stored in layer", rel, name)
            elif name == rootless.CAPS_XATTR:
                try:
                    out[name] = rootless.caps_v2(value)
                except LayerError as e:
                    raise LayerError(f"layer entry {ti.name!r}: {e}") from None
            else:
                out[name] = value
        if self.opts.rootless:
            payload = rootless.encode_owner(ti.uid, ti.gid)
            if payload is not None:
                out[rootless.XATTR_NAME] = payload
        return out

    def try_xattr(self, rel: str, name: str, fn) -> None:
        try:
            fn()
        except OSError as e:
            # Unprivileged users may not set trusted.*/security.*, and the
            # kernel refuses user.* on symlinks, FIFOs and device nodes.
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EACCES):
                raise
            key = f"{name}:{e.errno}"
            if key not in self.warned:
                self.warned.add(key)
                logs.warning(__name__, "xattr{%s} ignoring %s on %s", rel, os.strerror(e.errno), name)

    def set_caps(self, rel: str, fd: int, value: bytes, digest: bytes) -> None:
        """A file capability, or our record of it when the kernel refuses it (EPERM:
        not root, nor in a user namespace)."""
        try:
            os.setxattr(fd, rootless.CAPS_XATTR, value)
        except PermissionError:
            record = rootless.encode_caps_record(value, digest)
            self.try_xattr(rel, rootless.CAPS_RECORD_XATTR,
                           lambda: os.setxattr(fd, rootless.CAPS_RECORD_XATTR, record))

    def chown(self, ti: tarfile.TarInfo, rel: str, fn) -> None:
        if self.opts.rootless:
            return
        fn(map_id(self.opts.uid_map, ti.uid, "uid", ti.name), map_id(self.opts.gid_map, ti.gid, "gid", ti.name))

    def metadata_fd(self, ti: tarfile.TarInfo, rel: str, fd: int, chmod: bool = True,
                    digest: bytes | None = None) -> None:
        """digest: the sha256 of a regular file's content, given when it has a capability."""
        for name, value in self.xattrs(ti, rel).items():
            if name == rootless.CAPS_XATTR and digest is not None:
                self.set_caps(rel, fd, value, digest)
            else:
                self.try_xattr(rel, name, lambda n=name, v=value: os.setxattr(fd, n, v))
        self.chown(ti, rel, lambda u, g: os.fchown(fd, u, g))
        if chmod:
            os.fchmod(fd, ti.mode & 0o7777)  # after chown, so setuid/setgid survive
        os.utime(fd, ns=(_ns(ti, "atime"), _ns(ti, "mtime")))

    def metadata_path(self, ti: tarfile.TarInfo, rel: str) -> None:
        path = self.host(rel)
        for name, value in self.xattrs(ti, rel).items():
            self.try_xattr(rel, name, lambda n=name, v=value: os.setxattr(path, n, v, follow_symlinks=False))
        self.chown(ti, rel, lambda u, g: os.lchown(path, u, g))
        if self.opts.rootless and (ti.issym() or ti.isfifo()) and (ti.uid, ti.gid) != (0, 0):
            # No user.* xattr on these: the owner goes on the parent's side record.
            parent, base = posixpath.split(path)
            ino = os.lstat(path).st_ino
            self.try_xattr(rel, rootless.OWNERS_XATTR,
                           lambda: rootless.write_side(parent, base, ino, (ti.uid, ti.gid)))
        if not ti.issym():
            os.chmod(path, ti.mode & 0o7777)
        os.utime(path, ns=(_ns(ti, "atime"), _ns(ti, "mtime")), follow_symlinks=False)

    # -- whiteouts -----------------------------------------------------------

    def whiteout(self, raw: str, dirname: str, base: str) -> None:
        if base == WHITEOUT:
            raise LayerError(f"layer entry {raw!r}: whiteout without a name")
        if base[len(WHITEOUT):] in (".", ".."):
            # It would name the directory itself or its parent.
            raise LayerError(f"layer entry {raw!r}: invalid whiteout name")
        parent = securejoin.resolve(self.root, dirname, self.access)
        if not os.path.isdir(self.host(parent)) or os.path.islink(self.host(parent)):
            return
        if base == OPAQUE:
            self.touch_dir(parent)
            self.prune(parent, keep=True)
            return
        rel = f"{parent}/{base[len(WHITEOUT):]}" if parent else base[len(WHITEOUT):]
        if os.path.lexists(self.host(rel)):
            self.touch_dir(parent)
            self.prune(rel, keep=False)

    def prune(self, rel: str, keep: bool) -> None:
        """Remove rel's tree except what this layer itself extracted."""
        st = os.lstat(self.host(rel))
        if not keep and rel not in self.upper:
            self.remove(rel, st)
            return
        if stat.S_ISDIR(st.st_mode):
            for name in unpriv.listdir(self.access, rel):
                self.prune(f"{rel}/{name}" if rel else name, keep=False)

    def finish_cache(self) -> None:
        if self.cache is None:
            return
        for rel, digest in self.hashes.items():
            try:
                st = os.lstat(self.host(rel))
            except (FileNotFoundError, NotADirectoryError):  # a later entry replaced it or a parent
                continue
            if stat.S_ISREG(st.st_mode):
                self.cache.put(rel, st, digest if isinstance(digest, str) else digest.hexdigest)


def extract_layer(
    tar_stream: BinaryIO,
    rootfs: str | os.PathLike,
    opts: MapOptions,
    keep_dirlinks: bool = False,
    cache: DigestCache | None = None,
) -> None:
    """Apply the uncompressed layer tar read from tar_stream to rootfs."""
    _Extractor(os.fspath(rootfs), opts, keep_dirlinks, cache).run(TarStream(tar_stream))
