"""Change an image along a descriptor path and commit the new blobs.

A Mutator holds the manifest and config of the image at the end of a
descriptor path (index entry ... manifest).  commit() writes the config, the
manifest and then every parent again, because each parent names its child by
digest; the caller points the tag at the returned root descriptor.
"""

from __future__ import annotations

import copy
import os
import re
import time
from dataclasses import dataclass

from umoci_py import mediatypes
from umoci_py.cas import Layout
from umoci_py.errors import LayoutError, UsageError

TYPE_CHECKING = False  # typing's, without importing typing: ~2 ms of every orca-build start
if TYPE_CHECKING:
    from typing import BinaryIO

UNCOMPRESSED_SIZE_ANNOTATION = "ci.umo.uncompressed_blob_size"
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def format_time_ns(ns: int) -> str:
    """Go's RFC3339Nano rendering of a UTC instant (trailing zeros dropped)."""
    seconds, frac = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))  # datetime costs every start ~1 ms
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + "Z"


def source_date_epoch(environ=os.environ) -> int | None:
    """SOURCE_DATE_EPOCH in seconds, or None when unset."""
    value = environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise UsageError(f"SOURCE_DATE_EPOCH={value!r}: not a number of seconds")
    return int(value)


def default_created(environ=os.environ) -> str:
    """'created' for new history and images: SOURCE_DATE_EPOCH or now."""
    epoch = source_date_epoch(environ)
    return format_time_ns(epoch * 1_000_000_000 if epoch is not None else time.time_ns())


def check_created(value: str, flag: str) -> str:
    """Validate an RFC3339Nano time given on the command line."""
    if not _RFC3339.match(value):
        raise UsageError(f"{flag} {value!r}: not an RFC3339Nano time (e.g. 2025-09-05T13:05:10.12345+10:00)")
    from datetime import datetime

    try:
        datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", value.replace("z", "Z").replace("Z", "+00:00")))
    except ValueError as err:
        raise UsageError(f"{flag} {value!r}: {err}") from None
    return value


@dataclass
class HistoryOptions:
    """The --history.* / --no-history flags."""
    no_history: bool = False
    author: str | None = None
    comment: str | None = None
    created: str | None = None
    created_by: str | None = None

    def entry(self, created_by: str, author: str | None = None,
              empty_layer: bool = False, environ=os.environ) -> dict | None:
        """The history entry to append, or None with --no-history."""
        if self.no_history:
            return None
        entry = {
            "created": self.created or default_created(environ),
            "created_by": self.created_by if self.created_by is not None else created_by,
            "author": self.author if self.author is not None else author,
            "comment": self.comment,
            "empty_layer": empty_layer,
        }
        return {k: v for k, v in entry.items() if v}


def pick_compression(layers: list[dict]) -> str:
    """--compress auto: the newest layer's known compression, else gzip, never none."""
    for layer in reversed(layers):
        media_type = layer.get("mediaType", "")
        if mediatypes.is_layer(media_type) and mediatypes.layer_compression(media_type) != "none":
            return mediatypes.layer_compression(media_type)
    return "gzip"


class Mutator:
    """Pending changes to the image manifest at the end of `descriptor_path`."""

    def __init__(self, layout: Layout, descriptor_path: list[dict]):
        if not descriptor_path:
            raise LayoutError(f"{layout.path}: empty descriptor path")
        target = descriptor_path[-1]
        if target.get("mediaType") not in mediatypes.MANIFEST_TYPES:
            raise LayoutError(f"{layout.path}: {target.get('digest')} is {target.get('mediaType')!r},"
                              f" not an image manifest")
        self.layout = layout
        self.descriptor_path = [dict(d) for d in descriptor_path]
        self.manifest = layout.read_json(target, "manifest")
        if self.manifest.get("mediaType") == mediatypes.DOCKER_MANIFEST:
            # the result is written as an OCI manifest; its blobs stay as they are
            self.manifest.update(mediaType=mediatypes.MANIFEST,
                                 config=mediatypes.oci_descriptor(self.manifest["config"]),
                                 layers=[mediatypes.oci_descriptor(d) for d in self.manifest["layers"]])
        self.config = layout.read_json(self.manifest["config"], "config")

    def add_layer(self, tar_stream: BinaryIO, history: dict | None,
                  compress_algorithm: str = "auto") -> dict:
        """Store an uncompressed tar as a new top layer; returns its descriptor."""
        algorithm = (pick_compression(self.manifest.get("layers", []))
                     if compress_algorithm == "auto" else compress_algorithm)
        from umoci_py.layer.blob import write_layer  # the compressors: not for callers that only format times

        layer = write_layer(self.layout, tar_stream, algorithm)
        descriptor = dict(layer.descriptor)
        if layer.descriptor["size"] != layer.uncompressed_size:
            descriptor["annotations"] = {UNCOMPRESSED_SIZE_ANNOTATION: str(layer.uncompressed_size)}
        self.manifest.setdefault("layers", []).append(descriptor)
        rootfs = self.config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
        rootfs.setdefault("diff_ids", []).append(layer.diff_id)
        if history is not None:
            self.add_history(history)
        return descriptor

    def add_history(self, entry: dict) -> None:
        self.config.setdefault("history", []).append(entry)

    def set_annotations(self, annotations: dict[str, str] | None) -> None:
        """Replace the manifest's annotations (None or empty removes them)."""
        if annotations:
            self.manifest["annotations"] = dict(annotations)
        else:
            self.manifest.pop("annotations", None)

    def commit(self) -> dict:
        """Write config, manifest and parents; returns the new root descriptor."""
        config_digest, config_size = self.layout.put_json(self.config, "config")
        self.manifest["config"] = {**self.manifest["config"], "digest": config_digest,
                                   "size": config_size}
        digest, size = self.layout.put_json(self.manifest, "manifest")
        old = self.descriptor_path[-1]
        new_path = [{**old, "mediaType": self.manifest.get("mediaType", old.get("mediaType")),
                     "digest": digest, "size": size}]
        for parent in reversed(self.descriptor_path[:-1]):
            index = self.layout.read_json(parent, "index")
            replaced = False
            for i, child in enumerate(index.get("manifests", [])):
                if child["digest"] == old["digest"] and not replaced:
                    index["manifests"][i] = {**child, "mediaType": new_path[0]["mediaType"],
                                             "digest": new_path[0]["digest"], "size": new_path[0]["size"]}
                    replaced = True
            if not replaced:
                raise LayoutError(f"{self.layout.path}: index {parent['digest']} no longer"
                                  f" references {old['digest']}")
            pdigest, psize = self.layout.put_json(index, "index")
            old = parent
            new_path.insert(0, {**parent, "digest": pdigest, "size": psize})
        self.descriptor_path = new_path
        return copy.deepcopy(new_path[0])
