"""The snapshot store: every layer extracted once, as an overlay upper.

A snapshot is one layer on top of its parent chain, kept as the upper
directory that holds it (umoci's OverlayfsRootfs format), keyed by its chain
ID as containerd's are: chainid(L1) = diffid(L1), chainid(L1..n) =
sha256(chainid(L1..n-1) + " " + diffid(Ln)).  Builds mount the chain's
snapshots as overlay lowers, so a stage on a known base costs a mount, and a
step that runs commits its upper as the next snapshot by a rename.

Layout of CACHE/snapshots:
  <chain hex>/diff            the upper directory
  <chain hex>/meta.json       parent chain, diff ID, size; its mtime is the last use
  <chain hex>/changes.json    what the snapshot changes in the manifest of the tree below it:
                              the mtree keywords of its upper's entries and the paths it
                              hides.  The merged tree's manifest (what a layer is diffed
                              against) is its chain's changes applied bottom up, kept in
                              the process: a commit reads and writes what it changed only.
  empty/                      an empty directory: the bottom lower of every mount
  .lock                       gc holds it exclusively, builds shared while they record a use

Leases: every build works in CACHE/build-*/, a directory it holds an flock
on for its lifetime, and lists there (`uses`) the snapshots it mounts.  gc
never removes a snapshot a live build lists (nor its parents); a build-*
directory nobody holds belongs to a killed build, and the next build or
prune removes it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from umoci_py import digest as digestmod
from umoci_py import jsonload
from umoci_py.cas import flocked
from umoci_py.unpriv import remove_tree

from orca.errors import BuildError

TYPE_CHECKING = False  # typing's, without importing typing: ~2 ms of every orca-build start
if TYPE_CHECKING:
    from umoci_py.layer.overlay import TreeChanges, UpperChanges

BUILD_PREFIX = "build-"
RECLAIM_PREFIX = ".reclaim-"
_HEX = re.compile(r"[0-9a-f]{64}")
# An automatic gc runs after a build once the snapshots take more than this.
DEFAULT_BUDGET = 10 << 30


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The chain ID (hex) of every prefix of diff_ids."""
    out: list[str] = []
    for diff_id in diff_ids:
        out.append(next_chain_id(out[-1] if out else None, diff_id))
    return out


def next_chain_id(parent: str | None, diff_id: str) -> str:
    """The chain ID (hex) of layer diff_id over the chain parent (hex; None: nothing below)."""
    chain = diff_id if parent is None else digestmod.from_bytes(f"sha256:{parent} {diff_id}".encode())
    return chain.split(":", 1)[1]


def parse_size(text: str) -> int:
    """'10GB', '512m', '1024' -> bytes (powers of 1024, as docker's units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not m:
        raise ValueError(f"{text!r}: not a size (e.g. 10GB, 512MB)")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))


def parse_duration(text: str) -> float:
    """'24h', '90m', '1h30m', '45s' -> seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"{text!r}: not a duration (e.g. 24h, 90m, 1h30m)")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


@dataclass
class SnapshotInfo:
    id: str
    parent: str | None
    size: int
    used: float


class Lease:
    """A build's working directory, held (flock) for the build's lifetime."""

    def __init__(self, cache_root: Path):
        while True:
            path = Path(tempfile.mkdtemp(prefix=BUILD_PREFIX, dir=cache_root))
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:  # reclaimed before we held it
                continue
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not reclaimed between mkdtemp and flock
                break
            os.close(fd)
        self.dir, self._fd = path, fd
        self.uses: set[str] = set()

    def record(self, store: "SnapshotStore", ids: list[str]) -> None:
        """Protect these snapshots from gc from now on (call under store.shared())."""
        new = [i for i in ids if i not in self.uses]
        if new:
            with open(self.dir / "uses", "a") as f:
                f.write("".join(i + "\n" for i in new))
            self.uses.update(new)

    def release(self) -> None:
        remove_tree(self.dir)
        os.close(self._fd)


def reclaim_builds(cache_root: Path) -> int:
    """Remove what killed builds left behind; the number of directories removed."""
    removed = 0
    for path in Path(cache_root).iterdir():
        if path.name.startswith(RECLAIM_PREFIX):
            discard(path)
            continue
        if not path.name.startswith(BUILD_PREFIX):
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # finished meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live build's
        else:
            # Renamed while held, so a build that just made it sees it gone
            trash = path.with_name(RECLAIM_PREFIX + path.name)
            try:
                os.rename(path, trash)
            except FileNotFoundError:
                continue
        finally:
            os.close(fd)
        discard(trash)
        removed += 1
    return removed


