"""A small OCI distribution API v2 client over the standard library's http.client.

One Client is the context of a whole build or command: its options, keep-alive
connections per thread, the tokens it obtained, where blobs not yet
downloaded can be fetched from (a build fetches a base image's or a cache
hit's layers only when a step needs them) and a log of the blobs it fetched
(tests and the progress output read it).  Every request loop is
bounded in attempts and in time; retries back off exponentially on 5xx, 429
and dropped connections.  Error messages name the reference and the registry,
never a credential.
"""

from __future__ import annotations

import hashlib
import http.client
import ssl
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

from umoci_py import jsonload
from umoci_py import mediatypes as mt
from umoci_py.cas import Layout
from umoci_py.errors import BlobError

from orca.registry import auth
from orca.registry.errors import AuthError, DigestError, NotFoundError, RegistryError
from orca.registry.reference import Reference

MANIFEST_ACCEPT = ", ".join([mt.INDEX, mt.MANIFEST, mt.DOCKER_MANIFEST_LIST, mt.DOCKER_MANIFEST])
MAX_MANIFEST = 4 << 20  # containerd's limit: a manifest is small; refuse to buffer more
REDIRECTS = 5
CHUNK = 4 << 20  # one read from the socket, one write, one hash update


@dataclass
class RegistryOptions:
    tls_ca: tuple[Path, ...] = ()          # extra CA bundles, on top of the system ones
    insecure: frozenset[str] = frozenset()  # host[:port] spoken to over plain HTTP
    auth_files: list[Path] | None = None    # None: where podman/skopeo/docker look
    retries: int = 4
    backoff: float = 0.5                    # seconds before the first retry, doubled each time
    timeout: float = 60.0                   # per socket operation
    max_time: float = 600.0                 # per request loop, all attempts together
    jobs: int = 4                           # concurrent blob transfers
    chunk_size: int = 16 << 20              # uploads above this size go in chunks


