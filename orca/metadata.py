"""What a build records about its image besides the steps, by docker buildx's
names: --label (config Labels), --annotation (manifest, its descriptor in the
layout's index, or the index itself), --iidfile and --metadata-file."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from umoci_py.cas import Layout

from orca.errors import OrcaError

# Where an --annotation goes; buildx's names.  Without a prefix: the manifest.
ANNOTATION_KINDS = ("manifest", "manifest-descriptor", "index")


@dataclass(frozen=True)
class Annotation:
    """One --annotation: where it goes, its key and value."""
    kind: str       # one of ANNOTATION_KINDS
    key: str
    value: str


def parse_annotation(text: str) -> list[Annotation]:
    """``[KIND[,KIND]:]KEY=VALUE`` as buildx takes it, one Annotation per kind."""
    pair, kinds = text, ["manifest"]
    head, colon, rest = text.partition(":")
    if colon and "=" not in head:
        pair, kinds = rest, head.split(",")
    key, eq, value = pair.partition("=")
    if not key or not eq:
        raise OrcaError(f"--annotation {text}: expected [KIND:]KEY=VALUE")
    for kind in kinds:
        if "[" in kind:
            raise OrcaError(f"--annotation {text}: platform-qualified annotations are not supported "
                            "(orca-build makes one platform's image)")
        if kind not in ANNOTATION_KINDS:
            raise OrcaError(f"--annotation {text}: unknown kind {kind!r} (expected "
                            f"{', '.join(ANNOTATION_KINDS)}; no index-descriptor, as no index is made)")
    return [Annotation(kind, key, value) for kind in kinds]


def of_kind(annotations, kind: str) -> dict[str, str]:
    return {a.key: a.value for a in annotations if a.kind == kind}


def parse_labels(values) -> dict[str, str]:
    """--label KEY=VALUE pairs (a bare KEY is an empty value, as docker)."""
    labels = {}
    for item in values:
        key, _, value = item.partition("=")
        if not key:
            raise OrcaError(f"--label {item}: expected KEY=VALUE")
        labels[key] = value
    return labels


def image_metadata(layout_path: Path, descriptor: dict, tags) -> dict:
    """buildx's --metadata-file keys for the image at descriptor."""
    layout = Layout.open(layout_path)
    manifest = layout.read_json(descriptor, "manifest")
    meta = {"containerimage.digest": descriptor["digest"],
            "containerimage.config.digest": manifest["config"]["digest"],
            "containerimage.descriptor": descriptor}
    if tags:
        meta["image.name"] = ",".join(tags)
    return meta


def write_file(path: Path, text: str) -> None:
    """Replace path with text whole: a reader never sees half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OrcaError(f"{path}: cannot write: {err.strerror}") from None


def write_metadata(path: Path, meta: dict) -> None:
    write_file(path, json.dumps(meta, indent=2, sort_keys=True) + "\n")
