"""umoci-py commands that touch layers: unpack, repack, insert, raw *; and their failures."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pytest

from umoci_py.rootless import encode_owner

from umoci_py_helpers import (assert_one_line_error, blob_path, config_of, layout_snapshot,
                              manifest_of, top_layer, tree_snapshot, umoci_py)


def test_unpack_repack_history_flags_and_compression(busybox_layout, tmp_path):
    image = f"{busybox_layout}:latest"
    umoci_py("unpack", "--rootless", "--keep-dirlinks", "--image", image, tmp_path / "b")
    assert {p.name for p in (tmp_path / "b").iterdir()} >= {"config.json", "umoci.json", "rootfs"}
    (tmp_path / "b/rootfs/etc/x").write_text("x")
    umoci_py("repack", "--image", f"{busybox_layout}:new", "--compress", "zstd",
             "--history.author", "a", "--history.comment", "c", "--history.created_by", "cb",
             "--history.created", "2020-02-02T02:02:02.000000002Z", tmp_path / "b")
    assert manifest_of(busybox_layout, "new")["layers"][-1]["mediaType"].endswith("+zstd")
    assert config_of(busybox_layout, "new")["history"][-1] == {
        "created": "2020-02-02T02:02:02.000000002Z", "created_by": "cb", "author": "a", "comment": "c"}
    umoci_py("repack", "--image", f"{busybox_layout}:auto", "--mask-path", "/etc",
             "--no-mask-volumes", "--refresh-bundle", tmp_path / "b")
    assert manifest_of(busybox_layout, "auto")["layers"] == manifest_of(busybox_layout, "latest")["layers"]


def test_insert_whiteout_opaque_and_tag(busybox_layout, tmp_path):
    image = f"{busybox_layout}:latest"
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub/f").write_text("f")
    umoci_py("insert", "--rootless", "--image", image, "--tag", "dir", "--opaque", src, "/etc")
    names = set(top_layer(busybox_layout, "dir"))
    assert {"etc/.wh..wh..opq", "etc/sub/f"} <= names
    assert config_of(busybox_layout, "dir")["history"][-1]["created_by"] == "umoci insert"
    umoci_py("insert", "--image", image, "--whiteout", "/bin/ls")
    assert set(top_layer(busybox_layout, "latest")) == {"bin/.wh.ls"}
    proc = umoci_py("insert", "--image", image, "--whiteout", src, "/x", check=False)
    assert_one_line_error(proc, "--whiteout")


def test_raw_add_layer_unpack_and_runtime_config(busybox_layout, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("etc/raw")
        info.size, info.uid, info.gid, info.mode = 3, 7, 9, 0o640
        tar.addfile(info, io.BytesIO(b"raw"))
    (tmp_path / "l.tar").write_bytes(buf.getvalue())
    umoci_py("raw", "add-layer", "--image", f"{busybox_layout}:latest", "--tag", "raw",
             "--compress", "none", tmp_path / "l.tar")
    top = manifest_of(busybox_layout, "raw")["layers"][-1]
    assert blob_path(busybox_layout, top["digest"]).read_bytes() == buf.getvalue()
    umoci_py("raw", "unpack", "--rootless", "--image", f"{busybox_layout}:raw", tmp_path / "r")
    snap = tree_snapshot(tmp_path / "r")
    assert snap["etc/raw"][1] == 0o640 and snap["etc/raw"][4] == encode_owner(7, 9).hex()
    assert not (tmp_path / "config.json").exists()
    umoci_py("raw", "config", "--rootless", "--rootfs", tmp_path / "r",
             "--image", f"{busybox_layout}:raw", tmp_path / "config.json")
    spec = json.loads((tmp_path / "config.json").read_text())
    assert spec["process"]["args"] == ["/bin/sh"] and spec["linux"]["uidMappings"][0]["hostID"] == os.geteuid()


def test_mtree_validate(busybox_layout, tmp_path):
    umoci_py("unpack", "--rootless", "--image", f"{busybox_layout}:latest", tmp_path / "b")
    manifest = next((tmp_path / "b").glob("*.mtree"))
    args = ["raw", "mtree-validate", "--rootless", "-f", manifest, "-p", tmp_path / "b/rootfs"]
    assert umoci_py(*args).stdout == ""
    (tmp_path / "b/rootfs/etc/extra").write_text("e")
    proc = umoci_py(*args, check=False)
    assert proc.returncode == 1 and "etc/extra: extra" in proc.stdout


def _corrupt_layer(layout):
    layer = manifest_of(layout, "latest")["layers"][0]
    path = blob_path(layout, layer["digest"])
    os.chmod(path, 0o600)
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("case", ["corrupt", "missing-tag", "existing", "not-a-tar", "bad-image"])
def test_failures_are_one_line_and_change_nothing(busybox_layout, tmp_path, case):
    bundle = tmp_path / "b"
    image = f"{busybox_layout}:latest"
    if case == "corrupt":
        _corrupt_layer(busybox_layout)
        argv = ["unpack", "--rootless", "--image", image, bundle]
    elif case == "missing-tag":
        argv = ["unpack", "--rootless", "--image", f"{busybox_layout}:nope", bundle]
    elif case == "existing":
        bundle.mkdir()
        (bundle / "rootfs").mkdir()
        argv = ["unpack", "--rootless", "--image", image, bundle]
    elif case == "not-a-tar":
        (tmp_path / "junk.tar").write_bytes(b"this is not a tar archive" * 100)
        argv = ["raw", "add-layer", "--image", image, tmp_path / "junk.tar"]
    else:
        argv = ["unpack", "--rootless", "--image", f"{tmp_path}/absent:latest", bundle]
    before_layout = layout_snapshot(busybox_layout)
    before_bundle = sorted(os.listdir(bundle)) if bundle.exists() else None
    proc = umoci_py(*argv, check=False)
    assert_one_line_error(proc, {"corrupt": "layer sha256:", "missing-tag": "nope", "existing": "rootfs",
                                 "not-a-tar": "junk.tar", "bad-image": "absent"}[case])
    assert layout_snapshot(busybox_layout) == before_layout
    assert (sorted(os.listdir(bundle)) if bundle.exists() else None) == before_bundle


def test_repack_of_a_non_bundle_fails_cleanly(busybox_layout, tmp_path):
    (tmp_path / "b").mkdir()
    before = layout_snapshot(busybox_layout)
    proc = umoci_py("repack", "--image", f"{busybox_layout}:latest", tmp_path / "b", check=False)
    assert_one_line_error(proc, "umoci.json")
    assert layout_snapshot(busybox_layout) == before
