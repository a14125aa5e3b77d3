"""Helpers for the layer tests: build tars in memory, read tar headers."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

from umoci_py import compress
from umoci_py.layer.extract import extract_layer
from umoci_py.layer.idmap import MapOptions

ROOTLESS = MapOptions(rootless=True)


def entry(name, kind=tarfile.REGTYPE, data=b"", mode=None, uid=0, gid=0, link="", mtime=1_600_000_000,
          xattrs=None, dev=(0, 0)):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode if mode is not None else (0o755 if kind == tarfile.DIRTYPE else 0o644)
    ti.uid, ti.gid, ti.mtime, ti.linkname = uid, gid, mtime, link
    ti.devmajor, ti.devminor = dev
    ti.size = len(data) if kind == tarfile.REGTYPE else 0
    for k, v in (xattrs or {}).items():
        ti.pax_headers["SCHILY.xattr." + k] = v.decode("utf-8", "surrogateescape")
    return ti, data


def make_tar(*entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for ti, data in entries:
            tar.addfile(ti, io.BytesIO(data) if ti.type == tarfile.REGTYPE else None)
    return buf.getvalue()


def apply(rootfs: Path, *entries, opts=ROOTLESS, **kw) -> None:
    rootfs.mkdir(exist_ok=True)
    extract_layer(io.BytesIO(make_tar(*entries)), rootfs, opts, **kw)


def headers(tar_bytes: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        return {ti.name: ti for ti in tar}


def contents(tar_bytes: bytes) -> dict[str, bytes]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        for ti in tar:
            if ti.isreg():
                out[ti.name] = tar.extractfile(ti).read()
    return out


def manifest_layers(layout: Path, tag: str) -> list[dict]:
    """The layer descriptors of a tagged image in a layout."""
    index = json.loads((layout / "index.json").read_text())
    desc = next(m for m in index["manifests"]
                if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
    return json.loads((layout / "blobs/sha256" / desc["digest"][7:]).read_text())["layers"]


def image_layers(layout: Path, tag: str):
    """(media type, blob path) of each layer of a fixture image."""
    return [(layer["mediaType"], layout / "blobs/sha256" / layer["digest"][7:])
            for layer in manifest_layers(layout, tag)]


def extract_image(layout: Path, tag: str, rootfs: Path, cache=None) -> None:
    rootfs.mkdir()
    for media_type, blob in image_layers(layout, tag):
        with open(blob, "rb") as f:
            extract_layer(compress.reader(f, media_type), rootfs, ROOTLESS, cache=cache)


def umoci_mtree(bundle: Path) -> str:
    return next(bundle.glob("sha256_*.mtree")).read_text()


def xattr(path, name):
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


def raw_names(tar_bytes: bytes) -> list[str]:
    """Entry names exactly as written (tarfile strips the "/" of directories)."""
    names, pos, pax_path = [], 0, None
    while pos + 512 <= len(tar_bytes) and tar_bytes[pos:pos + 512] != b"\0" * 512:
        block = tar_bytes[pos:pos + 512]
        size = int(block[124:136].rstrip(b"\0 ") or b"0", 8)
        data = tar_bytes[pos + 512:pos + 512 + size]
        pos += 512 + (size + 511) // 512 * 512
        if block[156:157] == b"x":
            for record in data.split(b"\n"):
                if b" path=" in record:
                    pax_path = record.split(b"=", 1)[1].decode()
            continue
        name = block[:100].rstrip(b"\0").decode()
        prefix = block[345:500].rstrip(b"\0").decode()
        names.append(pax_path or (f"{prefix}/{name}" if prefix else name))
        pax_path = None
    return names
