"""unpack_bundle / repack_bundle as a library: owners, whiteouts, masks, refresh, failures."""

from __future__ import annotations

import json
import os
import stat

import pytest
import xattr

from umoci_py import bundle as bundle_files
from umoci_py import refs
from umoci_py.cas import Layout
from umoci_py.errors import UmociError
from umoci_py.mutate import HistoryOptions
from umoci_py.repack import repack_bundle
from umoci_py.rootless import decode_owner, encode_owner
from umoci_py.unpack import unpack_bundle, unpack_rootfs

from umoci_py_helpers import blob_path, config_of, layout_snapshot, manifest_of, top_layer

OWNER = "user.rootlesscontainers"


def _owner(path) -> tuple[int, int]:
    try:
        payload = xattr.get(str(path), OWNER, nofollow=True)
    except OSError:
        return (0, 0)
    uid, gid = decode_owner(payload)
    return (0 if uid == 0xFFFFFFFF else uid, 0 if gid == 0xFFFFFFFF else gid)


def _unpack(layout_dir, tag, dest):
    layout = Layout.open(layout_dir)
    unpack_bundle(layout, tag, dest, bundle_files.map_options(True))
    return layout


def test_debian_owners_survive_unpack_change_repack_unpack(debian_layout, tmp_path):
    layout = _unpack(debian_layout, "bookworm", tmp_path / "b1")
    root = tmp_path / "b1/rootfs"
    assert stat.S_IMODE(os.stat(tmp_path / "b1").st_mode) == 0o700
    assert _owner(root / "etc/shadow") == (0, 42)
    assert stat.S_IMODE(os.lstat(root / "var/mail").st_mode) == 0o2775
    assert _owner(root / "usr/bin/chage") == (0, 42)

    # Change each so it lands in the new layer: content, directory entry, mtime.
    os.chmod(root / "etc/shadow", 0o640)
    with open(root / "etc/shadow", "a") as f:
        f.write("extra:*:19000:0:99999:7:::\n")
    os.chmod(root / "etc/shadow", 0o640)
    (root / "var/mail/newmail").write_text("x")
    os.utime(root / "usr/bin/chage", (1, 1))
    (root / "etc/motd").unlink()
    repack_bundle(layout, "changed", tmp_path / "b1", history=HistoryOptions(comment="t"))

    headers = top_layer(debian_layout, "changed")
    shadow = headers["etc/shadow"]
    assert (shadow.uid, shadow.gid, shadow.mode) == (0, 42, 0o640)
    assert shadow.uname == "" and shadow.gname == ""
    mail = headers["var/mail"]
    assert (mail.uid, mail.gid, mail.mode, mail.isdir()) == (0, 8, 0o2775, True)
    chage = headers["usr/bin/chage"]
    assert (chage.uid, chage.gid, chage.mode) == (0, 42, 0o2755)
    new = headers["var/mail/newmail"]
    assert (new.uid, new.gid) == (0, 0)  # rootless: the on-disk owner never leaks
    assert "etc/.wh.motd" in headers
    assert not any(k.endswith(OWNER) for m in headers.values() for k in m.pax_headers)
    history = config_of(debian_layout, "changed")["history"][-1]
    assert history["created_by"] == "umoci repack" and history["comment"] == "t"

    _unpack(debian_layout, "changed", tmp_path / "b2")
    root2 = tmp_path / "b2/rootfs"
    assert _owner(root2 / "etc/shadow") == (0, 42)
    assert (root2 / "etc/shadow").read_bytes().endswith(b"extra:*:19000:0:99999:7:::\n")
    assert stat.S_IMODE(os.lstat(root2 / "var/mail").st_mode) == 0o2775
    assert _owner(root2 / "var/mail") == (0, 8)
    assert stat.S_IMODE(os.lstat(root2 / "usr/bin/chage").st_mode) == 0o2755
    assert _owner(root2 / "usr/bin/chage") == (0, 42)
    assert not (root2 / "etc/motd").exists()


def test_emulated_chown_is_repacked(busybox_layout, tmp_path):
    layout = _unpack(busybox_layout, "latest", tmp_path / "b")
    target = tmp_path / "b/rootfs/etc/owned"
    target.write_text("x")
    xattr.set(str(target), OWNER, encode_owner(123, 456))
    repack_bundle(layout, "latest", tmp_path / "b")
    member = top_layer(busybox_layout, "latest")["etc/owned"]
    assert (member.uid, member.gid) == (123, 456)


def test_whiteout_covers_deleted_tree_once_and_mask_paths(busybox_layout, tmp_path):
    layout = _unpack(busybox_layout, "latest", tmp_path / "b")
    root = tmp_path / "b/rootfs"
    for dirpath, dirnames, filenames in os.walk(root / "home", topdown=False):
        for name in filenames:
            os.unlink(os.path.join(dirpath, name))
        os.rmdir(dirpath)
    (root / "tmp/masked").mkdir(parents=True, exist_ok=True)
    (root / "tmp/masked/file").write_text("hidden")
    (root / "etc/visible").write_text("shown")
    repack_bundle(layout, "latest", tmp_path / "b", mask_paths=["/tmp/masked"])
    names = set(top_layer(busybox_layout, "latest"))
    assert ".wh.home" in names
    assert not any(n.startswith("home/") for n in names)
    assert "etc/visible" in names
    assert not any(n.startswith("tmp/masked") for n in names)


