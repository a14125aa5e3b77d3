"""COPY and ADD: selecting sources, digesting them for the cache key, and
writing them into a rootfs with owners kept in the user.rootlesscontainers xattr.

Sources are confined to their root (the build context or another stage's
rootfs): a path or a symlink leading outside is refused, never followed.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import xattr

from umoci_py import securejoin
from umoci_py.rootless import XATTR_NAME, encode_owner
from umoci_py.unpriv import current_umask, remove_tree

from orca.dockerfile.ignore import never as _never  # nothing excluded
from orca.errors import BuildError
from orca.filedata import copy_data

Excluded = Callable[[str], bool]
GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Source:
    rel: str        # path relative to the source root, "/"-separated, no leading "/"
    globbed: bool   # selected by a wildcard (affects the destination rules)


def select(root: Path, patterns: list[str], what: str, excluded: Excluded = _never) -> list[Source]:
    """The sources named by COPY patterns, relative to root.  A pattern that
    leaves root, or a plain path that does not exist, is an error."""
    root = Path(root)
    real_root = os.path.realpath(root)
    out: list[Source] = []
    for pattern in patterns:
        norm = os.path.normpath("/" + pattern).lstrip("/")
        if os.path.normpath(pattern.lstrip("/")).startswith("..") and not pattern.startswith("/"):
            raise BuildError(f"{what}: source {pattern!r} is outside the build context")
        if any(c in GLOB_CHARS for c in norm):
            matches = [Source(r, True) for r in _glob(root, norm) if not excluded(r)]
        else:
            full = root / norm if norm not in ("", ".") else root
            real = os.path.realpath(full)
            if real != real_root and not real.startswith(real_root + os.sep):
                raise BuildError(f"{what}: source {pattern!r} is outside the build context")
            rel = os.path.relpath(real, real_root) if real != real_root else "."
            matches = [] if (not os.path.lexists(full) or (rel != "." and excluded(norm))) \
                else [Source(rel if norm in ("", ".") else norm, False)]
        if not matches and not any(c in GLOB_CHARS for c in norm):
            # a wildcard may match nothing, as BuildKit's AllowEmptyWildcard
            raise BuildError(f"{what}: {pattern!r} not found in {root}")
        out.extend(matches)
    return out


def _glob(root: Path, pattern: str) -> list[str]:
    parts = pattern.split("/")
    found = [""]
    for part in parts:
        nxt = []
        for base in found:
            d = root / base if base else root
            if not d.is_dir() or d.is_symlink():
                continue
            for name in sorted(os.listdir(d)):
                if fnmatch.fnmatchcase(name, part):
                    nxt.append(f"{base}/{name}" if base else name)
        found = nxt
    return found


def _walk(root: Path, src: Source, excluded: Excluded):
    """(name relative to the source, absolute path, lstat) of the source and,
    for a directory, of everything under it that is not excluded: a
    directory's entries by name, each directory's entries before its
    subdirectories' (os.walk's order).  Built on scandir with names joined
    as strings: relpath and Path per file cost more than the lstat."""
    top = os.path.abspath(root / src.rel if src.rel != "." else root)
    if not src.globbed and os.path.islink(top):
        top = os.path.realpath(top)
    st = os.lstat(top)
    yield "", top, st
    if stat.S_ISDIR(st.st_mode):
        base = os.path.relpath(top, root)
        yield from _walk_dir(top, "", "" if base == "." else base + "/", excluded)


def _walk_dir(path: str, rel: str, base: str, excluded: Excluded):
    """_walk below one directory; rel is its name under the source (with a
    trailing "/" unless empty), base the source's path in the context."""
    try:
        with os.scandir(path) as it:
            entries = sorted(it, key=_name)
    except OSError:
        return  # unreadable: skipped, as os.walk does
    subdirs = []
    for entry in entries:
        name = rel + entry.name
        if excluded(base + name):
            continue
        st = entry.stat(follow_symlinks=False)
        yield name, entry.path, st
        if stat.S_ISDIR(st.st_mode):
            subdirs.append((entry.path, name + "/"))
    for sub, name in subdirs:
        yield from _walk_dir(sub, name, base, excluded)


def _name(entry: os.DirEntry) -> str:
    return entry.name


def _copied(root: Path, src: Source, excluded: Excluded, exclude: Excluded):
    """_walk less what COPY --exclude drops: the files a COPY copies are
    exactly the files its cache key hashes."""
    if exclude is _never:
        yield from _walk(root, src, excluded)
        return
    for rel, path, st in _walk(root, src, excluded):
        if not exclude(rel or os.path.basename(src.rel)):
            yield rel, path, st


