"""umoci 0.6 behaviours a script can see, through our CLI: argument checks, the
runtime config's HOME, embedded media types, empty xattrs and umoci's error texts."""

from __future__ import annotations

import hashlib
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
    xattr.set(str(bundle / "rootfs/etc/passwd"), "user.with space", b"s", nofollow=True)
    umoci_py("repack", "--refresh-bundle", "--image", f"{busybox_layout}:new", bundle)
    # The refreshed manifest records it, and a second repack reads that manifest.
    words = next(bundle.glob("*.mtree")).read_text().split()
    assert "xattr.user.empty_cont=" in words and "xattr.user.with\\040space=cw==" in words
    umoci_py("repack", "--image", f"{busybox_layout}:again", bundle)
    umoci_py("unpack", "--rootless", "--image", f"{busybox_layout}:new", tmp_path / "c")
    assert xattr.get(str(tmp_path / "c/rootfs/bin"), "user.empty_cont", nofollow=True) == b""
    assert xattr.get(str(tmp_path / "c/rootfs/etc/passwd"), "user.full", nofollow=True) == b"v"
    assert xattr.get(str(tmp_path / "c/rootfs/etc/passwd"), "user.with space", nofollow=True) == b"s"
    assert tree_snapshot(tmp_path / "c/rootfs") == tree_snapshot(bundle / "rootfs")


def _put(layout, doc) -> dict:
    data = json.dumps(doc).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blob_path(layout, digest).write_bytes(data)
    return {"mediaType": doc.get("mediaType", MANIFEST), "digest": digest, "size": len(data)}


def _tag_entry(layout, tag) -> dict:
    index = json.loads((layout / "index.json").read_text())
    return next(m for m in index["manifests"]
                if m["annotations"]["org.opencontainers.image.ref.name"] == tag)


def _blobs_and_index(layout) -> dict[str, str]:
    """The layout's content, without the lock files a writer leaves."""
    return {k: v for k, v in layout_snapshot(layout).items() if not k.startswith(".umoci_py-")}


def _set_index(layout, entries) -> None:
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))


def test_manifests_and_indexes_we_write_embed_their_media_type(tmp_path):
    layout = tmp_path / "img"
    umoci("init", "--layout", layout)
    umoci("new", "--image", f"{layout}:old")  # umoci 0.4.7's manifest has no mediaType
    assert "mediaType" not in manifest_of(layout, "old")
    # The same image behind a nested index without mediaType either.
    inner = {"schemaVersion": 2, "manifests": [{**_tag_entry(layout, "old"), "annotations": {}}]}
    inner["manifests"][0].pop("annotations")
    nested = {**_put(layout, inner), "mediaType": INDEX,
              "annotations": {"org.opencontainers.image.ref.name": "nested"}}
    _set_index(layout, [_tag_entry(layout, "old"), nested])

    umoci_py("config", "--image", f"{layout}:old", "--config.env", "A=1")
    umoci_py("config", "--image", f"{layout}:nested", "--config.env", "B=2")
    manifest = manifest_of(layout, "old")
    assert list(manifest)[:2] == ["schemaVersion", "mediaType"] and manifest["mediaType"] == MANIFEST
    top = read_blob_json(layout, _tag_entry(layout, "nested")["digest"])
    assert list(top)[:2] == ["schemaVersion", "mediaType"] and top["mediaType"] == INDEX
    assert read_blob_json(layout, top["manifests"][0]["digest"])["mediaType"] == MANIFEST
    assert "Media Type: " + MANIFEST + "\n" in umoci_py("stat", "--image", f"{layout}:old").stdout
    # umoci 0.4.7 reads what we wrote.
    assert umoci("stat", "--json", "--image", f"{layout}:old").returncode == 0
    umoci("unpack", "--rootless", "--image", f"{layout}:old", tmp_path / "b")
    assert json.loads((tmp_path / "b/config.json").read_text())["process"]["env"][-1] == "A=1"
    umoci("unpack", "--rootless", "--image", f"{layout}:nested", tmp_path / "n")
    assert json.loads((tmp_path / "n/config.json").read_text())["process"]["env"][-1] == "B=2"


@pytest.mark.parametrize("case", ["index-as-manifest", "manifest-as-index"])
def test_a_blob_whose_embedded_media_type_disagrees_is_refused(busybox_layout, tmp_path, case):
    umoci_py("config", "--image", f"{busybox_layout}:latest", "--config.env", "A=1")
    entry = _tag_entry(busybox_layout, "latest")
    if case == "index-as-manifest":
        index = {"schemaVersion": 2, "mediaType": INDEX,
                 "manifests": [{k: v for k, v in entry.items() if k != "annotations"}]}
        bad = {**_put(busybox_layout, index), "mediaType": MANIFEST}
    else:
        bad = {**entry, "mediaType": INDEX}
        bad.pop("annotations")
    bad["annotations"] = {"org.opencontainers.image.ref.name": "bad"}
    _set_index(busybox_layout, [entry, bad])
    before = _blobs_and_index(busybox_layout)
    for argv in (["stat"], ["unpack", "--rootless"], ["config", "--config.env", "A=1"]):
        proc = umoci_py(*argv, "--image", f"{busybox_layout}:bad",
                        *([tmp_path / "b"] if argv[0] == "unpack" else []), check=False)
        assert_one_line_error(proc, "does not match the descriptor's")
    assert _blobs_and_index(busybox_layout) == before
    assert not (tmp_path / "b").exists()


def test_error_texts_match_umoci(busybox_layout, tmp_path):
    entry = _tag_entry(busybox_layout, "latest")
    _set_index(busybox_layout, [entry, entry])
    for argv in (["stat"], ["unpack", "--rootless", tmp_path / "b"]):
        proc = umoci_py(*argv[:-1] if argv[0] == "unpack" else argv, "--image",
                        f"{busybox_layout}:missing", *argv[-1:] if argv[0] == "unpack" else [],
                        check=False)
        assert_one_line_error(proc, f"{busybox_layout}: tag not found: missing")
    # Two index entries of one name (umoci's own writes never make them).
    proc = umoci_py("stat", "--image", f"{busybox_layout}:latest", check=False)
    assert_one_line_error(proc, f"{busybox_layout}: tag is ambiguous: latest")
    _set_index(busybox_layout, [entry])

    layer = manifest_of(busybox_layout, "latest")["layers"][0]
    path = blob_path(busybox_layout, layer["digest"])
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[-20] ^= 1  # in the gzip trailer's neighbourhood: the tar itself still reads
    path.write_bytes(bytes(data))
    proc = umoci_py("unpack", "--rootless", "--image", f"{busybox_layout}:latest", tmp_path / "c",
                    check=False)
    assert_one_line_error(proc, f"{path}: verified reader digest mismatch")
