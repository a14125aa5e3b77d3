"""Image operations that need no bundle: new, config, tag, insert, raw add-layer,
raw runtime-config, mtree validation.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from umoci_py import bundle as bundle_files
from umoci_py import mediatypes, mtree, refs
from umoci_py.cas import Layout
from umoci_py.errors import BundleError, LayerError, RefError, UsageError
from umoci_py.layer.idmap import MapOptions
from umoci_py.layer.generate import generate_insert_layer
from umoci_py.mutate import HistoryOptions, Mutator, default_created, source_date_epoch

REF_NAME = "org.opencontainers.image.ref.name"
# Go struct field order of image-spec's Image and ImageConfig, so our JSON
# reads like umoci's.
_IMAGE_ORDER = ("created", "author", "architecture", "os", "os.version", "os.features",
                "variant", "config", "rootfs", "history")
_CONFIG_ORDER = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes",
                 "WorkingDir", "Labels", "StopSignal", "ArgsEscaped")
CLEAR_KEYS = ("config.labels", "manifest.annotations", "config.exposedports", "config.env",
              "config.volume", "config.cmd", "config.entrypoint")


def _ordered(doc: dict, order: tuple[str, ...]) -> dict:
    known = {k: doc[k] for k in order if k in doc}
    return {**known, **{k: v for k, v in doc.items() if k not in known}}


def new_image(layout: Layout, tag: str, environ=os.environ) -> dict:
    """`new`: an image with no layers for the host platform; returns the manifest descriptor."""
    platform = refs.host_platform()
    config = {"created": default_created(environ), "architecture": platform.architecture,
              "os": platform.os}
    if platform.variant:
        config["variant"] = platform.variant
    config["config"] = {}
    config["rootfs"] = {"type": "layers", "diff_ids": []}
    with layout.writer():
        cdigest, csize = layout.put_json(config, "config")
        manifest = {"schemaVersion": 2, "mediaType": mediatypes.MANIFEST,
                    "config": {"mediaType": mediatypes.CONFIG, "digest": cdigest, "size": csize},
                    "layers": []}
        mdigest, msize = layout.put_json(manifest, "manifest")
        descriptor = {"mediaType": mediatypes.MANIFEST, "digest": mdigest, "size": msize}
        refs.set_tag(layout, tag, descriptor)
    return descriptor


def split_kv(value: str, flag: str) -> tuple[str, str]:
    """K=V from a repeatable flag; a value without '=' is a usage error."""
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise UsageError(f"{flag} {value!r}: expected KEY=VALUE")
    return key, val


@dataclass
class ConfigChanges:
    """The `config` command's flags; None means "leave unchanged"."""
    clear: list[str] = field(default_factory=list)
    user: str | None = None
    exposed_ports: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    volumes: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    stop_signal: str | None = None
    created: str | None = None
    author: str | None = None
    os: str | None = None
    architecture: str | None = None
    variant: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)


def _apply_changes(mutator: Mutator, ch: ConfigChanges) -> None:
    for key in ch.clear:
        if key == "rootfs.diffids":
            raise UsageError("--clear rootfs.diffids: clearing the layer list is not safe")
        if key not in CLEAR_KEYS:
            raise UsageError(f"--clear {key!r}: unknown key (one of {', '.join(CLEAR_KEYS)})")
    image = mutator.config
    cfg = dict(image.get("config") or {})
    cleared = {"config.labels": "Labels", "config.exposedports": "ExposedPorts",
               "config.env": "Env", "config.volume": "Volumes", "config.cmd": "Cmd",
               "config.entrypoint": "Entrypoint"}
    for key in ch.clear:
        if key == "manifest.annotations":
            mutator.set_annotations(None)
        else:
            cfg.pop(cleared[key], None)

    if ch.user is not None:
        cfg["User"] = ch.user
    for port in ch.exposed_ports:
        cfg.setdefault("ExposedPorts", {})[port] = {}
    for entry in ch.env:
        split_kv(entry, "--config.env")
    if ch.env:
        cfg["Env"] = bundle_files.merge_env(cfg.get("Env") or [], ch.env)
    if ch.entrypoint is not None:
        cfg["Entrypoint"] = list(ch.entrypoint)
    if ch.cmd is not None:
        cfg["Cmd"] = list(ch.cmd)
    for volume in ch.volumes:
        cfg.setdefault("Volumes", {})[volume] = {}
    if ch.labels:
        cfg["Labels"] = {**(cfg.get("Labels") or {}), **ch.labels}
    if ch.working_dir is not None:
        cfg["WorkingDir"] = ch.working_dir
    if ch.stop_signal is not None:
        cfg["StopSignal"] = ch.stop_signal
    image["config"] = _ordered(cfg, _CONFIG_ORDER)

    for attr, key in (("created", "created"), ("author", "author"), ("os", "os"),
                      ("architecture", "architecture"), ("variant", "variant")):
        value = getattr(ch, attr)
        if value is not None:
            image[key] = value
    mutator.config = _ordered(image, _IMAGE_ORDER)
    if ch.annotations:
        mutator.set_annotations({**(mutator.manifest.get("annotations") or {}), **ch.annotations})


def _target_tag(tag: str, new_tag: str | None) -> str:
    if new_tag is not None:
        refs.check_tag(new_tag)
        return new_tag
    return tag


def change_config(layout: Layout, tag: str, changes: ConfigChanges, history: HistoryOptions,
                  new_tag: str | None = None, platform=None, environ=os.environ) -> dict:
    """`config`: returns the new manifest descriptor."""
    target = _target_tag(tag, new_tag)
    with layout.writer():
        mutator = Mutator(layout, refs.resolve(layout, tag, platform))
        _apply_changes(mutator, changes)
        entry = history.entry("umoci config", empty_layer=True, environ=environ)
        if entry is not None:
            mutator.add_history(entry)
        refs.set_tag(layout, target, mutator.commit())
    return mutator.descriptor_path[-1]