def content_digest(root: Path, sources: list[Source], excluded: Excluded = _never,
                   owners: bool = False, exclude: Excluded = _never, digests=None) -> str:
    """tarsum-like digest of the sources: names, type, mode, size, link target
    and content, never mtime.  Context owners count as 0:0 (as BuildKit's
    local source does), so a checkout by another user hits the same cache;
    with owners, the rootless owner xattr of another stage's files counts.
    digests (an mtree.DigestCache by absolute path) spares reading files
    whose inode, size, mtime and ctime are unchanged."""
    h = hashlib.sha256()
    for src in sources:
        h.update(f"source {src.rel}\0".encode())
        for rel, path, st in _copied(root, src, excluded, exclude):
            mode = st.st_mode
            regular = stat.S_ISREG(mode)
            link = os.readlink(path) if stat.S_ISLNK(mode) else ""
            h.update(f"{rel}\0{stat.S_IFMT(mode)}\0{stat.S_IMODE(mode):o}\0{st.st_size if regular else 0}"
                     f"\0{link}\0".encode())
            if owners:
                h.update(_owner_payload(path) or b"-")
            if regular:
                h.update(bytes.fromhex(_file_digest(path, st, digests)))
    return "sha256:" + h.hexdigest()


def _file_digest(path: str, st: os.stat_result, digests) -> str:
    known = digests.lookup(path, st) if digests is not None else None
    if known is not None:
        return known
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if digests is not None:
        digests.put(path, st, digest)
    return digest


@dataclass
class CopyOptions:
    owner: tuple[int, int] | None = None  # --chown; None: context -> 0:0, stage -> kept
    chmod: object = None                  # a parsed --chmod (.apply(mode, is_dir))
    keep_owner: bool = False              # sources are another rootfs: keep its owners
    exclude: Excluded = _never            # --exclude, on paths relative to each source
    parents: dict | None = None           # --parents: source rel -> path kept under dest


def destination(rootfs: Path, dest: str, workdir: str, sources: list[Source], what: str) -> tuple[str, bool]:
    """(absolute container path, is a directory) for a COPY destination."""
    if not dest.startswith("/"):
        dest = os.path.join(workdir or "/", dest)
    as_dir = dest.endswith("/") or dest.endswith("/.") or len(sources) > 1 or any(s.globbed for s in sources)
    if (len(sources) > 1 or any(s.globbed for s in sources)) and not (dest.endswith("/") or dest.endswith("/.")):
        if not securejoin.join(rootfs, dest).is_dir():
            raise BuildError(f"{what}: when using COPY with more than one source file, "
                             f"the destination must be a directory and end with a /")
    if securejoin.join(rootfs, dest).is_dir():
        as_dir = True
    return os.path.normpath(dest), as_dir


def copy_sources(root: Path, sources: list[Source], rootfs: Path, dest: str, dest_is_dir: bool,
                 opts: CopyOptions, excluded: Excluded = _never) -> None:
    umask = current_umask()
    for src in sources:
        top = root / src.rel if src.rel != "." else root
        is_dir = top.is_dir() and (not top.is_symlink() or not src.globbed)
        if opts.parents is not None:
            target = os.path.normpath(os.path.join(dest, opts.parents[src.rel]))
        elif is_dir:
            target = dest  # a directory is copied as its contents
        elif dest_is_dir:
            target = os.path.join(dest, os.path.basename(src.rel))
        else:
            target = dest
        if opts.parents is not None and opts.parents[src.rel] != ".":
            _ensure_parent(rootfs, target)
        put = _Putter(rootfs, opts, umask)
        # the walk's names are plain components: joined as strings, never normalised
        target = os.path.normpath(target)
        prefix = target.rstrip("/") + "/"
        for rel, path, st in _copied(root, src, excluded, opts.exclude):
            put(path, st, prefix + rel if rel else target)


def _ensure_parent(rootfs: Path, path: str) -> Path:
    parent = os.path.dirname(path)
    host = securejoin.join(rootfs, parent)
    if not host.is_dir():
        _ensure_parent(rootfs, parent)
        host = securejoin.join(rootfs, parent)
        if os.path.lexists(host):
            os.unlink(host)
        os.mkdir(host, 0o755)
    return host


