"""umoci-py layout and config commands: init, new, config, tag, rm, ls, stat, gc, errors."""

from __future__ import annotations

import json

import pytest

from umoci_py_helpers import (assert_one_line_error, blob_path, config_of, layout_snapshot,
                              manifest_of, umoci_py)


@pytest.fixture
def empty_image(tmp_path):
    layout = tmp_path / "img"
    umoci_py("init", "--layout", layout)
    umoci_py("new", "--image", f"{layout}:base", env={"SOURCE_DATE_EPOCH": "1000", "PATH": "/usr/bin:/bin"})
    return layout


def test_init_and_new_match_umoci_bytes(empty_image):
    assert json.loads((empty_image / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    config = config_of(empty_image, "base")
    assert config["created"] == "1970-01-01T00:16:40Z"
    assert config["rootfs"] == {"type": "layers", "diff_ids": []}
    assert list(config)[:3] == ["created", "architecture", "os"]
    assert manifest_of(empty_image, "base")["layers"] == []


def test_config_reference_bytes(empty_image):
    """The umoci reference config blob (notes §4) comes out byte-identical."""
    umoci_py("config", "--no-history", "--created=2025-09-05T13:05:10.12345+10:00",
             "--image", f"{empty_image}:base")
    digest = manifest_of(empty_image, "base")["config"]["digest"]
    data = blob_path(empty_image, digest).read_bytes()
    assert data == (b'{"created":"2025-09-05T13:05:10.12345+10:00","architecture":"amd64","os":"linux",'
                    b'"config":{},"rootfs":{"type":"layers","diff_ids":[]}}\n')


def test_config_flags(empty_image):
    image = f"{empty_image}:base"
    umoci_py("config", "--image", image, "--tag", "cfg", "--config.user", "app:staff",
             "--config.env", "A=1", "--config.env", "B=2", "--config.entrypoint", "/bin/sh",
             "--config.entrypoint", "-c", "--config.cmd", "echo hi", "--config.volume", "/v",
             "--config.exposedports", "80/tcp", "--config.label", "l=x", "--config.workingdir", "/w",
             "--config.stopsignal", "SIGTERM", "--author", "me", "--os", "linux",
             "--architecture", "arm64", "--platform.variant", "v8",
             "--manifest.annotation", "a=b", "--history.comment", "why",
             "--history.created", "2021-01-01T00:00:00.5Z")
    config = config_of(empty_image, "cfg")
    cfg = config["config"]
    assert cfg["User"] == "app:staff" and cfg["Env"] == ["A=1", "B=2"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-c"] and cfg["Cmd"] == ["echo hi"]
    assert cfg["Volumes"] == {"/v": {}} and cfg["ExposedPorts"] == {"80/tcp": {}}
    assert cfg["Labels"] == {"l": "x"} and cfg["WorkingDir"] == "/w" and cfg["StopSignal"] == "SIGTERM"
    assert (config["author"], config["architecture"], config["variant"]) == ("me", "arm64", "v8")
    assert config["history"][-1] == {"created": "2021-01-01T00:00:00.5Z", "created_by": "umoci config",
                                     "comment": "why", "empty_layer": True}
    assert manifest_of(empty_image, "cfg")["annotations"] == {"a": "b"}
    assert "Env" not in config_of(empty_image, "base")["config"]  # --tag left base alone

    umoci_py("config", "--image", f"{empty_image}:cfg", "--clear", "config.env", "--clear",
             "manifest.annotations", "--clear", "config.cmd", "--config.env", "C=3", "--no-history")
    config = config_of(empty_image, "cfg")
    assert config["config"]["Env"] == ["C=3"] and "Cmd" not in config["config"]
    assert "annotations" not in manifest_of(empty_image, "cfg")


@pytest.mark.parametrize("args,fragment", [
    (["--manifest.annotation", "novalue"], "--manifest.annotation"),
    (["--clear", "rootfs.diffids"], "not safe"),
    (["--clear", "bogus"], "bogus"),
    (["--created", "last tuesday"], "--created"),
    (["--no-history", "--history.comment", "x"], "--no-history"),
    (["--config.env", "NOEQUALS"], "--config.env"),
])
def test_config_bad_values_are_one_line_errors(empty_image, args, fragment):
    before = layout_snapshot(empty_image)
    proc = umoci_py("config", "--image", f"{empty_image}:base", *args, check=False)
    assert_one_line_error(proc, fragment)
    assert layout_snapshot(empty_image) == before


def test_tag_list_remove_stat_gc(busybox_layout):
    image = f"{busybox_layout}:latest"
    umoci_py("tag", "--image", image, "second")
    umoci_py("tag", "--image", image, "third")
    assert umoci_py("ls", "--layout", busybox_layout).stdout.split() == ["latest", "second", "third"]
    assert manifest_of(busybox_layout, "second") == manifest_of(busybox_layout, "latest")
    umoci_py("rm", "--image", f"{busybox_layout}:second")
    umoci_py("remove", "--image", f"{busybox_layout}:never-existed")
    assert umoci_py("list", "--layout", busybox_layout).stdout.split() == ["latest", "third"]

    info = json.loads(umoci_py("stat", "--json", "--image", image).stdout)
    assert info["history"][-1]["created_by"] == "umoci raw add-layer"
    human = umoci_py("stat", "--image", image).stdout
    assert "== HISTORY ==" in human and "umoci raw add-layer" in human

    umoci_py("config", "--image", image, "--config.env", "X=1")
    stale = manifest_of(busybox_layout, "third")["config"]["digest"]
    umoci_py("rm", "--image", f"{busybox_layout}:third")
    umoci_py("gc", "--layout", busybox_layout)
    assert not blob_path(busybox_layout, stale).exists()
    assert umoci_py("ls", "--layout", busybox_layout).stdout.split() == ["latest"]


@pytest.mark.parametrize("argv,fragment", [
    (["stat", "--image", "{layout}:missing"], "missing"),
    (["stat", "--image", ":latest"], ""),
    (["stat", "--image", "{layout}:bad tag!"], "bad tag!"),
    (["stat", "--image", "{layout}/nonexistent"], "nonexistent"),
    (["list", "--layout", "a:b"], "a:b"),
    (["init", "--layout", "{layout}"], ""),
    (["tag", "--image", "{layout}", "no spaces"], "no spaces"),
    (["repack", "--image", "{layout}", "--rootless", "x"], "--rootless"),
    (["unpack", "--image", "{layout}"], "BUNDLE"),
])
def test_bad_arguments_are_one_line_errors(busybox_layout, argv, fragment):
    before = layout_snapshot(busybox_layout)
    proc = umoci_py(*[a.replace("{layout}", str(busybox_layout)) for a in argv], check=False)
    assert_one_line_error(proc, fragment)
    assert layout_snapshot(busybox_layout) == before


def test_version_and_help():
    assert umoci_py("--version").stdout.startswith("umoci-py version ")
    assert "umoci modifies Open Container images" in umoci_py("--help").stdout
    assert "Write the runtime config.json" in umoci_py("raw", "config", "--help").stdout
