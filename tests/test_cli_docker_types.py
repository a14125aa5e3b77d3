"""Images with Docker schema2 media types (what `docker save`-era registries
hold): umoci refuses them, umoci-py and orca-build read them."""

import json
import os


from umoci_py import jsonenc, mediatypes as mt
from umoci_py.cas import Layout

from orca_build_helpers import run_cli
from umoci_py_helpers import umoci, umoci_py

_DOCKER_LAYER = {mt.LAYER_GZIP: mt.DOCKER_LAYER_GZIP}


def _dockerize(layout_path, tag="latest"):
    """Rewrite the tag's manifest with Docker media types (same config and
    layer blobs) and point the tag at it; returns the manifest."""
    layout = Layout.open(layout_path)
    index = layout.read_index()
    entry = next(e for e in index["manifests"]
                 if e.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
    manifest = layout.read_json(entry, "manifest")
    manifest["mediaType"] = mt.DOCKER_MANIFEST
    manifest["config"]["mediaType"] = mt.DOCKER_CONFIG
    for layer in manifest["layers"]:
        layer["mediaType"] = _DOCKER_LAYER[layer["mediaType"]]
    digest, size = layout.put_blob(jsonenc.dumps(manifest))
    entry.update(mediaType=mt.DOCKER_MANIFEST, digest=digest, size=size)
    (layout_path / "index.json").write_bytes(jsonenc.dumps(index))
    return manifest


def test_unpack_raw_unpack_and_stat_read_docker_types(busybox_layout, tmp_path):
    _dockerize(busybox_layout)
    assert umoci("unpack", "--rootless", "--image", f"{busybox_layout}:latest", tmp_path / "u",
                 check=False).returncode != 0  # the peer refuses what we accept
    umoci_py("unpack", "--rootless", "--image", f"{busybox_layout}:latest", tmp_path / "b")
    assert os.access(tmp_path / "b" / "rootfs" / "bin" / "busybox", os.X_OK)
    assert json.loads((tmp_path / "b" / "config.json").read_text())["process"]["args"] == ["/bin/sh"]
    umoci_py("raw", "unpack", "--rootless", "--image", f"{busybox_layout}:latest", tmp_path / "r")
    assert (tmp_path / "r" / "bin" / "busybox").is_file()
    info = json.loads(umoci_py("stat", "--json", "--image", f"{busybox_layout}:latest").stdout)
    assert info["history"]


def test_repack_on_a_docker_image_writes_an_oci_image_umoci_reads(busybox_layout, tmp_path):
    old = _dockerize(busybox_layout)
    bundle = tmp_path / "b"
    umoci_py("unpack", "--rootless", "--image", f"{busybox_layout}:latest", bundle)
    (bundle / "rootfs" / "added").write_text("new\n")
    umoci_py("repack", "--image", f"{busybox_layout}:next", bundle)
    layout = Layout.open(busybox_layout)
    entry = next(e for e in layout.read_index()["manifests"]
                 if e["annotations"]["org.opencontainers.image.ref.name"] == "next")
    assert entry["mediaType"] == mt.MANIFEST
    manifest = layout.read_json(entry, "manifest")
    assert manifest["mediaType"] == mt.MANIFEST and manifest["config"]["mediaType"] == mt.CONFIG
    # the base layer is the same blob under its OCI name
    assert manifest["layers"][0] == {**old["layers"][0], "mediaType": mt.LAYER_GZIP}
    assert all(layer["mediaType"] == mt.LAYER_GZIP for layer in manifest["layers"])
    umoci("unpack", "--rootless", "--image", f"{busybox_layout}:next", tmp_path / "check")
    assert (tmp_path / "check" / "rootfs" / "added").read_text() == "new\n"


def test_orca_build_from_a_docker_image(busybox_layout, tmp_path):
    _dockerize(busybox_layout)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM oci:{busybox_layout}:latest\nCOPY f /f\n")
    (ctx / "f").write_text("x\n")
    res = run_cli("--layout", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"),
                  "--progress", "plain", "-t", "app", str(ctx))
    assert res.exit_code == 0, res.output
    umoci("unpack", "--rootless", "--image", f"{tmp_path / 'out'}:app", tmp_path / "check")
    assert (tmp_path / "check" / "rootfs" / "f").read_text() == "x\n"
    assert (tmp_path / "check" / "rootfs" / "bin" / "busybox").is_file()