def discard(path: Path) -> None:
    """Remove a tree that another process may be removing at the same time."""
    while os.path.lexists(path):
        try:
            remove_tree(path)
        except FileNotFoundError:
            continue


class SnapshotStore:
    def __init__(self, cache_root: Path):
        self.cache_root = Path(cache_root)
        self.root = self.cache_root / "snapshots"
        self.empty = self.root / "empty"
        self.empty.mkdir(parents=True, exist_ok=True)
        self._lock = self.root / ".lock"
        self._making: dict[str, threading.Lock] = {}
        self._making_lock = threading.Lock()
        # merged trees' manifests by snapshot, for this process's later steps and stages
        self._manifests: dict[str, dict[str, str]] = {}

    def making(self, sid: str) -> threading.Lock:
        """The lock a thread holds while it makes snapshot sid."""
        with self._making_lock:
            return self._making.setdefault(sid, threading.Lock())

    def diff(self, sid: str) -> Path:
        return self.root / sid / "diff"

    def has(self, sid: str) -> bool:
        return (self.root / sid / "meta.json").exists()

    def _locked(self, mode: int):
        return flocked(self._lock, mode)

    def shared(self):
        """Held while a build checks snapshots and records its use of them."""
        return self._locked(fcntl.LOCK_SH)

    def manifest(self, sid: str | None) -> dict[str, str]:
        """The manifest of the merged tree at snapshot sid, as
        umoci_py.layer.overlay.manifest gives it: the chain's changes applied
        bottom up from the nearest snapshot this process knows already."""
        chain: list[tuple[str, TreeChanges]] = []
        merged: dict[str, str] = {}
        while sid is not None:
            if sid in self._manifests:
                merged = self._manifests[sid]
                break
            path = self.root / sid
            try:
                chain.append((sid, _changes(path / "changes.json")))
            except FileNotFoundError:
                merged = self._manifests[sid] = _merged_manifest(path / "manifest.json")
                break
            sid = _parent(path / "meta.json")
        for sid, changes in reversed(chain):
            merged = self._manifests[sid] = changes.apply(merged)
        return merged

    def add(self, sid: str, parent: str | None, diff_id: str, upper: Path, changes: UpperChanges,
            workdir: Path, lease: Lease) -> None:
        """Move a finished upper in as snapshot sid (kept as is if another
        build was first), with what it changes in its parent's manifest and
        its size on disk, both from the walk that found its changes."""
        staging = Path(tempfile.mkdtemp(dir=workdir))
        os.rename(upper, staging / "diff")
        doc = {"entries": changes.tree.entries, "removed": changes.tree.removed}
        (staging / "changes.json").write_bytes(json.dumps(doc, separators=(",", ":")).encode())
        (staging / "meta.json").write_text(json.dumps({"parent": parent, "diff_id": diff_id,
                                                       "size": changes.disk_usage}))
        if parent is None or parent in self._manifests:  # its view comes at the cost of a dict copy
            self._manifests[sid] = changes.tree.apply(self._manifests.get(parent, {}))
        with self.shared():
            lease.record(self, [sid])
            try:
                os.rename(staging, self.root / sid)
            except OSError:
                remove_tree(staging)  # the same snapshot, made by a concurrent build

    def use(self, ids: list[str], lease: Lease) -> list[str]:
        """Record a use of these snapshots; the ones missing, which the caller makes."""
        with self.shared():
            lease.record(self, ids)
            now = time.time()
            missing = []
            for sid in ids:
                try:
                    os.utime(self.root / sid / "meta.json", (now, now))
                except FileNotFoundError:
                    missing.append(sid)
            return missing

    def list(self) -> list[SnapshotInfo]:
        out = []
        for path in self.root.iterdir():
            if not _HEX.fullmatch(path.name):
                continue
            try:
                meta = jsonload.parse((path / "meta.json").read_bytes(), dict)
                used = (path / "meta.json").stat().st_mtime
            except (OSError, jsonload.Invalid):
                continue
            out.append(SnapshotInfo(path.name, meta.get("parent"), int(meta.get("size") or 0), used))
        return out

    def gc(self, keep_bytes: int | None = None, older_than: float | None = None) -> tuple[int, int]:
        """Remove snapshots no live build uses: all of them (no limits), those
        unused for older_than seconds, then least recently used ones until
        the rest fit in keep_bytes.  (snapshots, bytes) removed."""
        with self._locked(fcntl.LOCK_EX):
            reclaim_builds(self.cache_root)
            snaps = {s.id: s for s in self.list()}
            protected = set()
            for build in self.cache_root.glob(BUILD_PREFIX + "*"):
                try:
                    protected.update((build / "uses").read_text().split())
                except OSError:
                    pass
            for sid in list(protected):
                while sid in snaps and snaps[sid].parent:
                    sid = snaps[sid].parent
                    protected.add(sid)
            children: dict[str, list[str]] = {}
            for s in snaps.values():
                children.setdefault(s.parent, []).append(s.id)
            total = sum(s.size for s in snaps.values())
            removed = freed = 0
            now = time.time()
            for s in sorted(snaps.values(), key=lambda s: s.used):
                if s.id in protected or s.id not in snaps:
                    continue
                if keep_bytes is not None or older_than is not None:
                    old = older_than is not None and now - s.used > older_than
                    over = keep_bytes is not None and total > keep_bytes
                    if not (old or over):
                        continue
                # its descendants are useless without it (none is protected: it would be)
                todo = [s.id]
                while todo:
                    sid = todo.pop()
                    todo.extend(c for c in children.get(sid, ()) if c in snaps)
                    gone = snaps.pop(sid)
                    self._remove(sid)
                    total -= gone.size
                    freed += gone.size
                    removed += 1
            for path in self.root.iterdir():
                if path.name.startswith(RECLAIM_PREFIX):
                    discard(path)
            return removed, freed

    def _remove(self, sid: str) -> None:
        trash = self.root / (RECLAIM_PREFIX + sid)
        os.rename(self.root / sid, trash)
        discard(trash)

    def total(self) -> int:
        return sum(s.size for s in self.list())

    def gc_if_over_budget(self) -> None:
        """After a build: LRU gc down to the budget (ORCA_CACHE_BUDGET bytes, or DEFAULT_BUDGET)."""
        try:
            budget = parse_size(os.environ.get("ORCA_CACHE_BUDGET") or str(DEFAULT_BUDGET))
        except ValueError:
            budget = DEFAULT_BUDGET
        if self.total() > budget:
            self.gc(keep_bytes=budget)


