"""`stat`: an image's manifest, config and history, as umoci 0.6 prints them.

The text follows umoci's ManifestStat.Format and its pprint helpers: sections
`== MANIFEST ==`, `== CONFIG ==`, `== HISTORY ==`; one TAB per nesting level;
`KEY: VALUE` with values quoted the Go way (strconv.Quote) when they need it;
the history as a text/tabwriter table.  Scripts grep this, so the details
(quoting, `(empty)`, field order) are kept exactly.
"""

from __future__ import annotations

import base64
import binascii
import re

from . import mediatypes, refs
from .cas import Layout

_GO_ZERO_TIME = "0001-01-01T00:00:00Z"
_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$")
_HEXDUMP_LIMIT = 256


def stat(layout: Layout, tag: str, platform: refs.Platform | None = None) -> dict:
    """umoci 0.6's ``stat --json`` document for the image manifest ``tag`` names."""
    manifest_desc = refs.resolve(layout, tag, platform)[-1]
    manifest = layout.read_json(manifest_desc, "manifest")
    out = {"manifest": {"descriptor": manifest_desc, "blob": manifest}}
    if manifest["config"].get("mediaType") not in mediatypes.CONFIG_TYPES:
        return out  # an artifact: umoci shows no config and no history
    config = layout.read_json(manifest["config"], "config")
    out["config"] = {"descriptor": manifest["config"], "blob": config}
    layers = iter(manifest["layers"])
    diff_ids = iter(config["rootfs"].get("diff_ids") or [])
    history = []
    for entry in config.get("history") or []:
        empty = bool(entry.get("empty_layer", False))
        item = {"layer": None if empty else next(layers, None),
                "diff_id": "" if empty else next(diff_ids, "")}
        # Go's omitempty: unset strings and a false empty_layer are left out.
        for key in ("created", "created_by", "author", "comment"):
            if entry.get(key):
                item[key] = go_time(entry[key]) if key == "created" else entry[key]
        if empty:
            item["empty_layer"] = True
        history.append(item)
    out["history"] = history
    return out


# -- value formatting --------------------------------------------------------

def go_time(value: str) -> str:
    """An RFC3339 time as Go prints it back (RFC3339Nano): fraction without
    trailing zeros, a zero offset as "Z"."""
    m = _RFC3339.match(value)
    if not m:
        return value
    date, clock, frac, offset = m.groups()
    frac = (frac or "").rstrip("0")
    if offset in ("Z", "z", "+00:00", "-00:00"):
        offset = "Z"
    return f"{date}T{clock}{'.' + frac if frac else ''}{offset}"


def human_size(size: float) -> str:
    """go-units HumanSize: decimal units, 4 significant digits (``135B``, ``1.089MB``)."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.4g}{units[i]}"


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               "\v": "\\v", "\\": "\\\\", '"': '\\"'}


def go_quote(text: str) -> str:
    """Go's strconv.Quote (for text decoded with surrogateescape, bad bytes as \\xNN)."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def quote(text: str, precise: bool = True) -> str:
    """umoci's quoting: always with a comma or anything Go escapes; precisely,
    also when empty or holding whitespace."""
    quoted = go_quote(text)
    if "," in text or quoted != f'"{text}"':
        return quoted
    if precise and (text == "" or any(c.isspace() for c in text)):
        return quoted
    return text


class _Printer:
    """umoci's pprint helpers: lines of `KEY: VALUE`, one TAB per level."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, depth: int, key: str, *values: str) -> None:
        text = "\t" * depth + key + ":"
        self.lines.append(text + (" " + ", ".join(values) if values else ""))

    def value(self, depth: int, key: str, value: str) -> None:
        self.line(depth, key, quote(value))

    def slice(self, depth: int, key: str, values: list[str]) -> None:
        if not values:
            self.line(depth, key, "(empty)")
            return
        self.line(depth, key)
        self.lines.extend("\t" * (depth + 1) + quote(v) for v in values)

    def set(self, depth: int, key: str, values: dict) -> None:
        self.line(depth, key, *([quote(k) for k in sorted(values)] or ["(empty)"]))

    def map(self, depth: int, key: str, values: dict) -> None:
        if not values:
            self.line(depth, key, "(empty)")
            return
        self.line(depth, key)
        for k in sorted(values):
            self.value(depth + 1, quote(k), values[k])

    def platform(self, depth: int, plat: dict) -> None:
        self.line(depth, "Platform")
        self.value(depth + 1, "OS", plat.get("os", ""))
        if plat.get("os.version"):
            self.value(depth + 1, "OS Version", plat["os.version"])
        if plat.get("os.features"):
            self.set(depth + 1, "OS Features", dict.fromkeys(plat["os.features"]))
        arch = quote(plat.get("architecture", ""))
        if plat.get("variant"):
            arch += f" ({quote(plat['variant'], precise=False)})"
        self.line(depth + 1, "Architecture", arch)

    def descriptor(self, depth: int, desc: dict) -> None:
        self.line(depth, "Descriptor")
        inner = depth + 1
        self.value(inner, "Media Type", desc.get("mediaType", ""))
        if desc.get("artifactType"):
            self.value(inner, "Artifact Type", desc["artifactType"])
        self.value(inner, "Digest", desc.get("digest", ""))
        self.value(inner, "Size", human_size(desc.get("size", 0)))
        if desc.get("platform"):
            self.platform(inner, desc["platform"])
        if desc.get("urls"):
            self.slice(inner, "URLs", desc["urls"])
        if "annotations" in desc and desc["annotations"] is not None:
            self.map(inner, "Annotations", desc["annotations"])
        if desc.get("data"):
            self.data(inner, desc["data"])

    def data(self, depth: int, encoded: str) -> None:
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            self.value(depth, "Data", encoded)
            return
        self.line(depth, "Data", f"({len(raw)} bytes)")
        self.lines.extend("\t" * (depth + 1) + row for row in hexdump(raw[:_HEXDUMP_LIMIT]))


def hexdump(data: bytes) -> list[str]:
    """Go's encoding/hex.Dump, one string per 16-byte row."""
    rows = []
    for offset in range(0, len(data), 16):
        chunk = data[offset:offset + 16]
        cells = ""
        for i in range(16):
            cells += f"{chunk[i]:02x} " if i < len(chunk) else "   "
            if i == 7:
                cells += " "
        text = "".join(chr(b) if 0x20 <= b <= 0x7E else "." for b in chunk)
        rows.append(f"{offset:08x}  {cells} |{text}|")
    return rows


