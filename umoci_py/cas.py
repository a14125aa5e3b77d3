"""The OCI image layout on disk: blobs, index.json, locking.

Every blob is written to a temp file inside a locked ``.umoci-*`` directory of
the layout (the name umoci uses, so umoci's gc treats stale ones the same
way) and renamed into ``blobs/sha256``: a blob is there whole or not at
all, at whatever moment its writer is killed; index.json is replaced the
same way.  Neither is fsynced, as umoci 0.4.7 fsyncs neither (strace of
`umoci tag`: write, rename, no fsync): a blob costs its write, where an fsync
paid 30-60 ms for a 60 MB layer, and an fsync of index.json right after a
build's layers waited for the journal to write them out (ext4's ordered
mode).  Syncing the index and not its blobs would be the worst of both.
Durability across a power loss is the file system's, as for umoci.
Reads are verified against the descriptor's digest and size.

Two flock(2) lock files coordinate processes:
  ``.umoci_py-index.lock``  exclusive while index.json is read-modified-written;
  ``.umoci_py-gc.lock``     shared by every writer for a whole mutation (blobs
                            written before index.json references them),
                            exclusive for gc.
Calling gc while this process holds writer() would deadlock on itself.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import shutil
import stat
import tempfile
from pathlib import Path

from . import digest as digestmod
from . import jsonenc, jsonload, mediatypes, schemas
from .atomicfile import atomic_file
from .errors import BlobError, LayoutError, SchemaError
from .unpriv import remove_tree

INDEX_LOCK = ".umoci_py-index.lock"
GC_LOCK = ".umoci_py-gc.lock"
TEMP_PREFIX = ".umoci-"
_CHUNK = 1 << 20

# Go struct field order of ispec.Index and ispec.Descriptor, so index.json
# bytes match what umoci writes for the same content.
_INDEX_ORDER = ("schemaVersion", "mediaType", "artifactType", "manifests", "subject", "annotations")
_DESCRIPTOR_ORDER = ("mediaType", "digest", "size", "urls", "annotations", "data", "platform",
                     "artifactType")
_MANIFEST_ORDER = ("schemaVersion", "mediaType", "artifactType", "config", "layers", "subject",
                   "annotations")
# Manifests and indexes we write say what they are (image-spec 1.1, after
# CVE-2021-41190), as umoci 0.5+ does; reads refuse a blob that says otherwise.
_EMBEDDED = {"manifest": (mediatypes.MANIFEST, _MANIFEST_ORDER),
             "index": (mediatypes.INDEX, _INDEX_ORDER)}


def _ordered(doc: dict, order: tuple[str, ...]) -> dict:
    out = {key: doc[key] for key in order if key in doc}
    out.update((key, value) for key, value in doc.items() if key not in out)
    return out


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes, tmp_dir: Path) -> None:
    # its temp file is a .umoci-* one: a killed writer's is gc'd as umoci's are
    with atomic_file(path, 0o644, prefix=TEMP_PREFIX, tmp_dir=tmp_dir, sync=False) as f:
        f.write(data)


@contextlib.contextmanager
def flocked(path: Path, mode: int):
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise LayoutError(f"{path}: cannot open lock file: {err.strerror}") from None
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)


class VerifiedReader(io.RawIOBase):
    """Reads a blob file and raises BlobError once the bytes disagree with the descriptor."""

    def __init__(self, fileobj, path: Path, digest: str, size: int) -> None:
        super().__init__()
        self._file = fileobj
        self._path = path
        self._digest = digest
        self._size = size
        self._hasher = digestmod.Hasher(size)
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer)
        # Read one byte past the expected size so an oversized blob is noticed.
        want = min(len(view), max(self._size - self._hasher.size, 0) + 1)
        n = self._file.readinto(view[:want])
        if n:
            self._hasher.update(view[:n])
            if self._hasher.size > self._size:
                raise BlobError(f"{self._path}: verified reader size mismatch: "
                                f"blob is larger than the expected {self._size} bytes")
        elif not self._checked and len(view):
            self._verify()
        return n

    def _verify(self) -> None:
        self._checked = True
        if self._hasher.size != self._size:
            raise BlobError(f"{self._path}: verified reader size mismatch: "
                            f"expected {self._size} bytes, read {self._hasher.size}")
        if self._hasher.digest != self._digest:
            raise BlobError(f"{self._path}: verified reader digest mismatch: "
                            f"expected {self._digest}, got {self._hasher.digest}")

    def close(self) -> None:
        self._file.close()
        super().close()


class BlobWriter:
    """Streams one blob into a locked temp dir; on clean exit it is in blobs/sha256."""

    def __init__(self, layout: "Layout", expect: tuple[str, int] | None = None) -> None:
        self._layout = layout
        self._expect = expect
        self._hasher = digestmod.Hasher()
        self.digest: str | None = None
        self.size: int | None = None

    def __enter__(self) -> "BlobWriter":
        self._stack = contextlib.ExitStack()
        try:
            self._stack.enter_context(self._layout.writer())
            self._tmpdir = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=self._layout.path))
            self._stack.callback(shutil.rmtree, self._tmpdir, ignore_errors=True)
            dirfd = os.open(self._tmpdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self._stack.callback(os.close, dirfd)
            # umoci's gc removes only .umoci-* dirs it can lock: this marks ours live.
            fcntl.flock(dirfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._tmpfile = self._tmpdir / "blob"
            self._file = self._stack.enter_context(open(self._tmpfile, "xb"))
        except OSError as err:
            self._stack.close()
            raise LayoutError(f"{self._layout.path}: cannot write blob: {err.strerror}") from None
        except BaseException:
            self._stack.close()
            raise
        return self

    def write(self, data: bytes) -> int:
        self._file.write(data)
        self._hasher.update(data)
        return len(data)

    def __exit__(self, exc_type, exc, tb) -> None:
        with self._stack:
            if exc_type is None:
                try:
                    self._commit()
                except OSError as err:
                    raise LayoutError(f"{self._layout.path}: cannot write blob: {err.strerror}") from None

    def _commit(self) -> None:
        if self._expect is not None:
            self._check(*self._expect)
        self._file.close()
        os.chmod(self._tmpfile, 0o644)
        target_dir = self._layout.blob_dir
        target_dir.mkdir(mode=0o755, exist_ok=True)
        os.rename(self._tmpfile, target_dir / digestmod.hex_of(self._hasher.digest))
        self.digest = self._hasher.digest
        self.size = self._hasher.size

    def _check(self, digest: str, size: int) -> None:
        # Before the rename: content that is not what the descriptor promised
        # never appears in blobs/, not even under its own digest.
        if self._hasher.size != size:
            raise BlobError(f"{self._layout.path}: blob {digest}: size mismatch: "
                            f"expected {size} bytes, got {self._hasher.size}")
        if self._hasher.digest != digest:
            raise BlobError(f"{self._layout.path}: blob {digest}: digest mismatch: "
                            f"content has digest {self._hasher.digest}")


class Layout:
    """An OCI image layout directory (image-spec image-layout.md)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def blob_dir(self) -> Path:
        return self.path / "blobs" / "sha256"

    @classmethod
    def init(cls, path) -> "Layout":
        """Create a new empty layout; fails if ``path`` exists.

        Built in a temp directory beside ``path`` and renamed into place, so
        a concurrent opener never sees a half-made layout and a kill leaves
        at most a stray ``.umoci-init-*`` directory.
        """
        path = Path(path)
        if os.path.lexists(path):
            raise LayoutError(f"{path}: cannot create layout: path already exists")
        try:
            tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX + "init-", dir=path.parent))
        except OSError as err:
            raise LayoutError(f"{path}: cannot create layout: {err.strerror}") from None
        try:
            os.chmod(tmp, 0o755)
            (tmp / "blobs" / "sha256").mkdir(mode=0o755, parents=True)
            _write_atomic(tmp / "oci-layout",
                          jsonenc.dumps({"imageLayoutVersion": mediatypes.OCI_LAYOUT_VERSION}), tmp)
            index = {"schemaVersion": 2, "mediaType": mediatypes.INDEX, "manifests": []}
            _write_atomic(tmp / "index.json", jsonenc.dumps(index), tmp)
            # rename(2) replaces only an empty directory: a layout another
            # process made meanwhile is never replaced.
            os.rename(tmp, path)
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            if err.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                raise LayoutError(f"{path}: cannot create layout: path already exists") from None
            raise LayoutError(f"{path}: cannot create layout: {err.strerror}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(path.parent)
        return cls(path)

    @classmethod
    def open(cls, path) -> "Layout":
        """Open an existing layout after checking oci-layout, blobs/ and index.json."""
        path = Path(path)
        if not path.is_dir():
            raise LayoutError(f"{path}: not an OCI layout: no such directory")
        marker = path / "oci-layout"
        doc = _load_json(marker)
        schemas.validate(doc, "oci-layout", str(marker))
        if doc["imageLayoutVersion"] != mediatypes.OCI_LAYOUT_VERSION:
            raise LayoutError(f"{marker}: unsupported imageLayoutVersion "
                              f"{doc['imageLayoutVersion']!r} (want {mediatypes.OCI_LAYOUT_VERSION!r})")
        for sub in (path / "blobs", path / "blobs" / "sha256"):
            try:
                st = os.lstat(sub)
            except FileNotFoundError:
                if sub.name == "sha256":
                    continue  # created on first write, like umoci
                raise LayoutError(f"{sub}: not an OCI layout: blobs directory missing") from None
            if stat.S_ISLNK(st.st_mode):
                raise LayoutError(f"{sub}: refusing a layout whose blob directory is a symlink")
            if not stat.S_ISDIR(st.st_mode):
                raise LayoutError(f"{sub}: not an OCI layout: not a directory")
        if not (path / "index.json").is_file():
            raise LayoutError(f"{path / 'index.json'}: not an OCI layout: index.json missing")
        return cls(path)

    # -- blobs ---------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blob_dir / digestmod.hex_of(digest)

    def blob_writer(self, expect: tuple[str, int] | None = None) -> BlobWriter:
        """Stream a new blob in; with expect=(digest, size) anything else is a
        BlobError and nothing is stored."""
        return BlobWriter(self, expect)

    def put_blob(self, data: bytes) -> tuple[str, int]:
        """Store data as a blob.  A blob already there with these very bytes
        is kept: a no-change rebuild puts the same config and manifest again,
        and comparing one is a read where writing it is a new file and a rename."""
        digest = digestmod.from_bytes(data)
        try:
            with open(self.blob_path(digest), "rb") as f:
                if f.read(len(data) + 1) == data:
                    return digest, len(data)
        except OSError:
            pass
        with self.blob_writer() as w:
            w.write(data)
        return w.digest, w.size

    def open_blob(self, digest: str, size: int):
        """A binary reader of the blob; BlobError at EOF if digest or size differ."""
        path = self.blob_path(digest)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BlobError(f"{path}: invalid descriptor size {size!r}: must be a non-negative integer")
        try:
            raw = open(path, "rb", buffering=0)
        except FileNotFoundError:
            raise BlobError(f"{path}: blob {digest} not found in layout") from None
        except OSError as err:
            raise BlobError(f"{path}: cannot open blob: {err.strerror}") from None
        return io.BufferedReader(VerifiedReader(raw, path, digest, size), _CHUNK)

    def read_blob(self, digest: str, size: int) -> bytes:
        with self.open_blob(digest, size) as f:
            return f.read()

    def read_json(self, descriptor: dict, kind: str) -> dict:
        """The parsed, verified and schema-checked JSON blob ``descriptor`` points to."""
        schemas.validate(descriptor, "descriptor", f"{self.path}: descriptor")
        data = self.read_blob(descriptor["digest"], descriptor["size"])
        source = str(self.blob_path(descriptor["digest"]))
        doc = _parse_json(data, source)
        # Before the schema: "this is an index, not a manifest" is the clearer message.
        embedded = doc.get("mediaType") if kind in _EMBEDDED and isinstance(doc, dict) else None
        if embedded is not None and embedded != descriptor["mediaType"]:
            raise SchemaError(f"{source}: embedded mediaType {embedded!r} does not match the "
                              f"descriptor's {descriptor['mediaType']!r}")
        schemas.validate(doc, kind, source)
        return doc

    def put_json(self, doc: dict, kind: str) -> tuple[str, int]:
        if kind in _EMBEDDED:
            media_type, order = _EMBEDDED[kind]
            doc = _ordered({"mediaType": media_type, **doc}, order)
        schemas.validate(doc, kind, f"new {kind} blob for {self.path}")
        return self.put_blob(jsonenc.dumps(doc))

    def link_blob(self, source: Path, digest: str) -> bool:
        """Put a file known to hold blob digest in as a hard link (a blob of
        one of our own layouts: blobs never change once written); False
        where that cannot be (another file system), for the caller to copy."""
        with self.writer():
            tmpdir = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=self.path))
            dirfd = os.open(tmpdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                fcntl.flock(dirfd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # live, as BlobWriter's
                try:
                    os.link(source, tmpdir / "blob")
                except OSError:
                    return False
                self.blob_dir.mkdir(mode=0o755, exist_ok=True)
                os.rename(tmpdir / "blob", self.blob_path(digest))
                return True
            finally:
                os.close(dirfd)
                shutil.rmtree(tmpdir, ignore_errors=True)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def list_blobs(self) -> set[str]:
        try:
            names = os.listdir(self.blob_dir)
        except FileNotFoundError:
            return set()
        return {digestmod.from_hex(n) for n in names if digestmod.is_valid(digestmod.from_hex(n))}

    def delete_blob(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.blob_path(digest))

    # -- index.json ----------------------------------------------------------

    def read_index(self) -> dict:
        path = self.path / "index.json"
        doc = _load_json(path)
        schemas.validate(doc, "index", str(path))
        return doc

    @contextlib.contextmanager
    def update_index(self):
        """Yield index.json as a dict under an exclusive lock; write it back atomically."""
        with self.writer(), flocked(self.path / INDEX_LOCK, fcntl.LOCK_EX):
            index = self.read_index()
            yield index
            index["mediaType"] = mediatypes.INDEX
            index = _ordered(index, _INDEX_ORDER)
            index["manifests"] = [_ordered(d, _DESCRIPTOR_ORDER) for d in index["manifests"]]
            path = self.path / "index.json"
            schemas.validate(index, "index", f"{path} (update)")
            try:
                _write_atomic(path, jsonenc.dumps(index), self.path)
            except OSError as err:
                raise LayoutError(f"{path}: cannot write: {err.strerror}") from None

    # -- locking -------------------------------------------------------------

    def writer(self):
        """Shared lock for a whole mutation: gc waits until it is released."""
        return flocked(self.path / GC_LOCK, fcntl.LOCK_SH)

    def gc_lock(self):
        """Exclusive lock excluding every writer (used by refs.gc)."""
        return flocked(self.path / GC_LOCK, fcntl.LOCK_EX)

    def clean_temp_dirs(self) -> list[Path]:
        """Remove stale ``.umoci-*`` temp dirs nobody holds locked; return them."""
        removed = []
        for entry in sorted(self.path.glob(TEMP_PREFIX + "*")):
            try:
                fd = os.open(entry, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    continue
                os.close(fd)
                raise
            try:
                remove_tree(entry)
                removed.append(entry)
            finally:
                os.close(fd)
        return removed


def _parse_json(data: bytes, source: str) -> dict:
    return jsonload.loads(data, source, SchemaError, "invalid JSON")


def _load_json(path: Path) -> dict:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LayoutError(f"{path}: not an OCI layout: file missing") from None
    except OSError as err:
        raise LayoutError(f"{path}: cannot read: {err.strerror}") from None
    return _parse_json(data, str(path))
