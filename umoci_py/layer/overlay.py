"""Layers and overlayfs upper directories (umoci's OverlayfsRootfs format).

An overlay upper holds what changed over its lower directories: new and
changed entries in full, a deleted path as a *whiteout* (a character device
0:0 of the same name) and a directory that hides the lower ones as an
*opaque* directory (the xattr user.overlay.opaque="y" under the `userxattr`
mount option, which an unprivileged user namespace needs).

Unpacking a layer as an upper is umoci_py.layer.overlayunpack's (it needs
extraction's machinery, which a commit does not).

A layer is read from an upper without walking the merged tree: only the
upper's entries are looked at, against the manifest of the lower tree (the
mtree keywords of every path below, without digests, each kept as one line:
a tree's manifest loads and compares as strings, and the few entries a
change touches are parsed).  The deltas are the ones a full-tree compare
would give, so a layer made from an upper has the same bytes as the
stat-keyed walk of the same change:
  - a whiteout is the deleted path and everything the lower tree had below it;
  - an opaque directory hides the lower entries it does not hold again;
  - an upper entry equal in every keyword to its lower one (overlay copies a
    file up on open for write, and directories above anything created) is no
    change, its content compared only when all else is equal;
  - the parent directories of every change are carried (as containerd does).
"""

from __future__ import annotations

import bisect
import os
import posixpath
import stat
from dataclasses import dataclass

from .. import mtree
from .generate import generate_layer
from .idmap import MapOptions

TYPE_CHECKING = False  # typing's, without importing typing: ~2 ms of every build that runs a step
if TYPE_CHECKING:
    from typing import BinaryIO

# Overlay's own metadata under `userxattr`: never content of a layer.
PRIVATE_XATTR = "user.overlay."
OPAQUE_XATTR = PRIVATE_XATTR + "opaque"
# Everything a delta depends on but the content digest, which is compared
# file to file and only for the few entries equal in all the rest.
KEYWORDS = tuple(k for k in mtree.KEYWORDS if k != "sha256digest")


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def manifest(root: str | os.PathLike) -> dict[str, str]:
    """path -> encoded mtree keywords of a tree or an upper (overlay's xattrs left out)."""
    return {entry.path: encode(_public(entry.keywords)) for entry in mtree.walk(root, KEYWORDS, True).entries}


def encode(keywords: dict[str, str]) -> str:
    """An entry's keywords as one line, "key=value ..." in key order (mtree
    keeps spaces and '=' out of names and values: links and xattr names are
    vis-encoded, xattr values base64)."""
    return " ".join([f"{k}={keywords[k]}" for k in sorted(keywords)])


def decode(line: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in line.split(" ")) if line else {}


@dataclass
class TreeChanges:
    """What an upper changes in the manifest of the tree below it: the
    encoded keywords of every entry it holds, and the paths it hides."""
    entries: dict[str, str]
    removed: list[str]

    def apply(self, lower: dict[str, str]) -> dict[str, str]:
        """The manifest of the merged tree, from the lower tree's."""
        merged = dict(lower)
        for path in self.removed:
            merged.pop(path, None)
        merged.update(self.entries)
        return merged


@dataclass
class UpperChanges:
    deltas: list[mtree.Delta]  # what the layer holds, as a full-tree compare gives them
    tree: TreeChanges
    data_size: int = 0  # bytes in the upper's regular files: about the layer's tar size
    disk_usage: int = 0  # bytes the upper takes on disk


def _public(keywords: dict[str, str]) -> dict[str, str]:
    """Keywords that tell a change: overlay's xattrs left out, and a
    directory's nlink (an upper's counts the upper's subdirectories only;
    a subdirectory added or removed shows as its own delta)."""
    private = "xattr." + PRIVATE_XATTR
    out = {k: v for k, v in keywords.items() if not k.startswith(private)}
    if out.get("type") == "dir":
        out.pop("nlink", None)
    return out


def _below(paths: list[str], prefix: str) -> list[str]:
    """The paths strictly under prefix, from a sorted list."""
    start = "" if prefix == "." else prefix + "/"
    i = bisect.bisect_left(paths, start)
    out = []
    while i < len(paths) and paths[i].startswith(start):
        if paths[i] != ".":
            out.append(paths[i])
        i += 1
    return out


