"""config.json / umoci.json generation and Config.User resolution."""

from __future__ import annotations

import json
import os

import pytest

from umoci_py import bundle
from umoci_py.errors import BundleError, UsageError
from umoci_py.layer.idmap import IdMap, MapOptions

IMAGE = {"os": "linux", "architecture": "amd64", "created": "2025-01-02T03:04:05Z",
         "config": {"Env": ["PATH=/bin", "FOO=bar"], "Entrypoint": ["/bin/ep"], "Cmd": ["-x"],
                    "WorkingDir": "/srv", "Volumes": {"/data": {}, "/cache": {}},
                    "ExposedPorts": {"80/tcp": {}, "443/tcp": {}},
                    "Labels": {"org.opencontainers.image.os": "label-wins"}},
         "rootfs": {"type": "layers", "diff_ids": []}}


@pytest.fixture
def rootfs(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                "daemon:x:1:1::/usr/sbin:/bin/false\n"
                                "app:x:1000:1001:App:/home/app:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\nshadow:x:42:\nwheel:x:10:app,daemon\n"
                               "audio:x:29:app\napp:x:1001:\n")
    return tmp_path


@pytest.mark.parametrize("spec,uid,gid,gids,home", [
    ("", 0, 0, [], "/root"),
    ("app", 1000, 1001, [10, 29], "/home/app"),
    ("1000", 1000, 1001, [10, 29], "/home/app"),
    ("app:shadow", 1000, 42, [], "/home/app"),
    ("app:42", 1000, 42, [], "/home/app"),
    ("4242", 4242, 0, [], None),
    ("4242:4343", 4242, 4343, [], None),
    ("daemon", 1, 1, [10], "/usr/sbin"),
])
def test_resolve_user_like_moby(rootfs, spec, uid, gid, gids, home):
    user = bundle.resolve_user(spec, rootfs)
    assert (user.uid, user.gid, user.additional_gids, user.home) == (uid, gid, gids, home)


@pytest.mark.parametrize("spec", ["nobody", "app:nogroup"])
def test_resolve_unknown_names_fail_naming_the_file(rootfs, spec):
    with pytest.raises(BundleError, match="etc/(passwd|group)"):
        bundle.resolve_user(spec, rootfs)


def test_resolve_without_rootfs_uses_numbers_or_root():
    assert bundle.resolve_user("12:34", None).uid == 12
    assert (bundle.resolve_user("app", None).uid, bundle.resolve_user("app", None).gid) == (0, 0)


def test_runtime_config_from_image(rootfs):
    spec = bundle.runtime_config({**IMAGE, "config": {**IMAGE["config"], "User": "app"}},
                                 rootfs, MapOptions())
    proc = spec["process"]
    assert proc["args"] == ["/bin/ep", "-x"]
    assert proc["cwd"] == "/srv"
    assert proc["env"] == ["PATH=/bin", "TERM=xterm", "FOO=bar", "HOME=/home/app"]
    assert proc["user"] == {"uid": 1000, "gid": 1001, "additionalGids": [10, 29]}
    vols = [m for m in spec["mounts"] if m["type"] == "tmpfs" and m["source"] == "none"]
    assert [m["destination"] for m in vols] == ["/cache", "/data"]
    assert vols[0]["options"] == ["rw", "nosuid", "nodev", "noexec", "relatime"]
    ann = spec["annotations"]
    assert ann["org.opencontainers.image.exposedPorts"] == "443/tcp,80/tcp"
    assert ann["org.opencontainers.image.os"] == "label-wins"
    assert "org.opencontainers.image.author" not in ann  # empty values omitted (HEAD)
    assert {"type": "network"} in spec["linux"]["namespaces"]
    assert "uidMappings" not in spec["linux"]


def test_rootless_adjustments(rootfs):
    opts = MapOptions(rootless=True, uid_map=[IdMap(0, 1000, 1)], gid_map=[IdMap(0, 1000, 1)])
    spec = bundle.runtime_config({**IMAGE, "config": {"User": "app"}}, rootfs, opts)
    linux = spec["linux"]
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": 1000, "size": 1}]
    namespaces = [n["type"] for n in linux["namespaces"]]
    assert "network" not in namespaces and namespaces[-1] == "user" and namespaces.count("user") == 1
    assert "resources" not in linux
    assert "additionalGids" not in spec["process"]["user"]
    mounts = {m["destination"]: m for m in spec["mounts"]}
    assert mounts["/sys"]["type"] == "bind"
    assert "/sys/fs/cgroup" not in mounts
    assert not any(o.startswith(("uid=", "gid=")) for m in spec["mounts"] for o in m.get("options", []))
    assert mounts["/etc/resolv.conf"]["options"][-2:] == ["rbind", "ro"]


def test_explicit_home_env_is_kept(rootfs):
    spec = bundle.runtime_config({**IMAGE, "config": {"Env": ["HOME=/x"]}}, rootfs, MapOptions())
    assert spec["process"]["env"].count("HOME=/x") == 1
    assert not any(e == "HOME=/root" for e in spec["process"]["env"])


def test_non_linux_image_is_refused(rootfs):
    with pytest.raises(BundleError, match="windows"):
        bundle.runtime_config({**IMAGE, "os": "windows"}, rootfs, MapOptions())


def test_umoci_json_round_trip_and_format(tmp_path):
    walk = [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": "sha256:" + "a" * 64, "size": 3}]
    opts = MapOptions(rootless=True, uid_map=[IdMap(0, 1001, 1)], gid_map=[IdMap(0, 1001, 1)])
    bundle.write_umoci_json(tmp_path, walk, opts)
    doc = json.loads((tmp_path / "umoci.json").read_bytes())
    assert doc["umoci_version"] == "2" and doc["whiteout_mode"] == 0
    assert doc["map_options"]["uid_mappings"] == [{"containerID": 0, "hostID": 1001, "size": 1}]
    assert bundle.read_umoci_json(tmp_path) == (walk, opts)


def test_umoci_json_wrong_version_is_refused(tmp_path):
    (tmp_path / "umoci.json").write_text(json.dumps({
        "umoci_version": "3", "from_descriptor_path": {"descriptor_walk": []},
        "map_options": {"uid_mappings": None, "gid_mappings": None, "rootless": False}}))
    with pytest.raises(Exception, match="umoci.json"):
        bundle.read_umoci_json(tmp_path)


def test_missing_umoci_json(tmp_path):
    with pytest.raises(BundleError, match="umoci.json: missing"):
        bundle.read_umoci_json(tmp_path)


def test_map_options_defaults_and_parsing():
    opts = bundle.map_options(True)
    assert opts.uid_map == [IdMap(0, os.geteuid(), 1)] and opts.gid_map == [IdMap(0, os.getegid(), 1)]
    opts = bundle.map_options(False, ["0:100:10"], ["5:6"])
    assert opts.uid_map == [IdMap(0, 100, 10)] and opts.gid_map == [IdMap(5, 6, 1)]
    for bad in ("1", "a:b", "0:4294967296", "1:2:3:4"):
        with pytest.raises(UsageError, match="--uid-map"):
            bundle.map_options(False, [bad])
