"""Resolving FROM and COPY --from image references to an image, behind one interface.

Forms understood:
  scratch           the empty image
  oci:PATH[:TAG]    tag TAG (default latest) of the OCI layout at PATH
  docker://REF, host[:port]/repo[:tag|@digest]
                    an image in a registry (with a registry client)
  NAME[:TAG]        a tag of the output layout: NAME:TAG itself if it is a
                    valid tag, then TAG, then NAME; failing that, with a
                    registry client, NAME[:TAG] on Docker Hub (first, with pull)
  a --build-context name (orca.contexts), before all of the above: its
                    layout tag, registry image, or directory (as an image of
                    one layer holding the directory's files, owned 0:0)
The image's blobs are imported into the cache layout, so everything a build
touches afterwards lives in one place.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from umoci_py import refs
from umoci_py.cas import Layout
from umoci_py.errors import LayoutError, RefError

from orca.errors import BuildError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Image:
    """An image config and its layer descriptors (blobs in the cache layout)."""
    config: dict
    layers: list[dict] = field(default_factory=list)
    key: str = "scratch"  # identity used in cache keys


def scratch_image(platform) -> Image:
    config = {"architecture": platform.architecture, "os": platform.os,
              "config": {"Env": [f"PATH={DEFAULT_PATH}"]},
              "rootfs": {"type": "layers", "diff_ids": []}, "history": []}
    if platform.variant:
        config["variant"] = platform.variant
    return Image(config)


class Resolver:
    def __init__(self, output: Path, store: Layout, platform, registry=None, pull: bool = False,
                 contexts=None):
        self.output = Path(output)
        self.contexts = contexts or {}  # name -> orca.contexts.NamedContext
        self.store = store
        self.platform = platform
        self.registry = registry  # orca.registry.client.Client, or None: no registry access
        self.pull = pull          # a bare NAME[:TAG] comes from its registry, never the layout
        self._lock = threading.Lock()
        self._memo: dict[str, Image] = {}
        self._pulled = False  # an image came from a registry: its layers may be missing

    def resolve(self, ref: str) -> Image:
        with self._lock:
            if ref not in self._memo:
                self._memo[ref] = self._resolve(ref)
            return self._memo[ref]

    def _resolve(self, ref: str) -> Image:
        named = self.contexts.get(ref) or (self.contexts.get(ref[:-len(":latest")])
                                           if ref.endswith(":latest") else None)
        if named is not None:
            return self._from_context(named)
        if ref == "scratch":
            return scratch_image(self.platform)
        if ref.startswith("oci:"):
            path, tag = refs.parse_image_arg(ref[4:])
            return self._from_layout(Path(path), [tag], ref)
        if self.registry is not None and (ref.startswith("docker://") or _names_host(ref) or self.pull):
            return self._from_registry(ref)
        candidates = [ref]
        if ":" in ref:
            name, tag = ref.rsplit(":", 1)
            candidates += [tag, name]
        try:
            return self._from_layout(self.output, candidates, ref)
        except BuildError:
            if self.registry is None:
                raise
        return self._from_registry(ref)

    def _from_context(self, named) -> Image:
        what = f"--build-context {named.name}"
        if named.kind == "oci-layout":
            return self._from_layout(Path(named.value), [named.tag], f"{what}=oci-layout://{named.value}")
        if named.kind == "docker-image":
            if self.registry is None:
                raise BuildError(f"{what}: docker-image://{named.value}: no registry access")
            return self._from_registry(named.value)
        return self._from_dir(Path(named.value), what)

    def _from_dir(self, path: Path, what: str) -> Image:
        """A directory as an image: one layer of its files (as COPY copies a
        context: owned 0:0, its .dockerignore applied), keyed by content."""
        from orca import copy as cp
        from orca.copyrootfs import Snapshot  # the layer code, for builds that read a directory context
        from orca.dockerfile.ignore import context_filter

        excluded = context_filter(path, path / "Dockerfile")
        sources = cp.select(path, ["."], what, excluded)
        snap = Snapshot(Path(tempfile.mkdtemp(prefix="context-", dir=self.store.path.parent)), self.store)
        try:
            cp.copy_sources(path, sources, snap.materialize([]), "/", True, cp.CopyOptions(), excluded)
            layer = snap.commit(None, root=False)
        finally:
            snap.close()
        image = scratch_image(self.platform)
        if layer is not None:
            desc, diff_id = layer
            image.layers.append(desc)
            image.config["rootfs"]["diff_ids"].append(diff_id)
            image.config["history"].append({"created_by": f"{what}={path}", "comment": "orca build context"})
        image.key = "context:" + cp.content_digest(path, sources, excluded)
        return image

    def fetch(self, layers: list[dict]) -> None:
        """Download the layers of registry images that are needed now (see _from_registry)."""
        if self._pulled:
            self.registry.ensure(self.store, layers)

    def _from_registry(self, ref: str) -> Image:
        from orca.registry.pull import pull  # HTTP and TLS code, for registry bases only
        from orca.registry.reference import parse

        # manifest and config only: a stage whose steps are all cache hits
        # never reads its base's layers, so they are fetched on first need
        pulled = pull(self.registry, parse(ref), self.store, self.platform, layers=False)
        self._pulled = True
        return Image(pulled.config, list(pulled.manifest["layers"]), "image:" + pulled.descriptor["digest"])

    def _from_layout(self, path: Path, tags: list[str], ref: str) -> Image:
        try:
            layout = Layout.open(path)
        except LayoutError as err:
            raise BuildError(f"base image {ref}: {err}") from None
        valid = [t for t in tags if _valid_tag(t)]
        present = set(refs.list_tags(layout))
        for tag in valid:
            if tag in present:
                try:
                    chain = refs.resolve(layout, tag, self.platform)
                except RefError as err:
                    raise BuildError(f"base image {ref}: {err}") from None
                manifest_desc = chain[-1]
                manifest = layout.read_json(manifest_desc, "manifest")
                config = layout.read_json(manifest["config"], "config")
                for desc in manifest["layers"]:
                    self._import(layout, desc)
                return Image(config, list(manifest["layers"]), "image:" + manifest_desc["digest"])
        looked = ", ".join(repr(t) for t in valid) or repr(ref)
        raise BuildError(f"base image {ref} not found: no tag {looked} in layout {path}")

    def _import(self, layout: Layout, desc: dict) -> None:
        if self.store.has_blob(desc["digest"]) or layout.path == self.store.path:
            return
        with layout.open_blob(desc["digest"], desc["size"]) as src, self.store.blob_writer() as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def _valid_tag(tag: str) -> bool:
    try:
        refs.check_tag(tag)
    except RefError:
        return False
    return True


def _names_host(ref: str) -> bool:
    """Does ref name a registry host?  A name without a slash never does, and
    most builds' bases are such names: the reference parser is loaded for the others."""
    if "/" not in ref:
        return False
    from orca.registry.reference import looks_remote
    return looks_remote(ref)