def _lower_file(lowers: list[str], rel: str) -> str | None:
    """The topmost lower's file at rel (the one the upper's copy-up came from)."""
    for lower in lowers:
        path = os.path.join(lower, rel)
        if os.path.lexists(path):
            return path
    return None


def upper_changes(upper: str | os.PathLike, lower: dict[str, str], lowers: list[str]) -> UpperChanges:
    """The deltas an upper holds over the lower tree's manifest (as
    manifest() gives it), and what it changes in that manifest.  lowers are
    the lower directories, topmost first (read only to compare the content
    of a file copied up unchanged).  The cost is the upper's, not the tree's."""
    upper = os.fspath(upper)
    walked = mtree.walk(upper, KEYWORDS, True)
    held: dict[str, dict[str, str]] = {}  # the upper's entries but whiteouts
    entries: dict[str, str] = {}
    removed: set[str] = set()
    content: set[str] = set()  # copied up equal in every keyword but the content
    hidden: list[str] = []     # paths whose lower entries below are gone
    opaque: list[str] = []
    for entry in walked.entries:
        rel = entry.path
        host = upper if rel == "." else os.path.join(upper, rel)
        if entry.type == "char" and is_whiteout(os.lstat(host)):
            removed.add(rel)
            hidden.append(rel)
            continue
        keywords = _public(entry.keywords)
        line = encode(keywords)
        if entry.type == "dir" and f"xattr.{OPAQUE_XATTR}" in entry.keywords:
            opaque.append(rel)
        elif entry.type != "dir":
            hidden.append(rel)
        if entry.type == "file" and lower.get(rel) == line:
            source = _lower_file(lowers, rel)
            import filecmp  # only for a file copied up unchanged in all but maybe its content

            if source is None or not filecmp.cmp(source, host, shallow=False):
                content.add(rel)
        held[rel] = keywords
        entries[rel] = line
    if hidden or opaque:
        paths = sorted(lower)
        for rel in hidden:
            removed.update(_below(paths, rel))
        for rel in opaque:  # what the upper does not hold again
            removed.update(p for p in _below(paths, rel) if p not in held)
    removed.difference_update(held)
    # The fallback's full-tree compare, on the only paths that can differ
    # (a content change shows as digests that differ: only keywords on both sides count)
    touched = removed | held.keys()
    old = mtree.Manifest([mtree.Entry(p, {**decode(lower[p]), "sha256digest": "lower"} if p in content
                                      else decode(lower[p])) for p in touched if p in lower])
    new = mtree.Manifest([mtree.Entry(p, {**kw, "sha256digest": "upper"} if p in content else kw)
                          for p, kw in held.items()])
    new.inodes = {p: ino for p, ino in walked.inodes.items() if p in held}
    data_size = sum(int(kw.get("size", 0)) for kw in held.values() if kw.get("type") == "file")
    return UpperChanges(layer_changes(old, new), TreeChanges(entries, sorted(p for p in removed if p in lower)),
                        data_size, walked.disk_usage)


def layer_changes(old: mtree.Manifest, new: mtree.Manifest) -> list[mtree.Delta]:
    """What a layer holds to turn the tree old into new: a type change as a
    whiteout and an entry, hard-link groups whole, one whiteout per removed
    tree, and the directories above every change."""
    return with_parents(mtree.simplify_filter(mtree.layer_deltas(old, new)))


def with_parents(deltas: list[mtree.Delta]) -> list[mtree.Delta]:
    """The deltas plus every directory above a changed path.  A directory
    changed within the clock tick of the previous diff keeps its mtime and
    would be seen as unchanged or not depending on timing; always carrying
    the parents (as containerd's differ does) makes the layer reproducible."""
    seen = {d.path for d in deltas}
    out = list(deltas)
    for d in deltas:
        path = d.path
        while path not in (".", ""):
            path = posixpath.dirname(path) or "."
            if path in seen:
                break
            seen.add(path)
            out.append(mtree.Delta(path, "modified"))
    return out


def generate_upper_layer(upper: str | os.PathLike, deltas: list[mtree.Delta], opts: MapOptions,
                         out: BinaryIO, source_date_epoch: int | None = None) -> None:
    """The layer tar of deltas found by upper_changes, read from the upper."""
    generate_layer(upper, deltas, opts, out, source_date_epoch=source_date_epoch,
                   hidden_xattrs=PRIVATE_XATTR)
