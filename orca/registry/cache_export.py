"""The registry side of the build cache (orca.cache_export): reading and
writing the cache document at a registry reference.

At REF the registry holds the cache manifest (orca.cache_export), so the
registry keeps every layer the records use and they can be fetched from that
repository.

Writers merge with what is at REF and put the manifest last (one atomic
PUT), after its config and layers are in the repository: a reader never sees
a manifest naming absent blobs.  Two writers racing on REF both leave a
complete manifest; the later one wins and, having re-read REF, retries its
merge a bounded number of times if its records were dropped.
"""

from __future__ import annotations

from umoci_py import mediatypes as mt

from orca.cache import CacheStore, canonical
from orca.cache_export import CONFIG_TYPE, layers_of, records_manifest, records_of
from orca.errors import BuildError
from orca.registry import reference
from orca.registry.client import Client, parse_json
from orca.registry.errors import NotFoundError, RegistryError
from orca.registry.push import push_blob

MERGE_ATTEMPTS = 3


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
    try:
        return records_of(parse_json(repo.read_blob(config, what), what), what)
    except BuildError as err:
        raise RegistryError(str(err)) from None


def export_records(client: Client, store: CacheStore, ref: reference.Reference, ours: dict[str, dict]) -> str:
    repo = client.repository(ref)
    ours = {k: {f: v for f, v in r.items() if f != "created"} for k, r in ours.items()}
    for layer in layers_of(ours.values()):
        # a layer this build only saw as a cache hit is mounted from the cache
        # it came from (same registry) or else fetched, never needed otherwise
        source = client.source_of(layer["digest"])
        mount = (source.ref.repository,) if source and source.ref.registry == ref.registry else ()
        push_blob(repo, store.layout, layer, mount,
                  fetch=lambda d: (store.fetch([d]), client.ensure(store.layout, [d])))
    digest = ""
    for _ in range(MERGE_ATTEMPTS):
        merged = load_records(client, ref)
        if digest and all(k in merged for k in ours):
            break  # our records are there (ours or a later merge that kept them)
        merged.update(ours)
        manifest = records_manifest(store.layout, [merged[k] for k in sorted(merged)])
        push_blob(repo, store.layout, manifest["config"])
        digest = repo.put_manifest(ref.tag or "latest", canonical(manifest), mt.MANIFEST)
    return digest
