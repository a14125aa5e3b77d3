"""umoci 0.6 behaviours a script can see, through our CLI: argument checks, the
runtime config's HOME, embedded media types, empty xattrs and umoci's error texts."""

from __future__ import annotations

import json
import os

import pytest
import xattr

from umoci_py_helpers import (assert_one_line_error, blob_path, layout_snapshot, manifest_of,
                              read_blob_json, tree_snapshot, umoci, umoci_py)

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


@pytest.mark.parametrize("paths", [["{src}", ""], ["", "/foo/bar"]])
def test_insert_refuses_empty_paths(busybox_layout, tmp_path, paths):
    src = tmp_path / "src"
    src.write_text("x")
    before = layout_snapshot(busybox_layout)
    proc = umoci_py("insert", "--image", f"{busybox_layout}:latest",
                    *[p.replace("{src}", str(src)) for p in paths], check=False)
    assert_one_line_error(proc, "cannot be empty")
    assert layout_snapshot(busybox_layout) == before


def _runtime_env(layout, tmp_path, *args) -> list[str]:
    out = tmp_path / f"config-{len(os.listdir(tmp_path))}.json"
    umoci_py("raw", "runtime-config", "--image", f"{layout}:latest", *args, out)
    return json.loads(out.read_text())["process"]["env"]


def test_runtime_config_home_only_from_passwd_and_never_over_the_image_env(busybox_layout, tmp_path):
    path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    image = f"{busybox_layout}:latest"
    umoci_py("config", "--image", image, "--clear=config.env")
    # No rootfs: no passwd to find the user in, so no HOME (umoci 0.6 gives PATH and TERM).
    assert _runtime_env(busybox_layout, tmp_path) == [path, "TERM=xterm"]
    umoci_py("raw", "unpack", "--rootless", "--image", image, tmp_path / "rootfs")
    assert _runtime_env(busybox_layout, tmp_path, "--rootfs", tmp_path / "rootfs") == \
        [path, "TERM=xterm", "HOME=/root"]
    umoci_py("config", "--image", image, "--config.user", "4242")  # not in passwd
    assert _runtime_env(busybox_layout, tmp_path, "--rootfs", tmp_path / "rootfs") == \
        [path, "TERM=xterm"]
    umoci_py("config", "--image", image, "--config.user", "mail", "--config.env", "HOME=/h")
    assert _runtime_env(busybox_layout, tmp_path, "--rootfs", tmp_path / "rootfs") == \
        [path, "TERM=xterm", "HOME=/h"]


def test_empty_xattr_survives_repack_and_unpack(busybox_layout, tmp_path):
    bundle = tmp_path / "b"
    umoci_py("unpack", "--rootless", "--image", f"{busybox_layout}:latest", bundle)
    xattr.set(str(bundle / "rootfs/bin"), "user.empty_cont", b"", nofollow=True)
    xattr.set(str(bundle / "rootfs/etc/passwd"), "user.full", b"v", nofollow=True)
    umoci_py("repack", "--refresh-bundle", "--image", f"{busybox_layout}:new", bundle)
    # The refreshed manifest records it, and a second repack reads that manifest.
    assert "xattr.user.empty_cont=" in next(bundle.glob("*.mtree")).read_text().split()
    umoci_py("repack", "--image", f"{busybox_layout}:again", bundle)
    umoci_py("unpack", "--rootless", "--image", f"{busybox_layout}:new", tmp_path / "c")
    assert xattr.get(str(tmp_path / "c/rootfs/bin"), "user.empty_cont", nofollow=True) == b""
    assert xattr.get(str(tmp_path / "c/rootfs/etc/passwd"), "user.full", nofollow=True) == b"v"
    assert tree_snapshot(tmp_path / "c/rootfs") == tree_snapshot(bundle / "rootfs")
