"""Tags, image references, platform selection, garbage collection and stat.

A tag is an index.json entry annotated ``org.opencontainers.image.ref.name``.
Resolution walks nested indexes down to image manifests; unlike umoci, a
multi-platform index is resolved by platform instead of being "ambiguous".
"""

from __future__ import annotations

import platform as platformmod
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


def host_platform() -> Platform:
    machine = platformmod.machine()
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
        raise RefError(f"{layout.path}: tag {tag!r} not found in index.json")
    candidates = [p for entry in entries for p in _manifest_paths(layout, [entry])]
    if not candidates:
        raise RefError(f"{layout.path}: tag {tag!r} does not point to an image manifest")
    if len(candidates) == 1 and platform is None:
        return candidates[0]
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
        raise RefError(f"{layout.path}: tag {tag!r} is ambiguous: {len(matching)} manifests "
                       f"for platform {want}")
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


def stat(layout: Layout, tag: str, platform: Platform | None = None) -> dict:
    """umoci HEAD's ``stat --json`` document for the image manifest ``tag`` names."""
    path = resolve(layout, tag, platform)
    manifest_desc = path[-1]
    manifest = layout.read_json(manifest_desc, "manifest")
    config = layout.read_json(manifest["config"], "config")
    layers = iter(manifest["layers"])
    diff_ids = iter(config["rootfs"].get("diff_ids") or [])
    history = []
    for entry in config.get("history") or []:
        empty = bool(entry.get("empty_layer", False))
        layer = None if empty else next(layers, None)
        item = {"layer": layer, "diff_id": "" if empty else next(diff_ids, "")}
        # Go's omitempty: unset strings and a false empty_layer are left out.
        for key in ("created", "created_by", "author", "comment"):
            if entry.get(key):
                item[key] = entry[key]
        if empty:
            item["empty_layer"] = True
        history.append(item)
    return {
        "manifest": {"descriptor": manifest_desc, "blob": manifest},
        "config": {"descriptor": manifest["config"], "blob": config},
        "history": history,
    }


def human_size(size: float) -> str:
    """go-units HumanSize: decimal units, 4 significant digits (``135B``, ``1.089MB``)."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.4g}{units[i]}"


def _tabwrite(lines: list[str], minwidth: int = 4, padding: int = 1) -> str:
    """Go text/tabwriter with padchar ' ': tab-terminated cells aligned per column block."""
    out: list[str] = []
    rows = [line.split("\t") for line in lines]

    def emit(start: int, end: int, widths: list[int]) -> None:
        for cells in rows[start:end]:
            text = ""
            for j, cell in enumerate(cells):
                text += cell.ljust(widths[j]) if j < len(widths) and j < len(cells) - 1 else cell
            out.append(text)

    def block(start: int, end: int, widths: list[int]) -> None:
        column = len(widths)
        line0 = start
        this = start
        while this < end:
            if column >= len(rows[this]) - 1:
                this += 1
                continue
            emit(line0, this, widths)
            line0 = this
            width = minwidth
            while this < end and column < len(rows[this]) - 1:
                width = max(width, len(rows[this][column]) + padding)
                this += 1
            block(line0, this, widths + [width])
            line0 = this
        emit(line0, end, widths)

    # A line without tabs flushes the writer, so it ends every column block.
    start = 0
    for i, cells in enumerate(rows):
        if len(cells) == 1:
            block(start, i, [])
            out.append(cells[0])
            start = i + 1
    block(start, len(rows), [])
    return "".join(line + "\n" for line in out)


def _quote_volume(path: str) -> str:
    if re.search(r'[\s,"\\]', path):
        return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return path


def _descriptor_lines(desc: dict, indent: str) -> list[str]:
    lines = [f"{indent}Media Type:\t{desc['mediaType']}",
             f"{indent}Digest:\t{desc['digest']}",
             f"{indent}Size:\t{human_size(desc['size'])}"]
    for key, value in sorted((desc.get("annotations") or {}).items()):
        lines.append(f"{indent}Annotation {key}:\t{value}")
    return lines


def format_stat(st: dict) -> str:
    """The human ``umoci stat`` text for a :func:`stat` document."""
    manifest = st["manifest"]["blob"]
    config = st["config"]["blob"]
    image = config.get("config") or {}
    lines = ["== MANIFEST ==",
             f"Schema Version:\t{manifest['schemaVersion']}",
             f"Media Type:\t{manifest.get('mediaType', '')}"]
    if "artifactType" in manifest:
        lines.append(f"Artifact Type:\t{manifest['artifactType']}")
    lines.append("Config:")
    lines += _descriptor_lines(st["config"]["descriptor"], "\t")
    lines.append("Layers:")
    for layer in manifest["layers"]:
        lines += _descriptor_lines(layer, "\t")
    if "subject" in manifest:
        lines.append("Subject:")
        lines += _descriptor_lines(manifest["subject"], "\t")
    lines += ["", "== CONFIG ==",
              f"Created:\t{config.get('created', '')}",
              f"Author:\t{config.get('author', '')}",
              "Platform:",
              f"\tOS:\t{config['os']}",
              f"\tArchitecture:\t{config['architecture']}"]
    if config.get("variant"):
        lines.append(f"\tVariant:\t{config['variant']}")
    # Single-valued lines first: list items would otherwise share a tabwriter
    # column block with them and push their values far to the right.
    lines += ["Image Config:",
              f"\tUser:\t{image.get('User', '')}",
              f"\tWorking Directory:\t{image.get('WorkingDir', '')}"]
    if image.get("Volumes"):
        lines.append("\tVolumes:\t" + ", ".join(_quote_volume(v) for v in sorted(image["Volumes"])))
    if image.get("ExposedPorts"):
        lines.append("\tExposed Ports:\t" + ", ".join(sorted(image["ExposedPorts"])))
    for key, title in (("Entrypoint", "Entrypoint"), ("Cmd", "Command"), ("Env", "Environment")):
        if image.get(key):
            lines.append(f"\t{title}:")
            lines += [f"\t\t{value}" for value in image[key]]
    if image.get("Labels"):
        lines.append("\tLabels:")
        lines += [f"\t\t{k}:\t{v}" for k, v in sorted(image["Labels"].items())]
    lines += ["", "== HISTORY ==", "LAYER\tCREATED\tCREATED BY\tSIZE\tCOMMENT"]
    for entry in st["history"]:
        layer = entry["layer"]
        fields = [layer["digest"] if layer else "<none>",
                  entry.get("created", "0001-01-01T00:00:00Z"),
                  entry.get("created_by", ""),
                  human_size(layer["size"]) if layer else "<none>",
                  entry.get("comment", "")]
        lines.append("\t".join(f.replace("\t", " ").replace("\n", " ") for f in fields))
    return _tabwrite(lines)
