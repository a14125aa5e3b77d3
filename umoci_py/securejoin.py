"""Resolving a path inside a root as a chroot would, like filepath-securejoin.

Every component is looked up under the root; a symlink is followed with its
target read as if the root were "/", so absolute targets and ".." stop at
the root and no path leaves it.  A missing component (and everything after
it) is taken as a plain name.  The caller acts on the result with no
symlinks left to follow, so a tree changed meanwhile only by us stays inside.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from pathlib import Path

from umoci_py import unpriv
from umoci_py.errors import LayerError

# filepath-securejoin's limit: the 256th link followed is a loop.
MAX_SYMLINKS = 255


def resolve(root: str | os.PathLike, unsafe: str, access: unpriv.Access | None = None) -> str:
    """unsafe resolved inside root: a "/"-separated path relative to root
    ("" for the root itself) with no symlink in it.  With access (whose root
    is root), directories on the way that deny us are opened until access
    restores them, as umoci's unpriv-wrapped SecureJoin; without it a denied
    lookup raises PermissionError."""
    root = os.fspath(root)
    parts = deque(p for p in unsafe.split("/") if p not in ("", "."))
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.popleft()
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            if access is None:
                st = os.lstat(candidate)
            else:
                st = access.call("/".join([*resolved, part]), lambda: os.lstat(candidate))
        except (FileNotFoundError, NotADirectoryError):
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_SYMLINKS:
                raise LayerError(f"{unsafe}: too many levels of symbolic links")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts.extendleft(reversed([p for p in target.split("/") if p not in ("", ".")]))
            continue
        resolved.append(part)
    return "/".join(resolved)


def join(root: str | os.PathLike, unsafe: str) -> Path:
    """root/unsafe with every symlink resolved inside root (see resolve)."""
    rel = resolve(root, unsafe)
    return Path(root, rel) if rel else Path(root)
