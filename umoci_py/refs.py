"""Tags, image references, platform selection and garbage collection.

A tag is an index.json entry annotated ``org.opencontainers.image.ref.name``.
Resolution walks nested indexes down to image manifests; unlike umoci, a
multi-platform index is resolved by platform instead of being "ambiguous".
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from . import mediatypes
from .cas import Layout
from .errors import RefError, UsageError

REF_NAME = "org.opencontainers.image.ref.name"
_COMPONENT = r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
TAG_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
# Nested indexes deeper than this are treated as a loop (a digest cannot
# really contain itself, but a corrupt layout can pretend to).
_MAX_DEPTH = 32

# platform.machine() -> (GOARCH, variant)
_GOARCH = {
    "x86_64": ("amd64", None), "amd64": ("amd64", None),
    "aarch64": ("arm64", None), "arm64": ("arm64", None),
    "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"), "armv5tel": ("arm", "v5"),
    "i386": ("386", None), "i486": ("386", None), "i586": ("386", None), "i686": ("386", None),
    "ppc64le": ("ppc64le", None), "ppc64": ("ppc64", None), "s390x": ("s390x", None),
    "riscv64": ("riscv64", None), "mips64": ("mips64", None), "loongarch64": ("loong64", None),
}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        parts = [self.os, self.architecture] + ([self.variant] if self.variant else [])
        return "/".join(parts)

    def matches(self, desc_platform: dict | None) -> bool:
        """Does a descriptor's ``platform`` satisfy this one (variant only if we ask for one)?"""
        if not desc_platform:
            return False
        if (desc_platform.get("os"), desc_platform.get("architecture")) != (self.os, self.architecture):
            return False
        if self.variant is None:
            return True
        have = desc_platform.get("variant") or None
        # arm64 without a variant means v8 (containerd's normalisation).
        if self.architecture == "arm64":
            return (have or "v8") == self.variant
        return have == self.variant


def check_tag(tag: str) -> None:
    if not isinstance(tag, str) or not TAG_RE.match(tag):
        raise RefError(f"invalid tag {tag!r}: tags are alphanumeric parts joined by one of "
                       "'-._:@+' or '--', optionally separated by '/'")


def check_layout_arg(path: str) -> None:
    if not path:
        raise UsageError("--layout: path cannot be empty")
    if ":" in path:
        raise UsageError(f"--layout {path!r}: path cannot contain ':'")


def parse_image_arg(value: str) -> tuple[str, str]:
    """``path[:tag]`` split on the first ':'; the tag defaults to ``latest``."""
    path, sep, tag = value.partition(":")
    if not path:
        raise UsageError(f"--image {value!r}: path cannot be empty")
    if not sep:
        tag = "latest"
    check_tag(tag)
    return path, tag


def _machine() -> str:
    return os.uname().machine  # platform.machine()'s answer, without ~1 ms of importing platform


def host_platform() -> Platform:
    machine = _machine()
    arch, variant = _GOARCH.get(machine, (machine, None))
    return Platform("linux", arch, variant)


def parse_platform(value: str) -> Platform:
    parts = value.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise UsageError(f"invalid platform {value!r}: want os/arch[/variant], e.g. linux/arm64/v8")
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def _tag_entries(index: dict, tag: str) -> list[dict]:
    return [d for d in index["manifests"] if (d.get("annotations") or {}).get(REF_NAME) == tag]


def _manifest_paths(layout: Layout, path: list[dict]) -> list[list[dict]]:
    """Every descriptor path from ``path[-1]`` down to an image manifest."""
    desc = path[-1]
    media_type = desc["mediaType"]
    if media_type in mediatypes.MANIFEST_TYPES:
        return [path]
    if media_type not in mediatypes.INDEX_TYPES:
        return []  # an artifact or blob we cannot unpack: not an image
    if len(path) > _MAX_DEPTH:
        raise RefError(f"{layout.path}: index nesting deeper than {_MAX_DEPTH} at {desc['digest']}")
    index = layout.read_json(desc, "index")
    found = []
    for child in index["manifests"]:
        found.extend(_manifest_paths(layout, path + [child]))
    return found