class _Putter:
    """Puts one source's entries into a rootfs, in the walk's order."""

    def __init__(self, rootfs: Path, opts: CopyOptions, umask: int) -> None:
        self.rootfs = rootfs
        self.opts = opts
        self.umask = umask
        # the host directory of each container directory the walk has resolved
        # (and made writable): a walk puts a directory before its children and
        # never puts a path twice, so a resolved parent stays the directory it
        # was (3,000 files cost 3,000 securejoins and stats otherwise)
        self.parents: dict[str, str] = {}

    def __call__(self, src: str, st: os.stat_result, path: str) -> None:
        """Copy src (lstat st) to the container path `path`."""
        where, _, name = path.rpartition("/")
        where = where or "/"
        parent = self.parents.get(where)
        if parent is None:
            parent = _ensure_parent(self.rootfs, path)
            _make_writable(parent)
            parent = self.parents[where] = str(parent)
        host = f"{parent}/{name}" if path != "/" else str(self.rootfs)
        kind = stat.S_IFMT(st.st_mode)
        mode = stat.S_IMODE(st.st_mode)
        opts = self.opts
        if opts.chmod is not None:
            mode = opts.chmod.apply(mode, kind == stat.S_IFDIR)
        if kind == stat.S_IFREG:
            _put_file(src, st, host, mode, _payload(src, opts), self.umask)
        elif kind == stat.S_IFDIR:
            _put_dir(st, host, mode, _payload(src, opts))
        elif kind == stat.S_IFLNK:
            target = os.readlink(src)
            _replacing(host, lambda: os.symlink(target, host))
        elif kind == stat.S_IFIFO:
            _replacing(host, lambda: os.mkfifo(host, 0o600))
            _set_payload(host, _payload(src, opts), fresh=True)
            os.chmod(host, mode)
            os.utime(host, ns=(st.st_atime_ns, st.st_mtime_ns))
        else:
            raise BuildError(f"COPY: {src}: unsupported file type")


def _replacing(host: str, make: Callable):
    """make() the new entry at host (its result), after removing whatever is
    there: it is tried first, as a copy's path is almost always new."""
    try:
        return make()
    except FileExistsError:
        remove_tree(host)
        return make()


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _put_file(src: str, st: os.stat_result, host: str, mode: int, payload: bytes | None,
              umask: int) -> None:
    """A new regular file at host with src's bytes, everything set through
    its descriptor: one path lookup in the rootfs (an overlay lookup is the
    dear part).  It is created with its final mode when the umask leaves the
    mode intact (no fchmod), else 0600 and changed last: setting the owner
    xattr needs the owner's write bit, which a mode such as 0444 lacks."""
    exact = not mode & (0o7000 | umask) and (payload is None or mode & 0o200)
    initial = mode if exact else 0o600
    fout = _replacing(host, lambda: os.open(host, _CREATE, initial))
    try:
        _copy_data(src, st, fout)
        if payload is not None:
            os.setxattr(fout, XATTR_NAME, payload)
        if not exact:
            os.chmod(fout, mode)
        os.utime(fout, ns=(st.st_atime_ns, st.st_mtime_ns))
    finally:
        os.close(fout)