def _manifest_section(p: _Printer, manifest: dict, desc: dict) -> None:
    p.lines.append("== MANIFEST ==")
    p.line(0, "Schema Version", str(manifest.get("schemaVersion", "")))
    p.value(0, "Media Type", manifest.get("mediaType", ""))
    if manifest.get("artifactType"):
        p.value(0, "Artifact Type", manifest["artifactType"])
    p.line(0, "Config")
    p.descriptor(1, manifest["config"])
    if manifest.get("layers"):
        p.line(0, "Layers")
        for layer in manifest["layers"]:
            p.descriptor(1, layer)
    if manifest.get("subject"):
        p.line(0, "Subject")
        p.descriptor(1, manifest["subject"])
    if "annotations" in manifest and manifest["annotations"] is not None:
        p.map(0, "Annotations", manifest["annotations"])
    p.descriptor(0, desc)


def _config_section(p: _Printer, config: dict, desc: dict) -> None:
    p.lines += ["", "== CONFIG =="]
    if config.get("created"):
        p.line(0, "Created", go_time(config["created"]))
    p.value(0, "Author", config.get("author", ""))
    p.platform(0, config)
    image = config.get("config") or {}
    p.line(0, "Image Config")
    p.value(1, "User", image.get("User", ""))
    escaped = " (escaped)" if image.get("ArgsEscaped") else ""
    if image.get("Entrypoint") is not None:
        p.slice(1, "Entrypoint" + escaped, image["Entrypoint"])
    p.slice(1, "Command" + escaped, image.get("Cmd") or [])
    if image.get("WorkingDir"):
        p.value(1, "Working Directory", image["WorkingDir"])
    if image.get("Env") is not None:
        p.slice(1, "Environment", image["Env"])
    if image.get("StopSignal"):
        p.value(1, "Stop Signal", image["StopSignal"])
    if image.get("ExposedPorts") is not None:
        p.set(1, "Exposed Ports", image["ExposedPorts"])
    if image.get("Volumes") is not None:
        p.set(1, "Volumes", image["Volumes"])
    if image.get("Labels") is not None:
        p.map(1, "Labels", image["Labels"])
    p.descriptor(0, desc)


def _history_section(history: list[dict]) -> list[str]:
    rows = ["LAYER\tCREATED\tCREATED BY\tSIZE\tCOMMENT"]
    for entry in history:
        layer = entry["layer"]
        rows.append("\t".join([
            layer["digest"] if layer else "<none>",
            quote(entry.get("created", _GO_ZERO_TIME), precise=False),
            quote(entry.get("created_by", ""), precise=False),
            human_size(layer["size"]) if layer else "<none>",
            quote(entry.get("comment", ""), precise=False),
        ]))
    return tabwrite(rows)


def format_stat(st: dict) -> str:
    """The human ``umoci stat`` text for a :func:`stat` document."""
    p = _Printer()
    _manifest_section(p, st["manifest"]["blob"], st["manifest"]["descriptor"])
    if "config" in st:
        _config_section(p, st["config"]["blob"], st["config"]["descriptor"])
    p.lines += ["", "== HISTORY =="]
    p.lines += _history_section(st.get("history") or [])
    return "".join(line + "\n" for line in p.lines)


def tabwrite(rows: list[str], minwidth: int = 4, padding: int = 1) -> list[str]:
    """Go text/tabwriter (tabwidth 2, padchar ' ') over tab-separated rows:
    every cell but a row's last is padded to its column's width."""
    cells = [row.split("\t") for row in rows]
    out: list[str] = []

    def block(start: int, end: int, widths: list[int]) -> None:
        # A column block: consecutive rows that have a cell in this column.
        column = len(widths)
        line0 = start
        this = start
        while this < end:
            if column >= len(cells[this]) - 1:
                this += 1
                continue
            emit(line0, this, widths)
            line0 = this
            width = minwidth
            while this < end and column < len(cells[this]) - 1:
                width = max(width, len(cells[this][column]) + padding)
                this += 1
            block(line0, this, widths + [width])
            line0 = this
        emit(line0, end, widths)

    def emit(start: int, end: int, widths: list[int]) -> None:
        for row in cells[start:end]:
            out.append("".join(cell.ljust(widths[j]) if j < len(widths) and j < len(row) - 1
                               else cell for j, cell in enumerate(row)))

    block(0, len(cells), [])
    return out
