"""Hostile images: bad documents, descriptors, digests and bombs -> exit 1, one
line naming the problem, the layout byte-for-byte unchanged, no bundle."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile

import pytest
import zstandard

from hostile.corpus import (CONFIG, LAYER, MANIFEST, REF, descriptor, json_bytes, member, tar,
                            write_image)
from umoci_py_helpers import assert_one_line_error, blob_path, layout_snapshot, umoci_py

LAYERS = [tar(member("etc", tarfile.DIRTYPE), member("etc/hostname", data=b"box\n"))]


def _entry(layout):
    return json.loads((layout / "index.json").read_bytes())["manifests"][0]


def _manifest(layout):
    return json.loads(blob_path(layout, _entry(layout)["digest"]).read_bytes())


def _retag(layout, manifest: dict | bytes) -> None:
    """Point the tag at a new manifest blob (which may be garbage)."""
    data = manifest if isinstance(manifest, bytes) else json_bytes(manifest)
    entry = descriptor(layout, MANIFEST, data)
    entry["annotations"] = {REF: "t"}
    index = json.loads((layout / "index.json").read_bytes())
    index["manifests"] = [entry]
    (layout / "index.json").write_bytes(json_bytes(index))


def _with_layer(layout, mutate):
    manifest = _manifest(layout)
    mutate(manifest["layers"][0])
    _retag(layout, manifest)


def _with_config(layout, mutate):
    manifest = _manifest(layout)
    config = json.loads(blob_path(layout, manifest["config"]["digest"]).read_bytes())
    mutate(config)
    manifest["config"] = descriptor(layout, CONFIG, json_bytes(config))
    _retag(layout, manifest)


def _index(layout, mutate):
    index = json.loads((layout / "index.json").read_bytes())
    mutate(index)
    (layout / "index.json").write_bytes(json_bytes(index))


def _corrupt_layer_blob(layout):
    path = blob_path(layout, _manifest(layout)["layers"][0]["digest"])
    data = bytearray(path.read_bytes())
    data[-9] ^= 0xFF  # gzip trailer CRC: the tar inflates, the digest does not match
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))


def _blobs_symlink(layout):
    shutil.move(layout / "blobs", layout.parent / "elsewhere")
    os.symlink(layout.parent / "elsewhere", layout / "blobs")


def _zstd_bomb(layout):
    bomb = tar(member("zeros", data=bytes(64 << 20)))
    blob = zstandard.ZstdCompressor(level=19).compress(bomb)
    diff_id = "sha256:" + hashlib.sha256(bomb).hexdigest()
    manifest = _manifest(layout)
    manifest["layers"] = [descriptor(layout, LAYER + "+zstd", blob)]
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    manifest["config"] = descriptor(layout, CONFIG, json_bytes(config))
    _retag(layout, manifest)


CASES = {
    "index-fails-schema": (lambda l: _index(l, lambda i: i.update(schemaVersion="2")), "index.json"),
    "index-entry-no-digest": (lambda l: _index(l, lambda i: i["manifests"][0].pop("digest")), "digest"),
    "oci-layout-version": (lambda l: (l / "oci-layout").write_text('{"imageLayoutVersion":"9.9.9"}'),
                           "imageLayoutVersion"),
    "oci-layout-not-json": (lambda l: (l / "oci-layout").write_text("{nope"), "invalid JSON"),
    "manifest-not-json": (lambda l: _retag(l, b"\xff\xfe not json"), "invalid JSON"),
    "manifest-is-a-list": (lambda l: _retag(l, b"[1, 2, 3]"), "is not of type 'object'"),
    "manifest-fails-schema": (lambda l: _retag(l, {**_manifest(l), "layers": "none"}), "layers"),
    "manifest-deeply-nested": (lambda l: _retag(l, b"[" * 100000 + b"]" * 100000), "manifest"),
    "config-fails-schema": (lambda l: _with_config(l, lambda c: c.update(architecture=64)), "architecture"),
    "config-not-layers": (lambda l: _with_config(l, lambda c: c["rootfs"].update(type="tarballs")), "rootfs"),
    "config-media-type": (lambda l: _retag(l, {**_manifest(l), "config": {**_manifest(l)["config"],
                                                                          "mediaType": "text/plain"}}),
                          "text/plain"),
    "layer-media-type": (lambda l: _with_layer(l, lambda d: d.update(mediaType="application/json")),
                         "not a layer"),
    "manifest-media-type": (lambda l: _index(l, lambda i: i["manifests"][0].update(mediaType=CONFIG)),
                            "does not point to an image manifest"),
    "layer-size-larger": (lambda l: _with_layer(l, lambda d: d.update(size=d["size"] + 1)), "size mismatch"),
    "layer-size-smaller": (lambda l: _with_layer(l, lambda d: d.update(size=d["size"] - 1)), "size mismatch"),
    "layer-size-negative": (lambda l: _with_layer(l, lambda d: d.update(size=-1)), "size"),
    "layer-size-string": (lambda l: _with_layer(l, lambda d: d.update(size="12")), "size"),
    "manifest-size-wrong": (lambda l: _index(l, lambda i: i["manifests"][0].update(
        size=i["manifests"][0]["size"] + 7)), "size mismatch"),
    "layer-digest-mismatch": (_corrupt_layer_blob, "layer"),
    "layer-digest-malformed": (lambda l: _with_layer(l, lambda d: d.update(digest="sha256:../../etc")),
                               "digest"),
    "layer-blob-missing": (lambda l: _with_layer(l, lambda d: d.update(digest="sha256:" + "0" * 64)),
                           "not found"),
    "diff-id-mismatch": (lambda l: _with_config(l, lambda c: c["rootfs"].update(diff_ids=["sha256:" + "1" * 64])),
                         "does not match diff_id"),
    "diff-ids-missing": (lambda l: _with_config(l, lambda c: c["rootfs"].update(diff_ids=[])), "diff_ids"),
    "blobs-is-symlink": (_blobs_symlink, "symlink"),
    "zstd-bomb": (_zstd_bomb, "decompression bomb"),
}


@pytest.mark.parametrize("name", CASES)
def test_hostile_image(tmp_path, name):
    layout = tmp_path / "layout"
    write_image(layout, "t", LAYERS)
    mutate, fragment = CASES[name]
    mutate(layout)
    before = layout_snapshot(layout)
    proc = umoci_py("unpack", "--rootless", "--inflate-floor", 1 << 20, "--image", f"{layout}:t",
                    tmp_path / "bundle", check=False)
    assert_one_line_error(proc, fragment)
    assert str(layout) in proc.stderr or str(layout.parent / "elsewhere") in proc.stderr
    assert not (tmp_path / "bundle").exists()
    assert layout_snapshot(layout) == before


def test_gzip_bomb_refused_beyond_the_configured_bound_and_accepted_within(tmp_path):
    layout = tmp_path / "layout"
    write_image(layout, "t", [tar(member("zeros", data=bytes(8 << 20)))])
    blob = _manifest(layout)["layers"][0]["size"]
    assert blob < 64 << 10  # ~1000:1, deflate's best
    before = layout_snapshot(layout)
    image = ("--image", f"{layout}:t")
    proc = umoci_py("raw", "unpack", *image, "--inflate-floor", 1 << 20, "--inflate-ratio", 100,
                    tmp_path / "r1", check=False)
    assert_one_line_error(proc, "decompression bomb", f"more than {max(1 << 20, 100 * blob)} bytes",
                          "(raise --inflate-ratio or --inflate-floor to allow it)")
    assert not (tmp_path / "r1").exists()
    env = {**os.environ, "UMOCI_PY_INFLATE_FLOOR": str(1 << 20)}
    proc = umoci_py("raw", "unpack", "--rootless", *image, tmp_path / "r2", check=False, env=env)
    assert_one_line_error(proc, "decompression bomb")
    umoci_py("raw", "unpack", "--rootless", *image, "--inflate-floor", 1 << 20, "--inflate-ratio", 2000,
             tmp_path / "r3")
    assert (tmp_path / "r3/zeros").stat().st_size == 8 << 20
    umoci_py("raw", "unpack", "--rootless", *image, tmp_path / "r4")  # the default floor is 1 GiB
    assert layout_snapshot(layout) == before


def _without_locks(snapshot: dict) -> dict:
    return {k: v for k, v in snapshot.items() if not k.startswith(".umoci_py-")}


def test_unreadable_manifest_stops_stat_config_and_gc(tmp_path):
    """gc above all must not take an unreadable manifest for one without blobs."""
    layout = tmp_path / "layout"
    write_image(layout, "t", LAYERS)
    _retag(layout, b"[" * 50000)
    before = layout_snapshot(layout)
    for args in (("stat", "--image", f"{layout}:t"), ("gc", "--layout", layout),
                 ("config", "--image", f"{layout}:t", "--config.user", "1")):
        assert_one_line_error(umoci_py(*args, check=False), "invalid JSON")
        assert _without_locks(layout_snapshot(layout)) == before
