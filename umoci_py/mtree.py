"""go-mtree manifests of a rootfs, byte-compatible with what umoci writes.

umoci records the unpacked rootfs with go-mtree's Walk and finds the changes
to repack with Check; we write the same text (so umoci 0.4.7 can repack our
bundles) and read umoci's (so we can repack its bundles).  Hashing every file
is the slow part, so a DigestCache remembers digests by (inode, size, mtime,
ctime) between the unpack and the repack.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import posixpath
import re
import stat
import time
from dataclasses import dataclass, field

from . import jsonload, unpriv
from .rootless import read_side, side_owner
from .errors import BundleError, LayerError

KEYWORDS = ("size", "type", "uid", "gid", "mode", "link", "nlink", "tar_time", "sha256digest", "xattr")
# What else `gomtree -c` may record (its default set has "time"), by go-mtree's
# canonical names; the synonyms it accepts on the command line map onto them.
_DIGESTS = {"md5digest": "md5", "sha1digest": "sha1", "sha256digest": "sha256",
            "sha384digest": "sha384", "sha512digest": "sha512"}
SUPPORTED = frozenset(KEYWORDS) | frozenset(_DIGESTS) | {"time", "uname", "gname", "flags"}
_SYNONYMS = {"md5": "md5digest", "sha1": "sha1digest", "sha256": "sha256digest",
             "sha384": "sha384digest", "sha512": "sha512digest", "xattrs": "xattr"}

# go-mtree's defaultSetKeyVals and SetKeywords, in its order.
_SET_DEFAULTS = (("type", "file"), ("nlink", "1"), ("mode", "0664"))
_SET_KEYWORDS = ("uid", "gid")

_TYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "link",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}

# govis with VisWhite|VisOctal|VisGlob: everything but printable ASCII, plus
# the glob characters, becomes a three-digit octal escape; backslash is "\\".
_PLAIN = frozenset(range(0x21, 0x7F)) - frozenset(b"\\*?[#")
CHUNK = 1 << 20


_NEEDS_VIS = re.compile(r"[^\x21-\x7e]|[\\*?\[#]")


def vis(name: str) -> str:
    if not _NEEDS_VIS.search(name):
        return name
    return "".join(chr(b) if b in _PLAIN else "\\\\" if b == 0x5C else f"\\{b:03o}" for b in os.fsencode(name))


def unvis(text: str) -> str:
    if "\\" not in text:
        return text
    raw = text.encode("utf-8", "surrogateescape")
    out = bytearray()
    i = 0
    simple = {ord("n"): 10, ord("t"): 9, ord("s"): 32, ord("\\"): 92, ord("r"): 13, ord("b"): 8,
              ord("a"): 7, ord("v"): 11, ord("f"): 12, ord("0"): 0, ord("E"): 27}
    while i < len(raw):
        c = raw[i]
        if c != 0x5C or i + 1 >= len(raw):
            out.append(c)
            i += 1
            continue
        nxt = raw[i + 1]
        digits = raw[i + 1:i + 4]
        if len(digits) == 3 and all(0x30 <= d <= 0x37 for d in digits):
            out.append(int(digits, 8) & 0xFF)
            i += 4
        elif nxt == ord("M") and raw[i + 2:i + 3] == b"-":
            out.append(raw[i + 3] | 0x80)
            i += 4
        elif nxt == ord("M") and raw[i + 2:i + 3] == b"^":
            out.append((0x7F if raw[i + 3] == ord("?") else raw[i + 3] & 0x1F) | 0x80)
            i += 4
        elif nxt == ord("^"):
            out.append(0x7F if raw[i + 2] == ord("?") else raw[i + 2] & 0x1F)
            i += 3
        elif nxt in simple:
            out.append(simple[nxt])
            i += 2
        else:
            out.append(nxt)
            i += 2
    return os.fsdecode(bytes(out))


@dataclass
class Entry:
    path: str  # relative to the root, "." for the root itself
    keywords: dict[str, str] = field(default_factory=dict)  # without xattr.* when absent

    @property
    def type(self) -> str:
        return self.keywords.get("type", "file")


@dataclass
class Delta:
    path: str
    kind: str  # "modified" | "extra" | "missing"


class DigestCache:
    """sha256 of regular files keyed by path, valid while the inode, size,
    mtime and ctime are unchanged (the kernel updates ctime on any write)."""

    VERSION = 1

    def __init__(self) -> None:
        self.files: dict[str, tuple[int, int, int, int, str]] = {}

    @staticmethod
    def _key(st: os.stat_result) -> tuple[int, int, int, int]:
        return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns

    def lookup(self, rel: str, st: os.stat_result) -> str | None:
        entry = self.files.get(rel)
        if entry is not None and entry[:4] == self._key(st):
            return entry[4]
        return None

    def put(self, rel: str, st: os.stat_result, digest: str) -> None:
        self.files[rel] = (*self._key(st), digest)

    def discard_tree(self, rel: str) -> None:
        self.files.pop(rel, None)
        prefix = rel + "/" if rel else ""
        if any(k.startswith(prefix) for k in self.files):
            for k in [k for k in self.files if k.startswith(prefix)]:
                del self.files[k]

    def save(self, path: str | os.PathLike) -> None:
        tmp = f"{os.fspath(path)}.tmp"
        # dumps, not dump: only dumps uses the C encoder.
        data = json.dumps({"version": self.VERSION, "files": self.files}, separators=(",", ":"))
        with open(tmp, "w") as f:
            f.write(data)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DigestCache":
        """The saved cache, or an empty one if it is missing or unusable
        (it only ever saves work, so a bad one is simply dropped)."""
        cache = cls()
        try:
            with open(path, "rb") as f:
                doc = jsonload.parse(f.read(), dict)
            if doc.get("version") == cls.VERSION:
                cache.files = {k: tuple(v) for k, v in doc["files"].items()}
        except (OSError, jsonload.Invalid, AttributeError, KeyError, TypeError):
            pass
        return cache


class Manifest:
    def __init__(self, entries: list[Entry], tree: str = ""):
        self.entries = entries
        self.tree = tree
        # (st_dev, st_ino) of each hard-linked non-directory; only a walk knows them
        self.inodes: dict[str, tuple[int, int]] = {}
        self.disk_usage = 0  # bytes the walked entries take on disk (st_blocks, as du; a hard link per name)

    def by_path(self) -> dict[str, Entry]:
        return {e.path: e for e in self.entries}

    def dump(self) -> str:
        """go-mtree's text: header, /set lines when owners change, dirs
        followed by their files, ".." when a directory ends."""
        import socket  # ~2 ms to import (with selectors), for the header's host name only

        out = [
            f"#{'user:':>15} {_user()}",
            f"#{'machine:':>15} {socket.gethostname()}",
            f"#{'tree:':>15} {self.tree}",
            f"#{'date:':>15} {time.strftime('%a %b %e %H:%M:%S %Y')}",
            f"#{'keywords:':>15} {','.join(KEYWORDS)}",
        ]
        cur_set: dict[str, str] | None = None
        stack: list[str] = []
        for e in self.entries:
            parent = posixpath.dirname(e.path) if e.path != "." else None
            if parent == "":
                parent = "."
            while stack and stack[-1] != parent:
                stack.pop()
                out.append("..")
            if e.type == "dir":
                out.append("")
                out.append(f"# {e.path}")
                owners = {k: e.keywords[k] for k in _SET_KEYWORDS if k in e.keywords}
                if cur_set is None or any(cur_set.get(k) != v for k, v in owners.items()):
                    cur_set = dict(_SET_DEFAULTS) | owners
                    out.append("/set " + " ".join(f"{k}={v}" for k, v in cur_set.items()))
                stack.append(e.path)
            name = "." if e.path == "." else vis(posixpath.basename(e.path))
            words = [f"{k}={v}" for k, v in e.keywords.items() if cur_set.get(k) != v]
            line = " ".join([name] + words)
            out.append(line if e.type == "dir" else "    " + line)
        out.extend(".." for _ in stack)
        return "\n".join(out) + "\n"


def _user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def parse(text: str, source: str = "mtree manifest") -> Manifest:
    entries: list[Entry] = []
    cur_set: dict[str, str] = {}
    cwd: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        if words[0] == "/set":
            cur_set.update(_keyvals(words[1:], source, lineno))
            continue
        if words[0] == "/unset":
            for w in words[1:]:
                if w == "all":
                    cur_set.clear()
                cur_set.pop(w, None)
            continue
        if words[0] == "..":
            if not cwd:
                raise BundleError(f"{source}:{lineno}: '..' outside of any directory")
            cwd.pop()
            continue
        name = unvis(words[0])
        keywords = dict(cur_set)
        keywords.update(_keyvals(words[1:], source, lineno))
        if "/" in name:  # a full path, which does not change the directory
            path = posixpath.normpath(name)
        elif not cwd:
            path = name if name != "." else "."
        else:
            path = name if cwd[-1] == "." else f"{cwd[-1]}/{name}"
        if path.startswith("./"):
            path = path[2:]
        if keywords.get("type") == "dir" and "/" not in name:
            cwd.append(path)
        entries.append(Entry(path, keywords))
    return Manifest(entries)


def _keyvals(words: list[str], source: str, lineno: int) -> dict[str, str]:
    out = {}
    for w in words:
        key, sep, value = w.partition("=")
        if not sep:
            raise BundleError(f"{source}:{lineno}: keyword {w!r} has no value")
        out[key] = value  # kept vis-encoded, as walk() records link targets
    return out


def _mode(st_mode: int) -> str:
    perm = stat.S_IMODE(st_mode)
    return f"0{perm:o}" if perm else "0"


def walk(rootfs: str | os.PathLike, keywords=KEYWORDS, rootless: bool = True,
         cache: DigestCache | None = None) -> Manifest:
    """Manifest of rootfs in go-mtree walk order (a directory, its
    non-directories, then its subdirectories, each group sorted bytewise).
    Rootless: paths that deny us are opened temporarily and their original
    modes recorded."""
    root = os.fspath(rootfs)
    manifest = Manifest([], root)
    with unpriv.Access(root) as access:
        _walk_dir(access, "", keywords, rootless, cache, manifest)
    return manifest


def _walk_dir(access, rel, keywords, rootless, cache, manifest) -> None:
    entries = manifest.entries
    path = access.host(rel)
    st = os.lstat(path)
    manifest.disk_usage += st.st_blocks * 512
    entries.append(Entry(rel or ".", _keywords(access, rel, path, st, keywords, rootless, cache)))
    names = unpriv.listdir(access, rel) if rootless else sorted(os.listdir(path), key=os.fsencode)
    subdirs = []
    prefix = f"{rel}/" if rel else ""
    for name in names:
        child, cpath = prefix + name, f"{path}/{name}"
        cst = os.lstat(cpath)
        if stat.S_ISDIR(cst.st_mode):
            subdirs.append(child)
        else:
            manifest.disk_usage += cst.st_blocks * 512
            entries.append(Entry(child, _keywords(access, child, cpath, cst, keywords, rootless, cache)))
            if cst.st_nlink > 1:
                manifest.inodes[child] = (cst.st_dev, cst.st_ino)
    for child in subdirs:
        _walk_dir(access, child, keywords, rootless, cache, manifest)


def _keywords(access, rel, path, st, keywords, rootless, cache) -> dict[str, str]:
    if keywords is KEYWORDS or keywords == _KEYWORDS_NO_DIGEST:
        return _usual_keywords(access, rel, path, st, keywords is KEYWORDS, rootless, cache)
    kind = _TYPES[stat.S_IFMT(st.st_mode)]
    out: dict[str, str] = {}
    for kw in keywords:
        if kw == "size":
            out["size"] = str(st.st_size)
        elif kw == "type":
            out["type"] = kind
        elif kw in ("uid", "gid"):
            out[kw] = str(_owner(path, st, rootless)[kw == "gid"])
        elif kw == "mode":
            out["mode"] = _mode(access.original_mode(rel, st))
        elif kw == "link":
            if kind == "link":
                out["link"] = vis(os.readlink(path))
        elif kw == "nlink":
            out["nlink"] = str(st.st_nlink)
        elif kw == "tar_time":
            out["tar_time"] = f"{st.st_mtime_ns // 1_000_000_000}.000000000"
        elif kw == "time":
            out["time"] = "{}.{:09d}".format(*divmod(st.st_mtime_ns, 1_000_000_000))
        elif kw == "sha256digest":
            if kind == "file":
                out["sha256digest"] = file_digest(access, rel, st, rootless, cache)
        elif kw in _DIGESTS:
            if kind == "file":
                out[kw] = file_digest(access, rel, st, rootless, algorithm=_DIGESTS[kw])
        elif kw in ("uname", "gname"):
            name = _owner_name(kw, _owner(path, st, rootless)[kw == "gname"])
            if name is not None:
                out[kw] = name
        elif kw == "flags":
            pass  # BSD file flags: go-mtree records nothing on Linux either
        elif kw == "xattr":
            for name, value in sorted(read_xattrs(access, rel, rootless, path).items()):
                # go-mtree vis-encodes the name: a space or "=" in it cannot break the line.
                out[f"xattr.{vis(name)}"] = base64.b64encode(value).decode()
        else:
            raise BundleError(f"mtree keyword {kw!r} is not supported")
    return out


_KEYWORDS_NO_DIGEST = tuple(k for k in KEYWORDS if k != "sha256digest")  # overlay's changes


def _usual_keywords(access, rel, path, st, digest, rootless, cache) -> dict[str, str]:
    """_keywords of KEYWORDS (without sha256digest unless digest), in their
    order, without going through the keyword list: walks spend most of their
    time here."""
    kind = _TYPES[stat.S_IFMT(st.st_mode)]
    uid, gid = _owner(path, st, rootless)
    out = {"size": str(st.st_size), "type": kind, "uid": str(uid), "gid": str(gid),
           "mode": _mode(access.original_mode(rel, st))}
    if kind == "link":
        out["link"] = vis(os.readlink(path))
    out["nlink"] = str(st.st_nlink)
    out["tar_time"] = f"{st.st_mtime_ns // 1_000_000_000}.000000000"
    if digest and kind == "file":
        out["sha256digest"] = file_digest(access, rel, st, rootless, cache)
    xattrs = read_xattrs(access, rel, rootless, path)
    if xattrs:
        for name, value in sorted(xattrs.items()):
            out[f"xattr.{vis(name)}"] = base64.b64encode(value).decode()
    return out


def canonical_keyword(name: str) -> str:
    """go-mtree's KeywordSynonym: sha256 -> sha256digest and so on."""
    return _SYNONYMS.get(name, name)


