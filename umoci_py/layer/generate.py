"""Write layer tars: the delta of a rootfs (repack) or an inserted tree.

Entries follow umoci's tar_generate: PAX headers, empty uname/gname, times
in whole seconds, directories as "dir/", xattrs as SCHILY.xattr.*, hard links
within the layer as TypeLink to the first path written.  In rootless mode
the owner comes only from the user.rootlesscontainers xattr (0:0 without it)
and device placeholders written by extract (or runrootless) become device
nodes again.  File capabilities are written in their revision 2 form.
"""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile

from .. import logs, rootless, unpriv
from ..errors import LayerError
from ..mtree import Delta, layer_order, read_xattrs
from .tarwrite import TarWriter, header
from .idmap import MapOptions, map_id
from .names import DEVICE_XATTR, FORBIDDEN_XATTRS, OPAQUE, PAX_XATTR, WHITEOUT, clean

TYPE_CHECKING = False  # typing's, without importing typing: ~2 ms of every build that runs a step
if TYPE_CHECKING:
    from typing import BinaryIO


class _LayerWriter:
    def __init__(self, out: BinaryIO, opts: MapOptions, source_date_epoch: int | None,
                 hidden_xattrs: str | None = None):
        self.hidden_xattrs = hidden_xattrs
        self.tar = TarWriter(out)
        self.opts = opts
        self.epoch = source_date_epoch
        self.inodes: dict[tuple[int, int], str] = {}

    def close(self) -> None:
        self.tar.close()

    def mtime(self, seconds: int) -> int:
        if self.epoch is not None and seconds > self.epoch:
            return self.epoch
        return seconds

    def _marker(self, tarname: str) -> None:
        self.tar.add(header(tarname, tarfile.REGTYPE, mtime=self.mtime(0)))

    def whiteout(self, name: str) -> None:
        parent, base = posixpath.split(name)
        self._marker(posixpath.join(parent, WHITEOUT + base))

    def opaque(self, name: str) -> None:
        self._marker(OPAQUE if name == "." else posixpath.join(name, OPAQUE))

    def add(self, access: unpriv.Access, rel: str, name: str) -> None:
        """Write the entry for access.host(rel) under the tar name `name`."""
        if posixpath.basename(name).startswith(WHITEOUT):
            raise LayerError(f"{access.host(rel)}: a file named {WHITEOUT}* cannot be put in a layer")
        path = access.host(rel)
        st = access.call(rel, lambda: os.lstat(path))
        mode = st.st_mode
        if stat.S_ISSOCK(mode):
            logs.warning(__name__, "generate layer: ignoring socket %s", path)
            return
        xattrs = read_xattrs(access, rel, self.opts.rootless, path)
        uid, gid = self.owner(xattrs, st, path)
        if self.opts.rootless and (stat.S_ISLNK(mode) or stat.S_ISFIFO(mode)):
            uid, gid = side_owner_of(path, st) or (uid, gid)
        pax = self.pax_xattrs(access, rel, st, xattrs, path) if xattrs else None
        device = xattrs.get(DEVICE_XATTR) if xattrs else None
        size = 0
        linkname = ""
        major = minor = 0
        fd = None
        # Any non-directory can have more names (ln -P of a symlink too).
        inode = (st.st_dev, st.st_ino) if st.st_nlink > 1 and not stat.S_ISDIR(mode) else None
        if inode is not None and inode in self.inodes:
            kind = tarfile.LNKTYPE
            linkname = self.inodes[inode]
        elif stat.S_ISREG(mode) and device is not None and st.st_size == 0:
            kind, major, minor = _parse_device(device, path)
        elif stat.S_ISREG(mode):
            kind = tarfile.REGTYPE
            size = st.st_size
            fd = unpriv.open_fd(access, rel)
        elif stat.S_ISDIR(mode):
            kind = tarfile.DIRTYPE
            # "dir/", as tarfile and umoci write a directory's name, but the root is "."
            name = name if name.endswith("/") else name + "/"
            name = "." if name == "./" else name
        elif stat.S_ISLNK(mode):
            kind = tarfile.SYMTYPE
            linkname = os.readlink(path)
        elif stat.S_ISFIFO(mode):
            kind = tarfile.FIFOTYPE
        else:
            kind = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        if inode is not None:
            self.inodes.setdefault(inode, name)
        try:
            block = header(name, kind, access.original_mode(rel, st), uid, gid, size,
                           self.mtime(st.st_mtime_ns // 1_000_000_000), linkname, major, minor, pax)
            self.tar.add(block, fd, size)
        except ValueError as e:
            raise LayerError(f"{path}: {e}") from None
        except OSError as e:
            raise LayerError(f"{path}: {e.strerror or e}") from None
        finally:
            if fd is not None:
                os.close(fd)

    def pax_xattrs(self, access: unpriv.Access, rel: str, st: os.stat_result, xattrs: dict[str, bytes],
                   path: str) -> dict[str, str]:
        """The SCHILY.xattr.* records of an entry, without the ones that are
        ours (owners, device placeholders) or the filesystem's."""
        xattrs = dict(xattrs)
        xattrs.pop(rootless.OWNERS_XATTR, None)
        xattrs.pop(DEVICE_XATTR, None)
        self.caps(access, rel, st, xattrs, path)
        pax = {}
        for key, value in sorted(xattrs.items()):
            if key in FORBIDDEN_XATTRS:
                continue
            if self.hidden_xattrs and key.startswith(self.hidden_xattrs):
                continue
            if key == rootless.XATTR_NAME and self.opts.rootless:
                continue
            try:
                key.encode("utf-8")
            except UnicodeEncodeError:
                raise LayerError(f"{path}: xattr name {key!r} is not UTF-8: a pax header cannot hold it") from None
            pax[PAX_XATTR + key] = value.decode("utf-8", "surrogateescape")
        return pax

    def caps(self, access: unpriv.Access, rel: str, st: os.stat_result, xattrs: dict[str, bytes],
             path: str) -> None:
        """security.capability in its namespace-independent revision 2 form, from
        our record if it still holds (see rootless.CAPS_RECORD_XATTR), else from
        the kernel's xattr (revision 3 when set in a user namespace)."""
        record = xattrs.pop(rootless.CAPS_RECORD_XATTR, None)
        try:
            if record is not None and stat.S_ISREG(st.st_mode):
                with unpriv.open_read(access, rel) as f:
                    value = rootless.caps_from_record(record, rootless.content_sha256(f))
                if value is not None:
                    xattrs[rootless.CAPS_XATTR] = value
            if rootless.CAPS_XATTR in xattrs:
                xattrs[rootless.CAPS_XATTR] = rootless.caps_v2(xattrs[rootless.CAPS_XATTR])
        except LayerError as e:
            raise LayerError(f"{path}: {e}") from None

    def owner(self, xattrs: dict[str, bytes], st: os.stat_result, path: str) -> tuple[int, int]:
        if self.opts.rootless:
            try:
                return rootless.resolve_owner(xattrs.get(rootless.XATTR_NAME), 0, 0)
            except LayerError as e:
                raise LayerError(f"{path}: {e}") from None
        if rootless.XATTR_NAME in xattrs:
            logs.warning(__name__, "suspicious filesystem: %s has %s outside rootless mode", path, rootless.XATTR_NAME)
        return (map_id(self.opts.uid_map, st.st_uid, "uid", path, to_host=False),
                map_id(self.opts.gid_map, st.st_gid, "gid", path, to_host=False))


def _parse_device(marker: bytes, path: str) -> tuple[bytes, int, int]:
    try:
        kind, major, minor = marker.decode().split()
        return {"c": tarfile.CHRTYPE, "b": tarfile.BLKTYPE}[kind], int(major), int(minor)
    except (ValueError, KeyError, UnicodeDecodeError):
        raise LayerError(f"{path}: bad {DEVICE_XATTR} value {marker!r}") from None


def generate_layer(rootfs: str | os.PathLike, deltas: list[Delta], opts: MapOptions, out_fileobj: BinaryIO,
                   source_date_epoch: int | None = None, hidden_xattrs: str | None = None) -> None:
    """Uncompressed tar of the given deltas (already masked and simplified):
    a full entry for each modified or extra path, a whiteout for each missing
    one, in path order.  xattrs named with the prefix hidden_xattrs are left
    out (overlay's own, when rootfs is an overlay upper)."""
    writer = _LayerWriter(out_fileobj, opts, source_date_epoch, hidden_xattrs)
    with unpriv.Access(os.fspath(rootfs)) as access:
        for delta in sorted(deltas, key=layer_order):
            if delta.kind == "missing":
                writer.whiteout(delta.path)
            else:
                writer.add(access, "" if delta.path == "." else delta.path, delta.path)
    writer.close()


def generate_insert_layer(source: str | os.PathLike | None, target: str, opts: MapOptions,
                          out_fileobj: BinaryIO, whiteout: bool = False, opaque: bool = False,
                          source_date_epoch: int | None = None) -> None:
    """Uncompressed tar putting source (a file or a tree) at target, as umoci
    insert: with whiteout, only a whiteout of target; with opaque, a
    whiteout of target first (and an opaque one in a directory target), so
    nothing of the lower layers' target shows."""
    name = clean(target) or "."
    writer = _LayerWriter(out_fileobj, opts, source_date_epoch)
    if whiteout:
        if name == ".":
            raise LayerError(f"insert --whiteout: cannot white out the root ({target!r})")
        writer.whiteout(name)
        writer.close()
        return
    if source is None:
        raise LayerError("insert: a source path is needed unless --whiteout is given")
    src = os.path.abspath(os.fspath(source))
    if not os.path.lexists(src):
        raise LayerError(f"insert: source {src} does not exist")
    if opaque and name != ".":
        # Not just the opaque marker: below a lower symlink it would empty the
        # directory the link points to, and below a lower file it is nothing.
        writer.whiteout(name)
    if os.path.isdir(src) and not os.path.islink(src):
        with unpriv.Access(src) as access:
            writer.add(access, "", name)
            if opaque:
                # After the directory's own entry: an overlay-style applier
                # replaces the whiteout device of .wh.<target> by the directory
                # and needs the marker then to hide the lower one's contents.
                writer.opaque(name)
            for child in unpriv.listdir(access, ""):
                _insert_tree(writer, access, child, child if name == "." else f"{name}/{child}")
    else:
        with unpriv.Access(os.path.dirname(src)) as access:
            writer.add(access, os.path.basename(src), name)
    writer.close()


def _insert_tree(writer: _LayerWriter, access: unpriv.Access, rel: str, name: str) -> None:
    writer.add(access, rel, name)
    if not stat.S_ISDIR(os.lstat(access.host(rel)).st_mode):
        return
    for child in unpriv.listdir(access, rel):
        _insert_tree(writer, access, f"{rel}/{child}" if rel else child,
                     child if name == "." else f"{name}/{child}")


def side_owner_of(path: str, st: os.stat_result) -> tuple[int, int] | None:
    """A symlink's or FIFO's owner from its parent's side record (rootless.OWNERS_XATTR)."""
    parent, base = os.path.split(path)
    try:
        return rootless.side_owner(rootless.read_side(parent), base, st.st_ino)
    except LayerError as e:
        raise LayerError(f"{parent}: {e}") from None
