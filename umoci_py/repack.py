"""Repack a bundle: diff its rootfs against the unpack-time mtree into a new layer.

Follows umoci's algorithm: mtree check, mask filter (--mask-path and the
image's volumes), simplify (one whiteout per deleted tree), path order, one
layer (or only a history entry when nothing changed), commit, re-tag.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from umoci_py import bundle as bundle_files
from umoci_py import mtree, refs
from umoci_py.cas import Layout
from umoci_py.errors import BundleError
from umoci_py.layer.generate import generate_layer
from umoci_py.mutate import HistoryOptions, Mutator, source_date_epoch
from umoci_py.unpack import digest_cache_path, write_bundle_state


def filter_deltas(deltas: list, masks: list[str]) -> list:
    """umoci's MaskFilter then SimplifyFilter, in path order."""
    kept = mtree.simplify_filter(mtree.mask_filter(deltas, masks))
    return sorted(kept, key=mtree.layer_order)


def _load_cache(bundle: Path, manifest_digest: str):
    path = digest_cache_path(bundle, manifest_digest)
    return mtree.DigestCache.load(path) if path.exists() else mtree.DigestCache()


def repack_bundle(layout: Layout, tag: str, bundle: Path, mask_paths=(), mask_volumes: bool = True,
                  refresh_bundle: bool = False, history: HistoryOptions | None = None,
                  compress: str = "auto", environ=os.environ) -> dict:
    """Commit the bundle's changes as a new image tagged `tag`; returns the manifest descriptor."""
    bundle = Path(bundle)
    history = history or HistoryOptions()
    descriptor_path, opts = bundle_files.read_umoci_json(bundle)
    old_digest = descriptor_path[-1]["digest"]
    mtree_path = bundle / bundle_files.mtree_name(old_digest)
    rootfs = bundle / bundle_files.ROOTFS
    try:
        old = mtree.parse(mtree_path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{mtree_path}: missing: the bundle is incomplete") from None
    if not rootfs.is_dir():
        raise BundleError(f"{rootfs}: missing: the bundle is incomplete")

    epoch = source_date_epoch(environ)
    with layout.writer():
        mutator = Mutator(layout, descriptor_path)
        cache = _load_cache(bundle, old_digest)
        current = mtree.walk(rootfs, mtree.KEYWORDS, opts.rootless, cache=cache)
        masks = list(mask_paths)
        if mask_volumes:
            masks += list((mutator.config.get("config") or {}).get("Volumes") or {})
        deltas = filter_deltas(mtree.layer_deltas(old, current), masks)
        author = mutator.config.get("author")
        if deltas:
            with tempfile.TemporaryFile(dir=bundle) as layer:
                generate_layer(rootfs, deltas, opts, layer, source_date_epoch=epoch)
                layer.seek(0)
                mutator.add_layer(layer, history.entry("umoci repack", author, environ=environ),
                                  compress)
        else:
            entry = history.entry("umoci repack", author, empty_layer=True, environ=environ)
            if entry is not None:
                mutator.add_history(entry)
        root = mutator.commit()
        refs.set_tag(layout, tag, root)

    new_digest = mutator.descriptor_path[-1]["digest"]
    if refresh_bundle:
        write_bundle_state(bundle, rootfs, new_digest, opts, cache, manifest=current)
        bundle_files.write_umoci_json(bundle, mutator.descriptor_path, opts)
        if new_digest != old_digest:
            mtree_path.unlink()
            digest_cache_path(bundle, old_digest).unlink(missing_ok=True)
    else:
        # The hashes stay valid for the same files whatever manifest they belong to.
        cache.save(digest_cache_path(bundle, old_digest))
    return mutator.descriptor_path[-1]
