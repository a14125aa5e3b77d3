"""The build cache: step keys, and the store of step results shared by builds.

A step key is a digest of the parent step's key, the instruction as canonical
JSON, the environment in scope (proxy variables excluded, as BuildKit does),
the platform and, for COPY/ADD, a digest of the selected source content.  It
depends on definitions and content only, never on mtimes or on results, so a
change re-runs exactly the steps downstream of it, in whichever stage.

Layout of the cache directory:
  layout/         an OCI layout holding every blob the build produced or imported
  records/<hex>   one JSON record per step key: the image after that step
  mounts/<hex>/   RUN --mount=type=cache directories, by mount id
  snapshots/      every layer extracted once (orca.snapstore)
  build-*/        the working directory of a running build (or of a killed one, until reclaimed)
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from umoci_py import digest as digestmod
from umoci_py import jsonload
from umoci_py.cas import Layout
from umoci_py.errors import LayoutError
from umoci_py.unpriv import remove_tree

from orca.errors import BuildError

PROXY_ARGS = frozenset({"http_proxy", "https_proxy", "ftp_proxy", "no_proxy", "all_proxy"})


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def ordered(obj) -> bytes:
    """Compact JSON keeping dict order: a record's image config comes back
    with the key order it was built with, so a cache hit exports the same
    config bytes (and manifest digest) as the build that made the record."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def digest_of(obj) -> str:
    return digestmod.from_bytes(canonical(obj))


def key_env(env: dict[str, str]) -> list[str]:
    """The environment that counts for a key: everything but proxy variables."""
    return [f"{k}={v}" for k, v in env.items() if k.lower() not in PROXY_ARGS]


def step_key(parent: str, instruction: dict, env: dict[str, str], platform: str,
             content: str | None = None) -> str:
    return digest_of({"parent": parent, "instruction": instruction, "env": key_env(env),
                      "platform": platform, "content": content})


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "orca"


class CacheStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.records = self.root / "records"
        self.mounts = self.root / "mounts"
        for d in (self.records, self.mounts):
            d.mkdir(parents=True, exist_ok=True)
        self.layout = self._open_layout(self.root / "layout")

    @staticmethod
    def _open_layout(path: Path) -> Layout:
        try:
            return Layout.open(path)
        except LayoutError:
            if path.exists() and (path / "index.json").exists():
                raise
        try:
            return Layout.init(path)
        except LayoutError:
            return Layout.open(path)  # another build created it meanwhile

    def _record_path(self, key: str) -> Path:
        return self.records / key.split(":", 1)[1]

    def get(self, key: str) -> dict | None:
        path = self._record_path(key)
        try:
            record = jsonload.load(path, BuildError, "corrupt cache record", dict)
            digests = [d["digest"] for d in record["image"]["layers"]]
        except FileNotFoundError:
            return None
        except (LookupError, TypeError) as err:
            raise BuildError(f"{path}: corrupt cache record: {type(err).__name__}: {err}") from None
        if not all(self.layout.has_blob(d) for d in digests):
            return None  # pruned underneath us
        return record

    def put(self, key: str, description: str, image: dict, chain: str | None = None) -> dict:
        """Record the image after a step; chain is the key later steps build
        on when it is not this one (a COPY --from found by content)."""
        record = {"key": key, "created": int(time.time()), "description": description, "image": image}
        if chain is not None and chain != key:
            record["chain"] = chain
        data = ordered(record)
        fd, tmp = tempfile.mkstemp(dir=self.records, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, self._record_path(key))
        return json.loads(data)

    def fetch(self, layers: list[dict]) -> None:
        """Make sure these layers of records are in the layout before they are
        read.  A local store has every layer its records name (get() checks);
        a registry-backed one fetches a hit's layers only here."""

    def list(self) -> list[dict]:
        out = []
        for path in sorted(self.records.iterdir()):
            if path.name.startswith(".tmp-"):
                continue
            try:
                record = jsonload.parse(path.read_bytes())
            except (OSError, jsonload.Invalid):
                continue
            if isinstance(record, dict) and isinstance(record.get("created"), int):
                out.append(record)
        return sorted(out, key=lambda r: r["created"])

    def mount_dir(self, mount_id: str) -> Path:
        path = self.mounts / digestmod.hex_of(digestmod.from_bytes(mount_id.encode()))
        path.mkdir(exist_ok=True)
        return path

    def prune_snapshots(self, keep_bytes: int | None = None,
                        older_than: float | None = None) -> tuple[int, int]:
        """gc of the layer snapshots (orca.snapstore) and of what killed builds
        left; without limits, every snapshot no running build uses.
        (snapshots, bytes) removed."""
        from orca.snapstore import SnapshotStore
        return SnapshotStore(self.root).gc(keep_bytes, older_than)

    def prune(self, keep_mounts: bool = False) -> tuple[int, int]:
        """Drop every record and the blobs no longer referenced; (records, blobs) removed."""
        n_records = 0
        for path in self.records.iterdir():
            path.unlink()
            n_records += 1
        with self.layout.gc_lock():  # waits for running builds (they hold writer())
            removed = 0
            for digest in self.layout.list_blobs():
                self.layout.delete_blob(digest)
                removed += 1
        if not keep_mounts:
            remove_tree(self.mounts)
            self.mounts.mkdir()
        return n_records, removed