def test_volumes_masked_unless_asked(busybox_layout, tmp_path):
    layout = Layout.open(busybox_layout)
    from umoci_py.config_ops import ConfigChanges, change_config
    change_config(layout, "latest", ConfigChanges(volumes=["/srv/data"]), HistoryOptions())
    _unpack(busybox_layout, "latest", tmp_path / "b")
    data = tmp_path / "b/rootfs/srv/data"
    data.mkdir(parents=True)
    (data / "f").write_text("x")
    repack_bundle(layout, "masked", tmp_path / "b")
    assert not any(n.startswith("srv/data") for n in top_layer(busybox_layout, "masked"))
    repack_bundle(layout, "unmasked", tmp_path / "b", mask_volumes=False)
    assert "srv/data/f" in top_layer(busybox_layout, "unmasked")


def test_empty_diff_adds_history_only(busybox_layout, tmp_path):
    layout = _unpack(busybox_layout, "latest", tmp_path / "b")
    before = manifest_of(busybox_layout, "latest")
    repack_bundle(layout, "same", tmp_path / "b", environ={"SOURCE_DATE_EPOCH": "0"})
    after = manifest_of(busybox_layout, "same")
    assert after["layers"] == before["layers"]
    assert config_of(busybox_layout, "same")["history"][-1] == {
        "created": "1970-01-01T00:00:00Z", "created_by": "umoci repack", "empty_layer": True}
    repack_bundle(layout, "nohist", tmp_path / "b", history=HistoryOptions(no_history=True))
    assert config_of(busybox_layout, "nohist")["history"] == config_of(busybox_layout, "latest")["history"]


def test_refresh_bundle_moves_the_base(busybox_layout, tmp_path):
    layout = _unpack(busybox_layout, "latest", tmp_path / "b")
    old_mtree = {p.name for p in (tmp_path / "b").glob("*.mtree")}
    (tmp_path / "b/rootfs/etc/one").write_text("1")
    desc = repack_bundle(layout, "v1", tmp_path / "b", refresh_bundle=True)
    walk = json.loads((tmp_path / "b/umoci.json").read_bytes())["from_descriptor_path"]["descriptor_walk"]
    assert walk[-1]["digest"] == desc["digest"]
    assert {p.name for p in (tmp_path / "b").glob("*.mtree")} == {bundle_files.mtree_name(desc["digest"])}
    assert old_mtree.isdisjoint({bundle_files.mtree_name(desc["digest"])})
    (tmp_path / "b/rootfs/etc/two").write_text("2")
    repack_bundle(layout, "v2", tmp_path / "b")
    names = set(top_layer(busybox_layout, "v2"))
    assert "etc/two" in names and "etc/one" not in names  # diffed against the refreshed base


def test_unpack_refuses_existing_bundle_and_leaves_it(busybox_layout, tmp_path):
    dest = tmp_path / "b"
    dest.mkdir()
    (dest / "config.json").write_text("{}")
    with pytest.raises(UmociError, match="config.json"):
        _unpack(busybox_layout, "latest", dest)
    assert sorted(os.listdir(dest)) == ["config.json"]


def test_corrupt_layer_leaves_nothing(busybox_layout, tmp_path):
    layer = manifest_of(busybox_layout, "latest")["layers"][0]
    path = blob_path(busybox_layout, layer["digest"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    os.chmod(path, 0o600)
    path.write_bytes(bytes(data))
    snapshot = layout_snapshot(busybox_layout)
    with pytest.raises(UmociError):
        _unpack(busybox_layout, "latest", tmp_path / "b")
    assert not (tmp_path / "b").exists()
    with pytest.raises(UmociError):
        unpack_rootfs(Layout.open(busybox_layout), "latest", tmp_path / "r", bundle_files.map_options(True))
    assert not (tmp_path / "r").exists()
    assert layout_snapshot(busybox_layout) == snapshot


def test_diff_id_mismatch_is_refused(busybox_layout, tmp_path):
    layout = Layout.open(busybox_layout)
    path = refs.resolve(layout, "latest")
    manifest = layout.read_json(path[-1], "manifest")
    config = layout.read_json(manifest["config"], "config")
    config["rootfs"]["diff_ids"][0] = "sha256:" + "0" * 64
    cdigest, csize = layout.put_json(config, "config")
    manifest["config"] = {**manifest["config"], "digest": cdigest, "size": csize}
    mdigest, msize = layout.put_json(manifest, "manifest")
    refs.set_tag(layout, "bad", {**path[-1], "digest": mdigest, "size": msize})
    with pytest.raises(UmociError, match="diff_id"):
        _unpack(busybox_layout, "bad", tmp_path / "b")
    assert not (tmp_path / "b").exists()