def resolve(layout: Layout, tag: str, platform: Platform | None = None) -> list[dict]:
    """The descriptor path (index entry first, image manifest last) that ``tag`` names."""
    check_tag(tag)
    entries = _tag_entries(layout.read_index(), tag)
    if not entries:
        raise RefError(f"{layout.path}: tag not found: {tag}")
    candidates = [p for entry in entries for p in _manifest_paths(layout, [entry])]
    if not candidates:
        raise RefError(f"{layout.path}: tag {tag!r} does not point to an image manifest")
    if len(candidates) == 1 and platform is None:
        return candidates[0]
    if platform is None and not any("platform" in p[-1] for p in candidates):
        # Nothing to choose by: umoci's "ambiguous" (two entries of one name, too).
        raise RefError(f"{layout.path}: tag is ambiguous: {tag} ({len(candidates)} manifests)")
    want = platform or host_platform()
    if len(candidates) == 1:
        # A lone manifest without platform information is taken as is.
        if "platform" not in candidates[0][-1] or want.matches(candidates[0][-1]["platform"]):
            return candidates[0]
        matching = []
    else:
        matching = [p for p in candidates if want.matches(p[-1].get("platform"))]
    if not matching:
        raise RefError(f"{layout.path}: no manifest for platform {want} in tag {tag!r}")
    if len(matching) > 1:
        raise RefError(f"{layout.path}: tag is ambiguous: {tag} ({len(matching)} manifests "
                       f"for platform {want})")
    return matching[0]


def list_tags(layout: Layout) -> list[str]:
    """Tag names in index.json order, each once."""
    tags: dict[str, None] = {}
    for desc in layout.read_index()["manifests"]:
        name = (desc.get("annotations") or {}).get(REF_NAME)
        if name is not None:
            tags[name] = None
    return list(tags)


def set_tag(layout: Layout, tag: str, descriptor: dict) -> None:
    """Point ``tag`` at ``descriptor``, replacing every entry of that name."""
    check_tag(tag)
    entry = dict(descriptor)
    entry["annotations"] = {**(descriptor.get("annotations") or {}), REF_NAME: tag}
    with layout.update_index() as index:
        index["manifests"] = [d for d in index["manifests"] if d not in _tag_entries(index, tag)]
        index["manifests"].append(entry)


def remove_tag(layout: Layout, tag: str) -> None:
    """Drop every entry named ``tag``; a missing tag is not an error (as umoci)."""
    check_tag(tag)
    with layout.update_index() as index:
        index["manifests"] = [d for d in index["manifests"] if d not in _tag_entries(index, tag)]


def _children(layout: Layout, desc: dict) -> list[dict]:
    media_type = desc["mediaType"]
    if media_type in mediatypes.INDEX_TYPES:
        doc = layout.read_json(desc, "index")
        children = list(doc["manifests"])
    elif media_type in mediatypes.MANIFEST_TYPES:
        doc = layout.read_json(desc, "manifest")
        children = [doc["config"], *doc["layers"]]
    else:
        return []
    if "subject" in doc:
        children.append(doc["subject"])
    return children


def gc(layout: Layout) -> list[str]:
    """Delete blobs unreachable from index.json and stale temp dirs; return removed digests.

    Any unreadable or corrupt reachable blob aborts before anything is deleted.
    """
    with layout.gc_lock():
        marked: set[str] = set()
        todo = list(layout.read_index()["manifests"])
        while todo:
            desc = todo.pop()
            if desc["digest"] in marked:
                continue
            marked.add(desc["digest"])
            todo.extend(_children(layout, desc))
        removed = sorted(layout.list_blobs() - marked)
        for digest in removed:
            layout.delete_blob(digest)
        layout.clean_temp_dirs()
    return removed
