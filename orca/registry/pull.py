"""Pulling an image from a registry into an OCI layout.

The manifest is stored byte for byte, so its digest is the registry's; an
index is resolved to the manifest for the platform asked for.  Blobs the
layout already has are never requested, and each blob lands in the layout
only once it verified, so an interrupted pull leaves nothing half-written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from umoci_py import mediatypes as mt
from umoci_py import refs, schemas
from umoci_py.cas import Layout

from orca.registry.client import Client, parse_json
from orca.registry.errors import RegistryError
from orca.registry.reference import Reference, parse


@dataclass
class Pulled:
    descriptor: dict   # of the image manifest, as stored in the layout
    manifest: dict
    config: dict
    fetched: list[str]  # digests downloaded by this pull


def pull(client: Client, ref: Reference, layout: Layout, platform: refs.Platform,
         tag: str | None = None, layers: bool = True) -> Pulled:
    """Pull `ref` for `platform` into `layout`; tag the manifest there if `tag` is given.

    layers=False (a build's base image): only the manifest and config now;
    the client remembers where the layers are, for `Client.ensure` when a
    step first needs them, so a fully cached build never downloads them
    (never combined with a tag: a tag names a complete image).
    """
    repo = client.repository(ref)
    with layout.writer():
        body, media_type, digest = repo.get_manifest()
        if media_type in mt.INDEX_TYPES:
            child = select_platform(parse_json(body, f"{ref}: index"), platform, ref)
            body, media_type, digest = repo.get_manifest(child["digest"])
            if media_type not in mt.MANIFEST_TYPES:
                raise RegistryError(f"{ref}: the {platform} entry is not an image manifest ({media_type})")
        manifest = parse_json(body, f"{ref}: manifest")
        schemas.validate(manifest, "manifest", f"manifest {ref}")
        client.remember(repo, manifest["layers"])
        fetched = repo.fetch_blobs([manifest["config"], *(manifest["layers"] if layers else [])], layout)
        config = layout.read_json(manifest["config"], "config")
        if not layout.has_blob(digest):
            layout.put_blob(body)
        desc = {"mediaType": media_type, "digest": digest, "size": len(body)}
        if tag is not None:
            refs.set_tag(layout, tag, desc)
    return Pulled(desc, manifest, config, fetched)


def select_platform(index: dict, platform: refs.Platform, ref: Reference) -> dict:
    schemas.validate(index, "index", f"index {ref}")
    entries = [m for m in index.get("manifests", []) if m.get("mediaType") in mt.MANIFEST_TYPES]
    for entry in entries:
        if platform.matches(entry.get("platform")):
            return entry
    have = ", ".join(sorted({_platform_text(e.get("platform")) for e in entries})) or "none"
    raise RegistryError(f"{ref}: no image for platform {platform} (the index has: {have})")


def _platform_text(p: dict | None) -> str:
    if not p:
        return "unknown"
    return "/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x)


def pull_to_layout(client: Client, text: str, layout_path, tag: str | None, platform: refs.Platform) -> Pulled:
    """`orca-build pull`: pull `text` into the layout (created if missing) under `tag`
    (default: the reference's tag)."""
    ref = parse(text)
    tag = tag or ref.tag or "latest"
    refs.check_tag(tag)
    path = Path(layout_path)
    if (path / "index.json").exists():
        layout = Layout.open(path)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        layout = Layout.init(path)
    return pull(client, ref, layout, platform, tag)