def check_keywords(keywords) -> None:
    unknown = sorted(set(keywords) - SUPPORTED)
    if unknown:
        raise BundleError(f"mtree keyword {unknown[0]!r} is not supported "
                          f"(supported: {', '.join(sorted(SUPPORTED))})")


def _owner_name(kind: str, ident: int) -> str | None:
    import grp
    import pwd

    try:
        return pwd.getpwuid(ident).pw_name if kind == "uname" else grp.getgrgid(ident).gr_name
    except KeyError:
        return None


def _owner(path: str, st: os.stat_result, rootless: bool) -> tuple[int, int]:
    """The real owner, or for a rootless symlink/FIFO the one its parent's side record
    gives it (it cannot carry user.rootlesscontainers), so an owner-only change shows."""
    if rootless and (stat.S_ISLNK(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        parent, base = os.path.split(path)
        try:
            found = side_owner(read_side(parent), base, st.st_ino)
        except LayerError as err:
            raise BundleError(f"{parent}: {err}") from None
        if found is not None:
            return found
    return st.st_uid, st.st_gid


def read_xattrs(access: unpriv.Access, rel: str, rootless: bool = True, path: str | None = None) -> dict[str, bytes]:
    path = path or access.host(rel)
    call = access.call if rootless else (lambda _rel, fn, bits=0: fn())
    out = {}
    try:
        # Most paths have no xattrs and allow us: one syscall, no retry set-up.
        names = os.listxattr(path, follow_symlinks=False)
    except PermissionError:
        try:
            names = call(rel, lambda: os.listxattr(path, follow_symlinks=False))
        except OSError:
            return out
    except OSError:  # ENOTSUP and friends: no xattrs
        return out
    for name in names:
        try:
            out[name] = call(rel, lambda n=name: os.getxattr(path, n, follow_symlinks=False), 0o400)
        except OSError:
            continue  # vanished, or not readable by us (trusted.*)
    return out


def file_digest(access: unpriv.Access, rel: str, st: os.stat_result, rootless: bool = True,
                cache: DigestCache | None = None, algorithm: str = "sha256") -> str:
    if cache is not None:
        digest = cache.lookup(rel, st)
        if digest is not None:
            return digest
    h = hashlib.new(algorithm)
    opener = unpriv.open_read if rootless else (lambda a, r: open(a.host(r), "rb", buffering=0))
    with opener(access, rel) as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            h.update(chunk)
    digest = h.hexdigest()
    if cache is not None:
        cache.put(rel, os.lstat(access.host(rel)), digest)
    return digest


def _tar_time(value: str, source: str) -> str:
    try:
        return f"{int(float(value))}.000000000"
    except ValueError:
        raise BundleError(f"{source}: time={value!r} is not a number of seconds") from None


def changed_keywords(old: dict[str, str], new: dict[str, str], path: str = "") -> set[str]:
    """go-mtree's compareEntry: keywords that differ.  A keyword recorded on
    one side only does not count, except times and xattrs; "time" against
    "tar_time" compares whole seconds."""
    def kept(key: str, other: dict) -> bool:
        return key in other or key in ("time", "tar_time") or key.startswith("xattr.")

    o = {k: v for k, v in old.items() if kept(k, new)}
    n = {k: v for k, v in new.items() if kept(k, old)}
    if ("time" in o or "time" in n) and ("tar_time" in o or "tar_time" in n):
        old_time, new_time = o.pop("time", None), n.pop("time", None)
        if "tar_time" not in o and old_time is not None:
            o["tar_time"] = _tar_time(old_time, path)
        elif "tar_time" not in n and new_time is not None:
            n["tar_time"] = _tar_time(new_time, path)
        else:
            raise BundleError(f"{path}: time and tar_time set in the same manifest")
    return {k for k in o.keys() | n.keys() if o.get(k) != n.get(k)}


def compare(old: Manifest, new: Manifest, keywords=None) -> list[Delta]:
    """go-mtree Compare: entries changed in a keyword (of ``keywords``, when
    given, by prefix: "xattr" covers xattr.*), only in new, only in old."""
    olds, news = old.by_path(), new.by_path()
    deltas = []
    for path, n in news.items():
        o = olds.get(path)
        if o is None:
            deltas.append(Delta(path, "extra"))
        elif o.keywords != n.keywords:
            changed = changed_keywords(o.keywords, n.keywords, path)
            if keywords is not None:
                changed = {k for k in changed if k.split(".", 1)[0] in keywords}
            if changed:
                deltas.append(Delta(path, "modified"))
    deltas.extend(Delta(p, "missing") for p in olds if p not in news)
    return deltas


def layer_deltas(old: Manifest, new: Manifest) -> list[Delta]:
    """compare() as a layer must see it.  A path whose type changed is
    missing (a whiteout) and then extra: a whiteout is the one way every
    extractor drops the old thing, a symlink to a directory included, and
    it covers what the old directory held.  A hard-link group with any
    member changed is written whole (new is a walk), or a name that kept
    its path would stay a separate inode below the layer."""
    olds, news = old.by_path(), new.by_path()
    deltas = []
    for d in compare(old, new):
        if d.kind == "modified" and olds[d.path].type != news[d.path].type:
            deltas += [Delta(d.path, "missing"), Delta(d.path, "extra")]
        else:
            deltas.append(d)
    groups: dict[tuple[int, int], list[str]] = {}
    for path, key in new.inodes.items():
        groups.setdefault(key, []).append(path)
    changed = {d.path for d in deltas if d.kind != "missing"}
    for members in groups.values():
        if changed.intersection(members):
            deltas += [Delta(p, "modified") for p in members if p not in changed]
    return deltas


def layer_order(delta: Delta) -> tuple[bytes, bool]:
    """Path order, a path's whiteout before its new entry."""
    return os.fsencode(delta.path), delta.kind != "missing"


def _under(path: str, prefix: str) -> bool:
    return prefix == "." or path == prefix or path.startswith(prefix + "/")


def mask_filter(deltas: list[Delta], mask_paths) -> list[Delta]:
    """Drop deltas at or below any masked path (umoci's MaskFilter)."""
    masks = [posixpath.normpath("/" + m).lstrip("/") or "." for m in mask_paths]
    return [d for d in deltas if not any(_under(d.path, m) for m in masks)]


def simplify_filter(deltas: list[Delta]) -> list[Delta]:
    """One whiteout for a removed tree: drop Missing entries whose ancestor
    is Missing too (umoci's SimplifyFilter)."""
    missing = {d.path for d in deltas if d.kind == "missing"}
    out = []
    for d in deltas:
        if d.kind == "missing":
            parent = posixpath.dirname(d.path)
            covered = False
            while parent:
                if parent in missing:
                    covered = True
                    break
                parent = posixpath.dirname(parent)
            if covered:
                continue
        out.append(d)
    return out
