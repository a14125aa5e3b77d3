"""`--cache-to` / `--cache-from`: the build cache exported to and read from
a registry reference or a local directory, with buildx's spellings.

  registry:REF, REF                       a registry (orca's first form; mode=max)
  type=registry,ref=REF[,mode=min|max]    the same, as buildx writes it
  type=local,dest=DIR[,mode=min|max][,tag=T]   --cache-to a directory
  type=local,src=DIR[,tag=T]              --cache-from a directory

Both hold the same document: one OCI image manifest (artifactType
application/vnd.orca.cache.v1) whose config blob lists the cache records
(step key -> image config and layer descriptors) and whose layers are every
layer those records use.  A directory is an OCI layout with that manifest
under tag T (default latest), so a CI system can save and restore it as a
whole.  mode=min (buildx's default) exports the steps whose layers are a
prefix of the built image's; mode=max every step the build ran or hit, in
every stage.

A hit costs no copy: a record's layers are fetched (downloaded, or copied
from the directory) only when something reads them.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from umoci_py import mediatypes as mt
from umoci_py import refs
from umoci_py.cas import Layout
from umoci_py.errors import LayoutError, RefError, UmociError

from orca.cache import CacheStore, canonical, ordered
from orca.errors import BuildError

ARTIFACT_TYPE = "application/vnd.orca.cache.v1"
CONFIG_TYPE = "application/vnd.orca.cache.config.v1+json"
PREFIX = "registry:"


@dataclass(frozen=True)
class CacheSpec:
    """One --cache-to or --cache-from value."""
    type: str                  # "registry" or "local"
    ref: object = None         # orca.registry.reference.Reference, for a registry
    path: Path | None = None   # the directory, for local
    mode: str = "min"
    tag: str = "latest"


def parse_cache_spec(text: str, flag: str) -> CacheSpec:
    """One --cache-to (flag "--cache-to") or --cache-from value."""
    import csv  # for --cache-to and --cache-from values only

    from orca.registry import reference

    what = f"{flag} {text!r}"
    if text.startswith(PREFIX) or "=" not in text:
        ref = text[len(PREFIX):] if text.startswith(PREFIX) else text
        return CacheSpec("registry", _parse_ref(reference, ref, what), mode="max")
    try:
        fields = next(csv.reader([text]))
    except (csv.Error, StopIteration):
        raise BuildError(f"{what}: not a comma-separated list of key=value") from None
    attrs = {}
    for item in fields:
        key, eq, value = item.partition("=")
        if not eq:
            raise BuildError(f"{what}: {item!r} is not key=value")
        attrs[key.strip().lower()] = value
    kind, mode = attrs.pop("type", "registry"), attrs.pop("mode", "min")
    if mode not in ("min", "max"):
        raise BuildError(f"{what}: mode={mode!r}: expected min or max")
    # buildx's knobs that change nothing here: there is one layer format and one manifest form
    for ignored in ("ignore-error", "compression", "compression-level", "force-compression",
                    "oci-mediatypes", "image-manifest"):
        attrs.pop(ignored, None)
    if kind == "registry":
        ref = attrs.pop("ref", None)
        _no_more(attrs, what)
        if not ref:
            raise BuildError(f"{what}: type=registry needs ref=")
        return CacheSpec("registry", _parse_ref(reference, ref, what), mode=mode)
    if kind == "local":
        key = "dest" if flag == "--cache-to" else "src"
        path, tag = attrs.pop(key, None), attrs.pop("tag", "latest")
        _no_more(attrs, what)
        if not path:
            raise BuildError(f"{what}: type=local needs {key}=DIR")
        try:
            refs.check_tag(tag)
        except RefError as err:
            raise BuildError(f"{what}: {err}") from None
        return CacheSpec("local", path=Path(path), mode=mode, tag=tag)
    raise BuildError(f"{what}: type={kind}: only registry and local caches are supported")


def _parse_ref(reference, text: str, what: str):
    try:
        return reference.parse(text)
    except UmociError as err:
        raise BuildError(f"{what}: {err}") from None


def _no_more(attrs: dict, what: str) -> None:
    if attrs:
        raise BuildError(f"{what}: unknown key {', '.join(sorted(attrs))}")


# -- the document --------------------------------------------------------------

def records_manifest(layout: Layout, records: list[dict]) -> dict:
    """The cache manifest of these records; its config blob is put in `layout`."""
    cdigest, csize = layout.put_blob(ordered({"records": records}))
    return {"schemaVersion": 2, "mediaType": mt.MANIFEST, "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "digest": cdigest, "size": csize},
            "layers": layers_of(records)}


def records_of(doc, what: str) -> dict[str, dict]:
    """The records by key of a parsed config blob."""
    try:
        return {r["key"]: r for r in doc["records"]}
    except (KeyError, TypeError):
        raise BuildError(f"{what}: not a records list") from None


def layers_of(records) -> list[dict]:
    out, seen = [], set()
    for record in records:
        for layer in record["image"]["layers"]:
            if layer["digest"] not in seen:
                seen.add(layer["digest"])
                out.append({k: layer[k] for k in ("mediaType", "digest", "size")})
    return out


def select(records: dict[str, dict], mode: str, image_layers: list[dict] | None) -> dict[str, dict]:
    """mode=min: the records whose layers begin the built image's."""
    if mode == "max" or image_layers is None:
        return records
    final = [d["digest"] for d in image_layers]
    return {k: r for k, r in records.items()
            if [d["digest"] for d in r["image"]["layers"]] == final[:len(r["image"]["layers"])]}