def tag_image(layout: Layout, tag: str, new_tag: str) -> dict:
    """`tag`: point `new_tag` at the index entry of `tag` (clobbering new_tag)."""
    refs.check_tag(new_tag)
    entries = [m for m in layout.read_index().get("manifests", [])
               if (m.get("annotations") or {}).get(REF_NAME) == tag]
    if not entries:
        raise RefError(f"{layout.path}: tag not found: {tag}")
    if len(entries) > 1:
        raise RefError(f"{layout.path}: tag is ambiguous: {tag} ({len(entries)} index entries)")
    descriptor = dict(entries[0])
    annotations = {k: v for k, v in (descriptor.get("annotations") or {}).items() if k != REF_NAME}
    descriptor.pop("annotations", None)
    if annotations:
        descriptor["annotations"] = annotations
    refs.set_tag(layout, new_tag, descriptor)
    return descriptor


def _add_layer_from(layout: Layout, tag: str, new_tag: str | None, platform, stream,
                    history_entry: dict | None, compress: str) -> dict:
    with layout.writer():
        mutator = Mutator(layout, refs.resolve(layout, tag, platform))
        mutator.add_layer(stream, history_entry, compress)
        refs.set_tag(layout, _target_tag(tag, new_tag), mutator.commit())
    return mutator.descriptor_path[-1]


def insert(layout: Layout, tag: str, source: str | Path | None, target: str, opts: MapOptions,
           history: HistoryOptions, whiteout: bool = False, opaque: bool = False,
           new_tag: str | None = None, compress: str = "auto", platform=None,
           environ=os.environ) -> dict:
    """`insert`: a layer putting `source` at `target` (or a whiteout of it)."""
    if whiteout and source is not None:
        raise UsageError("insert --whiteout takes only <target>, not <source>")
    if not whiteout and source is None:
        raise UsageError("insert needs <source> <target> (or --whiteout <target>)")
    # Path("") is ".": an empty argument would silently insert the working directory.
    if source is not None and not os.fspath(source):
        raise UsageError("insert: <source> path cannot be empty")
    if not target:
        raise UsageError("insert: <target> path cannot be empty")
    source = Path(source) if source is not None else None
    if source is not None and not os.path.lexists(source):
        raise UsageError(f"{source}: no such file or directory")
    with tempfile.TemporaryFile(dir=layout.path) as layer:
        generate_insert_layer(source, target, opts, layer, whiteout=whiteout, opaque=opaque,
                              source_date_epoch=source_date_epoch(environ))
        layer.seek(0)
        return _add_layer_from(layout, tag, new_tag, platform, layer,
                               history.entry("umoci insert", environ=environ), compress)


def check_tar(path: Path) -> None:
    """raw add-layer takes an uncompressed tar; refuse anything else up front."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            for _ in tar:
                pass
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (tarfile.TarError, EOFError) as err:
        raise LayerError(f"{path}: not an uncompressed tar archive: {err}") from None


def raw_add_layer(layout: Layout, tag: str, tar_path: Path, history: HistoryOptions,
                  new_tag: str | None = None, compress: str = "auto", platform=None,
                  environ=os.environ) -> dict:
    """`raw add-layer`: append an uncompressed tar verbatim as a new layer."""
    check_tar(tar_path)
    with open(tar_path, "rb") as stream:
        return _add_layer_from(layout, tag, new_tag, platform, stream,
                               history.entry("umoci raw add-layer", environ=environ), compress)


def raw_runtime_config(layout: Layout, tag: str, out: Path, opts: MapOptions,
                       rootfs: Path | None = None, platform=None) -> dict:
    """`raw runtime-config`: write only config.json for the image."""
    path = refs.resolve(layout, tag, platform)
    manifest = layout.read_json(path[-1], "manifest")
    config = layout.read_json(manifest["config"], "config")
    spec = bundle_files.runtime_config(config, Path(rootfs) if rootfs else None, opts)
    if os.path.lexists(out):
        raise UsageError(f"{out}: already exists")
    bundle_files.write_runtime_config(Path(out), spec)
    return spec


def validate_tree(manifest_path: Path, root: Path, use_keywords: list[str],
                  add_keywords: list[str], umoci_keywords: bool, rootless: bool) -> list:
    """`raw mtree-validate`: deltas between a tree and an mtree manifest (ours,
    umoci's or `gomtree -c`'s).  The keywords are, as gomtree's: those the
    manifest records, or -k's (with "type"), or umoci's; plus -K's."""
    try:
        recorded = mtree.parse(Path(manifest_path).read_text(), str(manifest_path))
    except FileNotFoundError:
        raise UsageError(f"{manifest_path}: no such file") from None
    if use_keywords:
        keywords = ["type"] + [mtree.canonical_keyword(k) for k in use_keywords]
    elif umoci_keywords:
        keywords = list(mtree.KEYWORDS)
    else:
        keywords = [mtree.canonical_keyword(k.split(".", 1)[0])
                    for e in recorded.entries for k in e.keywords]
    keywords = list(dict.fromkeys(keywords + [mtree.canonical_keyword(k) for k in add_keywords]))
    try:
        mtree.check_keywords(keywords)
    except BundleError as err:
        raise UsageError(f"{manifest_path}: {err}") from None
    current = mtree.walk(root, tuple(keywords), rootless)
    return mtree.compare(recorded, current, set(keywords))