def _put_dir(st: os.stat_result, host: str, mode: int, payload: bytes | None) -> None:
    """A directory at host, kept if one is there (its owner then replaced)."""
    try:
        os.mkdir(host, 0o700)
        fresh = True
    except FileExistsError:
        fresh = not stat.S_ISDIR(os.lstat(host).st_mode)
        if fresh:  # a file or symlink where the directory goes
            os.unlink(host)
            os.mkdir(host, 0o700)
    os.chmod(host, mode | 0o700)  # writable while its owner and children go on
    _set_payload(host, payload, fresh)
    os.utime(host, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.chmod(host, mode)


def _copy_data(src: str, st: os.stat_result, fout: int) -> None:
    """src's bytes (st: its lstat) into the new file fout."""
    fin = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        copy_data(fin, fout, st.st_size, (st.st_dev, os.fstat(fout).st_dev))
    finally:
        os.close(fin)


def _owner_payload(path: Path) -> bytes | None:
    try:
        return xattr.get(str(path), XATTR_NAME, nofollow=True)
    except OSError:
        return None


def _payload(src: str, opts: CopyOptions) -> bytes | None:
    """The owner xattr a copy of src gets: --chown's, the source stage's, or none (0:0)."""
    if opts.owner is not None:
        return encode_owner(*opts.owner)
    if opts.keep_owner:
        return _owner_payload(src)
    return None


def set_owner(host: Path, owner: tuple[int, int]) -> None:
    """Record the in-container owner of a host file or directory (0:0: no xattr)."""
    _set_payload(host, encode_owner(*owner))


def _set_payload(host: Path | str, payload: bytes | None, fresh: bool = False) -> None:
    """fresh: host was just created, so it has no owner xattr to remove."""
    if payload is None and fresh:
        return
    if payload is None:
        try:
            xattr.remove(str(host), XATTR_NAME)
        except OSError:
            pass
    else:
        xattr.set(str(host), XATTR_NAME, payload)


def _make_writable(d: Path) -> None:
    st = os.stat(d)
    if not st.st_mode & stat.S_IWUSR or not st.st_mode & stat.S_IXUSR:
        os.chmod(d, stat.S_IMODE(st.st_mode) | 0o300)


def is_archive(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(262)
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
        return True
    return len(head) >= 262 and head[257:262] == b"ustar"


def extract_archive(archive: Path, rootfs: Path, dest: str) -> None:
    """ADD of a local tar archive: its entries land under dest, confined to it."""
    # imported here, as in fetch_url: a cached build never needs them
    import bz2
    import gzip
    import lzma

    from umoci_py.layer.extract import extract_layer
    from umoci_py.layer.idmap import MapOptions

    with open(archive, "rb") as raw:
        magic = raw.read(6)
        raw.seek(0)
        if magic[:2] == b"\x1f\x8b":
            stream = gzip.GzipFile(fileobj=raw)
        elif magic[:3] == b"BZh":
            stream = bz2.BZ2File(raw)
        elif magic == b"\xfd7zXZ\x00":
            stream = lzma.LZMAFile(raw)
        else:
            stream = raw
        _ensure_parent(rootfs, os.path.join(dest, "x"))
        extract_layer(stream, securejoin.join(rootfs, dest), MapOptions(rootless=True, uid_map=[], gid_map=[]))


def fetch_url(url: str, checksum: str | None, into: Path, what: str) -> Path:
    """Download an ADD URL into a directory (mode 0600 file named after the URL)."""
    import urllib.parse
    import urllib.request

    name = os.path.basename(urllib.parse.urlparse(url).path) or "index.html"
    path = Path(into) / name
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(path, "wb") as out:
            while chunk := resp.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
    except OSError as err:
        raise BuildError(f"{what}: cannot fetch {url}: {err}") from None
    got = "sha256:" + h.hexdigest()
    if checksum and checksum != got:
        raise BuildError(f"{what}: checksum of {url} is {got}, expected {checksum}")
    os.chmod(path, 0o600)
    return path


def make_dirs(rootfs: Path, path: str, owner: tuple[int, int] | None) -> None:
    """mkdir -p inside the rootfs; new directories get the owner (WORKDIR)."""
    host = securejoin.join(rootfs, path)
    if host.is_dir():
        return
    make_dirs(rootfs, os.path.dirname(path.rstrip("/")) or "/", owner)
    host = securejoin.join(rootfs, path)
    parent = host.parent
    _make_writable(parent)
    if os.path.lexists(host):
        os.unlink(host)
    os.mkdir(host, 0o755)
    os.chmod(host, 0o755)
    if owner is not None and encode_owner(*owner) is not None:
        xattr.set(str(host), XATTR_NAME, encode_owner(*owner))


def mount_point(rootfs: Path, target: str, is_dir: bool = True) -> Callable[[], None]:
    """Create what a mount needs at target; the returned undo removes exactly
    what was created and restores the times of the directory it was made in,
    so a RUN mount leaves no trace in the step's layer."""
    host = securejoin.join(rootfs, target)
    if os.path.lexists(host):
        return _never_undo
    missing = []
    probe = target.rstrip("/")
    while probe and not os.path.lexists(securejoin.join(rootfs, probe)):
        missing.append(probe)
        probe = os.path.dirname(probe)
    anchor = securejoin.join(rootfs, probe or "/")
    st = os.stat(anchor)
    for p in reversed(missing):
        h = securejoin.join(rootfs, p)
        _make_writable(h.parent)
        if p == missing[0] and not is_dir:
            h.touch()
        else:
            os.mkdir(h, 0o755)
    first = securejoin.join(rootfs, missing[-1])

    def undo() -> None:
        remove_tree(first)
        os.utime(anchor, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.chmod(anchor, stat.S_IMODE(st.st_mode))
    return undo


def _never_undo() -> None:
    pass
