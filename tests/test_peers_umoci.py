"""What the real tools make of our output: umoci 0.4.7, oci-image-tool, skopeo, runc."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from umoci_py_helpers import manifest_of, top_layer, tree_snapshot, umoci, umoci_py, validate_layout


def _change(rootfs):
    (rootfs / "etc/added").write_text("new file\n")
    os.unlink(rootfs / "etc/motd")
    os.chmod(rootfs / "etc/hostname", 0o600)
    (rootfs / "usr/local/newdir/sub").mkdir(parents=True)
    os.link(rootfs / "etc/added", rootfs / "usr/local/newdir/sub/hardlink")
    os.symlink("../../etc/added", rootfs / "usr/local/newdir/link")


@pytest.fixture(scope="module")
def changed_debian(tmp_path_factory):
    """The debian fixture plus one layer umoci-py repacked (module-wide: slow to make)."""
    import shutil
    base = tmp_path_factory.mktemp("peers")
    layout = base / "debian"
    shutil.copytree("/var/cache/orca-fixtures/debian", layout)
    umoci_py("unpack", "--rootless", "--image", f"{layout}:bookworm", base / "b")
    _change(base / "b/rootfs")
    umoci_py("repack", "--image", f"{layout}:ours", base / "b")
    return layout


def test_umoci_unpacks_our_image_like_we_do(changed_debian, tmp_path):
    umoci("unpack", "--rootless", "--image", f"{changed_debian}:ours", tmp_path / "theirs")
    umoci_py("unpack", "--rootless", "--image", f"{changed_debian}:ours", tmp_path / "mine")
    theirs = tree_snapshot(tmp_path / "theirs/rootfs")
    mine = tree_snapshot(tmp_path / "mine/rootfs")
    assert "etc/motd" not in mine and "usr/local/newdir/sub/hardlink" in mine
    assert mine["usr/local/newdir/sub/hardlink"][5] == mine["etc/added"][5]
    assert sorted(set(theirs) ^ set(mine)) == []
    diff = {p: (theirs[p], mine[p]) for p in theirs if theirs[p] != mine[p]}
    assert diff == {}


def test_we_unpack_umoci_images_like_umoci(debian_layout, tmp_path):
    umoci("unpack", "--rootless", "--image", f"{debian_layout}:bookworm", tmp_path / "u")
    _change(tmp_path / "u/rootfs")
    umoci("repack", "--image", f"{debian_layout}:theirs", tmp_path / "u")
    umoci("unpack", "--rootless", "--image", f"{debian_layout}:theirs", tmp_path / "theirs")
    umoci_py("unpack", "--rootless", "--image", f"{debian_layout}:theirs", tmp_path / "mine")
    theirs = tree_snapshot(tmp_path / "theirs/rootfs")
    mine = tree_snapshot(tmp_path / "mine/rootfs")
    assert {p: v for p, v in mine.items() if theirs.get(p) != v} == {}
    assert set(theirs) == set(mine)


def test_umoci_repacks_our_bundle_and_we_repack_theirs(busybox_layout, tmp_path):
    umoci_py("unpack", "--rootless", "--image", f"{busybox_layout}:latest", tmp_path / "ours")
    (tmp_path / "ours/rootfs/etc/by-umoci").write_text("x")
    umoci("repack", "--image", f"{busybox_layout}:umoci-repacked", tmp_path / "ours")
    assert "etc/by-umoci" in top_layer(busybox_layout, "umoci-repacked")

    umoci("unpack", "--rootless", "--image", f"{busybox_layout}:latest", tmp_path / "theirs")
    (tmp_path / "theirs/rootfs/etc/by-us").write_text("y")
    os.unlink(tmp_path / "theirs/rootfs/bin/ls")
    umoci_py("repack", "--image", f"{busybox_layout}:py-repacked", tmp_path / "theirs")
    names = set(top_layer(busybox_layout, "py-repacked"))
    assert {"etc/by-us", "bin/.wh.ls"} <= names
    assert not any(n.startswith(("usr/", "lib/")) for n in names)
    validate_layout(busybox_layout, tmp_path)


def test_oci_image_tool_and_skopeo_accept_everything_we_write(changed_debian, tmp_path):
    image = f"{changed_debian}:ours"
    umoci_py("config", "--image", image, "--tag", "cfg", "--config.env", "A=1",
             "--manifest.annotation", "k=v")
    (tmp_path / "f").write_text("inserted")
    umoci_py("insert", "--rootless", "--image", image, "--tag", "ins", tmp_path / "f", "/opt/f")
    umoci_py("insert", "--rootless", "--image", image, "--tag", "wh", "--whiteout", "/etc/added")
    validate_layout(changed_debian, tmp_path)
    # After validation: oci-image-tool predates zstd layers and rejects their media type.
    umoci_py("insert", "--rootless", "--image", image, "--tag", "zst", "--compress", "zstd",
             tmp_path / "f", "/opt/f")
    for tag in ("ours", "ins", "zst"):
        dest = tmp_path / f"copy-{tag}"
        subprocess.run(["skopeo", "copy", "-q", f"oci:{changed_debian}:{tag}", f"oci:{dest}:{tag}"],
                       check=True, capture_output=True)
        assert manifest_of(dest, tag)["layers"] == manifest_of(changed_debian, tag)["layers"]
        umoci_py("unpack", "--rootless", "--image", f"{dest}:{tag}", tmp_path / f"b-{tag}")
    assert (tmp_path / "b-ins/rootfs/opt/f").read_text() == "inserted"
    assert (tmp_path / "b-zst/rootfs/opt/f").read_text() == "inserted"
    assert (tmp_path / "b-ours/rootfs/etc/added").read_text() == "new file\n"


def test_runc_runs_a_bundle_we_unpacked(debian_layout_ro, tmp_path):
    import shutil
    layout = tmp_path / "debian"
    shutil.copytree(debian_layout_ro, layout)
    umoci_py("config", "--image", f"{layout}:bookworm", "--config.user", "_apt")
    bundle = tmp_path / "b"
    umoci_py("unpack", "--rootless", "--image", f"{layout}:bookworm", bundle)
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["user"]["uid"] == 42  # _apt, resolved through rootfs passwd
    config["process"]["user"] = {"uid": 0, "gid": 0}  # only one id is mapped
    config["process"]["terminal"] = False
    config["process"]["args"] = ["sh", "-c", "cat /etc/debian_version; id -u"]
    (bundle / "config.json").write_text(json.dumps(config))
    proc = subprocess.run(["runc", "--root", str(tmp_path / "runc"), "run", "-b", str(bundle), "t1"],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [(bundle / "rootfs/etc/debian_version").read_text().strip(), "0"]