@dataclass
class Client:
    opts: RegistryOptions = field(default_factory=RegistryOptions)

    def __post_init__(self):
        self._local = threading.local()
        self._lock = threading.Lock()
        self._auth: dict[tuple, str] = {}      # (host, scope) or (host,) -> Authorization value
        self.fetched: list[str] = []           # digests of blobs downloaded, in order
        self._sources: dict[str, Repository] = {}  # digest -> where to fetch it when needed
        self._blob_locks: dict[str, threading.Lock] = {}
        self._ssl: ssl.SSLContext | None = None
        for ca in self.opts.tls_ca:
            if not ca.is_file():
                raise RegistryError(f"{ca}: cannot load CA certificates: no such file")
        self.files = auth.auth_files() if self.opts.auth_files is None else list(self.opts.auth_files)

    def repository(self, ref: Reference) -> "Repository":
        return Repository(self, ref)

    # -- transport ----------------------------------------------------------
    @property
    def ssl(self) -> ssl.SSLContext:
        """Made on the first TLS connection: loading the system CAs costs tens
        of milliseconds that a plain-HTTP registry never needs."""
        with self._lock:
            if self._ssl is None:
                context = ssl.create_default_context()
                for ca in self.opts.tls_ca:
                    try:
                        context.load_verify_locations(cafile=str(ca))
                    except (OSError, ssl.SSLError) as err:
                        raise RegistryError(f"{ca}: cannot load CA certificates: {err}") from None
                self._ssl = context
            return self._ssl

    def scheme(self, host: str) -> str:
        return "http" if host in self.opts.insecure else "https"

    def _conn(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        pool = self._local.__dict__.setdefault("pool", {})
        conn = pool.get((scheme, netloc))
        if conn is None:
            if scheme == "https":
                conn = http.client.HTTPSConnection(netloc, timeout=self.opts.timeout, context=self.ssl)
            else:
                conn = http.client.HTTPConnection(netloc, timeout=self.opts.timeout)
            pool[(scheme, netloc)] = conn
        return conn

    def _send(self, method: str, url: str, headers: dict, body) -> http.client.HTTPResponse:
        parts = urlsplit(url)
        conn = self._conn(parts.scheme, parts.netloc)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        data = body() if callable(body) else body
        try:
            conn.request(method, path, body=data, headers=headers)
            return conn.getresponse()
        except BaseException:
            conn.close()
            raise
        finally:
            if hasattr(data, "close"):
                data.close()

    def request(self, method: str, url: str, *, ref: Reference, scope: tuple[str, ...],
                what: str, headers: dict | None = None, body=None) -> http.client.HTTPResponse:
        """Send with auth, redirects and bounded retries; the caller checks the status.

        `body` is bytes or a callable returning a fresh file (so a retry can resend).
        """
        deadline = time.monotonic() + self.opts.max_time
        attempt = redirects = 0
        challenged = False
        origin = urlsplit(url).netloc
        while True:
            h = dict(headers or {})
            if urlsplit(url).netloc == origin:  # never hand our token to a redirect target
                value = self._auth.get((origin,)) or self._auth.get((origin, scope))
                if value:
                    h["Authorization"] = value
            try:
                resp = self._send(method, url, h, body)
            except (OSError, http.client.HTTPException) as err:
                attempt = self._backoff(attempt, deadline, f"{what}: {ref.registry}: connection failed: "
                                        f"{_reason(err)}")
                continue
            status = resp.status
            if status == 401 and not challenged and urlsplit(url).netloc == origin:
                challenge = resp.getheader("WWW-Authenticate") or ""
                resp.read()
                self._authenticate(ref, challenge, scope, what)
                challenged = True
                continue
            if status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
                resp.read()
                redirects += 1
                if redirects > REDIRECTS:
                    raise RegistryError(f"{what}: {ref.registry}: more than {REDIRECTS} redirects")
                url = urljoin(url, resp.getheader("Location"))
                if status == 303:
                    method, body = "GET", None
                continue
            if status >= 500 or status == 429:
                resp.read()
                attempt = self._backoff(attempt, deadline, f"{what}: {ref.registry}: HTTP {status} "
                                        f"after {attempt + 1} attempts")
                continue
            return resp

    def _backoff(self, attempt: int, deadline: float, message: str) -> int:
        delay = self.opts.backoff * (2 ** attempt)
        if attempt >= self.opts.retries or time.monotonic() + delay > deadline:
            raise RegistryError(message)
        time.sleep(delay)
        return attempt + 1

    def _authenticate(self, ref: Reference, challenge: str, scope: tuple[str, ...], what: str) -> None:
        kind, params = auth.parse_challenge(challenge)
        cred = auth.find_credential(ref.registry, ref.repository, self.files)
        if kind == "basic":
            if cred is None:
                raise AuthError(f"{what}: {ref.registry} requires a login and no credentials for it "
                                "were found (auth.json or ~/.docker/config.json)")
            with self._lock:
                self._auth[(ref.host,)] = cred.basic_header()
            return
        if kind != "bearer" or not params.get("realm"):
            raise AuthError(f"{what}: {ref.registry}: unsupported authentication challenge {kind!r}")
        query = [("service", params["service"])] if params.get("service") else []
        query += [("scope", s) for s in scope]
        realm = params["realm"]
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        headers = {"Authorization": cred.basic_header()} if cred else {}
        deadline = time.monotonic() + self.opts.max_time
        attempt = 0
        while True:
            try:
                resp = self._send("GET", url, headers, None)
                body = resp.read(MAX_MANIFEST)
            except (OSError, http.client.HTTPException) as err:
                attempt = self._backoff(attempt, deadline, f"{what}: token server {urlsplit(realm).netloc} "
                                        f"for {ref.registry}: connection failed: {_reason(err)}")
                continue
            if resp.status >= 500:
                attempt = self._backoff(attempt, deadline, f"{what}: token server for {ref.registry}: "
                                        f"HTTP {resp.status}")
                continue
            break
        if resp.status in (401, 403):
            raise AuthError(f"{what}: {ref.registry}: login refused by its token server "
                            f"({resp.status}{'' if cred else ', no credentials found'})")
        try:
            doc = jsonload.parse(body, dict)
            token = doc.get("token") or doc["access_token"]
        except (jsonload.Invalid, KeyError):
            raise AuthError(f"{what}: token server for {ref.registry} answered HTTP {resp.status} "
                            "without a token") from None
        with self._lock:
            self._auth[(ref.host, scope)] = f"Bearer {token}"

    def note_fetched(self, digest: str) -> None:
        with self._lock:
            self.fetched.append(digest)

    def blob_lock(self, digest: str) -> threading.Lock:
        """One download of a blob at a time, however many stages want it."""
        with self._lock:
            return self._blob_locks.setdefault(digest, threading.Lock())

    # -- blobs fetched when first needed -------------------------------------
    def remember(self, repo: "Repository", descs: list[dict]) -> None:
        """`repo` has these blobs: fetch them from there if they are ever needed."""
        with self._lock:
            for d in descs:
                self._sources.setdefault(d["digest"], repo)

    def source_of(self, digest: str) -> "Repository | None":
        with self._lock:
            return self._sources.get(digest)

    def ensure(self, layout: Layout, descs: list[dict]) -> list[str]:
        """Fetch those of `descs` that `layout` lacks and a remembered repository
        has (blobs of unknown origin are left to the caller); the digests fetched."""
        by_repo: dict[int, tuple[Repository, list[dict]]] = {}
        for d in descs:
            repo = self.source_of(d["digest"])
            if repo is not None and not layout.has_blob(d["digest"]):
                by_repo.setdefault(id(repo), (repo, []))[1].append(d)
        fetched = []
        for repo, todo in by_repo.values():
            fetched += repo.fetch_blobs(todo, layout)
        return fetched


def _reason(err: BaseException) -> str:
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({err.verify_message}); see --tls-ca"
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


def fail(resp: http.client.HTTPResponse, what: str, ref: Reference) -> RegistryError:
    """The error for an unexpected status; reads the body (registry error codes only)."""
    try:
        doc = jsonload.parse(resp.read(1 << 16) or b"{}", dict)
        codes = ", ".join(e.get("code", "") for e in doc.get("errors", []) if isinstance(e, dict))
    except (jsonload.Invalid, TypeError, OSError, http.client.HTTPException):
        codes = ""
    detail = f" [{codes}]" if codes else ""
    if resp.status == 401:
        return AuthError(f"{what}: {ref.registry}: authentication failed (401){detail}")
    if resp.status == 403:
        return AuthError(f"{what}: {ref.registry}: access denied (403){detail}")
    if resp.status == 404:
        return NotFoundError(f"{what}: not found on {ref.registry} (404){detail}")
    return RegistryError(f"{what}: {ref.registry}: unexpected HTTP {resp.status}{detail}")


class Repository:
    """One repository of one registry, seen through a Client."""

    def __init__(self, client: Client, ref: Reference):
        self.client = client
        self.ref = ref
        self.base = f"{client.scheme(ref.host)}://{ref.host}/v2/{ref.repository}"

    def scope(self, push: bool = False, mount_from: tuple[str, ...] = ()) -> tuple[str, ...]:
        own = f"repository:{self.ref.repository}:{'pull,push' if push else 'pull'}"
        return (own,) + tuple(f"repository:{r}:pull" for r in mount_from)

    def call(self, method: str, path_or_url: str, what: str, push: bool = False,
             mount_from: tuple[str, ...] = (), **kw) -> http.client.HTTPResponse:
        url = path_or_url if "://" in path_or_url else self.base + path_or_url
        return self.client.request(method, url, ref=self.ref, scope=self.scope(push, mount_from),
                                   what=what, **kw)

    # -- manifests ----------------------------------------------------------
    def get_manifest(self, reference: str | None = None) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest or index, verified when pinned by digest."""
        reference = reference or self.ref.reference
        what = f"manifest {self.ref.with_reference(*_split(reference))}"
        resp = self.call("GET", f"/manifests/{reference}", what, headers={"Accept": MANIFEST_ACCEPT})
        if resp.status != 200:
            raise fail(resp, what, self.ref)
        body = resp.read(MAX_MANIFEST + 1)
        if len(body) > MAX_MANIFEST:
            raise RegistryError(f"{what}: larger than {MAX_MANIFEST} bytes, refused")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise DigestError(f"{what}: content has digest {digest}, not the one asked for")
        header = resp.getheader("Docker-Content-Digest")
        if header and header.startswith("sha256:") and header != digest:
            raise DigestError(f"{what}: content has digest {digest} but the registry says {header}")
        media_type = _media_type(body, resp.getheader("Content-Type"), what)
        return body, media_type, digest

    def manifest_digest(self, reference: str) -> str | None:
        """The digest a tag points to (HEAD), or None when there is no such tag."""
        what = f"manifest {self.ref.with_reference(*_split(reference))}"
        resp = self.call("HEAD", f"/manifests/{reference}", what, headers={"Accept": MANIFEST_ACCEPT})
        resp.read()
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise fail(resp, what, self.ref)
        return resp.getheader("Docker-Content-Digest")

    def put_manifest(self, reference: str, body: bytes, media_type: str) -> str:
        what = f"push manifest {self.ref.with_reference(*_split(reference))}"
        resp = self.call("PUT", f"/manifests/{reference}", what, push=True,
                         headers={"Content-Type": media_type, "Content-Length": str(len(body))}, body=body)
        if resp.status not in (200, 201):
            raise fail(resp, what, self.ref)
        resp.read()
        return "sha256:" + hashlib.sha256(body).hexdigest()

    # -- blobs --------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        what = f"blob {digest} of {self.ref}"
        resp = self.call("HEAD", f"/blobs/{digest}", what, push=True)
        resp.read()
        if resp.status == 404:
            return False
        if resp.status != 200:
            raise fail(resp, what, self.ref)
        return True

    def read_blob(self, desc: dict, what: str) -> bytes:
        """A small blob (a config or records list) in memory, verified."""
        resp = self.call("GET", f"/blobs/{desc['digest']}", what)
        if resp.status != 200:
            raise fail(resp, what, self.ref)
        data = resp.read(desc["size"] + 1)
        if len(data) != desc["size"] or "sha256:" + hashlib.sha256(data).hexdigest() != desc["digest"]:
            raise DigestError(f"{what}: content does not match its digest and size")
        return data

    def fetch_blob(self, desc: dict, layout: Layout) -> None:
        """Download one blob into `layout`, verifying digest and size while streaming.

        A dropped connection restarts the blob (bounded); wrong content is
        refused at once.  Nothing is left in the layout unless it verified.
        """
        digest, size = desc["digest"], desc["size"]
        what = f"blob {digest} of {self.ref}"
        deadline = time.monotonic() + self.client.opts.max_time
        attempt = 0
        with self.client.blob_lock(digest):
            if layout.has_blob(digest):
                return  # another stage fetched it meanwhile
            while True:
                resp = self.call("GET", f"/blobs/{digest}", what)
                if resp.status != 200:
                    raise fail(resp, what, self.ref)
                try:
                    self._stream(resp, digest, size, layout, what)
                except (OSError, http.client.HTTPException) as err:
                    resp.close()
                    attempt = self.client._backoff(attempt, deadline, f"{what}: {self.ref.registry}: "
                                                   f"download interrupted: {_reason(err)}")
                    continue
                self.client.note_fetched(digest)
                return

    @staticmethod
    def _stream(resp, digest: str, size: int, layout: Layout, what: str) -> None:
        # The layout's writer hashes what it stores, once, and checks digest
        # and size before the blob appears in blobs/; the socket is read
        # straight into one reused buffer.
        view = memoryview(bytearray(CHUNK))
        got = 0
        try:
            with layout.blob_writer(expect=(digest, size)) as out:
                while got < size:
                    n = resp.readinto(view[:min(CHUNK, size - got)])
                    if not n:
                        raise http.client.IncompleteRead(b"", size - got)
                    out.write(view[:n])
                    got += n
                if resp.read(1):
                    raise DigestError(f"{what}: registry sent more than the {size} bytes expected")
        except BlobError as err:
            raise DigestError(f"{what}: refused: {err}") from None

    def fetch_blobs(self, descs: list[dict], layout: Layout) -> list[str]:
        """Fetch the blobs `layout` lacks, concurrently; returns the digests fetched."""
        todo, seen = [], set()
        for d in descs:
            if d["digest"] not in seen and not layout.has_blob(d["digest"]):
                seen.add(d["digest"])
                todo.append(d)
        if not todo:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(self.client.opts.jobs, len(todo)))) as pool:
            futures = [pool.submit(self.fetch_blob, d, layout) for d in todo]
            _, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for f in pending:
                f.cancel()
        for f in futures:
            if not f.cancelled() and f.exception() is not None:
                raise f.exception()
        return [d["digest"] for d in todo]


def _split(reference: str) -> tuple[str | None, str | None]:
    return (None, reference) if reference.startswith("sha256:") else (reference, None)


def parse_json(data: bytes, what: str):
    """A document from a registry (or a layout about to be pushed): RegistryError if not JSON."""
    return jsonload.loads(data, what, RegistryError, "not JSON")


def _media_type(body: bytes, header: str | None, what: str) -> str:
    doc = parse_json(body, what)
    media_type = doc.get("mediaType") if isinstance(doc, dict) else None
    if not media_type:
        media_type = (header or "").split(";")[0].strip()
        if media_type not in mt.INDEX_TYPES | mt.MANIFEST_TYPES:
            media_type = mt.INDEX if "manifests" in doc else mt.MANIFEST
    if media_type not in mt.INDEX_TYPES | mt.MANIFEST_TYPES:
        raise RegistryError(f"{what}: unsupported media type {media_type!r} "
                            "(OCI or Docker schema2 manifests and indexes only)")
    return media_type