# -- a directory -----------------------------------------------------------------

def load_local(spec: CacheSpec) -> tuple[dict[str, dict], Layout | None]:
    """(records by key, the layout holding their layers); no cache there yet is empty."""
    try:
        layout = Layout.open(spec.path)
    except LayoutError:
        if (spec.path / "index.json").exists():
            raise
        return {}, None
    if spec.tag not in refs.list_tags(layout):
        return {}, None
    desc = refs.resolve(layout, spec.tag)[-1]
    manifest = layout.read_json(desc, "manifest")
    config = manifest.get("config") or {}
    if config.get("mediaType") != CONFIG_TYPE:
        raise BuildError(f"{spec.path}: not an orca build cache (config {config.get('mediaType')!r})")
    what = f"{spec.path}: records blob {config['digest']}"
    from orca.registry.client import parse_json  # the guarded JSON load

    return records_of(parse_json(layout.read_blob(config["digest"], config["size"]), what), what), layout


def export_local(store: CacheStore, spec: CacheSpec, records: dict[str, dict]) -> str:
    """Write `records` and their layers as the directory cache `spec`; its
    manifest digest.  The tag moves last; blobs no tag names are dropped."""
    try:
        out = Layout.open(spec.path)
    except LayoutError:
        spec.path.parent.mkdir(parents=True, exist_ok=True)
        out = Layout.init(spec.path)
    records = {k: {f: v for f, v in r.items() if f != "created"} for k, r in records.items()}
    ordered_records = [records[k] for k in sorted(records)]
    with out.writer():
        layers = layers_of(ordered_records)
        store.fetch(layers)
        for d in layers:
            if not out.has_blob(d["digest"]):
                with store.layout.open_blob(d["digest"], d["size"]) as src, \
                        out.blob_writer((d["digest"], d["size"])) as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        manifest = records_manifest(out, ordered_records)
        mdigest, msize = out.put_blob(canonical(manifest))
        refs.set_tag(out, spec.tag, {"mediaType": mt.MANIFEST, "digest": mdigest, "size": msize})
    refs.gc(out)
    return mdigest


# -- the store ---------------------------------------------------------------------

class ImportingCacheStore(CacheStore):
    """The local cache store, backed by caches to read (--cache-from) and one
    to write (--cache-to).  `client` is needed only for registry caches."""

    def __init__(self, root: Path, sources: list[CacheSpec], sink: CacheSpec | None = None, client=None):
        super().__init__(root)
        self.client = client
        self.sink = sink
        # the registry code (HTTP, TLS) is loaded only by builds that name a registry cache
        self._registry = any(s.type == "registry" for s in [*sources, *([sink] if sink else [])])
        self._remote: dict[str, tuple[dict, object]] = {}  # key -> (record, its origin)
        self._local: dict[str, Layout] = {}                 # layer digest -> a directory cache holding it
        for spec in reversed(sources):  # the first --cache-from wins on a shared key
            if spec.type == "registry":
                from orca.registry.cache_export import load_records

                for key, record in load_records(client, spec.ref).items():
                    self._remote[key] = (record, spec.ref)
            else:
                records, layout = load_local(spec)
                for key, record in records.items():
                    self._remote[key] = (record, layout)
        self._used: dict[str, dict] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> dict | None:
        record = super().get(key)
        if record is None and key in self._remote:
            remote, origin = self._remote[key]
            layers = remote["image"]["layers"]
            if isinstance(origin, Layout):
                with self._lock:
                    for d in layers:
                        self._local.setdefault(d["digest"], origin)
            else:
                self.client.remember(self.client.repository(origin), layers)
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
        for d in layers:
            origin = self._local.get(d["digest"])
            if origin is not None and not self.layout.has_blob(d["digest"]):
                with origin.open_blob(d["digest"], d["size"]) as src, \
                        self.layout.blob_writer((d["digest"], d["size"])) as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        if self._registry:
            self.client.ensure(self.layout, layers)

    def export(self, image_layers: list[dict] | None = None) -> str | None:
        """Write the records this build used (per the sink's mode) to --cache-to;
        the manifest digest."""
        if self.sink is None:
            return None
        records = select(dict(self._used), self.sink.mode, image_layers)
        if self.sink.type == "local":
            return export_local(self, self.sink, records)
        from orca.registry.cache_export import export_records

        return export_records(self.client, self, self.sink.ref, records)
