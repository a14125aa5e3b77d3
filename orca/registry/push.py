"""Pushing a layout's image (manifest or index) to a registry.

Blobs first (HEAD to skip what the repository has, a cross-repository mount
when a source repository on the same registry is known, else a monolithic
upload, or PATCH chunks above the chunk size), child manifests next, and the
tagged manifest last, so a tag never points at missing content.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlencode, urljoin

from umoci_py import mediatypes as mt
from umoci_py.cas import Layout

from orca.registry.client import Client, Repository, fail, parse_json
from orca.registry.errors import RegistryError
from orca.registry.reference import Reference, parse


@dataclass
class Pushed:
    digest: str
    uploaded: list[str] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def push(client: Client, layout: Layout, desc: dict, ref: Reference,
         mount_from: tuple[str, ...] = ()) -> Pushed:
    """Push the manifest or index `desc` of `layout` to `ref` (its tag, or by digest)."""
    repo = client.repository(ref)
    manifests, blobs = _walk(layout, desc)
    result = Pushed(desc["digest"])
    with ThreadPoolExecutor(max_workers=max(1, client.opts.jobs)) as pool:
        outcomes = list(pool.map(lambda b: push_blob(repo, layout, b, mount_from), blobs))
    for blob, outcome in zip(blobs, outcomes):
        getattr(result, outcome).append(blob["digest"])
    for child in manifests[:-1]:
        repo.put_manifest(child["digest"], layout.read_blob(child["digest"], child["size"]), child["mediaType"])
    top = manifests[-1]
    repo.put_manifest(ref.digest or ref.tag or "latest", layout.read_blob(top["digest"], top["size"]),
                      top["mediaType"])
    return result


def _walk(layout: Layout, desc: dict) -> tuple[list[dict], list[dict]]:
    """(manifests children first, distinct blobs) under `desc`."""
    manifests, blobs, seen = [], [], set()

    def visit(d: dict) -> None:
        doc = parse_json(layout.read_blob(d["digest"], d["size"]), f"{layout.path}: blob {d['digest']}")
        if d["mediaType"] in mt.INDEX_TYPES:
            for child in doc.get("manifests", []):
                visit(child)
        elif d["mediaType"] in mt.MANIFEST_TYPES:
            for b in [doc["config"], *doc["layers"]]:
                if b["digest"] not in seen:
                    seen.add(b["digest"])
                    blobs.append(b)
        else:
            raise RegistryError(f"{layout.path}: cannot push {d['digest']}: media type {d['mediaType']!r}")
        manifests.append(d)

    visit(desc)
    return manifests, blobs


def push_blob(repo: Repository, layout: Layout, blob: dict, mount_from: tuple[str, ...] = (),
              fetch: Callable[[dict], object] | None = None) -> str:
    """Make `blob` present in `repo`; returns "skipped", "mounted" or "uploaded".

    `fetch(blob)` brings a blob `layout` lacks into it, if it must be uploaded.
    """
    digest, size = blob["digest"], blob["size"]
    what = f"push blob {digest} to {repo.ref}"
    if repo.has_blob(digest):
        return "skipped"
    location = None
    for source in mount_from:
        if source == repo.ref.repository:
            continue
        query = urlencode({"mount": digest, "from": source})
        resp = repo.call("POST", f"/blobs/uploads/?{query}", what, push=True, mount_from=(source,),
                         headers={"Content-Length": "0"}, body=b"")
        resp.read()
        if resp.status == 201:
            return "mounted"
        if resp.status == 202:  # mount refused, but an upload session was opened
            location = _location(repo, resp, what)
            break
        raise fail(resp, what, repo.ref)
    if location is None:
        resp = repo.call("POST", "/blobs/uploads/", what, push=True, headers={"Content-Length": "0"}, body=b"")
        if resp.status != 202:
            raise fail(resp, what, repo.ref)
        resp.read()
        location = _location(repo, resp, what)
    if fetch is not None and not layout.has_blob(digest):
        fetch(blob)
    chunk = repo.client.opts.chunk_size
    if size > chunk:
        with layout.open_blob(digest, size) as src:
            offset = 0
            while offset < size:
                data = src.read(min(chunk, size - offset))
                headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data)),
                           "Content-Range": f"{offset}-{offset + len(data) - 1}"}
                resp = repo.call("PATCH", location, what, push=True, headers=headers, body=data)
                if resp.status != 202:
                    raise fail(resp, what, repo.ref)
                resp.read()
                location = _location(repo, resp, what)
                offset += len(data)
        resp = repo.call("PUT", _with_digest(location, digest), what, push=True,
                         headers={"Content-Length": "0"}, body=b"")
    else:
        resp = repo.call("PUT", _with_digest(location, digest), what, push=True,
                         headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                         body=lambda: layout.open_blob(digest, size))
    if resp.status != 201:
        raise fail(resp, what, repo.ref)
    resp.read()
    return "uploaded"


def _location(repo: Repository, resp, what: str) -> str:
    loc = resp.getheader("Location")
    if not loc:
        raise RegistryError(f"{what}: {repo.ref.registry} gave no upload location")
    return urljoin(repo.base + "/", loc)


def _with_digest(url: str, digest: str) -> str:
    return url + ("&" if "?" in url else "?") + urlencode({"digest": digest})


def push_tag(client: Client, layout_path, tag: str, text: str) -> Pushed:
    """`orca-build push`: push tag `tag` of the layout to the reference `text`."""
    layout = Layout.open(layout_path)
    entries = [m for m in layout.read_index().get("manifests", [])
               if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag]
    if not entries:
        raise RegistryError(f"{layout_path}: no tag {tag!r} to push")
    return push(client, layout, entries[0], parse(text))
