"""Helpers for the layer tests: build tars in memory, read tar headers."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

from umoci_py import compress
from umoci_py.layer.extract import MapOptions, extract_layer

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


def image_layers(layout: Path, tag: str):
    """(media type, blob path) of each layer of a fixture image."""
    index = json.loads((layout / "index.json").read_text())
    desc = next(m for m in index["manifests"]
                if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
    manifest = json.loads((layout / "blobs/sha256" / desc["digest"][7:]).read_text())
    return [(layer["mediaType"], layout / "blobs/sha256" / layer["digest"][7:]) for layer in manifest["layers"]]


def extract_image(layout: Path, tag: str, rootfs: Path, cache=None) -> None:
    rootfs.mkdir()
    for media_type, blob in image_layers(layout, tag):
        with open(blob, "rb") as f:
            extract_layer(compress.reader(f, media_type), rootfs, ROOTLESS, cache=cache)


def umoci_unpack(layout: Path, tag: str, bundle: Path) -> None:
    import subprocess

    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:{tag}", str(bundle)],
                   check=True, capture_output=True)


def umoci_mtree(bundle: Path) -> str:
    return next(bundle.glob("sha256_*.mtree")).read_text()


def xattr(path, name):
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None
