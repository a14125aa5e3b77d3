"""Working in a rootfs whose modes would lock out its unprivileged owner.

Images carry mode-000 files and directories (``/etc/gshadow``, ``/root`` at
0700 after a chmod 000...).  As their owner we may always chmod them, so like
umoci's pkg/unpriv we retry a denied operation after temporarily adding
permission bits to the path's ancestors (and the path itself when asked),
and put back the original modes and times afterwards.  Nothing here ever
leaves the root: paths are relative to it and already resolved.  Removing a
tree is the same problem, so the one rm -rf (remove_tree) lives here too.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable

TYPE_CHECKING = False  # typing's, without importing typing: ~2 ms of every orca-build start
if TYPE_CHECKING:
    from typing import TypeVar

    T = TypeVar("T")


class Access:
    """Remembers the paths it widened (and dirs whose times must survive
    changes to their entries) and restores them all in restore()."""

    def __init__(self, root: str):
        self.root = root
        # rel path -> (mode or None to leave the mode alone, atime_ns, mtime_ns)
        self.saved: dict[str, tuple[int | None, int, int]] = {}

    def host(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def keep_times(self, rel: str) -> None:
        """Restore rel's current atime/mtime (not its mode) in restore()."""
        if rel not in self.saved:
            st = os.lstat(self.host(rel))
            self.saved[rel] = (None, st.st_atime_ns, st.st_mtime_ns)

    def set_final(self, rel: str, mode: int, atime_ns: int, mtime_ns: int) -> None:
        """Give rel this mode and these times in restore() (directories whose
        own header asks for a mode that would lock us out meanwhile)."""
        self.saved[rel] = (mode, atime_ns, mtime_ns)

    def original_mode(self, rel: str, st: os.stat_result) -> int:
        """st's mode as it was before we widened it."""
        saved = self.saved.get(rel)
        if saved is not None and saved[0] is not None:
            return stat.S_IFMT(st.st_mode) | saved[0]
        return st.st_mode

    def widen(self, rel: str, bits: int) -> None:
        path = self.host(rel)
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode) or st.st_mode & bits == bits:
            return
        if rel not in self.saved or self.saved[rel][0] is None:
            times = self.saved.get(rel, (None, st.st_atime_ns, st.st_mtime_ns))
            self.saved[rel] = (stat.S_IMODE(st.st_mode), times[1], times[2])
        os.chmod(path, stat.S_IMODE(st.st_mode) | bits)

    def open_ancestors(self, rel: str) -> None:
        """Make every existing directory from the root down to rel's parent
        searchable, readable and writable by us."""
        parts = rel.split("/") if rel else []
        prefix = ""
        for part in [""] + parts[:-1]:
            prefix = f"{prefix}/{part}" if prefix else part
            try:
                st = os.lstat(self.host(prefix))
            except FileNotFoundError:
                return
            if not stat.S_ISDIR(st.st_mode):
                return
            self.widen(prefix, 0o700)

    def call(self, rel: str, fn: Callable[[], T], bits: int = 0) -> T:
        """fn(), retried once with rel's ancestors (and rel itself |bits) opened."""
        try:
            return fn()
        except PermissionError:
            self.open_ancestors(rel)
            if bits:
                self.widen(rel, bits)
            return fn()

    def restore(self) -> None:
        """Put back modes and times, deepest paths first so that a restored
        mode-000 directory does not hide its children from us."""
        for rel in sorted(self.saved, key=lambda r: r.count("/") + bool(r), reverse=True):
            mode, atime_ns, mtime_ns = self.saved[rel]
            path = self.host(rel)
            try:
                if mode is not None:
                    os.chmod(path, mode)
                os.utime(path, ns=(atime_ns, mtime_ns), follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since (a whiteout)
        self.saved.clear()

    def __enter__(self) -> "Access":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


def open_read(access: Access, rel: str):
    """Open rel for reading even if it (or an ancestor) denies us."""
    return access.call(rel, lambda: open(access.host(rel), "rb", buffering=0), bits=0o400)


def open_fd(access: Access, rel: str) -> int:
    """open_read's file descriptor, without a file object around it."""
    return access.call(rel, lambda: os.open(access.host(rel), os.O_RDONLY | os.O_CLOEXEC), bits=0o400)


def listdir(access: Access, rel: str) -> list[str]:
    """Entry names of directory rel, sorted bytewise, even if it denies us."""
    names = access.call(rel, lambda: os.listdir(access.host(rel)), bits=0o500)
    return sorted(names, key=os.fsencode)


def rmtree(access: Access, rel: str) -> None:
    """Remove rel and everything below it, whatever their modes; ancestors
    that deny us are opened until access restores them."""
    path = access.host(rel)
    access.call(rel, lambda: remove_tree(path))
    below = rel + "/"
    for gone in [r for r in access.saved if not rel or r == rel or r.startswith(below)]:
        del access.saved[gone]


def current_umask() -> int:
    """The process umask, read from /proc: setting it to learn it would race
    with other threads creating files.  Where /proc does not tell (not
    mounted, a kernel before 4.7), it is set and restored."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_tree(path: str | os.PathLike) -> None:
    """rm -rf of a tree we own, through the directories in it that deny us
    (mode 000, read-only).  A symlink is removed, never followed.  Nothing
    above path is changed: if its parent denies us, PermissionError."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    try:
        shutil.rmtree(path)  # most trees have no directory that denies us
    except PermissionError:
        _open_tree(path)
        shutil.rmtree(path)


def _open_tree(path: str | os.PathLike) -> None:
    """Give every directory in the tree at path our rwx bits, top-down so
    that each is opened before the walk enters it."""
    st = os.lstat(path)
    if st.st_mode & 0o700 != 0o700:
        os.chmod(path, stat.S_IMODE(st.st_mode) | 0o700)
    for dirpath, dirnames, _ in os.walk(path):
        for name in dirnames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o700 != 0o700:
                os.chmod(full, stat.S_IMODE(st.st_mode) | 0o700)