def _changes(path: Path) -> TreeChanges:
    from umoci_py.layer.overlay import TreeChanges
    doc = jsonload.load(path, BuildError, "corrupt snapshot manifest", dict)
    entries, removed = doc.get("entries"), doc.get("removed")
    if not (isinstance(entries, dict) and all(type(v) is str for v in entries.values())
            and isinstance(removed, list) and all(type(p) is str for p in removed)):
        raise BuildError(f"{path}: corrupt snapshot manifest: not entries and removed paths")
    return TreeChanges(entries, removed)


def _parent(meta: Path) -> str | None:
    try:
        parent = jsonload.load(meta, BuildError, "corrupt snapshot record", dict).get("parent")
    except FileNotFoundError:
        raise BuildError(f"{meta.parent}: not a whole snapshot: no meta.json") from None
    if parent is not None and not (isinstance(parent, str) and _HEX.fullmatch(parent)):
        raise BuildError(f"{meta}: corrupt snapshot record: parent {parent!r} is not a snapshot")
    return parent


def _merged_manifest(path: Path) -> dict[str, str]:
    """A snapshot made before changes.json: its manifest.json holds the
    whole merged tree's keywords, each as a JSON object."""
    from umoci_py.layer.overlay import encode
    try:
        doc = jsonload.load(path, BuildError, "corrupt snapshot manifest", dict)
    except FileNotFoundError:
        raise BuildError(f"{path.parent}: not a whole snapshot: no changes.json") from None
    if not all(isinstance(kw, dict) for kw in doc.values()):
        raise BuildError(f"{path}: corrupt snapshot manifest: an entry is not an object of keywords")
    return {p: encode(kw) for p, kw in doc.items()}
