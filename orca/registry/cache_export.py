"""The registry build cache: `--cache-to registry:REF`, `--cache-from registry:REF`.

At REF the registry holds one OCI image manifest (artifactType
application/vnd.orca.cache.v1): its config blob lists the cache records
(step key -> image config and layer descriptors) and its layers are every
layer those records use, so the registry keeps them and they can be fetched
from that repository.  A hit costs no download: the record's layers are
fetched only when something reads them (a later step that runs, a COPY
--from that must unpack its stage, the final export), so a fully cached
build downloads only the layers of the image it outputs.

Writers merge with what is at REF and put the manifest last (one atomic
PUT), after its config and layers are in the repository: a reader never sees
a manifest naming absent blobs.  Two writers racing on REF both leave a
complete manifest; the later one wins and, having re-read REF, retries its
merge a bounded number of times if its records were dropped.
"""

from __future__ import annotations

import threading
from pathlib import Path

from umoci_py import mediatypes as mt

from orca.cache import CacheStore, canonical, ordered
from orca.registry import reference
from orca.registry.client import Client, parse_json
from orca.registry.errors import NotFoundError, RegistryError
from orca.registry.push import push_blob

ARTIFACT_TYPE = "application/vnd.orca.cache.v1"
CONFIG_TYPE = "application/vnd.orca.cache.config.v1+json"
MERGE_ATTEMPTS = 3
PREFIX = "registry:"


def parse_cache_ref(text: str) -> reference.Reference:
    """`registry:REF` (BuildKit's `type=registry,ref=REF` is accepted too)."""
    if text.startswith("type=registry,ref="):
        text = PREFIX + text[len("type=registry,ref="):]
    if not text.startswith(PREFIX):
        raise RegistryError(f"cache reference {text!r}: expected registry:REF")
    return reference.parse(text[len(PREFIX):])


def load_records(client: Client, ref: reference.Reference) -> dict[str, dict]:
    """The records at `ref` by key; empty when there is no cache there yet."""
    repo = client.repository(ref)
    try:
        body, media_type, _ = repo.get_manifest()
    except NotFoundError:
        return {}
    manifest = parse_json(body, f"cache {ref}: manifest")
    config = (manifest.get("config") if isinstance(manifest, dict) else None) or {}
    if media_type != mt.MANIFEST or config.get("mediaType") != CONFIG_TYPE:
        raise RegistryError(f"cache {ref}: not an orca build cache (config {config.get('mediaType')!r})")
    what = f"cache {ref}: records blob {config['digest']}"
    records = parse_json(repo.read_blob(config, what), what)
    try:
        return {r["key"]: r for r in records["records"]}
    except (KeyError, TypeError):
        raise RegistryError(f"{what}: not a records list") from None


class RegistryCacheStore(CacheStore):
    """The local cache store, backed by registry caches to read and one to write."""

    def __init__(self, root: Path, client: Client, cache_from: list[reference.Reference],
                 cache_to: reference.Reference | None = None):
        super().__init__(root)
        self.client = client
        self.cache_to = cache_to
        self._remote: dict[str, tuple[dict, reference.Reference]] = {}
        for ref in reversed(cache_from):  # the first --cache-from wins on a shared key
            for key, record in load_records(client, ref).items():
                self._remote[key] = (record, ref)
        self._used: dict[str, dict] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> dict | None:
        record = super().get(key)
        if record is None and key in self._remote:
            remote, ref = self._remote[key]
            self.client.remember(self.client.repository(ref), remote["image"]["layers"])
            record = super().put(key, remote["description"], remote["image"], remote.get("chain"))
        if record is not None:
            with self._lock:
                self._used[key] = record
        return record

    def put(self, key: str, description: str, image: dict, chain: str | None = None) -> dict:
        record = super().put(key, description, image, chain)
        with self._lock:
            self._used[key] = record
        return record

    def fetch(self, layers: list[dict]) -> None:
        self.client.ensure(self.layout, layers)

    def export(self) -> str | None:
        """Write the records this build used to --cache-to; the manifest digest."""
        if self.cache_to is None:
            return None
        return export_records(self.client, self, self.cache_to, dict(self._used))


def export_records(client: Client, store: CacheStore, ref: reference.Reference, ours: dict[str, dict]) -> str:
    repo = client.repository(ref)
    ours = {k: {f: v for f, v in r.items() if f != "created"} for k, r in ours.items()}
    for layer in _layers(ours.values()):
        # a layer this build only saw as a cache hit is mounted from the cache
        # it came from (same registry) or else fetched, never needed otherwise
        source = client.source_of(layer["digest"])
        mount = (source.ref.repository,) if source and source.ref.registry == ref.registry else ()
        push_blob(repo, store.layout, layer, mount, fetch=lambda d: client.ensure(store.layout, [d]))
    digest = ""
    for _ in range(MERGE_ATTEMPTS):
        merged = load_records(client, ref)
        if digest and all(k in merged for k in ours):
            break  # our records are there (ours or a later merge that kept them)
        merged.update(ours)
        records = [merged[k] for k in sorted(merged)]
        config = ordered({"records": records})
        cdigest, csize = store.layout.put_blob(config)
        push_blob(repo, store.layout, {"digest": cdigest, "size": csize})
        manifest = {"schemaVersion": 2, "mediaType": mt.MANIFEST, "artifactType": ARTIFACT_TYPE,
                    "config": {"mediaType": CONFIG_TYPE, "digest": cdigest, "size": csize},
                    "layers": _layers(records)}
        digest = repo.put_manifest(ref.tag or "latest", canonical(manifest), mt.MANIFEST)
    return digest


def _layers(records) -> list[dict]:
    out, seen = [], set()
    for record in records:
        for layer in record["image"]["layers"]:
            if layer["digest"] not in seen:
                seen.add(layer["digest"])
                out.append({k: layer[k] for k in ("mediaType", "digest", "size")})
    return out
